// What an unauthenticated network caller can make either RPC port hold (docs/security.md,
// "Exhaustion before authentication"): connections per port, streams per connection, how long
// a connection without a stream stays open, and, on the Connect port, no request body read
// before its bearer token is known to be good.
import type http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { bearerToken } from "@provider-credentials/wire/auth";
import type { TokenStore } from "../auth/token-store.js";
import { codeToHttpStatus, endStreamFlag, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import type { TokenCheck } from "./grpc-js-health-reflection.js";

/** RPC_MAX_CONNECTIONS: open connections per port; past it a new connection is closed at once. */
export const DEFAULT_MAX_CONNECTIONS = 1000;
/** RPC_MAX_STREAMS_PER_CONNECTION: the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS both ports advertise. */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 100;
/** RPC_IDLE_TIMEOUT_MS: a connection with no open stream (HTTP/1.1: no request) for this long is closed (GOAWAY). */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
/** HEALTH_MAX_WATCHERS: open grpc.health.v1 Watch streams, both ports together. */
export const DEFAULT_HEALTH_MAX_WATCHERS = 1000;

export interface ConnectionLimits {
  maxConnections: number;
  maxStreamsPerConnection: number;
  idleTimeoutMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  maxStreamsPerConnection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
  idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
};

/**
 * Closes `session` gracefully (GOAWAY) once it has had no open stream for `idleTimeoutMs`, as
 * grpc-js's `grpc.max_connection_idle_ms` does on the gRPC port. A stream open for a long time
 * (a health watch) keeps its connection; one that never sends a stream does not.
 */
export function closeWhenIdle(session: http2.ServerHttp2Session, idleTimeoutMs: number): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => {
      if (open > 0 || session.closed || session.destroyed) return;
      session.close();
      // A peer that never finished its preface cannot take the GOAWAY: do not wait for it.
      setTimeout(() => session.destroyed || session.destroy(), 1_000).unref();
    }, idleTimeoutMs);
    timer.unref();
  };
  arm();
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    open++;
    clearTimeout(timer);
    stream.once("close", () => {
      open--;
      if (open === 0 && !session.closed) arm();
    });
  });
  session.once("close", () => clearTimeout(timer));
}

/**
 * The check made before a request body is read: nothing to wait for when the token is one this
 * replica looked up recently (the hot path), else `check` (the auth interceptor's rule, which
 * may ask the database once per unknown token). Undefined: go on at once.
 */
export function beforeBodyCheck(tokens: TokenStore, check: TokenCheck): (authorization: string | null, method: string) => Promise<void> | undefined {
  return (authorization, method) => {
    const secret = bearerToken(authorization);
    if (secret !== undefined && tokens.cached(secret) !== undefined) return undefined;
    return check(authorization, method);
  };
}

/**
 * The same on the gRPC port, as a grpc-js server interceptor: grpc-js reads a request only once
 * its metadata has been passed on, so a call to one of `guarded` services is held, unread, until
 * its token is accepted, and a refused one is answered with the interceptor's status (trailers
 * only) without reading its message.
 */
export function grpcJsAuthenticateBeforeBody(
  guarded: ReadonlySet<string>,
  check: (authorization: string | null, method: string) => Promise<void> | undefined,
): grpc.ServerInterceptor {
  return (descriptor, call) => {
    const path = descriptor.path;
    const slash = path.lastIndexOf("/");
    if (!guarded.has(path.slice(1, slash))) return new grpc.ServerInterceptingCall(call);
    const method = path.slice(slash + 1);
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, pass) {
            let waiting: Promise<void> | undefined;
            try {
              waiting = check(metadata.get("authorization").map(String).join(", ") || null, method);
            } catch (error) {
              waiting = Promise.reject(error);
            }
            if (waiting === undefined) return pass(metadata);
            waiting.then(
              () => pass(metadata),
              (error: unknown) => {
                // Anything but a refusal (the database unreachable, ...) is left to the interceptors, which map and log it.
                if (!isRefusal(error)) return pass(metadata);
                call.sendStatus({ code: error.code as number as grpc.status, details: error.rawMessage, metadata: new grpc.Metadata() });
              },
            );
          },
        });
      },
    });
  };
}

/** A token refused (UNAUTHENTICATED) or not allowed the method (PERMISSION_DENIED): answered before the body is read. */
function isRefusal(error: unknown): error is ConnectError {
  return error instanceof ConnectError && (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied);
}

/** A request on the Connect port: HTTP/2, or HTTP/1.1 (cleartext, or TLS through ALPN). */
export type RpcRequest = http2.Http2ServerRequest | http.IncomingMessage;
export type RpcResponse = http2.Http2ServerResponse | http.ServerResponse;

type Protocol = "grpc" | "grpc-web" | "connect-unary" | "connect-stream";

function protocolOf(contentType: string | undefined): Protocol | undefined {
  if (contentType === undefined) return undefined;
  if (/^application\/grpc-web(-text)?(\+\w+)?(;|$)/i.test(contentType)) return "grpc-web";
  if (/^application\/grpc(\+\w+)?(;|$)/i.test(contentType)) return "grpc";
  if (/^application\/connect\+\w+(;|$)/i.test(contentType)) return "connect-stream";
  if (/^application\/(json|proto)(;|$)/i.test(contentType)) return "connect-unary";
  return undefined;
}

/** The gRPC specification's percent-encoding of grpc-message: `%` and bytes outside 0x20-0x7E. */
export function encodeGrpcMessage(text: string): string {
  return [...Buffer.from(text, "utf8")]
    .map((b) => (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`))
    .join("");
}

/**
 * Authentication before the request body is read, on the Connect port: connect-node reads a
 * unary request whole (and sets aside the size a gRPC message or a content-length announces, up
 * to 64 KiB, as soon as it is announced) before its interceptors run, so an unauthenticated
 * caller could make it hold 64 KiB per stream. Here a POST to one of `guarded` services waits,
 * unread (HTTP/2 flow control holds the sender back), until `check` accepts its token; a refused
 * one is answered UNAUTHENTICATED (or PERMISSION_DENIED) in its own protocol without reading the
 * body, and the stream is reset. The auth interceptor still makes the full decision afterwards
 * (a token this replica looked up recently is answered from memory, without a database statement).
 */
export function authenticateBeforeBody<Req extends RpcRequest, Res extends RpcResponse>(
  guarded: ReadonlySet<string>,
  check: (authorization: string | null, method: string) => Promise<void> | undefined,
  next: (req: Req, res: Res) => void,
): (req: Req, res: Res) => void {
  return (req, res) => {
    if (req.method !== "POST") return next(req, res);
    const match = /^\/([^/?]+)\/([^/?]+)$/.exec((req.url ?? "").split("?")[0]);
    const contentType = req.headers["content-type"];
    const protocol = protocolOf(contentType);
    if (!match || !guarded.has(match[1]) || protocol === undefined) return next(req, res);
    const authorization = req.headers.authorization;
    let waiting: Promise<void> | undefined;
    try {
      waiting = check(typeof authorization === "string" ? authorization : null, match[2]);
    } catch (error) {
      waiting = Promise.reject(error);
    }
    if (waiting === undefined) return next(req, res);
    waiting.then(
      () => next(req, res),
      // Anything but a refusal (the database unreachable, ...) is left to connect-node's interceptors, which map and log it.
      (error: unknown) => (isRefusal(error) ? refuse(res, protocol, contentType!, error) : next(req, res)),
    );
  };
}

function refuse(res: RpcResponse, protocol: Protocol, contentType: string, e: ConnectError): void {
  const stream = (res as Partial<http2.Http2ServerResponse>).stream;
  // HTTP/1.1 has no stream to reset: the connection is closed after the answer instead of reading the rest of the body.
  const close: Record<string, string> = stream === undefined ? { connection: "close" } : {};
  if (stream !== undefined) {
    if (stream.destroyed || stream.closed) return;
    // The answer is whole: tell the client to stop sending the body it may still be sending (RFC 9113, 8.1).
    res.once("finish", () => {
      if (!stream.destroyed && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  }
  const head = (status: number, headers: Record<string, string>) => (res as http.ServerResponse).writeHead(status, { ...headers, ...close });
  switch (protocol) {
    case "grpc":
    case "grpc-web":
      // Trailers-only: the status in the only HEADERS frame, as both specifications allow.
      head(200, { "content-type": contentType, "grpc-status": String(e.code), "grpc-message": encodeGrpcMessage(e.rawMessage) });
      res.end();
      return;
    case "connect-unary": {
      const json = Buffer.from(errorToJsonBytes(e, {}));
      head(codeToHttpStatus(e.code), { "content-type": "application/json", "content-length": String(json.length) });
      res.end(json);
      return;
    }
    case "connect-stream": {
      const json = Buffer.from(JSON.stringify({ error: JSON.parse(Buffer.from(errorToJsonBytes(e, {})).toString("utf8")) }));
      const envelope = Buffer.alloc(5);
      envelope[0] = endStreamFlag;
      envelope.writeUInt32BE(json.length, 1);
      head(200, { "content-type": contentType });
      res.end(Buffer.concat([envelope, json]));
      return;
    }
  }
}

/** HTTP/1.1 on the Connect port: the largest request head (request line and headers), bytes; larger is 431. */
export const HTTP1_MAX_HEADER_BYTES = 16 * 1024;
/** HTTP/1.1: how long a request's body may take to arrive once its head has (ms). */
export const HTTP1_REQUEST_TIMEOUT_MS = 300_000;

/**
 * The HTTP/1.1 timeouts of the Connect port, for `http.createServer` (cleartext) or to assign to the
 * TLS server (ALPN http/1.1): a request's head must arrive within the idle timeout, a kept-alive
 * connection lasts the idle timeout, a body at most HTTP1_REQUEST_TIMEOUT_MS.
 */
export function http1Options(limits: ConnectionLimits) {
  return {
    headersTimeout: limits.idleTimeoutMs,
    requestTimeout: Math.max(HTTP1_REQUEST_TIMEOUT_MS, limits.idleTimeoutMs),
    keepAliveTimeout: limits.idleTimeoutMs,
    // How often Node.js checks the head and request timeouts (its default, 30 s, is coarser than the idle timeout).
    connectionsCheckingInterval: Math.min(1_000, limits.idleTimeoutMs),
  };
}

/**
 * HTTP/1.1 connections of the Connect port, closed as closeWhenIdle closes an HTTP/2 one: after
 * `idleTimeoutMs` with no request in progress (before the first request's head is whole, or
 * between kept-alive requests). A request in progress (a health watch) keeps its connection.
 */
export class Http1Connections {
  private readonly open = new Map<net.Socket, { requests: number; timer: NodeJS.Timeout | undefined }>();
  private closing = false;

  constructor(private readonly idleTimeoutMs: number) {}

  get size(): number {
    return this.open.size;
  }

  /** A new HTTP/1.1 connection. */
  add(socket: net.Socket): void {
    const state = { requests: 0, timer: undefined as NodeJS.Timeout | undefined };
    this.open.set(socket, state);
    this.arm(socket, state);
    socket.once("close", () => {
      clearTimeout(state.timer);
      this.open.delete(socket);
    });
  }

  /** A request on one (other requests, HTTP/2 ones, are ignored). */
  request(req: RpcRequest, res: RpcResponse): void {
    const socket = req.socket as net.Socket;
    const state = this.open.get(socket);
    if (state === undefined) return;
    state.requests++;
    clearTimeout(state.timer);
    res.once("close", () => {
      state.requests--;
      if (state.requests > 0) return;
      // Shutting down: the answer is written, the connection ends (no more kept-alive requests).
      if (this.closing) socket.end();
      else this.arm(socket, state);
    });
  }

  /** Shutting down: idle connections close now, the others once their request is answered. */
  close(): void {
    this.closing = true;
    for (const [socket, state] of this.open) if (state.requests === 0) socket.destroy();
  }

  /** The drain time is over: every connection closes. */
  destroy(): void {
    for (const socket of this.open.keys()) socket.destroy();
  }

  private arm(socket: net.Socket, state: { requests: number; timer: NodeJS.Timeout | undefined }): void {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => {
      if (state.requests === 0) socket.destroy();
    }, this.idleTimeoutMs);
    state.timer.unref();
  }
}
