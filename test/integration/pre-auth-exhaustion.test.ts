// Exhaustion before authentication (issue 19, item 9), against a real service process
// (`node --import tsx service/src/main.ts`) on both RPC ports: 2,000 unauthenticated streams
// (half-sent 64 KiB requests, or health watches) grow its resident memory (VmRSS in
// /proc/<pid>/status) by at most 100 MB; the per-connection stream bound is advertised and
// enforced; connections past RPC_MAX_CONNECTIONS are closed; an idle connection is closed after
// RPC_IDLE_TIMEOUT_MS; health watchers past HEALTH_MAX_WATCHERS are refused RESOURCE_EXHAUSTED.
// The memory figures are printed: they are measurements (docs/performance.md), not timings.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { createTestDatabase, type TestDatabase } from "../support/harness.js";
import { freePort } from "../support/kit.js";

interface ServiceProcess {
  grpcPort: number;
  connectPort: number;
  child: ChildProcess;
  output: () => string;
}

let db: TestDatabase;
const masterKey = generateMasterKey();
const adminToken = generateToken();
const running = new Set<ChildProcess>();
const sessions = new Set<http2.ClientHttp2Session>();

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  for (const session of sessions) session.destroy();
  for (const child of running) child.kill("SIGKILL");
  await db?.drop();
});

async function startServiceProcess(env: Record<string, string> = {}): Promise<ServiceProcess> {
  const [grpcPort, connectPort] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, ["--import", "tsx", "service/src/main.ts"], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DATABASE_URL: db.url,
      MASTER_KEY: masterKey,
      SERVICE_ADMIN_TOKEN: adminToken,
      GRPC_PORT: String(grpcPort),
      CONNECT_PORT: String(connectPort),
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const deadline = Date.now() + 60_000;
  // LOG_LEVEL=warn hides the ready line: wait until both ports accept.
  while (!(await accepts(grpcPort)) || !(await accepts(connectPort))) {
    if (child.exitCode !== null) throw new Error(`service exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`service not ready in 60 s:\n${output}`);
    await sleep(100);
  }
  return { grpcPort, connectPort, child, output: () => output };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The process's resident memory in bytes (VmRSS). */
function rss(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"))!;
  return Number(/(\d+)/.exec(line)![1]) * 1024;
}

/** The largest RSS seen over `ms` (the settled cost, including garbage not yet collected). */
async function peakRss(pid: number, ms: number): Promise<number> {
  let peak = rss(pid);
  const end = Date.now() + ms;
  while (Date.now() < end) {
    await sleep(100);
    peak = Math.max(peak, rss(pid));
  }
  return peak;
}

function connect(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.once("error", reject);
    session.once("remoteSettings", () => {
      session.off("error", reject);
      session.on("error", () => undefined);
      resolve(session);
    });
  });
}

const RESOLVE_PATH = "/credentials.v1.CredentialService/ResolveKey";
const WATCH_PATH = "/grpc.health.v1.Health/Watch";
const HEADERS = { ":method": "POST", "content-type": "application/grpc", te: "trailers" };
const MESSAGE_BYTES = 64 * 1024 - 16;

/** A gRPC frame prefix announcing a message of `length` bytes. */
function prefix(length: number): Buffer {
  const b = Buffer.alloc(5);
  b.writeUInt32BE(length, 1);
  return b;
}

interface Opened {
  streams: http2.ClientHttp2Stream[];
  /** Streams the server ended or reset (refused) before the measurement. */
  ended: () => number;
}

/**
 * `count` streams over connections of `perConnection` streams: either ResolveKey requests
 * announcing a 64 KiB message of which half is sent (and never the rest), every other one
 * without a token and the others each with a different well-formed unknown token, or health
 * watches (whole request, then the server holds the stream open).
 */
async function openStreams(port: number, kind: "half-sent" | "watch", count: number, perConnection: number): Promise<Opened> {
  const streams: http2.ClientHttp2Stream[] = [];
  let ended = 0;
  const half = Buffer.alloc(MESSAGE_BYTES / 2, 0x61);
  for (let opened = 0; opened < count;) {
    const session = await connect(port);
    const n = Math.min(perConnection, count - opened);
    for (let i = 0; i < n; i++) {
      const token = kind === "half-sent" && i % 2 === 1 ? { authorization: `Bearer ${generateToken()}` } : {};
      const stream = session.request({ ...HEADERS, ...token, ":path": kind === "watch" ? WATCH_PATH : RESOLVE_PATH }, { endStream: false });
      stream.on("error", () => undefined);
      stream.on("data", () => undefined);
      stream.once("close", () => ended++);
      if (kind === "watch") stream.end(prefix(0));
      else stream.write(Buffer.concat([prefix(MESSAGE_BYTES), half]));
      streams.push(stream);
    }
    opened += n;
  }
  return { streams, ended: () => ended };
}

function closeAll(): void {
  for (const session of sessions) session.destroy();
}

const MiB = 1024 * 1024;
const STREAMS = 2_000;
const PER_CONNECTION = 100;

describe("2,000 unauthenticated streams", () => {
  let service: ServiceProcess;
  beforeAll(async () => {
    service = await startServiceProcess();
  }, 90_000);
  afterAll(() => {
    closeAll();
    service?.child.kill("SIGKILL");
  });

  for (const port of ["grpc", "connect"] as const) {
    for (const kind of ["half-sent", "watch"] as const) {
      it(`grow the service's RSS by at most 100 MB: ${kind}, ${port} port`, { timeout: 120_000 }, async () => {
        const portNumber = port === "grpc" ? service.grpcPort : service.connectPort;
        // Warm up: a first round of connections and streams, then settle, so that what is measured is the streams' cost.
        const warm = await openStreams(portNumber, kind, 200, PER_CONNECTION);
        await sleep(1_000);
        closeAll();
        expect(warm.streams.length).toBe(200);
        await sleep(1_500);
        const before = await peakRss(service.child.pid!, 500);
        const { streams, ended } = await openStreams(portNumber, kind, STREAMS, PER_CONNECTION);
        const after = await peakRss(service.child.pid!, 3_000);
        const growth = after - before;
        console.log(
          `[pre-auth] ${port} port, ${STREAMS} ${kind} streams (${ended()} ended by the server): RSS ${(before / MiB).toFixed(1)} -> ${(after / MiB).toFixed(1)} MiB, growth ${(growth / MiB).toFixed(1)} MiB (${(growth / 1e6).toFixed(1)} MB)`,
        );
        expect(streams.length).toBe(STREAMS);
        // 100 MB (10^8 bytes) as the issue says, not MiB.
        expect(growth).toBeLessThanOrEqual(100_000_000);
        closeAll();
        await sleep(500);
      });
    }
  }
});

/**
 * The gRPC status of a stream: from its trailers, or from the headers of a trailers-only answer
 * (grpc-js leaves the client's half of a refused stream open: the client ends it, as gRPC clients do).
 */
function statusOf(stream: http2.ClientHttp2Stream): Promise<{ status: string | undefined; message: string | undefined }> {
  return new Promise((resolve) => {
    const done = (headers: http2.IncomingHttpHeaders) =>
      resolve({
        status: headers["grpc-status"] as string | undefined,
        message: headers["grpc-message"] === undefined ? undefined : decodeURIComponent(headers["grpc-message"] as string),
      });
    stream.once("response", (headers) => {
      if (headers["grpc-status"] !== undefined) done(headers);
    });
    stream.once("trailers", done);
    stream.once("close", () => done({}));
  });
}

function watch(session: http2.ClientHttp2Session): http2.ClientHttp2Stream {
  const stream = session.request({ ...HEADERS, ":path": WATCH_PATH }, { endStream: false });
  stream.on("error", () => undefined);
  stream.end(prefix(0));
  return stream;
}

/** Resolves when the stream has answered its first message (a watch's first status). */
function firstMessage(stream: http2.ClientHttp2Stream): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.once("data", () => resolve());
    stream.once("close", () => reject(new Error("the stream ended before its first message")));
  });
}

describe("bounds (small ones configured)", () => {
  let service: ServiceProcess;
  beforeAll(async () => {
    service = await startServiceProcess({
      RPC_MAX_CONNECTIONS: "5",
      RPC_MAX_STREAMS_PER_CONNECTION: "10",
      RPC_IDLE_TIMEOUT_MS: "1000",
      HEALTH_MAX_WATCHERS: "3",
    });
  }, 90_000);
  afterAll(() => {
    closeAll();
    service?.child.kill("SIGKILL");
  });

  for (const port of ["grpc", "connect"] as const) {
    it(`advertise the streams-per-connection bound and close an idle connection: ${port} port`, { timeout: 60_000 }, async () => {
      const portNumber = port === "grpc" ? service.grpcPort : service.connectPort;
      const session = await connect(portNumber);
      expect(session.remoteSettings.maxConcurrentStreams).toBe(10);
      const started = Date.now();
      await new Promise<void>((resolve) => session.once("close", resolve));
      const idleMs = Date.now() - started;
      console.log(`[pre-auth] ${port} port: an idle connection was closed after ${idleMs} ms (RPC_IDLE_TIMEOUT_MS=1000)`);
      expect(idleMs).toBeGreaterThanOrEqual(900);
      expect(idleMs).toBeLessThan(15_000);

      // A connection with a call open (a health watch) is not idle.
      const watching = await connect(portNumber);
      const stream = watch(watching);
      await firstMessage(stream);
      await sleep(2_500);
      expect(watching.closed).toBe(false);
      expect(stream.closed).toBe(false);
      watching.destroy();
    });

    it(`close connections past RPC_MAX_CONNECTIONS: ${port} port`, { timeout: 60_000 }, async () => {
      const portNumber = port === "grpc" ? service.grpcPort : service.connectPort;
      // Kept open by a watch each (not idle), within HEALTH_MAX_WATCHERS only for the first three: plain connections also count.
      const held: http2.ClientHttp2Session[] = [];
      for (let i = 0; i < 5; i++) held.push(await connect(portNumber));
      const extra = http2.connect(`http://127.0.0.1:${portNumber}`);
      extra.on("error", () => undefined);
      const refused = await new Promise<boolean>((resolve) => {
        extra.once("remoteSettings", () => resolve(false));
        extra.once("close", () => resolve(true));
      });
      expect(refused).toBe(true);
      held[0].destroy();
      await sleep(200);
      const again = await connect(portNumber);
      expect(again.closed).toBe(false);
      for (const session of [...held, again]) session.destroy();
      await sleep(200);
    });
  }

  it(
    "refuse health watchers past HEALTH_MAX_WATCHERS (both ports together) with RESOURCE_EXHAUSTED, and admit one when another ends",
    { timeout: 60_000 },
    async () => {
      const grpcSession = await connect(service.grpcPort);
      const connectSession = await connect(service.connectPort);
      const first = [watch(grpcSession), watch(grpcSession), watch(connectSession)];
      await Promise.all(first.map(firstMessage));
      for (const session of [grpcSession, connectSession]) {
        expect(await statusOf(watch(session))).toEqual({
          status: "8",
          message: "too many health watchers: 3 Watch streams are open (HEALTH_MAX_WATCHERS); use Check, or Watch again later",
        });
      }
      first[0].close();
      await sleep(300);
      await firstMessage(watch(connectSession));
      grpcSession.destroy();
      connectSession.destroy();
    },
  );

  for (const port of ["grpc", "connect"] as const) {
    it(`answer a call without a good token before reading its body: ${port} port`, { timeout: 30_000 }, async () => {
      const session = await connect(port === "grpc" ? service.grpcPort : service.connectPort);
      for (const headers of [{}, { authorization: `Bearer ${generateToken()}` }]) {
        const stream = session.request({ ...HEADERS, ...headers, ":path": RESOLVE_PATH }, { endStream: false });
        stream.on("error", () => undefined);
        const status = statusOf(stream);
        // Half of a 64 KiB message, and never the rest: the answer does not wait for it.
        stream.write(Buffer.concat([prefix(MESSAGE_BYTES), Buffer.alloc(MESSAGE_BYTES / 2)]));
        expect((await status).status).toBe("16");
      }
      session.destroy();
    });
  }
});
