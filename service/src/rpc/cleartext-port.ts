// The cleartext Connect port: HTTP/2 (h2c, prior knowledge) and HTTP/1.1 on one port. A
// connection is HTTP/2 when it opens with the HTTP/2 connection preface (RFC 9113, 3.4), else
// HTTP/1.1; an HTTP/1.1 `Upgrade: h2c` is not taken up (the request is answered over HTTP/1.1).
import type http from "node:http";
import type http2 from "node:http2";
import net from "node:net";

/** What every HTTP/2 connection sends first. No HTTP/1.1 request starts with it (`PRI` is no method). */
export const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/**
 * A server that reads the first bytes of each connection and hands the socket to `h2` (which
 * takes the bytes already read from the socket's buffer) or to `h1` (given them as the first
 * `data`). Neither listens itself: `maxConnections` and `listen` are this server's. A connection
 * that sends nothing decisive within `idleTimeoutMs` is closed.
 */
export function createCleartextServer(h2: http2.Http2Server, h1: http.Server, idleTimeoutMs: number, onHttp1: (socket: net.Socket) => void): net.Server {
  return net.createServer((socket) => {
    let seen: Buffer = Buffer.alloc(0);
    const ignore = () => undefined;
    const timer = setTimeout(() => socket.destroy(), idleTimeoutMs);
    timer.unref();
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, HTTP2_PREFACE.length);
      const http2Preface = seen.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
      // Part of the preface so far: wait for the rest.
      if (http2Preface && seen.length < HTTP2_PREFACE.length) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("error", ignore);
      if (http2Preface) {
        // node:http2 reads what the socket has buffered before it reads from the connection.
        socket.pause();
        socket.unshift(seen);
        h2.emit("connection", socket);
      } else {
        // node:http's parser reads from the connection itself, not from the socket's buffer: the bytes read go in as data.
        onHttp1(socket);
        h1.emit("connection", socket);
        socket.emit("data", seen);
      }
    };
    socket.on("error", ignore);
    socket.once("close", () => clearTimeout(timer));
    socket.on("data", onData);
  });
}
