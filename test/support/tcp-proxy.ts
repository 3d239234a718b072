// A TCP proxy on loopback in front of a server (PostgreSQL), that a test can cut and restore:
// a database outage as a replica sees it, without stopping the database other tests share.
import net from "node:net";

export type CutMode =
  /** Open connections are reset and new ones refused (ECONNREFUSED): the server is down. */
  | "refuse"
  /** Open connections stop carrying bytes and new ones are accepted but never answered: a network partition. */
  | "blackhole";

export interface TcpProxy {
  port: number;
  /** `url` with its host and port replaced by the proxy's. */
  rewrite(url: string): string;
  cut(mode?: CutMode): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const open = new Set<net.Socket>();
  let mode: CutMode | undefined;
  let port = 0;
  const server = net.createServer((client) => {
    open.add(client);
    client.once("close", () => open.delete(client));
    client.on("error", () => undefined);
    if (mode === "blackhole") return; // accepted, never answered
    const upstream = net.connect(targetPort, targetHost);
    open.add(upstream);
    upstream.once("close", () => open.delete(upstream));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.once("close", () => upstream.destroy());
    upstream.once("close", () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listen = (at: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(at, "127.0.0.1", () => {
        server.off("error", reject);
        port = (server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  const stopListening = () => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
  await listen(0);
  return {
    get port() {
      return port;
    },
    rewrite(url: string) {
      const u = new URL(url);
      u.hostname = "127.0.0.1";
      u.port = String(port);
      return u.toString();
    },
    async cut(how: CutMode = "refuse") {
      mode = how;
      if (how === "refuse") {
        const closed = stopListening();
        for (const socket of open) socket.destroy();
        await closed;
      } else {
        // Bytes already on their way are dropped too: nothing is forwarded any more.
        for (const socket of open) {
          socket.unpipe();
          socket.pause();
        }
      }
    },
    async restore() {
      const was = mode;
      mode = undefined;
      // Connections opened during a black hole (or through it) are dead: reset them, as a partition's end would.
      for (const socket of open) socket.destroy();
      if (was === "refuse") await listen(port);
    },
    async close() {
      mode = "refuse";
      const closed = stopListening();
      for (const socket of open) socket.destroy();
      await closed;
    },
  };
}
