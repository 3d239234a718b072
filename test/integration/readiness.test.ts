// Liveness and readiness in grpc.health.v1 (docs/operations/health.md), through a real database
// outage: the service reaches its database through a TCP proxy that the test cuts (PostgreSQL
// refusing connections, then a network partition where nothing answers) and restores.
// Readiness ("readiness") turns NOT_SERVING only once the database has been unreachable for longer
// than the outage grace, and SERVING again when it is back; Watch streams both changes on both
// ports; liveness ("") stays SERVING throughout; resolution works again afterwards.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { READINESS_SERVICE } from "../../service/src/rpc/health.js";
import { createTestDatabase, FAKE_KEYS, startTestService, type TestDatabase, type TestService } from "../support/harness.js";
import { startTcpProxy, type CutMode, type TcpProxy } from "../support/tcp-proxy.js";

/** The outage grace of this file's service (RESOLVE_CACHE_OUTAGE_GRACE_MS). */
const GRACE_MS = 2_500;

let db: TestDatabase;
let proxy: TcpProxy;
let t: TestService;

beforeAll(async () => {
  db = await createTestDatabase();
  const target = new URL(db.url);
  proxy = await startTcpProxy(target.hostname, Number(target.port || 5432));
  t = await startTestService({
    db: { ...db, url: proxy.rewrite(db.url) },
    serviceOptions: { cacheOutageGraceMs: GRACE_MS, readinessProbeMs: 200 },
  });
});
afterAll(async () => {
  await t?.close();
  await proxy?.close();
  await db?.drop();
});

const PORTS = { grpcJs: "grpc", connect: "connect" } as const;

function check(port: keyof typeof PORTS, service: string): Promise<Status> {
  return createClient(Health, t.transport(PORTS[port]))
    .check({ service })
    .then((r) => r.status);
}

async function statuses(service: string): Promise<Record<keyof typeof PORTS, Status>> {
  return { grpcJs: await check("grpcJs", service), connect: await check("connect", service) };
}

/** Check as `curl` does it: Connect's JSON over HTTP/1.1 on the Connect port (docs/operations/health.md, load balancers). */
async function checkOverHttp1(service: string): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${t.service.connectPort}/grpc.health.v1.Health/Check`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ service }),
  });
  expect(res.status).toBe(200);
  return res.json();
}

/** Watch on one port, recording every status it streams until `stop()`. */
function watch(port: keyof typeof PORTS, service: string): { seen: Status[]; stop(): Promise<void> } {
  const seen: Status[] = [];
  const abort = new AbortController();
  const done = (async () => {
    try {
      for await (const r of createClient(Health, t.transport(PORTS[port])).watch({ service }, { signal: abort.signal })) seen.push(r.status);
    } catch {
      // aborted by stop()
    }
  })();
  return {
    seen,
    async stop() {
      abort.abort();
      await done;
    },
  };
}

async function until(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("readiness follows the database, liveness does not", () => {
  it("is SERVING on both ports while the database answers", async () => {
    expect(await statuses(READINESS_SERVICE)).toEqual({ grpcJs: Status.SERVING, connect: Status.SERVING });
    expect(await statuses("")).toEqual({ grpcJs: Status.SERVING, connect: Status.SERVING });
    expect(await checkOverHttp1(READINESS_SERVICE)).toEqual({ status: "SERVING" });
  });

  it.each<CutMode>(["refuse", "blackhole"])(
    "database %s: NOT_SERVING past the grace, SERVING when it is back, Watch streams both, liveness stays SERVING",
    async (mode) => {
      const organizationId = `org-${mode}`;
      const { credentials, organizations } = t.clients();
      const apiKey = FAKE_KEYS.openai();
      await organizations.createOrganization({ organizationId, name: `Org ${mode}` });
      await credentials.createCredential({ organizationId, provider: Provider.OPENAI, credentialName: "main", apiKey });

      const watchers = [watch("grpcJs", READINESS_SERVICE), watch("connect", READINESS_SERVICE), watch("grpcJs", ""), watch("connect", "")];
      await until("every Watch has said SERVING", () => watchers.every((w) => w.seen.length === 1));

      const cutAt = Date.now();
      await proxy.cut(mode);
      // Within the grace (cached resolutions may still answer), readiness holds.
      expect(await statuses(READINESS_SERVICE)).toEqual({ grpcJs: Status.SERVING, connect: Status.SERVING });

      await until("readiness is NOT_SERVING on both ports", async () => {
        const s = await statuses(READINESS_SERVICE);
        return s.grpcJs === Status.NOT_SERVING && s.connect === Status.NOT_SERVING;
      });
      // Not before the grace was over.
      expect(Date.now() - cutAt).toBeGreaterThanOrEqual(GRACE_MS);
      expect(await statuses("")).toEqual({ grpcJs: Status.SERVING, connect: Status.SERVING });
      expect(await checkOverHttp1(READINESS_SERVICE)).toEqual({ status: "NOT_SERVING" });
      expect(await checkOverHttp1("")).toEqual({ status: "SERVING" });
      expect(await statuses("credentials.v1.CredentialService")).toEqual({ grpcJs: Status.SERVING, connect: Status.SERVING });

      await proxy.restore();
      await until("readiness is SERVING again on both ports", async () => {
        const s = await statuses(READINESS_SERVICE);
        return s.grpcJs === Status.SERVING && s.connect === Status.SERVING;
      });
      // The service works again: the key resolves.
      await until("the key resolves again", async () => {
        try {
          return (await credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider: Provider.OPENAI })).apiKey === apiKey;
        } catch {
          return false;
        }
      });

      await until("readiness watchers heard it come back", () => watchers.slice(0, 2).every((w) => w.seen.length === 3));
      for (const w of watchers) await w.stop();
      expect(watchers[0].seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
      expect(watchers[1].seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
      // Liveness watchers heard nothing but SERVING.
      expect(watchers[2].seen).toEqual([Status.SERVING]);
      expect(watchers[3].seen).toEqual([Status.SERVING]);
    },
    60_000,
  );

  it("logs the outage and the recovery, naming readiness", () => {
    const messages = t.logs.map((line) => (JSON.parse(line) as { msg?: string }).msg ?? "");
    expect(messages).toContain("the database is unreachable past the outage grace: readiness NOT_SERVING");
    expect(messages).toContain("the database answers again: readiness SERVING");
  });

  it("is NOT_SERVING at shutdown, as liveness is", async () => {
    const health = t.service.health;
    expect(health.status(READINESS_SERVICE)).toBe(Status.SERVING);
    health.setNotServing();
    expect(health.status(READINESS_SERVICE)).toBe(Status.NOT_SERVING);
    expect(health.status("")).toBe(Status.NOT_SERVING);
  });
});
