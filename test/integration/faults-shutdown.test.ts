// Graceful shutdown of real service processes (`node --import tsx
// service/src/main.ts`; `npm run start:service` runs the same code compiled): SIGTERM turns
// health to NOT_SERVING, lets a call in flight finish and exits 0; and with two
// replicas under load, a grpc-js client with gRPC's standard retry policy and
// round_robin over both sees no failed call while each replica in turn is
// restarted.
import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import * as grpc from "@grpc/grpc-js";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  CredentialService,
  OrganizationService,
  Provider,
  type ResolveKeyResponse,
  type UpdateCredentialResponse,
} from "@provider-credentials/wire/gen/credentials_pb";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { grpcJsServiceDefinition } from "../../service/src/rpc/grpc-js-server.js";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { createTestDatabase, FAKE_KEYS, type TestDatabase } from "../support/harness.js";
import { freePort } from "../support/kit.js";

interface Replica {
  grpcPort: number;
  connectPort: number;
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

let db: TestDatabase;
const masterKey = generateMasterKey();
const adminToken = generateToken();
const running = new Set<ChildProcess>();

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  for (const child of running) child.kill("SIGKILL");
  await db?.drop();
});

/** Starts a replica on the given ports and waits for its ready line. */
async function startReplica(grpcPort: number, connectPort: number): Promise<Replica> {
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
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  const deadline = Date.now() + 60_000;
  while (!output.includes("credentials service ready")) {
    if (child.exitCode !== null) throw new Error(`replica exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`replica not ready in 60 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { grpcPort, connectPort, child, output: () => output, exited };
}

const bearer: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${adminToken}`);
  return next(req);
};

function connectClients(port: number) {
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}`, interceptors: [bearer] });
  return {
    credentials: createClient(CredentialService, transport),
    organizations: createClient(OrganizationService, transport),
    health: createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` })),
  };
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("SIGTERM to a service process", () => {
  it("turns health NOT_SERVING, finishes the call in flight, then exits 0", { timeout: 120_000 }, async () => {
    const replica = await startReplica(await freePort(), await freePort());
    const { credentials, organizations, health } = connectClients(replica.grpcPort);
    await organizations.createOrganization({ organizationId: "drain-org", name: "Drain" });
    const { credential } = await credentials.createCredential({
      organizationId: "drain-org",
      provider: Provider.OPENAI,
      credentialName: "k",
      apiKey: FAKE_KEYS.openai(),
    });
    const credentialId = credential!.credentialId;

    // Health watchers hear the change.
    const abort = new AbortController();
    const watch = health.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.status).toBe(Status.SERVING);

    // Hold a call in flight for as long as the test likes: an update waits for the credential's row lock,
    // taken from another connection. (Not a ResolveKey: its query gives up after DB_HOT_PATH_TIMEOUT_MS,
    // 1.5 s, by design, so it cannot be held for an arbitrary time.)
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    let inFlight: Promise<UpdateCredentialResponse> | undefined;
    try {
      await locker.query("begin");
      await locker.query("select id from provider_credentials where id = $1 for update", [credentialId]);
      inFlight = credentials.updateCredential({ credentialId, credentialName: "renamed while draining" });
      inFlight.catch(() => undefined);
      await waitFor(
        "the update waits for the lock",
        async () => (await db.query("select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")).length > 0,
        10_000,
      );

      replica.child.kill("SIGTERM");
      expect((await watch.next()).value?.status).toBe(Status.NOT_SERVING);
      // Still draining: the process does not exit while the call is in flight.
      await new Promise((r) => setTimeout(r, 500));
      expect(replica.child.exitCode).toBeNull();
    } finally {
      await locker.query("rollback").catch(() => undefined);
      await locker.end();
    }
    const res = await inFlight!;
    expect(res.credential).toMatchObject({ credentialName: "renamed while draining", version: 2 });
    expect(await replica.exited).toBe(0);
    // It committed, with its audit row.
    expect(await db.query("select credential_name, version from provider_credentials where id = $1", [credentialId])).toEqual([
      { credential_name: "renamed while draining", version: 2 },
    ]);
    expect(await db.query("select action from audit_events where credential_id = $1 order by id", [credentialId])).toEqual([
      { action: "credential.create" },
      { action: "credential.update" },
    ]);
    expect(replica.output()).toContain('"msg":"stopped"');
    abort.abort();
  });
});

/** Is there an established TCP connection to 127.0.0.1:port (from our client)? */
async function connectedTo(port: number): Promise<boolean> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const table = await readFile("/proc/net/tcp", "utf8");
  // Columns: sl local_address rem_address st ...; 0100007F is 127.0.0.1, state 01 is ESTABLISHED.
  return table.split("\n").some((line) => {
    const cols = line.trim().split(/\s+/);
    return cols[2] === `0100007F:${hexPort}` && cols[3] === "01";
  });
}

describe("two replicas under load, each restarted in turn", () => {
  it("a grpc-js client with the standard retry policy and round_robin sees no failed call", { timeout: 240_000 }, async () => {
    const ports = [
      [await freePort(), await freePort()],
      [await freePort(), await freePort()],
    ];
    const replicas = [await startReplica(ports[0][0], ports[0][1]), await startReplica(ports[1][0], ports[1][1])];

    const admin = connectClients(replicas[0].connectPort); // not the gRPC port: the test watches who connects there
    await admin.organizations.createOrganization({ organizationId: "rolling-org", name: "Rolling" });
    await admin.organizations.createTeam({ teamId: "rolling-team", organizationId: "rolling-org", name: "T" });
    const apiKey = FAKE_KEYS.anthropic();
    const { credential } = await admin.credentials.createCredential({
      organizationId: "rolling-org",
      provider: Provider.ANTHROPIC,
      credentialName: "k",
      apiKey,
    });

    const serviceConfig = {
      loadBalancingConfig: [{ round_robin: {} }],
      methodConfig: [
        {
          name: [{ service: "credentials.v1.CredentialService" }],
          retryPolicy: { maxAttempts: 5, initialBackoff: "0.05s", maxBackoff: "0.5s", backoffMultiplier: 2, retryableStatusCodes: ["UNAVAILABLE"] },
        },
      ],
    };
    const Client = grpc.makeClientConstructor(grpcJsServiceDefinition(CredentialService), "CredentialService");
    const client = new Client(`ipv4:127.0.0.1:${ports[0][0]},127.0.0.1:${ports[1][0]}`, grpc.credentials.createInsecure(), {
      "grpc.service_config": JSON.stringify(serviceConfig),
    }) as grpc.Client & Record<string, (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void>;
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${adminToken}`);
    const call = <T>(method: string, request: object) =>
      new Promise<T>((resolve, reject) =>
        client[method](request, metadata, { deadline: Date.now() + 10_000 }, (error, response) => (error ? reject(error) : resolve(response as T))),
      );

    const failures: Array<{ method: string; code: number; details: string; at: number }> = [];
    const calls: number[] = [];
    let load = true;
    const loop = async (method: string, request: object, check: (res: unknown) => void) => {
      while (load) {
        const at = Date.now();
        try {
          check(await call(method, request));
          calls.push(at);
        } catch (error) {
          const e = error as grpc.ServiceError;
          failures.push({ method, code: e.code, details: e.details ?? String(error), at });
        }
      }
    };
    const loops = Promise.all([
      loop("ResolveKey", { scope: { case: "organizationId", value: "rolling-org" }, provider: Provider.ANTHROPIC }, (r) =>
        expect((r as ResolveKeyResponse).apiKey).toBe(apiKey),
      ),
      loop("ResolveKey", { scope: { case: "teamId", value: "rolling-team" }, provider: Provider.ANTHROPIC }, (r) =>
        expect((r as ResolveKeyResponse).apiKey).toBe(apiKey),
      ),
      loop("ResolveKey", { scope: { case: "organizationId", value: "rolling-org" }, provider: Provider.ANTHROPIC }, () => undefined),
      // A call that reaches the database every time.
      loop("GetCredential", { credentialId: credential!.credentialId }, () => undefined),
    ]);
    const downtimes: Array<[number, number]> = [];
    try {
      await waitFor("load on both replicas", async () => calls.length > 200 && (await connectedTo(ports[0][0])) && (await connectedTo(ports[1][0])), 30_000);
      for (const i of [0, 1]) {
        const down = Date.now();
        replicas[i].child.kill("SIGTERM");
        expect(await replicas[i].exited).toBe(0);
        replicas[i] = await startReplica(ports[i][0], ports[i][1]);
        downtimes.push([down, Date.now()]);
        // The client finds the restarted replica by itself before the other one goes down.
        await waitFor(`client reconnected to replica ${i + 1}`, () => connectedTo(ports[i][0]), 60_000);
        const mark = calls.length;
        await waitFor("load after the restart", () => calls.length > mark + 200, 30_000);
      }
    } finally {
      load = false;
      await loops;
      client.close();
      for (const r of replicas) r.child.kill("SIGTERM");
      for (const r of replicas) await r.exited;
    }
    expect(failures).toEqual([]);
    // The load really ran through both restarts.
    for (const [from, to] of downtimes) expect(calls.filter((at) => at >= from && at <= to).length).toBeGreaterThan(20);
  });
});
