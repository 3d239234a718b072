// HTTP/1.1 on the Connect port (issue 21, item 1): curl without --http2-prior-knowledge and
// Python's urllib call ResolveKey with a resolve token, on the same port as h2c (told apart by the
// HTTP/2 connection preface); the port's bounds hold for HTTP/1.1 connections (token checked
// before the body, idle timeout, the connection cap, the head size). And (item 3) `buf curl`
// with a resolve token, through reflection, on both ports.
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { Writable } from "node:stream";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CredentialService, KeySource, OrganizationService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { createTestDatabase, FAKE_KEYS, type TestDatabase } from "../support/harness.js";
import { createLogger } from "../../service/src/logger.js";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { startService, type RunningService } from "../../service/src/server.js";

const IDLE_MS = 1_500;
const MAX_CONNECTIONS = 6;

let db: TestDatabase;
let service: RunningService;
let resolveToken: string;
const masterKey = generateMasterKey();
const adminToken = generateToken();
const key = FAKE_KEYS.openai();
const logs: string[] = [];
const sockets = new Set<net.Socket>();

const connectUrl = () => `http://127.0.0.1:${service.connectPort}`;
const RESOLVE_PATH = "/credentials.v1.CredentialService/ResolveKey";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  db = await createTestDatabase();
  service = await startService({
    databaseUrl: db.url,
    masterKey,
    serviceAdminToken: adminToken,
    env: {},
    host: "127.0.0.1",
    port: 0,
    connectPort: 0,
    logger: createLogger(
      "debug",
      new Writable({
        write(chunk, _encoding, done) {
          logs.push(String(chunk));
          done();
        },
      }),
    ),
    poolSize: 5,
    connectionLimits: { maxConnections: MAX_CONNECTIONS, idleTimeoutMs: IDLE_MS, maxStreamsPerConnection: 10 },
  });
  // Seeded through the gRPC port, as an administrator would.
  const admin = grpcTransport(`http://127.0.0.1:${service.port}`, adminToken);
  await createClient(OrganizationService, admin).createOrganization({ organizationId: "acme", name: "Acme" });
  await createClient(CredentialService, admin).createCredential({ organizationId: "acme", provider: Provider.OPENAI, credentialName: "Main", apiKey: key });
  ({ token: resolveToken } = await new TokenStore(service.orm).create("gateway", "resolve", "test"));
}, 60_000);

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await service?.close();
  await db?.drop();
  // A provider key never reaches the logs, whatever the protocol.
  expect(logs.join("")).not.toContain(key);
});

function withToken(token: string) {
  return [
    (next: (req: { header: Headers }) => unknown) => (req: { header: Headers }) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ] as never;
}

function grpcTransport(baseUrl: string, token: string): Transport {
  return createGrpcTransport({ baseUrl, interceptors: withToken(token) });
}

/** Runs a command without blocking this process (the service runs in it). */
function run(command: string, args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code });
    });
  });
}

/** The command, verbatim but for the port (the test service's is free, not 50052). */
const CURL = `curl -s -X POST http://127.0.0.1:50052/credentials.v1.CredentialService/ResolveKey -H "authorization: Bearer $T" -H 'content-type: application/json' -d '{"organizationId":"acme","provider":"PROVIDER_OPENAI"}'`;

describe("ResolveKey over HTTP/1.1 on the Connect port", () => {
  it("answers the issue's curl command (HTTP/1.1, no --http2-prior-knowledge)", async () => {
    const command = CURL.replace("127.0.0.1:50052", `127.0.0.1:${service.connectPort}`);
    const { stdout, code } = await run("bash", ["-c", command], { T: resolveToken });
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ apiKey: key, source: "KEY_SOURCE_ORGANIZATION", organizationId: "acme" });
    // And curl's own view: HTTP/1.1, status 200.
    const verbose = await run("bash", ["-c", `${command} -o /dev/null -w '%{http_version} %{http_code}'`], { T: resolveToken });
    expect(verbose.stdout).toBe("1.1 200");
  });

  it("answers Python's urllib.request, and a refusal is a Connect JSON error", async () => {
    const script = `
import json, os, sys, urllib.request, urllib.error
def call(token):
    req = urllib.request.Request(os.environ["URL"] + "/credentials.v1.CredentialService/ResolveKey",
        data=json.dumps({"organizationId": "acme", "provider": "PROVIDER_OPENAI"}).encode(),
        headers={"authorization": "Bearer " + token, "content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return {"status": res.status, "body": json.load(res)}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": json.load(e)}
print(json.dumps([call(os.environ["T"]), call("not-a-token")]))
`;
    const { stdout, stderr, code } = await run("python3", ["-c", script], { URL: connectUrl(), T: resolveToken });
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const [ok, refused] = JSON.parse(stdout);
    expect(ok).toEqual({ status: 200, body: expect.objectContaining({ apiKey: key, source: "KEY_SOURCE_ORGANIZATION" }) });
    expect(refused).toEqual({ status: 401, body: { code: "unauthenticated", message: "invalid or revoked token" } });
  });

  it("answers Connect JSON and binary, and gRPC-Web, over HTTP/1.1; and h2c (gRPC, Connect) on the same port", async () => {
    const baseUrl = connectUrl();
    const interceptors = withToken(resolveToken);
    const transports: Record<string, Transport> = {
      "connect json, HTTP/1.1": createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, interceptors }),
      "connect binary, HTTP/1.1": createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors }),
      "grpc-web, HTTP/1.1": createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors }),
      "connect, h2c": createConnectTransport({ baseUrl, httpVersion: "2", interceptors }),
      "grpc, h2c": grpcTransport(baseUrl, resolveToken),
    };
    for (const [name, transport] of Object.entries(transports)) {
      const answer = await createClient(CredentialService, transport).resolveKey({
        scope: { case: "organizationId", value: "acme" },
        provider: Provider.OPENAI,
      });
      expect({ name, apiKey: answer.apiKey, source: answer.source }).toEqual({ name, apiKey: key, source: KeySource.ORGANIZATION });
    }
    // Health over HTTP/1.1 needs no token; server streaming (Watch) works over HTTP/1.1 too.
    const health = createClient(Health, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
    expect((await health.check({})).status).toBe(Status.SERVING);
    const abort = new AbortController();
    const watch = health.watch({}, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.status).toBe(Status.SERVING);
    abort.abort();
  });

  it("curl --http2-prior-knowledge still speaks HTTP/2; an Upgrade: h2c request is answered over HTTP/1.1", async () => {
    const base = CURL.replace("127.0.0.1:50052", `127.0.0.1:${service.connectPort}`);
    for (const [flag, version] of [
      ["--http2-prior-knowledge", "2"],
      ["--http2", "1.1"],
    ]) {
      const { stdout } = await run("bash", ["-c", `${base} ${flag} -w '\\n%{http_version} %{http_code}'`], { T: resolveToken });
      const [body, status] = stdout.split("\n");
      expect(JSON.parse(body)).toMatchObject({ apiKey: key });
      expect(status).toBe(`${version} 200`);
    }
  });
});

/** A raw connection to the Connect port. */
function rawConnect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(service.connectPort, "127.0.0.1");
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** What the server sends until it closes the connection (or `ms` pass), and whether it closed. */
function readUntilClose(socket: net.Socket, ms: number): Promise<{ text: string; closed: boolean; afterMs: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (d) => (text += d.toString("latin1")));
    socket.on("error", () => undefined);
    const timer = setTimeout(() => resolve({ text, closed: false, afterMs: Date.now() - started }), ms);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve({ text, closed: true, afterMs: Date.now() - started });
    });
  });
}

describe("the Connect port's bounds, for HTTP/1.1", () => {
  for (const [name, authorization] of [
    ["no token", undefined],
    ["an unknown token", generateToken()],
  ] as const) {
    it(`answers ${name} 401 (Connect JSON) without reading the body, and closes the connection`, async () => {
      const socket = await rawConnect();
      const done = readUntilClose(socket, 10_000);
      // A 64 KiB body announced, 100 bytes of it sent, and never the rest: the answer does not wait for it.
      socket.write(
        `POST ${RESOLVE_PATH} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 65536\r\n` +
          (authorization ? `authorization: Bearer ${authorization}\r\n` : "") +
          `\r\n${"x".repeat(100)}`,
      );
      const { text, closed } = await done;
      expect(closed).toBe(true);
      const [head, body] = text.split("\r\n\r\n");
      expect(head).toMatch(/^HTTP\/1\.1 401 /);
      expect(head.toLowerCase()).toContain("content-type: application/json");
      expect(head.toLowerCase()).toContain("connection: close");
      expect(JSON.parse(body)).toEqual({
        code: "unauthenticated",
        message: authorization ? "invalid or revoked token" : 'missing or malformed authorization header; send "authorization: Bearer <token>"',
      });
    });
  }

  it(`closes an HTTP/1.1 connection idle for RPC_IDLE_TIMEOUT_MS (${IDLE_MS} ms): before any request, and after a kept-alive answer`, async () => {
    // Nothing sent at all.
    const silent = await readUntilClose(await rawConnect(), 15_000);
    // Part of a request head, and never the rest.
    const partial = await rawConnect();
    partial.write("POST /credentials.v1.CredentialService/ResolveKey HTTP/1.1\r\nHost: x\r\n");
    const partialHead = await readUntilClose(partial, 15_000);
    // A whole request answered, the connection kept alive, then nothing.
    const kept = await rawConnect();
    const keptDone = readUntilClose(kept, 15_000);
    const body = JSON.stringify({ organizationId: "acme", provider: "PROVIDER_OPENAI" });
    kept.write(
      `POST ${RESOLVE_PATH} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nauthorization: Bearer ${resolveToken}\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    );
    const keptAlive = await keptDone;
    console.log(
      `[http1] idle connections closed after: silent ${silent.afterMs} ms, partial head ${partialHead.afterMs} ms, kept alive ${keptAlive.afterMs} ms (RPC_IDLE_TIMEOUT_MS=${IDLE_MS})`,
    );
    for (const closedAfter of [silent, partialHead, keptAlive]) {
      expect(closedAfter.closed).toBe(true);
      expect(closedAfter.afterMs).toBeGreaterThanOrEqual(IDLE_MS - 100);
      expect(closedAfter.afterMs).toBeLessThan(IDLE_MS + 2_500);
    }
    expect(keptAlive.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(keptAlive.text).toContain(key);
    // Not an answer to a silent connection: it is just closed. A partial head may get Node.js's 408.
    expect(silent.text).toBe("");
  }, 30_000);

  it("keeps a connection alive between requests (several calls on one connection)", async () => {
    const socket = await rawConnect();
    let text = "";
    socket.on("data", (d) => (text += d.toString("latin1")));
    const body = JSON.stringify({ organizationId: "acme", provider: "PROVIDER_OPENAI" });
    const request = `POST ${RESOLVE_PATH} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nauthorization: Bearer ${resolveToken}\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    for (let i = 1; i <= 3; i++) {
      socket.write(request);
      const deadline = Date.now() + 5_000;
      while (text.split("HTTP/1.1 200 ").length - 1 < i && Date.now() < deadline) await sleep(20);
      // Less than the idle timeout between calls: the connection stays.
      await sleep(IDLE_MS / 3);
    }
    expect(text.split("HTTP/1.1 200 ").length - 1).toBe(3);
    expect(socket.destroyed).toBe(false);
    socket.destroy();
  });

  it("refuses a request head larger than 16 KiB (431)", async () => {
    const socket = await rawConnect();
    const done = readUntilClose(socket, 5_000);
    socket.write(`POST ${RESOLVE_PATH} HTTP/1.1\r\nHost: x\r\nx-big: ${"a".repeat(17 * 1024)}\r\n\r\n`);
    expect((await done).text).toMatch(/^HTTP\/1\.1 431 /);
  });

  it("counts HTTP/1.1 connections against RPC_MAX_CONNECTIONS, with HTTP/2 ones", async () => {
    await sleep(300); // the connections of the tests above are gone
    const held: net.Socket[] = [];
    // Half HTTP/1.1 (a request head begun), half HTTP/2 (the preface sent): all decided, all counted.
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      const socket = await rawConnect();
      socket.on("error", () => undefined);
      socket.write(i % 2 === 0 ? "POST / HTTP/1.1\r\n" : "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
      held.push(socket);
    }
    await sleep(100);
    expect(held.every((s) => !s.destroyed)).toBe(true);
    // One past the bound is closed at once, whatever it speaks.
    const extra = await rawConnect();
    const refused = readUntilClose(extra, 1_000);
    extra.write(`GET / HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(await refused).toMatchObject({ closed: true, text: "" });
    // One closed: a new HTTP/1.1 connection is served.
    held[0].destroy();
    await sleep(200);
    const again = await rawConnect();
    const answered = readUntilClose(again, IDLE_MS + 3_000);
    again.write("POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}");
    expect((await answered).text).toMatch(/^HTTP\/1\.1 200 [\s\S]*"SERVING"/);
    for (const socket of held) socket.destroy();
  }, 15_000);
});

// buf curl (the @bufbuild/buf devDependency), as the README shows it, with a resolve token:
// reflection answers any valid token (it reveals the public schema only).
const BUF = "node_modules/.bin/buf";

describe.skipIf(!existsSync(BUF))("buf curl with a resolve token", () => {
  const bufCurl = (args: string[]) => promisify(execFile)(BUF, ["curl", ...args], { timeout: 30_000 });
  const data = JSON.stringify({ organization_id: "acme", provider: "PROVIDER_OPENAI" });

  it("resolves a key on the gRPC port (the README's command) through reflection", async () => {
    const { stdout } = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      `authorization: Bearer ${resolveToken}`,
      "--reflect-header",
      `authorization: Bearer ${resolveToken}`,
      "-d",
      data,
      `http://127.0.0.1:${service.port}${RESOLVE_PATH}`,
    ]);
    expect(JSON.parse(stdout)).toMatchObject({ apiKey: key, source: "KEY_SOURCE_ORGANIZATION" });
  }, 60_000);

  it("resolves a key on the Connect port over HTTP/1.1 (buf curl's default: Connect protocol, no HTTP/2)", async () => {
    const { stdout } = await bufCurl([
      "-H",
      `authorization: Bearer ${resolveToken}`,
      "--reflect-header",
      `authorization: Bearer ${resolveToken}`,
      "-d",
      data,
      `${connectUrl()}${RESOLVE_PATH}`,
    ]);
    expect(JSON.parse(stdout)).toMatchObject({ apiKey: key, source: "KEY_SOURCE_ORGANIZATION" });
  }, 60_000);

  it("without --reflect-header, buf curl cannot find the service; -v shows why (the docs' troubleshooting)", async () => {
    const error = await bufCurl([
      "-v",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      `authorization: Bearer ${resolveToken}`,
      "-d",
      data,
      `http://127.0.0.1:${service.port}${RESOLVE_PATH}`,
    ]).then(
      () => undefined,
      (e: { stderr?: string }) => e,
    );
    expect(error?.stderr).toContain('failed to find service named "credentials.v1.CredentialService" in schema');
    expect(error?.stderr).toContain("Grpc-Status: 16");
    expect(decodeURIComponent(error?.stderr ?? "")).toContain('missing or malformed authorization header; send "authorization: Bearer <token>"');
  }, 60_000);
});

describe("shutdown with HTTP/1.1 connections open", () => {
  it("closes an idle kept-alive HTTP/1.1 connection at once instead of waiting for the drain timeout", async () => {
    const second = await startService({
      databaseUrl: db.url,
      masterKey,
      serviceAdminToken: adminToken,
      env: {},
      host: "127.0.0.1",
      port: 0,
      connectPort: 0,
      logger: createLogger("warn", new Writable({ write: (_c, _e, done) => done() })),
      poolSize: 2,
      drainTimeoutMs: 20_000,
    });
    const socket = net.connect(second.connectPort, "127.0.0.1");
    sockets.add(socket);
    const done = readUntilClose(socket, 30_000);
    socket.write("POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}");
    while (!socket.bytesRead) await sleep(20);
    const started = Date.now();
    await second.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    const { closed, text } = await done;
    expect(closed).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
  }, 40_000);
});
