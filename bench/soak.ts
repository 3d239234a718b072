// `npm run soak -- --minutes N`: mixed load against two replicas for N minutes.
//
// 1. a fresh database (embedded PostgreSQL, or --database-url / SOAK_DATABASE_URL /
//    BENCH_DATABASE_URL: a user that may create databases), migrated, dropped at the end;
// 2. two service replicas (separate processes on that database);
// 3. data seeded through the service's own gRPC API with the admin token;
// 4. ResolveKey load (grpc-js, N calls in flight per replica) with every answer
//    judged against a model of what it must be, plus an administrator loop
//    changing the mutable organisations at a steady rate, alternating replicas;
// 5. VmRSS of both replicas sampled every few seconds; "start" after the warm-up,
//    "end" the last sample;
// 6. a final check of every pair on both replicas, a markdown table, and
//    bench/results/soak-latest.{json,md}.
//
// Exit code 0 when there were no errors and (runs of 5 minutes or more) each
// replica's RSS grew less than 10% after the warm-up; 1 otherwise; 2 for bad options.
// No provider key is ever printed or written: keys live in this process's memory only.
import os from "node:os";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type * as grpc from "@grpc/grpc-js";
import { generateMasterKey } from "../service/src/keyring/keyring.js";
import { generateToken } from "../service/src/auth/tokens.js";
import { keyHint } from "../service/src/credentials/validation.js";
import { bearer, call } from "./clients.js";
import { openBenchDatabase } from "./database.js";
import { cleanup, installExitHandlers, isInterrupted, memoryMiB, sleep } from "./processes.js";
import { replicaClients, toOutcome, type ReplicaClients, type ResolveResponse } from "./soak-grpc.js";
import { ResolveLoad, targetsOf } from "./soak-load.js";
import { dataSet, ENV_PROVIDERS, ENV_VARIABLE, ErrorTally, fakeKey, PROVIDER_ENUM, PROVIDERS, redact, type Pair, type Provider } from "./soak-model.js";
import { Mutator } from "./soak-mutations.js";
import { startReplica, type Replica } from "./soak-replicas.js";
import { renderMarkdown, writeResults, type ReplicaResult, type SoakResults } from "./soak-report.js";
import { pairKey, pool, seed } from "./soak-seed.js";

const MEMORY_LIMIT_PCT = 10;
/** Runs at least this long are judged on memory growth. */
const MEMORY_JUDGED_FROM_SECONDS = 300;
const DEFAULT_RESULTS = "bench/results/soak-latest.json";

// ---------------------------------------------------------------- options

const USAGE = `usage: npm run soak -- [--minutes N | --seconds N] [options]

  --minutes N            how long to run the load (default 10)
  --seconds N            a short run instead (tests); results are written only with --json
  --database-url URL     a PostgreSQL server whose user may create databases (default: env
                         SOAK_DATABASE_URL or BENCH_DATABASE_URL, else an embedded PostgreSQL);
                         a fresh database is created there and dropped at the end
  --json PATH            write the results to PATH (and the markdown beside it, .md)
                         (default for --minutes runs: ${DEFAULT_RESULTS})
  --in-flight N          ResolveKey calls in flight per replica (default 16)
  --mutations-per-sec N  administrator changes per second (default 20)
  --organizations N      organisations to seed, a fifth of them mutable (default 200)
  --stale-grace-ms N     how long after a change an answer from before it is tolerated (default 5000)
  -h, --help             this text`;

class UsageError extends Error {}

interface Options {
  durationSeconds: number;
  short: boolean;
  databaseUrl?: string;
  json?: string;
  inFlight: number;
  mutationsPerSec: number;
  organizations: number;
  staleGraceMs: number;
}

function parseOptions(argv: string[]): Options | "help" {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "-h" || arg === "--help") return "help";
    if (!arg.startsWith("--")) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (!["minutes", "seconds", "database-url", "json", "in-flight", "mutations-per-sec", "organizations", "stale-grace-ms"].includes(name)) {
      throw new UsageError(`unknown option --${name}`);
    }
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined || value === "" || (eq === -1 && value.startsWith("--"))) throw new UsageError(`--${name} needs a value`);
    if (values.has(name)) throw new UsageError(`--${name} given twice`);
    values.set(name, value);
  }
  const number = (name: string, fallback: number, { min, integer }: { min: number; integer: boolean }): number => {
    const text = values.get(name);
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min) {
      throw new UsageError(`--${name} must be ${integer ? "an integer" : "a number"} of at least ${min}, not "${text}"`);
    }
    return n;
  };
  if (values.has("minutes") && values.has("seconds")) throw new UsageError("give --minutes or --seconds, not both");
  const short = values.has("seconds");
  const durationSeconds = short ? number("seconds", 0, { min: 10, integer: true }) : Math.round(number("minutes", 10, { min: 0.5, integer: false }) * 60);
  const databaseUrl = values.get("database-url") ?? (process.env.SOAK_DATABASE_URL || process.env.BENCH_DATABASE_URL || undefined);
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) throw new UsageError("--database-url must be a postgres:// or postgresql:// URL");
  return {
    durationSeconds,
    short,
    databaseUrl,
    json: values.get("json"),
    inFlight: number("in-flight", 16, { min: 1, integer: true }),
    mutationsPerSec: number("mutations-per-sec", 20, { min: 0, integer: false }),
    organizations: number("organizations", 200, { min: 5, integer: true }),
    staleGraceMs: number("stale-grace-ms", 5_000, { min: 0, integer: true }),
  };
}

// ---------------------------------------------------------------- helpers

const t0 = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`);

function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? os.cpus()[0]?.model ?? "unknown";
  } catch {
    return os.cpus()[0]?.model ?? "unknown";
  }
}

function resolveOnce(client: ReplicaClients, request: object, metadata: grpc.Metadata) {
  return new Promise<ReturnType<typeof toOutcome>>((resolve) => {
    client.credentials.ResolveKey(request, metadata, { deadline: Date.now() + 10_000 }, (error, response) =>
      resolve(toOutcome(error, response as ResolveResponse | undefined)),
    );
  });
}

/** After the load: every pair on both replicas, and every organisation's listing, against the model (no tolerance). */
async function finalCheck(
  replicas: Array<{ name: string; clients: ReplicaClients }>,
  pairs: Map<string, Pair>,
  teamsOf: (organizationId: string) => string[],
  resolver: grpc.Metadata,
  admin: grpc.Metadata,
  errors: ErrorTally,
): Promise<{ resolves: number; listedOrganizations: number; mismatches: number }> {
  let resolves = 0;
  let mismatches = 0;
  const jobs = replicas.flatMap((replica) =>
    [...pairs.values()].flatMap((pair) =>
      [{ organization_id: pair.organizationId }, ...teamsOf(pair.organizationId).map((team_id) => ({ team_id }))].map((scope) => ({ replica, pair, scope })),
    ),
  );
  await pool(jobs, 16, async ({ replica, pair, scope }) => {
    resolves++;
    const outcome = await resolveOnce(replica.clients, { ...scope, provider: PROVIDER_ENUM[pair.provider] }, resolver);
    const now = performance.now();
    const verdict = pair.judge(outcome, now, now, 0);
    if (!verdict.ok) {
      mismatches++;
      errors.record(`final: ${verdict.kind}`, `${JSON.stringify(scope)}/${pair.provider} on ${replica.name}: ${verdict.detail}`);
    }
  });
  const organizations = [...new Set([...pairs.values()].map((p) => p.organizationId))];
  const providerOf = Object.fromEntries(PROVIDERS.map((p) => [PROVIDER_ENUM[p], p])) as Record<string, Provider>;
  await pool(organizations, 8, async (organizationId, i) => {
    const replica = replicas[i % replicas.length];
    const listed = await call<{ credentials: Array<Record<string, unknown>> }>(
      replica.clients.credentials,
      "ListCredentials",
      { organization_id: organizationId, page_size: 200 },
      admin,
    );
    const mismatch = (detail: string) => {
      mismatches++;
      errors.record("final: LISTING_MISMATCH", `organisation ${organizationId} on ${replica.name}: ${detail}`);
    };
    const seen = new Set<string>();
    for (const row of listed.credentials) {
      const provider = providerOf[String(row.provider)];
      const pair = provider ? pairs.get(pairKey(organizationId, provider)) : undefined;
      const cred = pair?.creds.find((c) => c.id === row.credential_id);
      if (!pair || !cred) {
        mismatch(`lists credential ${String(row.credential_id)} the model does not know`);
        continue;
      }
      seen.add(cred.id);
      const apiBase = (row.api_base as string | undefined) || null;
      if (
        row.is_active !== cred.active ||
        row.version !== cred.version ||
        apiBase !== cred.apiBase ||
        row.credential_name !== cred.name ||
        row.key_hint !== keyHint(cred.key, pair.provider)
      ) {
        mismatch(
          `credential ${cred.id}: listed active=${String(row.is_active)} version=${String(row.version)} api_base=${apiBase ? "set" : "unset"} name=${String(row.credential_name)}, ` +
            `model active=${cred.active} version=${cred.version} api_base=${cred.apiBase ? "set" : "unset"} name=${cred.name}${row.key_hint !== keyHint(cred.key, pair.provider) ? " (key hint differs)" : ""}`,
        );
      }
    }
    for (const provider of PROVIDERS) {
      for (const cred of pairs.get(pairKey(organizationId, provider))?.creds ?? []) {
        if (!seen.has(cred.id)) mismatch(`credential ${cred.id} (${provider}) missing from the listing`);
      }
    }
  });
  return { resolves, listedOrganizations: organizations.length, mismatches };
}

// ---------------------------------------------------------------- main

async function main(options: Options): Promise<number> {
  installExitHandlers();
  const startedAt = new Date();
  const warmupSeconds = Math.min(Math.max(10, Math.round(options.durationSeconds * 0.1)), 60, Math.floor(options.durationSeconds / 2));
  const sampleEverySeconds = options.durationSeconds < 120 ? 2 : 5;
  const progressEverySeconds = options.durationSeconds < 120 ? 5 : 30;
  const memoryJudged = options.durationSeconds >= MEMORY_JUDGED_FROM_SECONDS;
  const loadAverageAtStart = os.loadavg();
  log(
    `provider-credentials soak: ${options.durationSeconds} s of load (warm-up ${warmupSeconds} s), ${options.inFlight} ResolveKey calls in flight per replica, ` +
      `${options.mutationsPerSec} administrator changes/s; ${os.availableParallelism()} cores, Node.js ${process.version}`,
  );

  // 1. The database.
  if (options.databaseUrl) process.env.BENCH_DATABASE_URL = options.databaseUrl;
  else delete process.env.BENCH_DATABASE_URL;
  const database = await openBenchDatabase(log);
  log(`database ready (${database.version}, ${database.embedded ? "embedded" : "external server"})`);

  // 2. Two replicas.
  const masterKey = generateMasterKey();
  const adminToken = generateToken();
  const envKeys: Partial<Record<Provider, string>> = {};
  const envVariables: Record<string, string> = {};
  for (const provider of ENV_PROVIDERS) {
    envKeys[provider] = fakeKey(provider);
    envVariables[ENV_VARIABLE[provider]] = envKeys[provider]!;
  }
  const replicaOptions = { databaseUrl: database.url, masterKey, adminToken, envKeys: envVariables };
  // Both at once: the database is already migrated, so neither applies anything.
  const replicas: Replica[] = await Promise.all([startReplica("replica-A", replicaOptions), startReplica("replica-B", replicaOptions)]);
  for (const r of replicas) log(`${r.name} ready in ${(r.startMs / 1000).toFixed(1)} s (pid ${r.process.pid}, gRPC on ${r.target})`);
  const clients = replicas.map((r) => ({ name: r.name, clients: replicaClients(r.target) }));
  const admin = bearer(adminToken);

  // 3. Seed through the API.
  const orgs = dataSet(options.organizations);
  const pairs = new Map<string, Pair>();
  const seeded = await seed({ replicas: clients.map((c) => c.clients), admin, orgs, pairs, envKeys, log });
  log(
    `seeded through the API in ${seeded.summary.seconds.toFixed(1)} s: ${seeded.summary.organizations} organisations (${seeded.summary.mutableOrganizations} mutable), ` +
      `${seeded.summary.teams} teams, ${seeded.summary.credentials} credentials (${seeded.summary.inactiveCredentials} inactive)`,
  );
  const resolver = bearer(seeded.resolveToken);
  const teams = new Map(orgs.map((o) => [o.id, o.teams]));
  const teamsOf = (id: string) => teams.get(id) ?? [];

  // 4. Load, changes and memory samples.
  const errors = new ErrorTally();
  const targets = targetsOf(pairs.values(), teamsOf);
  const loads = clients.map((c, i) => new ResolveLoad(c.name, c.clients.resolve, resolver, targets, options.inFlight, errors, options.staleGraceMs, 1_000 + i));
  const mutator = new Mutator({
    replicas: clients,
    admin,
    resolver,
    pairs,
    mutableOrgs: orgs.filter((o) => !o.fixed),
    envKeys,
    staleGraceMs: options.staleGraceMs,
    errors,
    ratePerSec: options.mutationsPerSec,
    maxInFlight: 4,
    seed: 7,
  });
  const samples: SoakResults["memorySamples"] = [];
  const loadStart = performance.now();
  const elapsed = () => (performance.now() - loadStart) / 1000;
  const sample = () => {
    const rss = replicas.map((r) => memoryMiB(r.process.pid)?.rss ?? NaN);
    samples.push({
      t: Math.round(elapsed() * 10) / 10,
      rssMiB: rss.map((x) => Math.round(x * 10) / 10),
      driverMiB: Math.round((process.memoryUsage().rss / 1024 ** 2) * 10) / 10,
    });
  };
  let replicaExit: string | undefined;
  let stopping = false;
  let endLoad: () => void = () => undefined;
  const loadEnded = new Promise<void>((resolve) => (endLoad = resolve));
  for (const r of replicas) {
    void r.process.exited.then((exit) => {
      if (replicaExit !== undefined || stopping) return;
      replicaExit = `${r.name} exited during the run (code ${exit.code}, signal ${exit.signal})`;
      errors.record("REPLICA_EXIT", replicaExit);
      log(`${replicaExit}: ending the load`);
      endLoad();
    });
  }

  sample();
  for (const load of loads) load.start();
  mutator.start();
  const sampler = setInterval(sample, sampleEverySeconds * 1000);
  let lastCalls = 0;
  let lastAt = loadStart;
  const progress = setInterval(() => {
    const now = performance.now();
    const calls = loads.reduce((s, l) => s + l.calls, 0);
    const rate = (calls - lastCalls) / ((now - lastAt) / 1000);
    lastCalls = calls;
    lastAt = now;
    const rss = samples[samples.length - 1]?.rssMiB ?? [];
    log(
      `${elapsed().toFixed(0).padStart(5)} s${elapsed() < warmupSeconds ? " (warm-up)" : ""}: ${calls.toLocaleString("en")} calls (${Math.round(rate).toLocaleString("en")}/s), ` +
        `${mutator.mutations.toLocaleString("en")} changes, errors ${errors.total}; RSS ${replicas.map((r, i) => `${r.name.replace("replica-", "")} ${rss[i]?.toFixed(1) ?? "?"} MiB`).join(", ")}`,
    );
  }, progressEverySeconds * 1000);
  const warmupTimer = setTimeout(
    () => log(`warm-up over: RSS start ${samples[samples.length - 1]?.rssMiB.map((x) => `${x.toFixed(1)} MiB`).join(", ")}`),
    warmupSeconds * 1000 + 100,
  );

  await Promise.race([sleep(options.durationSeconds * 1000), loadEnded]);
  stopping = true;
  clearInterval(progress);
  clearTimeout(warmupTimer);
  clearInterval(sampler);
  sample(); // "end": the last sample, at the end of the load window
  const loadSeconds = elapsed();
  const hwm = replicas.map((r) => memoryMiB(r.process.pid)?.peak ?? NaN);
  await mutator.stop();
  await Promise.all(loads.map((l) => l.stop()));
  log(`load stopped after ${loadSeconds.toFixed(1)} s; final check of every pair on both replicas`);

  // 5. Final check (after invalidations have had time to arrive).
  let final = { resolves: 0, listedOrganizations: 0, mismatches: 0 };
  if (!replicaExit) {
    await sleep(1_000);
    final = await finalCheck(clients, pairs, teamsOf, resolver, admin, errors);
    log(`final check: ${final.resolves} resolves, ${final.listedOrganizations} listings, ${final.mismatches} mismatches`);
  }
  for (const c of clients) c.clients.close();

  // 6. Stop the replicas as an orchestrator would (SIGTERM: drain, exit 0).
  const exits = await Promise.all(
    replicas.map(async (r) => {
      const t = performance.now();
      await r.process.stop(15_000);
      const exit = { code: r.process.exit?.code ?? null, signal: r.process.exit?.signal ?? null, ms: Math.round(performance.now() - t) };
      if (!replicaExit && exit.code !== 0) errors.record("SHUTDOWN", `${r.name} exited with code ${exit.code} (signal ${exit.signal}) after SIGTERM`);
      return exit;
    }),
  );

  // 7. Figures.
  const afterWarmup = samples.filter((s) => s.t >= warmupSeconds - 0.05);
  const startSample = afterWarmup[0] ?? samples[0];
  const endSample = samples[samples.length - 1];
  const replicaResults: ReplicaResult[] = replicas.map((r, i) => {
    const start = startSample.rssMiB[i];
    const end = endSample.rssMiB[i];
    return {
      name: r.name,
      calls: loads[i].calls,
      callsPerSec: loads[i].calls / loadSeconds,
      adminCalls: mutator.perReplica[i],
      p50Ms: loads[i].latency.percentile(0.5) / 1000,
      p99Ms: loads[i].latency.percentile(0.99) / 1000,
      maxMs: loads[i].latency.max / 1000,
      rssStartMiB: start,
      rssEndMiB: end,
      rssPeakMiB: Math.max(...afterWarmup.map((s) => s.rssMiB[i])),
      hwmMiB: hwm[i],
      growthPct: ((end - start) / start) * 100,
      startSeconds: r.startMs / 1000,
      exit: exits[i],
      logIssues: r.logIssues,
      errorLogLines: r.errorLines,
    };
  });
  const calls = loads.reduce((s, l) => s + l.calls, 0);
  const outcomes = { organization: 0, environment: 0, failedPrecondition: 0, staleWithinGrace: 0, fixedPairs: 0, mutablePairs: 0 };
  for (const l of loads) for (const k of Object.keys(outcomes) as Array<keyof typeof outcomes>) outcomes[k] += l.outcomes[k];
  const failures: string[] = [];
  if (errors.total > 0)
    failures.push(
      `${errors.total} errors (${Object.entries(errors.byKind)
        .map(([k, n]) => `${k} ${n}`)
        .join(", ")})`,
    );
  if (calls === 0) failures.push("no ResolveKey call completed");
  for (const r of replicaResults) {
    if (r.calls === 0) failures.push(`${r.name} served no ResolveKey call`);
    if (memoryJudged && !(r.growthPct < MEMORY_LIMIT_PCT))
      failures.push(`${r.name}: RSS grew ${r.growthPct.toFixed(1)}% after the warm-up (limit ${MEMORY_LIMIT_PCT}%)`);
  }
  const partial: Omit<SoakResults, "markdown"> = {
    schema: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    status: failures.length === 0 ? "PASS" : "FAIL",
    failures,
    settings: {
      durationSeconds: options.durationSeconds,
      warmupSeconds,
      short: options.short,
      memoryJudged,
      memoryLimitPct: MEMORY_LIMIT_PCT,
      inFlightPerReplica: options.inFlight,
      mutationsPerSec: options.mutationsPerSec,
      staleGraceMs: options.staleGraceMs,
      sampleEverySeconds,
    },
    machine: {
      cpuModel: cpuModel(),
      cores: os.availableParallelism(),
      memoryGiB: os.totalmem() / 1024 ** 3,
      kernel: os.release(),
      node: process.version,
      postgres: database.version,
      database: database.embedded ? "embedded" : "external",
      loadAverageAtStart,
      loadAverageAtEnd: os.loadavg(),
    },
    seed: seeded.summary,
    totals: {
      loadSeconds,
      calls,
      callsPerSec: calls / loadSeconds,
      outcomes,
      mutations: mutator.mutations,
      mutationsPerSec: mutator.mutations / loadSeconds,
      mutationsByOp: mutator.byOp,
      expectedRefusals: mutator.expectedRefusals,
      checks: mutator.checks,
      skippedMutationTicks: mutator.skippedTicks,
      mutationP50Ms: mutator.latency.percentile(0.5) / 1000,
      mutationP99Ms: mutator.latency.percentile(0.99) / 1000,
      finalCheck: final,
      errors: errors.total,
      errorsByKind: errors.byKind,
      errorExamples: errors.examples,
    },
    replicas: replicaResults,
    driver: { rssStartMiB: startSample.driverMiB, rssEndMiB: endSample.driverMiB },
    memorySamples: samples,
  };
  const results: SoakResults = { ...partial, markdown: renderMarkdown(partial) };
  console.log("\n" + results.markdown + "\n");
  const jsonPath = options.json ?? (options.short ? undefined : DEFAULT_RESULTS);
  if (jsonPath) {
    const written = await writeResults(results, jsonPath);
    log(`wrote ${written.json} and ${written.markdown}`);
  } else {
    log("short run: results not written (pass --json PATH to keep them)");
  }
  log(`${results.status}${failures.length ? `: ${failures.join("; ")}` : ""}`);
  return results.status === "PASS" ? 0 : 1;
}

let parsed: Options | "help";
try {
  parsed = parseOptions(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  console.error(`soak: ${error.message}\n\n${USAGE}`);
  process.exit(2);
}
if (parsed === "help") {
  console.log(USAGE);
  process.exit(0);
}

main(parsed)
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  })
  .catch(async (error: unknown) => {
    if (isInterrupted()) return; // the signal handler is cleaning up and exits
    console.error(`\nsoak failed: ${redact(error instanceof Error ? (error.stack ?? error.message) : String(error))}`);
    await cleanup();
    process.exit(1);
  });
