// `npx tsx bench/client-typescript.ts [--quick]`: the TypeScript client's figures of issue 21, one run,
// ratios and counts (no pass/fail on timings; the targets are printed beside the figures).
//
// 1. Cache hit: one resolver, 1,000 (organisation, provider) answers in memory, resolved in a loop on
//    this process's core: resolutions/s, and p50/p99/max of single calls.
// 2. Revocation across replicas: an administrator deactivates a key through replica A; a client
//    connected to replica B resolves in a loop until it stops returning it. 100 trials (20 with
//    --quick), with replica B restarted (same ports) half-way; during the restart a key is deactivated
//    and the client's answers are checked against its staleness limit.
// 3. 50 clients resolving from memory against B, first with no changes, then with changes through A:
//    the resolutions the clients made, against the calls that reached the service.
//
// Both replicas run in this process (startService), on an embedded PostgreSQL or BENCH_DATABASE_URL.
import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CredentialService, OrganizationService, Provider, SelectionStrategy } from "@provider-credentials/wire/gen/credentials_pb";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { createKeyResolver, type KeyResolver } from "../clients/typescript/src/index.js";
import { startService, type RunningService } from "../service/src/server.js";
import { createLogger } from "../service/src/logger.js";
import { generateMasterKey } from "../service/src/keyring/keyring.js";
import { generateToken } from "../service/src/auth/tokens.js";
import { openBenchDatabase } from "./database.js";
import { cleanup, installExitHandlers } from "./processes.js";
import { percentile } from "./invalidation.js";

const quick = process.argv.includes("--quick");
const log = (line: string) => console.error(`[client bench] ${line}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

installExitHandlers();
const database = await openBenchDatabase(log);
const masterKey = generateMasterKey();
const adminToken = generateToken();
const logger = createLogger("warn");

const start = (port = 0, connectPort = 0) =>
  startService({
    databaseUrl: database.url,
    masterKey,
    serviceAdminToken: adminToken,
    env: {},
    host: "127.0.0.1",
    port,
    connectPort,
    logger,
    poolSize: 4,
    drainTimeoutMs: 1_000,
  });

const a = await start();
let b: RunningService = await start();
const adminTransport = createGrpcTransport({
  baseUrl: `http://127.0.0.1:${a.port}`,
  interceptors: [
    (next) => (req) => {
      req.header.set("authorization", `Bearer ${adminToken}`);
      return next(req);
    },
  ],
});
const credentials = createClient(CredentialService, adminTransport);
const organizations = createClient(OrganizationService, adminTransport);
const { token } = await createClient(AdminService, adminTransport).createApiToken({ name: "bench-client", scope: "resolve" });

const ORGANIZATIONS = 250;
const PROVIDERS = ["openai", "anthropic", "gemini", "fireworks"] as const;
const KEYS: Record<(typeof PROVIDERS)[number], () => string> = {
  openai: () => `sk-proj-bench${Math.random().toString(36).slice(2)}${"0".repeat(20)}`,
  anthropic: () => `sk-ant-api03-bench${Math.random().toString(36).slice(2)}${"0".repeat(20)}`,
  gemini: () => `AIzaBench${Math.random().toString(36).slice(2)}${"0".repeat(20)}`,
  fireworks: () => `fw_bench${Math.random().toString(36).slice(2)}${"0".repeat(20)}`,
};
log(`seeding ${ORGANIZATIONS} organisations x ${PROVIDERS.length} providers`);
/** Per organisation: the OpenAI credentials, older then newer (the newer one is served). */
const pairs: Array<{ organizationId: string; older: string; newer: string }> = [];
for (let i = 0; i < ORGANIZATIONS; i++) {
  const organizationId = `bench-${i}`;
  await organizations.createOrganization({ organizationId, name: organizationId });
  const ids: string[] = [];
  for (const p of PROVIDERS) {
    const { credential } = await credentials.createCredential({
      organizationId,
      provider: Provider[p.toUpperCase() as "OPENAI"],
      credentialName: `${p}-1`,
      apiKey: KEYS[p](),
    });
    if (p === "openai") ids.push(credential!.credentialId);
  }
  const { credential } = await credentials.createCredential({ organizationId, provider: Provider.OPENAI, credentialName: "openai-2", apiKey: KEYS.openai() });
  pairs.push({ organizationId, older: ids[0], newer: credential!.credentialId });
}

const resolverOn = (service: RunningService, maxStalenessMs = 1_000): KeyResolver =>
  createKeyResolver({
    url: `http://127.0.0.1:${service.port}`,
    token,
    cache: { maxEntries: 10_000, maxStalenessMs },
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
  });

const lines: string[] = [];
const report = (line: string) => {
  lines.push(line);
  log(line);
};

// 1. Cache hit -------------------------------------------------------------------------------------
{
  const r = resolverOn(b);
  await r.ready();
  for (const { organizationId } of pairs) for (const p of PROVIDERS) await r.resolve({ organizationId }, p);
  const scopes = pairs.map(({ organizationId }) => ({ organizationId }));
  const calls = quick ? 1_000_000 : 5_000_000;
  const before = r.stats();
  const started = performance.now();
  for (let i = 0; i < calls; i++) await r.resolve(scopes[i % ORGANIZATIONS], PROVIDERS[i & 3]);
  const seconds = (performance.now() - started) / 1000;
  const after = r.stats();
  const single: number[] = [];
  for (let i = 0; i < 200_000; i++) {
    const t0 = process.hrtime.bigint();
    await r.resolve(scopes[i % ORGANIZATIONS], PROVIDERS[i & 3]);
    single.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  report(
    `cache hit: ${Math.round(calls / seconds).toLocaleString("en")} resolutions/s on one core (target >= 1,000,000); ` +
      `single call p50 ${percentile(single, 0.5).toFixed(2)} µs, p99 ${percentile(single, 0.99).toFixed(2)} µs (target <= 5), max ${percentile(single, 1).toFixed(1)} µs; ` +
      `hits ${after.hits - before.hits} of ${calls}`,
  );
  r.close();
}

// 2. Revocation A -> B -----------------------------------------------------------------------------
{
  const trials = quick ? 20 : 100;
  const maxStalenessMs = 1_000;
  const r = resolverOn(b, maxStalenessMs);
  await r.ready();
  const latencies: number[] = [];
  let converged = 0;
  let staleAfterLimit = 0;
  let restartNote = "";
  const trial = async (f: (typeof pairs)[number]) => {
    const scope = { organizationId: f.organizationId };
    // Served from memory: the newer key.
    for (let i = 0; i < 200 && (await r.resolve(scope, "openai").catch(() => undefined))?.credentialId !== f.newer; i++) await sleep(10);
    await credentials.deactivateCredential({ credentialId: f.newer });
    const since = performance.now();
    while (performance.now() - since < 5_000) {
      const answer = await r.resolve(scope, "openai").catch(() => undefined);
      if (answer !== undefined && answer.credentialId !== f.newer) {
        latencies.push(performance.now() - since);
        converged++;
        break;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await credentials.activateCredential({ credentialId: f.newer });
  };
  for (let i = 0; i < trials; i++) {
    if (i === Math.floor(trials / 2)) {
      // Restart B on the same ports; a key deactivated meanwhile must not be served past the staleness limit.
      const f = pairs[pairs.length - 1];
      const scope = { organizationId: f.organizationId };
      await r.resolve(scope, "openai");
      const { port, connectPort } = b;
      const broke = performance.now();
      const closing = b.close();
      await credentials.deactivateCredential({ credentialId: f.newer });
      let served = 0;
      const poll = (async () => {
        while (performance.now() - broke < 3_000) {
          const answer = await r.resolve(scope, "openai").catch(() => undefined);
          if (answer?.credentialId === f.newer) {
            served++;
            if (performance.now() - broke > maxStalenessMs) staleAfterLimit++;
          }
          await sleep(1);
        }
      })();
      await closing;
      b = await start(port, connectPort);
      await poll;
      await r.ready();
      await credentials.activateCredential({ credentialId: f.newer });
      restartNote = `B restarted after trial ${i}: the deactivated key was served ${served} times within ${maxStalenessMs} ms of the break, ${staleAfterLimit} times after it`;
    }
    await trial(pairs[i % (pairs.length - 1)]);
  }
  report(
    `revocation A -> B: ${converged} of ${trials} trials converged; p50 ${percentile(latencies, 0.5).toFixed(1)} ms, ` +
      `p99 ${percentile(latencies, 0.99).toFixed(1)} ms (target <= 100), max ${percentile(latencies, 1).toFixed(1)} ms (target <= 1000)`,
  );
  report(restartNote);
  r.close();
}

// 3. 50 clients ------------------------------------------------------------------------------------
{
  const clients = Array.from({ length: 50 }, () => resolverOn(b));
  await Promise.all(clients.map((c) => c.ready()));
  // Warm: every client holds every answer.
  await Promise.all(
    clients.map(async (c) => {
      for (const { organizationId } of pairs) for (const p of PROVIDERS) await c.resolve({ organizationId }, p);
    }),
  );
  const phase = async (seconds: number, changesPerSecond: number) => {
    const before = clients.map((c) => c.stats());
    let changes = 0;
    const end = performance.now() + seconds * 1000;
    const changer = (async () => {
      if (changesPerSecond === 0) return;
      while (performance.now() < end) {
        const f = pairs[changes % pairs.length];
        await credentials.setSelectionStrategy({
          organizationId: f.organizationId,
          provider: Provider.GEMINI,
          strategy: changes % 2 === 0 ? SelectionStrategy.ROUND_ROBIN : SelectionStrategy.NEWEST,
        });
        changes++;
        await sleep(1000 / changesPerSecond);
      }
    })();
    await Promise.all(
      clients.map(async (c, k) => {
        let i = k;
        while (performance.now() < end) {
          for (let j = 0; j < 100; j++, i++) await c.resolve({ organizationId: pairs[i % ORGANIZATIONS].organizationId }, PROVIDERS[i & 3]);
          await new Promise((resolve) => setImmediate(resolve));
        }
      }),
    );
    await changer;
    const after = clients.map((c) => c.stats());
    const resolutions = after.reduce((sum, s, k) => sum + s.hits + s.misses - before[k].hits - before[k].misses, 0);
    const toService = after.reduce((sum, s, k) => sum + s.misses - before[k].misses, 0);
    report(
      `50 clients, ${changes} changes in ${seconds} s: ${resolutions.toLocaleString("en")} resolutions, ${toService.toLocaleString("en")} reached the service ` +
        `(${((toService / Math.max(1, resolutions)) * 100).toFixed(3)}%)`,
    );
  };
  await phase(quick ? 2 : 5, 0);
  await phase(quick ? 2 : 5, 20);
  for (const c of clients) c.close();
}

console.log(["", "## TypeScript client (issue 21)", "", ...lines.map((l) => `- ${l}`), ""].join("\n"));
await b.close();
await a.close();
await cleanup();
process.exit(0);
