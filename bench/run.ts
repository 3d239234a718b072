// `npm run bench [-- --quick]`: the ResolveKey benchmark of issue 5.
//
// 1. a fresh database (embedded PostgreSQL, or BENCH_DATABASE_URL), migrated and seeded;
// 2. floors: Health/Check on a bare @grpc/grpc-js server and on our service (after a few admin writes through it,
//    as a production replica has served: see adminWrites());
// 3. ResolveKey: (b) hot set, (c) uniform over everything, (d) cache disabled, and a Connect-protocol client;
//    each case in turn at each in-flight level (the "sequential" cases, minutes apart);
// 4. side by side: at the top in-flight level, rounds of the four cases the ratio targets compare (bare
//    Check, our Check, (b), (c)) back to back in a rotating order (full run: 8 rounds of 1 s + 3 s per case;
//    --quick: 2 rounds of 0.3 s + 1 s). The machine is shared and its speed drifts by up to 2x within
//    minutes, so a ratio of two sequential cases mostly measures the drift; the targets (b) ÷ floor,
//    (b) ÷ Check, (b) p99 ÷ floor p99 and (c) ÷ floor judge the medians of the rounds' ratios instead
//    ((d) runs on its own service process and stays sequential). The bare server idles meanwhile;
// 4b. server-bound: with a core each, one grpc-js client process cannot saturate the bare server (it costs more
//    CPU a call than the server does), so the panel above measures the client as much as the servers. Both servers
//    then go under one CPU quota (a cgroup, bench/cpu-quota.ts; BENCH_SERVER_QUOTA percent of a core, default 20,
//    "off" to skip), the bare floor is measured from one generator and from two (it must not rise), and the panel
//    runs again; the ratio targets judge this server-bound panel when it ran;
// 5. memory with 100,000 cached entries (read from the service's metrics), invalidation across two replicas, listing, keyring;
// 6. a markdown table against the targets, and bench/results/latest.json.
//
// Servers run pinned to core 0 and load generators to core 1 (taskset), each a separate process.
// A full run takes about 11-19 minutes on this 2-core machine (each panel about 130 s of it), --quick about two.
import os from "node:os";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CredentialService, KeySource, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { generateMasterKey } from "../service/src/keyring/keyring.js";
import { generateToken } from "../service/src/auth/tokens.js";
import { bearer, call, credentialClient, healthClient } from "./clients.js";
import { openBenchDatabase } from "./database.js";
import { createCpuQuota } from "./cpu-quota.js";
import { measureInvalidation } from "./invalidation.js";
import { grpcPages, measureListing, restPages, startPortal, type ListingResult } from "./listing.js";
import { fleetMarkdown, runFleet, type FleetResult } from "./fleet.js";
import type { LoadCommand, LoadResult } from "./load.js";
import { Histogram } from "./histogram.js";
import { cpuBetween, processCpuMs, snapshot, type Snapshot } from "./cpu.js";
import {
  cleanup,
  onCleanup,
  freePort,
  HAS_TASKSET,
  installExitHandlers,
  isInterrupted,
  isListening,
  memoryMiB,
  sleep,
  startProcess,
  startTsx,
  type Managed,
} from "./processes.js";
import {
  evaluateTargets,
  PANEL_CASES,
  panelRatios,
  renderMarkdown,
  summarizePanel,
  writeResults,
  type CaseGroup,
  type CaseResult,
  type ConnectCheck,
  type KeyringResult,
  type Machine,
  type MemoryResult,
  type PanelCaseName,
  type PanelPooled,
  type PanelRatioName,
  type PanelRound,
  type Results,
  type ServerBoundPanel,
  type SidePanel,
} from "./report.js";
import { seed, type SeedResult } from "./seed.js";
import { ensureServiceBuild, serviceEntry, serviceNodeArgs } from "../service/scripts/ensure-build.js";
import { fillBreakdown, fillPairs, hotPairs, MEMORY_TARGET_ENTRIES, type ResolveRequest, type Workload } from "./workload.js";

const SERVER_CORE = 0;
const GENERATOR_CORE = 1;

const quick = process.argv.includes("--quick");
// fillPairs: how many pairs of the fill sequence (workload.ts fillPairs(): 40,000 memory-organisation pairs, then the
// 120,000 pairs of allPairs() permuted) the cold fill resolves; all of them in a full run: 100,000 cache entries.
// panel*: the side-by-side rounds at the top in-flight level (see sidePanel()).
const settings = quick
  ? {
      warmupMs: 300,
      durationMs: 1_000,
      inFlight: [1, 16, 64],
      invalidationTrials: 100,
      listingRepetitions: 5,
      fillPairs: 3_000,
      settleSeconds: 2,
      keyringRoundMs: 300,
      keyringRounds: 3,
      retries: 0,
      panelRounds: 2,
      panelWarmupMs: 300,
      panelDurationMs: 1_000,
    }
  : {
      warmupMs: 2_000,
      durationMs: 10_000,
      inFlight: [1, 16, 64],
      invalidationTrials: 100,
      listingRepetitions: 20,
      fillPairs: fillPairs().length,
      settleSeconds: 10,
      keyringRoundMs: 2_000,
      keyringRounds: 3,
      retries: 2,
      panelRounds: 8,
      panelWarmupMs: 1_000,
      panelDurationMs: 3_000,
    };
// `--in-flight 64` (comma-separated): only these levels, e.g. to compare settings faster; the report marks the run.
// The side-by-side panel runs at the highest of them.
/** BENCH_SERVER_QUOTA: the servers' share of a core in the server-bound panel, in percent; "off" (or 0) skips that panel. */
const SERVER_QUOTA = (() => {
  const raw = (process.env.BENCH_SERVER_QUOTA ?? "20").trim();
  if (raw === "off" || raw === "0") return undefined;
  const percent = Number(raw);
  if (!(percent > 0 && percent <= 100)) throw new Error(`BENCH_SERVER_QUOTA must be a percentage of one core (1-100) or "off", not ${JSON.stringify(raw)}`);
  return percent;
})();
const inFlightArg = process.argv.indexOf("--in-flight");
if (inFlightArg > 0) {
  const levels = (process.argv[inFlightArg + 1] ?? "").split(",").map(Number);
  if (levels.length === 0 || levels.some((n) => !Number.isInteger(n) || n < 1))
    throw new Error("--in-flight takes positive integers, e.g. --in-flight 64 or --in-flight 1,64");
  settings.inFlight = levels;
}
const TOP = Math.max(...settings.inFlight);
/** A case during which other processes used more than this many cores is repeated (up to settings.retries times). */
const CONTENDED_CORES = 0.2;

const startedAt = new Date();
const t0 = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`);

// ---------------------------------------------------------------- machine

function describeMachine(postgres: string, embedded: boolean): Machine {
  const cpuinfo = (() => {
    try {
      return readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return "";
    }
  })();
  const version = (name: string) => {
    try {
      return (JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8")) as { version: string }).version;
    } catch {
      return "?";
    }
  };
  return {
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? "unknown",
    cores: os.availableParallelism?.() ?? os.cpus().length,
    memoryGiB: os.totalmem() / 1024 ** 3,
    kernel: os.release(),
    node: process.version,
    postgres,
    database: embedded ? "embedded" : "BENCH_DATABASE_URL",
    taskset: HAS_TASKSET,
    pinning: HAS_TASKSET
      ? `Servers (bare grpc-js, the service) pinned to core ${SERVER_CORE}, load generators to core ${GENERATOR_CORE} with taskset; PostgreSQL unpinned.`
      : "taskset not found: processes are not pinned.",
    loadAverageAtStart: os.loadavg(),
    packages: { "@grpc/grpc-js": version("@grpc/grpc-js"), "@connectrpc/connect-node": version("@connectrpc/connect-node") },
    serviceNodeFlags: SERVICE_FLAGS,
  };
}

// ---------------------------------------------------------------- service processes

interface Service {
  name: string;
  process: Managed;
  grpcTarget: string;
  grpcPort: number;
  /** Where Connect-protocol clients go: CONNECT_PORT when the service listens there, else GRPC_PORT. */
  connectTarget: string;
  separateConnectPort: boolean;
  /** METRICS_PORT, when the service was started with its Prometheus metrics on. */
  metricsPort?: number;
}

const ENV_FALLBACKS = {
  OPENAI_API_KEY: "sk-bench-environment-fallback-openai",
  ANTHROPIC_API_KEY: "sk-ant-bench-environment-fallback",
  GEMINI_API_KEY: "AIza-bench-environment-fallback",
  FIREWORKS_API_KEY: "fw_bench-environment-fallback",
};

/** The parent's environment minus anything that would steer the service elsewhere. */
function serviceBaseEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of Object.keys(env)) {
    if (
      /^(DATABASE_URL|MASTER_KEY|SERVICE_ADMIN_TOKEN|ADMIN_EMAIL|ADMIN_PASSWORD|DATA_DIR|EMBEDDED_PG_PORT|GRPC_PORT|CONNECT_PORT|METRICS_PORT|HOST|LOG_LEVEL|RESOLVE_CACHE_.*|DB_POOL_SIZE|GOOGLE_API_KEY|.*_API_KEY)$/.test(
        name,
      )
    ) {
      delete env[name];
    }
  }
  return env;
}

/**
 * What the service processes run: as npm start runs it (the compiled service in
 * dist/, built here when missing or stale, with source maps), unless
 * BENCH_SERVICE_ENTRY names another compiled entry or is "tsx" (the sources through the tsx loader).
 */
const SERVICE_ENTRY = process.env.BENCH_SERVICE_ENTRY === "tsx" ? undefined : process.env.BENCH_SERVICE_ENTRY || serviceEntry;
/** Extra node flags for the service processes (e.g. "--max-semi-space-size=32"), to compare settings. */
const SERVICE_NODE_ARGS = (process.env.BENCH_SERVICE_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
/** As npm start runs a service with the cores it gets: one when pinned (taskset), else this machine's. */
const SERVICE_FLAGS = [...serviceNodeArgs(HAS_TASKSET ? 1 : undefined), ...SERVICE_NODE_ARGS];

const serviceLogIssues: string[] = [];
/** Which service code each service process ran: service/ and migrations/ change under our feet while others work. */
const serviceStarts: Array<{ service: string; sourceHash: string; separateConnectPort: boolean }> = [];

function sourceHash(): string {
  const hash = createHash("sha256");
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (entry.name.endsWith(".ts")) hash.update(file).update(readFileSync(file));
    }
  };
  walk("service/src");
  walk("migrations");
  return hash.digest("hex").slice(0, 12);
}

async function startService(
  name: string,
  options: { databaseUrl: string; masterKey: string; adminToken: string; cacheMaxEntries: number; core: number; metrics?: boolean },
): Promise<Service> {
  const grpcPort = await freePort();
  const connectPort = await freePort();
  const metricsPort = options.metrics ? await freePort() : undefined;
  const env: NodeJS.ProcessEnv = {
    ...serviceBaseEnv(),
    ...ENV_FALLBACKS,
    DATABASE_URL: options.databaseUrl,
    MASTER_KEY: options.masterKey,
    SERVICE_ADMIN_TOKEN: options.adminToken,
    HOST: "127.0.0.1",
    // The fake providers listen on loopback.
    API_BASE_ALLOW: "127.0.0.1",
    GRPC_PORT: String(grpcPort),
    CONNECT_PORT: String(connectPort),
    RESOLVE_CACHE_MAX_ENTRIES: String(options.cacheMaxEntries),
    LOG_LEVEL: process.env.BENCH_SERVICE_LOG_LEVEL || "warn",
    ...(metricsPort === undefined ? {} : { METRICS_PORT: String(metricsPort) }),
  };
  const started = performance.now();
  const source = sourceHash();
  // BENCH_SERVICE_ENTRY: a precompiled entry (e.g. dist/service/src/main.js) run with plain node instead of tsx.
  const proc = SERVICE_ENTRY
    ? startProcess(name, process.execPath, [...SERVICE_FLAGS, SERVICE_ENTRY], { env, core: options.core })
    : startProcess(name, process.execPath, [...SERVICE_FLAGS, "--import", "tsx", "service/src/main.ts"], { env, core: options.core });
  proc.onLine((line) => {
    if (serviceLogIssues.length < 20 && /"level":(40|50|60)|Error|error/.test(line)) serviceLogIssues.push(`${name}: ${line}`);
  });
  // Ready when it says so, or (LOG_LEVEL=warn hides the info line) when Health/Check answers SERVING.
  const readyLine = proc.waitForLine((line) => line.includes("credentials service ready"), 90_000, "ready line");
  readyLine.catch(() => undefined);
  await Promise.race([readyLine, waitServing(`127.0.0.1:${grpcPort}`, proc)]);
  const mentionsConnectPort = proc.history.some((line) => line.includes(`:${connectPort}`));
  const separateConnectPort = mentionsConnectPort || (await isListening(connectPort));
  const service: Service = {
    name,
    process: proc,
    grpcPort,
    grpcTarget: `127.0.0.1:${grpcPort}`,
    connectTarget: `127.0.0.1:${separateConnectPort ? connectPort : grpcPort}`,
    separateConnectPort,
    metricsPort,
  };
  serviceStarts.push({ service: name, sourceHash: source, separateConnectPort });
  log(
    `${name} (source ${source}) ready in ${((performance.now() - started) / 1000).toFixed(1)} s (pid ${proc.pid}): gRPC on ${service.grpcTarget}, ` +
      `Connect on ${service.connectTarget}${separateConnectPort ? " (CONNECT_PORT)" : " (same port)"}${metricsPort === undefined ? "" : `, metrics on 127.0.0.1:${metricsPort}`}; ` +
      `cache ${options.cacheMaxEntries ? `${options.cacheMaxEntries} entries` : "disabled"}`,
  );
  return service;
}

async function waitServing(target: string, proc: Managed, timeoutMs = 90_000): Promise<void> {
  const client = healthClient(target);
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      if (!proc.running) throw new Error(`${proc.name} exited (code ${proc.exit?.code}) during start-up${proc.tail()}`);
      try {
        const response = await call<{ status: string }>(client, "Check", { service: "" }, undefined, 1_000);
        if (response.status === "SERVING") return;
      } catch {
        // not listening yet
      }
      await sleep(150);
    }
    throw new Error(`${proc.name} did not answer Health/Check within ${timeoutMs} ms${proc.tail()}`);
  } finally {
    client.close();
  }
}

const serviceExits: Array<{ service: string; code: number | null; signal: string | null; ms: number }> = [];

/** SIGTERM, as an orchestrator would; the service should drain and exit 0. */
async function stopService(service: Service): Promise<void> {
  const started = performance.now();
  await service.process.stop(10_000);
  const exit = service.process.exit;
  serviceExits.push({ service: service.name, code: exit?.code ?? null, signal: exit?.signal ?? null, ms: Math.round(performance.now() - started) });
  if (exit && exit.code !== 0)
    log(`note: ${service.name} exited with code ${exit.code} (signal ${exit.signal}) ${Math.round(performance.now() - started)} ms after SIGTERM`);
}

// ---------------------------------------------------------------- load generators

class Generator {
  private readonly pending = new Map<string, { resolve: (r: LoadResult) => void; reject: (e: Error) => void; onEvent?: (type: string) => void }>();
  private counter = 0;

  constructor(readonly process: Managed) {
    process.onLine((line, stream) => {
      if (stream !== "stdout" || !line.startsWith("{")) return;
      let message: { type: string; id?: string; message?: string };
      try {
        message = JSON.parse(line) as typeof message;
      } catch {
        return;
      }
      const waiter = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!waiter) return;
      if (message.type === "result") {
        this.pending.delete(message.id!);
        waiter.resolve(message as unknown as LoadResult);
      } else if (message.type === "error") {
        this.pending.delete(message.id!);
        waiter.reject(new Error(`${this.process.name}: ${message.message}`));
      } else {
        waiter.onEvent?.(message.type);
      }
    });
    void process.exited.then((exit) => {
      for (const [id, waiter] of this.pending) {
        this.pending.delete(id);
        waiter.reject(new Error(`${this.process.name} exited (code ${exit.code})${this.process.tail()}`));
      }
    });
  }

  static async start(name: string, core: number): Promise<Generator> {
    const proc = startTsx(name, "bench/load.ts", [], { core, echoStderr: true });
    await proc.waitForLine((line) => line.includes('"type":"ready"'), 60_000, "ready message");
    return new Generator(proc);
  }

  run(command: Omit<LoadCommand, "id">, onEvent?: (type: string) => void): Promise<LoadResult> {
    const id = `${this.process.name}-${++this.counter}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.process.send(JSON.stringify({ ...command, id }));
    });
  }
}

interface CaseSpec {
  group: CaseGroup;
  label: string;
  server: { name: string; pid: number; target: string };
  workload: Workload;
  protocol?: "grpc" | "connect";
  token?: string;
  inFlight: number;
  generators?: Generator[];
  /** Defaults: settings.warmupMs and settings.durationMs. */
  warmupMs?: number;
  durationMs?: number;
  /** Put before the label in the progress line (e.g. the panel's round). */
  tag?: string;
}

const cases: CaseResult[] = [];
let generators: Generator[] = [];
let postmasterPid: number | undefined;

/** Runs a case; repeats it when other processes took more than CONTENDED_CORES, keeping the least disturbed attempt. */
async function runCase(spec: CaseSpec): Promise<CaseResult> {
  let best: CaseResult | undefined;
  let attempts = 0;
  while (attempts <= settings.retries) {
    const { result } = await runOnce(spec, cases.length * 7 + attempts++ * 101);
    if (!best || (result.otherCores ?? 0) < (best.otherCores ?? 0)) best = result;
    if ((best.otherCores ?? 0) <= CONTENDED_CORES || spec.group === "fill") break;
    if (attempts <= settings.retries) log(`  other processes used ${result.otherCores?.toFixed(2)} cores: repeating the case`);
  }
  best!.attempts = attempts;
  cases.push(best!);
  return best!;
}

/** One measured window of a case (not recorded anywhere); `seed` seeds the generators' random picks. */
async function runOnce(spec: CaseSpec, seed: number): Promise<{ result: CaseResult; histogram: Histogram }> {
  const gens = spec.generators ?? [generators[0]];
  const protocol = spec.protocol ?? "grpc";
  let before: Snapshot | undefined;
  let after: Snapshot | undefined;
  const take = () =>
    snapshot(
      spec.server.pid,
      gens.map((g) => g.process.pid),
      postmasterPid,
    );
  const perGenerator = Math.max(1, Math.round(spec.inFlight / gens.length));
  const results = await Promise.all(
    gens.map((g, i) =>
      g.run(
        {
          target: spec.server.target,
          protocol,
          workload: spec.workload,
          token: spec.token,
          inFlight: perGenerator,
          warmupMs: spec.warmupMs ?? settings.warmupMs,
          durationMs: spec.durationMs ?? settings.durationMs,
          seed: seed + i + 1,
        },
        // CPU use is sampled when the first generator's window opens and closes.
        i === 0
          ? (type) => {
              if (type === "measuring") before = take();
              else if (type === "measured") after = take();
            }
          : undefined,
      ),
    ),
  );
  const histogram = new Histogram();
  for (const r of results) histogram.add(r.histogram);
  const calls = results.reduce((s, r) => s + r.calls, 0);
  const callsPerSec = results.reduce((s, r) => s + r.callsPerSec, 0);
  const errorCodes: Record<string, number> = {};
  for (const r of results) for (const [code, n] of Object.entries(r.errorCodes)) errorCodes[code] = (errorCodes[code] ?? 0) + n;
  const cpu = before && after ? cpuBetween(before, after) : undefined;
  const result: CaseResult = {
    id: `${spec.group}-${spec.inFlight}${gens.length > 1 ? `-x${gens.length}` : ""}`,
    group: spec.group,
    label: spec.label,
    server: spec.server.name,
    protocol,
    inFlight: perGenerator * gens.length,
    generators: gens.length,
    calls,
    callsPerSec,
    p50Ms: histogram.percentile(0.5) / 1000,
    p90Ms: histogram.percentile(0.9) / 1000,
    p99Ms: histogram.percentile(0.99) / 1000,
    maxMs: histogram.max / 1000,
    errors: results.reduce((s, r) => s + r.errors, 0),
    errorCodes,
    firstError: results.find((r) => r.firstError)?.firstError,
    stuck: results.reduce((s, r) => s + r.stuck, 0),
    serverCpuPct: cpu?.serverCpuPct,
    serverWaitPct: cpu?.serverWaitPct,
    serverBusyPct: cpu?.serverBusyPct,
    serverCpuUsPerCall: cpu?.serverCpuPct === undefined || calls === 0 ? undefined : (cpu.serverCpuPct * cpu.wallMs * 10) / calls,
    generatorCpuPct: cpu?.generatorCpuPct,
    generatorWaitPct: cpu?.generatorWaitPct,
    generatorBusyPct: cpu?.generatorBusyPct,
    generatorCpuUsPerCall: cpu?.generatorCpuPct === undefined || calls === 0 ? undefined : (cpu.generatorCpuPct * cpu.wallMs * 10) / calls,
    postgresCores: cpu?.postgresCores,
    otherCores: cpu?.otherCores,
    measuredMs: Math.max(...results.map((r) => r.wallMs)),
  };
  log(
    `${spec.tag ? `${spec.tag} ` : ""}${result.label.padEnd(34)} ${String(result.inFlight).padStart(3)} in flight${gens.length > 1 ? ` (${gens.length} generators)` : ""}: ` +
      `${Math.round(callsPerSec).toLocaleString("en").padStart(7)} calls/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, ` +
      `errors ${result.errors + result.stuck}${result.firstError ? ` (first: ${result.firstError.slice(0, 120)})` : ""}; ` +
      `CPU server ${result.serverCpuPct?.toFixed(0) ?? "?"}% (waiting ${result.serverWaitPct?.toFixed(0) ?? "?"}%), ` +
      `generator ${result.generatorCpuPct?.toFixed(0) ?? "?"}% (waiting ${result.generatorWaitPct?.toFixed(0) ?? "?"}%), others ${result.otherCores?.toFixed(2) ?? "?"} cores`,
  );
  return { result, histogram };
}

/**
 * The side-by-side panel: the four cases of the ratio targets (bare grpc-js Check, our service's Check, (b) hot
 * set, (c) uniform) back to back at `inFlight`, in `settings.panelRounds` rounds; round k starts at case k mod 4,
 * and every other round runs in reverse, so that no case always runs first or last or after the same case. Each round's ratios compare figures taken seconds apart; the
 * targets judge their medians. One attempt per case (no repeats: the median over rounds absorbs a disturbed one).
 */
async function sidePanel(specs: Record<PanelCaseName, CaseSpec>, inFlight: number, title = "side by side", idPrefix = "panel"): Promise<SidePanel> {
  const rounds: PanelRound[] = [];
  const histograms = Object.fromEntries(PANEL_CASES.map((name) => [name, new Histogram()])) as Record<PanelCaseName, Histogram>;
  const n = settings.panelRounds;
  log(
    `${title}: ${n} rounds of ${PANEL_CASES.length} cases at ${inFlight} in flight, ${settings.panelWarmupMs / 1000} s warm-up + ${settings.panelDurationMs / 1000} s measured each ` +
      `(about ${Math.round((n * PANEL_CASES.length * (settings.panelWarmupMs + settings.panelDurationMs)) / 1000)} s)`,
  );
  for (let k = 0; k < n; k++) {
    // Rotated by one each round, and reversed every other round: each case leads and follows different cases.
    const rotated = PANEL_CASES.map((_, i) => PANEL_CASES[(k + i) % PANEL_CASES.length]);
    const order = k % 2 === 1 ? rotated.reverse() : rotated;
    const measured = {} as Record<PanelCaseName, CaseResult>;
    for (const [position, name] of order.entries()) {
      const spec = specs[name];
      const { result, histogram } = await runOnce(
        { ...spec, inFlight, warmupMs: settings.panelWarmupMs, durationMs: settings.panelDurationMs, tag: `[${title} ${k + 1}/${n}]` },
        10_000 + k * 16 + position * 4,
      );
      result.id = `${idPrefix}-${k + 1}-${name}-${inFlight}`;
      measured[name] = result;
      histograms[name].add(histogram.toJSON());
    }
    const ratios = panelRatios(measured);
    rounds.push({ round: k + 1, order, cases: measured, ratios });
    log(
      `[${title} ${k + 1}/${n}] ${order.join(" → ")}: (b) ÷ bare ${ratios.hotBare.toFixed(2)}, (b) ÷ Check ${ratios.hotCheck.toFixed(2)}, ` +
        `(b) p99 ÷ bare p99 ${ratios.hotP99Bare.toFixed(2)}, (c) ÷ bare ${ratios.uniformBare.toFixed(2)}`,
    );
  }
  const pooled = {} as Record<PanelCaseName, PanelPooled>;
  for (const name of PANEL_CASES) {
    const list = rounds.map((round) => round.cases[name]);
    const calls = list.reduce((sum, c) => sum + c.calls, 0);
    const measuredMs = list.reduce((sum, c) => sum + (c.measuredMs ?? 0), 0);
    const h = histograms[name];
    pooled[name] = {
      calls,
      measuredMs,
      callsPerSec: calls / (measuredMs / 1000),
      p50Ms: h.percentile(0.5) / 1000,
      p90Ms: h.percentile(0.9) / 1000,
      p99Ms: h.percentile(0.99) / 1000,
      maxMs: h.max / 1000,
      errors: list.reduce((sum, c) => sum + c.errors, 0),
      stuck: list.reduce((sum, c) => sum + c.stuck, 0),
    };
  }
  const ratios = summarizePanel(rounds, pooled);
  const range = (name: PanelRatioName) => `${ratios[name].median.toFixed(2)} (${ratios[name].min.toFixed(2)}-${ratios[name].max.toFixed(2)})`;
  log(
    `${title}, medians of ${n} rounds (range): (b) ÷ bare ${range("hotBare")}, (b) ÷ Check ${range("hotCheck")}, ` +
      `(b) p99 ÷ bare p99 ${range("hotP99Bare")}, (c) ÷ bare ${range("uniformBare")}`,
  );
  return { inFlight, generators: 1, warmupMs: settings.panelWarmupMs, durationMs: settings.panelDurationMs, rounds, pooled, ratios };
}

/**
 * The panel again with both servers under one CPU quota (SERVER_QUOTA percent of a core), so that they, not the
 * generator, are the bottleneck; first the bare floor under the quota from one generator and from two, to show it.
 * Undefined when BENCH_SERVER_QUOTA is off; `unavailable` when no cgroup could be made.
 */
async function serverBoundPanel(specs: Record<PanelCaseName, CaseSpec>, pids: number[]): Promise<ServerBoundPanel | { unavailable: string } | undefined> {
  if (SERVER_QUOTA === undefined) {
    log("server-bound panel: skipped (BENCH_SERVER_QUOTA=off)");
    return undefined;
  }
  const quota = createCpuQuota(SERVER_QUOTA);
  if ("unavailable" in quota) {
    log(`server-bound panel: skipped, no CPU quota could be set (${quota.unavailable})`);
    return quota;
  }
  onCleanup(async () => quota.remove());
  try {
    for (const pid of pids) quota.add(pid);
    log(`server-bound: both servers held to ${quota.percent}% of a core (${quota.mechanism}, ${quota.periodUs / 1000} ms period)`);
    const floorSpec = { ...specs.bare, warmupMs: settings.panelWarmupMs, durationMs: settings.panelDurationMs };
    const one = await runOnce({ ...floorSpec, tag: "[server-bound]", label: "(a) bare grpc-js, 1 generator" }, 20_000);
    one.result.id = `server-bound-floor-${TOP}`;
    // The second generator process shares the first one's core: on the servers' core it would take CPU time the
    // quota leaves to the servers (measured: the floor fell to ×0.77), and a client that needed more CPU would not
    // gain from it either way. What it adds is a second process, connection and event loop.
    const second = await Generator.start("generator-3", GENERATOR_CORE);
    const two = await runOnce(
      { ...floorSpec, tag: "[server-bound]", label: "(a) bare grpc-js, 2 generators", generators: [generators[0], second] },
      20_010,
    ).finally(() => second.process.stop());
    two.result.id = `server-bound-floor-${TOP}-x2`;
    log(
      `server-bound: bare floor ×${(two.result.callsPerSec / one.result.callsPerSec).toFixed(2)} with a second generator process (≤ ×1.10: the servers are the bottleneck)`,
    );
    const panel = await sidePanel(specs, TOP, "server-bound", "server-bound");
    return {
      ...panel,
      quota: { percent: quota.percent, periodUs: quota.periodUs, mechanism: quota.mechanism },
      oneGenerator: one.result,
      twoGenerators: two.result,
    };
  } finally {
    quota.remove();
  }
}

// ---------------------------------------------------------------- the steps

async function connectCorrectness(service: Service, token: string): Promise<ConnectCheck> {
  const connect = createClient(CredentialService, createConnectTransport({ baseUrl: `http://${service.connectTarget}`, httpVersion: "2" }));
  const grpcClient = credentialClient(service.grpcTarget);
  const metadata = bearer(token);
  const providers: Record<string, number> = {
    PROVIDER_OPENAI: Provider.OPENAI,
    PROVIDER_ANTHROPIC: Provider.ANTHROPIC,
    PROVIDER_GEMINI: Provider.GEMINI,
    PROVIDER_FIREWORKS: Provider.FIREWORKS,
  };
  const sources: Record<number, string> = { [KeySource.ORGANIZATION]: "KEY_SOURCE_ORGANIZATION", [KeySource.ENVIRONMENT]: "KEY_SOURCE_ENVIRONMENT" };
  let mismatches = 0;
  let firstMismatch: string | undefined;
  const pairs: ResolveRequest[] = hotPairs();
  try {
    for (const pair of pairs) {
      const viaGrpc = await call<{ api_key: string; source: string; credential_id?: string; organization_id: string; api_base?: string }>(
        grpcClient,
        "ResolveKey",
        pair,
        metadata,
      );
      const scope = "team_id" in pair ? { case: "teamId" as const, value: pair.team_id } : { case: "organizationId" as const, value: pair.organization_id };
      const viaConnect = await connect.resolveKey({ scope, provider: providers[pair.provider] }, { headers: { authorization: `Bearer ${token}` } });
      const same =
        viaGrpc.api_key === viaConnect.apiKey &&
        viaGrpc.source === sources[viaConnect.source] &&
        (viaGrpc.credential_id ?? "") === (viaConnect.credentialId ?? "") &&
        viaGrpc.organization_id === viaConnect.organizationId &&
        (viaGrpc.api_base ?? "") === (viaConnect.apiBase ?? "");
      if (!same) {
        mismatches++;
        firstMismatch ??= `${JSON.stringify(pair)}: grpc-js ${viaGrpc.source}/${viaGrpc.credential_id ?? "-"} vs Connect ${sources[viaConnect.source]}/${viaConnect.credentialId ?? "-"}`;
      }
    }
  } finally {
    grpcClient.close();
  }
  return { target: service.connectTarget, separatePort: service.separateConnectPort, pairsCompared: pairs.length, mismatches, firstMismatch };
}

/**
 * A few administrator writes on the service before anything is measured (create, deactivate, activate and
 * delete a credential, each audited), so that the measured replica is in the state of a production replica
 * that has served the portal: whatever a write sets up for good in the process (on Node 20, an
 * AsyncLocalStorage.run() turns a promise hook on for the rest of the process's life) is in place.
 */
async function adminWrites(service: Service, adminToken: string, organizationId: string): Promise<number> {
  const client = credentialClient(service.grpcTarget);
  const metadata = bearer(adminToken);
  const started = performance.now();
  try {
    const created = await call<{ credential: { credential_id: string } }>(
      client,
      "CreateCredential",
      { organization_id: organizationId, provider: "PROVIDER_FIREWORKS", credential_name: "bench-admin-write", api_key: `fw_bench${generateToken()}` },
      metadata,
    );
    const id = created.credential.credential_id;
    await call(client, "DeactivateCredential", { credential_id: id }, metadata);
    await call(client, "ActivateCredential", { credential_id: id }, metadata);
    await call(client, "DeleteCredential", { credential_id: id }, metadata);
  } finally {
    client.close();
  }
  return performance.now() - started;
}

async function measureKeyring(): Promise<KeyringResult> {
  const proc = startTsx("keyring", "bench/keyring.ts", [JSON.stringify({ roundMs: settings.keyringRoundMs, rounds: settings.keyringRounds })], {
    core: GENERATOR_CORE,
  });
  const line = await proc.waitForLine((l) => l.startsWith("{"), 120_000, "keyring result");
  await proc.exited;
  return JSON.parse(line) as KeyringResult;
}

/**
 * The gauges provider_credentials_cache_entries and provider_credentials_cache_bytes from the
 * service's /metrics (METRICS_PORT), read with the admin token.
 */
async function scrapeCacheGauges(service: Service, adminToken: string): Promise<{ entries?: number; bytes?: number; error?: string }> {
  if (service.metricsPort === undefined) return { error: "the service was started without METRICS_PORT" };
  const url = `http://127.0.0.1:${service.metricsPort}/metrics`;
  try {
    const response = await fetch(url, { headers: { authorization: `Bearer ${adminToken}` }, signal: AbortSignal.timeout(10_000) });
    const body = await response.text();
    if (!response.ok) return { error: `${url} answered ${response.status}: ${body.trim().slice(0, 200)}` };
    const gauge = (name: string) => {
      const match = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, "m").exec(body);
      return match ? Number(match[1]) : undefined;
    };
    const entries = gauge("provider_credentials_cache_entries");
    // Older services have no bytes gauge: reported when present.
    const bytes = gauge("provider_credentials_cache_bytes");
    if (entries === undefined) return { error: `${url} has no provider_credentials_cache_entries sample` };
    return Number.isFinite(entries) ? { entries, bytes } : { error: `provider_credentials_cache_entries is ${entries}` };
  } catch (error) {
    return { error: `${url}: ${error instanceof Error ? error.message : String(error)}` };
  }
}

async function fillCache(service: Service, token: string, adminToken: string): Promise<MemoryResult> {
  const expected = fillBreakdown(settings.fillPairs);
  await sleep(1_000);
  const before = memoryMiB(service.process.pid);
  log(
    `memory: VmRSS ${before?.rss.toFixed(0)} MiB idle; resolving ${expected.pairs.toLocaleString("en")} distinct scope/provider pairs ` +
      `(with organisation entries and team links: ${expected.memoryOrganizationResolutions.toLocaleString("en")} memory-organisation resolutions + ` +
      `${expected.organizationResolutions.toLocaleString("en")} organisation resolutions + ${expected.teamLinks.toLocaleString("en")} team links = ${expected.total.toLocaleString("en")} entries)`,
  );
  const fill = await runCase({
    group: "fill",
    label: `cold fill (${expected.pairs.toLocaleString("en")} distinct pairs)`,
    server: { name: service.name, pid: service.process.pid, target: service.grpcTarget },
    workload: { kind: "resolve", set: "fill", count: expected.pairs },
    token,
    inFlight: TOP,
  });
  await sleep(1_000);
  const after = memoryMiB(service.process.pid);
  await sleep(settings.settleSeconds * 1_000);
  const settled = memoryMiB(service.process.pid);
  // Read after both RSS readings, so that the scrape's own allocations are in neither. Nothing resolves in
  // between, so the cache cannot have grown since the readings: this count is what it held at least then.
  const scraped = await scrapeCacheGauges(service, adminToken);
  if (scraped.error) log(`memory: could not read the cache's entry count: ${scraped.error}`);
  return {
    entries: fill.calls - fill.errors,
    cacheEntries: scraped.entries,
    cacheBytes: scraped.bytes,
    cacheEntriesError: scraped.error,
    expectedEntries: {
      memoryOrganizationResolutions: expected.memoryOrganizationResolutions,
      organizationResolutions: expected.organizationResolutions,
      teamLinks: expected.teamLinks,
    },
    rssBeforeMiB: before?.rss ?? NaN,
    rssAfterMiB: after?.rss ?? NaN,
    rssSettledMiB: settled?.rss ?? NaN,
    settleSeconds: settings.settleSeconds,
    peakMiB: settled?.peak ?? NaN,
    fillCallsPerSec: fill.callsPerSec,
    fillErrors: fill.errors + fill.stuck,
  };
}

async function listing(replica: Service, adminToken: string, org: string): Promise<ListingResult> {
  const pageSize = 50;
  const portal = await startPortal(`http://${replica.grpcTarget}`, adminToken, log);
  let restUnavailable: string | undefined;
  if ("baseUrl" in portal) {
    try {
      const result = await measureListing(restPages(portal.baseUrl, org, adminToken, pageSize), {
        repetitions: settings.listingRepetitions,
        pageSize,
        path: "rest",
        pathLabel: "REST: GET /api/provider-credentials/organization/{id} on the portal",
      });
      return result;
    } catch (error) {
      restUnavailable = `the REST path failed: ${error instanceof Error ? error.message : String(error)}`;
    } finally {
      await portal.process.stop();
    }
  } else {
    restUnavailable = portal.unavailable;
  }
  log(`listing: REST path unavailable (${restUnavailable.split("\n")[0]}); measuring gRPC ListCredentials instead`);
  const pages = grpcPages(replica.grpcTarget, org, adminToken, pageSize);
  try {
    const result = await measureListing(pages.fetch, {
      repetitions: settings.listingRepetitions,
      pageSize,
      path: "grpc",
      pathLabel: "gRPC ListCredentials on the service (FALLBACK: the portal's REST path was not available)",
    });
    return { ...result, restUnavailable };
  } finally {
    pages.close();
  }
}

async function main(): Promise<void> {
  installExitHandlers();
  log(
    `provider-credentials benchmark${quick ? " (--quick)" : ""}: ${settings.durationMs / 1000} s per case after ${settings.warmupMs / 1000} s warm-up; ` +
      `side by side at ${TOP} in flight: ${settings.panelRounds} rounds × 4 cases × (${settings.panelWarmupMs / 1000} + ${settings.panelDurationMs / 1000} s)`,
  );

  if (SERVICE_ENTRY === serviceEntry) await ensureServiceBuild((message) => log(message));
  const database = await openBenchDatabase(log);
  postmasterPid = database.postmasterPid;
  const idleBefore = snapshot(undefined, [], postmasterPid);
  await sleep(1_000);
  const idle = cpuBetween(idleBefore, snapshot(undefined, [], postmasterPid));
  const machine = { ...describeMachine(database.version, database.embedded), otherCoresAtStart: idle.otherCores };
  if ((idle.otherCores ?? 0) > 0.15) {
    log(
      `warning: other processes are using ${idle.otherCores?.toFixed(2)} of ${machine.cores} cores: figures will be lower and noisier than on a quiet machine`,
    );
  }
  log(
    `machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB.toFixed(1)} GiB, Node.js ${machine.node}, ${machine.postgres}; ${machine.pinning}`,
  );

  const masterKey = generateMasterKey();
  const adminToken = generateToken();
  const seeded: SeedResult = await seed(database.url, masterKey, log);
  const resolveToken = seeded.resolveToken;
  log(`seeded in ${seeded.seconds.toFixed(1)} s`);

  // The second generator only joins the two-generator floor; it runs on the server's core, where the bare server leaves room.
  generators = await Promise.all([Generator.start("generator-1", GENERATOR_CORE), Generator.start("generator-2", SERVER_CORE)]);

  // (a) the floor: a bare grpc-js server.
  const barePort = await freePort();
  const bare = startTsx("bare grpc-js server", "bench/bare-server.ts", [String(barePort)], { core: SERVER_CORE });
  await bare.waitForLine((line) => line.includes("listening"), 60_000, "listening line");
  const bareServer = { name: "bare grpc-js", pid: bare.pid, target: `127.0.0.1:${barePort}` };
  for (const inFlight of settings.inFlight) {
    await runCase({ group: "floor-bare", label: "(a) Health/Check, bare grpc-js", server: bareServer, workload: { kind: "health" }, inFlight });
  }
  // Is the generator the bottleneck? The same total in flight from two generator processes (cores 1 and 0).
  await runCase({
    group: "floor-bare-2gen",
    label: "(a) Health/Check, bare grpc-js, 2 generators",
    server: bareServer,
    workload: { kind: "health" },
    inFlight: TOP,
    generators,
  });
  const bareMemory = memoryMiB(bare.pid);
  // The bare server stays up (idle, on the service's core) for the side-by-side panel; how much CPU it takes
  // meanwhile is recorded, to show that it does not weigh on the service's figures.
  const bareIdleFrom = { cpuMs: processCpuMs(bare.pid), at: performance.now() };

  // The service with its cache: memory, (c), Check floor, (b), Connect.
  const cached = await startService("service", {
    databaseUrl: database.url,
    masterKey,
    adminToken,
    cacheMaxEntries: MEMORY_TARGET_ENTRIES,
    core: SERVER_CORE,
    metrics: true,
  });
  const cachedServer = { name: "service (cache on)", pid: cached.process.pid, target: cached.grpcTarget };
  const writesMs = await adminWrites(cached, adminToken, seeded.listingOrganization);
  log(`admin writes on the service before measuring (create, deactivate, activate, delete a credential): ${writesMs.toFixed(0)} ms`);
  const memory: MemoryResult = { ...(await fillCache(cached, resolveToken, adminToken)), bareServerRssMiB: bareMemory?.rss };
  log(
    `memory: VmRSS ${memory.rssAfterMiB.toFixed(0)} MiB 1 s after ${memory.entries.toLocaleString("en")} distinct resolutions, ` +
      `${memory.rssSettledMiB.toFixed(0)} MiB ${memory.settleSeconds} s later (peak ${memory.peakMiB.toFixed(0)} MiB); ` +
      `cache entries (provider_credentials_cache_entries): ${memory.cacheEntries?.toLocaleString("en") ?? "unknown"}`,
  );
  for (const inFlight of settings.inFlight) {
    await runCase({
      group: "uniform",
      label: "(c) ResolveKey, uniform",
      server: cachedServer,
      workload: { kind: "resolve", set: "uniform" },
      token: resolveToken,
      inFlight,
    });
  }
  for (const inFlight of settings.inFlight) {
    await runCase({ group: "floor-service", label: "(a) Health/Check, our service", server: cachedServer, workload: { kind: "health" }, inFlight });
  }
  const hotSpec = (inFlight: number): CaseSpec => ({
    group: "hot",
    label: "(b) ResolveKey, hot set",
    server: cachedServer,
    workload: { kind: "resolve", set: "hot" },
    token: resolveToken,
    inFlight,
  });
  for (const inFlight of settings.inFlight) await runCase(hotSpec(inFlight));

  // Side by side: the ratio targets' four cases back to back, in rotating rounds, against the still running bare server.
  const bareIdleCpuMs = processCpuMs(bare.pid);
  const bareIdle =
    bareIdleFrom.cpuMs === undefined || bareIdleCpuMs === undefined
      ? undefined
      : { cpuMs: bareIdleCpuMs - bareIdleFrom.cpuMs, wallMs: performance.now() - bareIdleFrom.at };
  if (bareIdle) log(`bare grpc-js server idle during the service's cases: ${Math.round(bareIdle.cpuMs)} ms of CPU in ${(bareIdle.wallMs / 1000).toFixed(0)} s`);
  // The four cases of both panels (with a core each, then server-bound).
  const panelSpecs: Record<PanelCaseName, CaseSpec> = {
    bare: { group: "floor-bare", label: "(a) Health/Check, bare grpc-js", server: bareServer, workload: { kind: "health" }, inFlight: TOP },
    check: { group: "floor-service", label: "(a) Health/Check, our service", server: cachedServer, workload: { kind: "health" }, inFlight: TOP },
    hot: hotSpec(TOP),
    uniform: {
      group: "uniform",
      label: "(c) ResolveKey, uniform",
      server: cachedServer,
      workload: { kind: "resolve", set: "uniform" },
      token: resolveToken,
      inFlight: TOP,
    },
  };
  const panel: SidePanel = { ...(await sidePanel(panelSpecs, TOP)), bareIdle };
  const serverBound = await serverBoundPanel(panelSpecs, [bare.pid, cached.process.pid]);
  await bare.stop();

  const connect = await connectCorrectness(cached, resolveToken);
  log(
    `Connect protocol: ${connect.pairsCompared - connect.mismatches}/${connect.pairsCompared} answers identical to grpc-js${connect.firstMismatch ? ` (first mismatch: ${connect.firstMismatch})` : ""}`,
  );
  const connectServer = { ...cachedServer, target: cached.connectTarget };
  for (const inFlight of settings.inFlight) {
    await runCase({
      group: "connect-hot",
      label: "(b) ResolveKey, hot set",
      server: connectServer,
      workload: { kind: "resolve", set: "hot" },
      protocol: "connect",
      token: resolveToken,
      inFlight,
    });
  }
  memory.rssAfterLoadMiB = memoryMiB(cached.process.pid)?.rss;

  // (d) the database path: a second service with the cache disabled (the first one idles meanwhile).
  const uncached = await startService("service-nocache", { databaseUrl: database.url, masterKey, adminToken, cacheMaxEntries: 0, core: SERVER_CORE });
  const uncachedServer = { name: "service (cache off)", pid: uncached.process.pid, target: uncached.grpcTarget };
  await adminWrites(uncached, adminToken, seeded.listingOrganization);
  for (const inFlight of settings.inFlight) {
    await runCase({
      group: "nocache",
      label: "(d) ResolveKey, cache disabled",
      server: uncachedServer,
      workload: { kind: "resolve", set: "uniform" },
      token: resolveToken,
      inFlight,
    });
  }
  await stopService(uncached);
  await Promise.all(generators.map((g) => g.process.stop()));

  // Two replicas on one database: the cached service is A; B starts now.
  const replicaA = cached;
  const replicaB = await startService("replica-B", { databaseUrl: database.url, masterKey, adminToken, cacheMaxEntries: 100_000, core: GENERATOR_CORE });
  log(`invalidation: ${settings.invalidationTrials} trials, deactivate on A (${replicaA.grpcTarget}), resolve on B (${replicaB.grpcTarget})`);
  const invalidation = await measureInvalidation({
    replicaA: replicaA.grpcTarget,
    replicaB: replicaB.grpcTarget,
    adminToken,
    resolveToken,
    fixtures: seeded.invalidation,
    trials: settings.invalidationTrials,
  });
  log(
    `invalidation: ${invalidation.converged}/${invalidation.trials} converged; p50 ${invalidation.p50Ms.toFixed(2)} ms, p99 ${invalidation.p99Ms.toFixed(2)} ms, max ${invalidation.maxMs.toFixed(2)} ms`,
  );
  await stopService(replicaB);
  const listingResult = await listing(replicaA, adminToken, seeded.listingOrganization);
  log(
    `listing (${listingResult.path}): page 1 ${listingResult.firstPage.medianMs.toFixed(2)} ms, page 200 ${listingResult.page200.medianMs.toFixed(2)} ms (medians of ${listingResult.repetitions})`,
  );
  await stopService(replicaA);

  // Fleet views (bench/fleet.ts): a service of their own, without provider environment variables.
  const fleet: FleetResult = await runFleet({ databaseUrl: database.url, masterKey, repetitions: quick ? 5 : 20, log });

  log("keyring: our Fernet vs npm fernet 0.4.0");
  const keyring = await measureKeyring();
  log(
    `keyring: ${Math.round(keyring.oursPerSec).toLocaleString("en")}/s vs ${Math.round(keyring.npmPerSec).toLocaleString("en")}/s (${keyring.ratio.toFixed(1)}x)`,
  );

  const { resolveToken: _token, invalidation: _fixtures, ...seedSummary } = seeded;
  const partial = {
    schema: 1 as const,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    quick,
    settings: {
      warmupMs: settings.warmupMs,
      durationMs: settings.durationMs,
      inFlight: settings.inFlight,
      invalidationTrials: settings.invalidationTrials,
      listingRepetitions: settings.listingRepetitions,
      memoryEntries: fillBreakdown(settings.fillPairs).total,
      fillPairs: settings.fillPairs,
      heapGrowingPercent: process.env.HEAP_GROWING_PERCENT || undefined,
      serviceCommand: `node ${SERVICE_ENTRY ? `--enable-source-maps ${[...SERVICE_NODE_ARGS, path.relative(process.cwd(), SERVICE_ENTRY)].join(" ")}` : [...SERVICE_NODE_ARGS, "--import tsx service/src/main.ts"].join(" ")}`,
    },
    machine,
    seed: seedSummary,
    cases,
    panel,
    serverBound,
    memory,
    connect,
    invalidation,
    listing: listingResult,
    fleet,
    keyring,
    serviceLogIssues,
    serviceExits,
    serviceStarts,
  };
  const targets = evaluateTargets(partial);
  const markdown = `${renderMarkdown({ ...partial, targets })}\n\n${fleetMarkdown(fleet)}`;
  const results: Results = { ...partial, targets, markdown };
  const file = await writeResults(results);
  console.log("\n" + markdown + "\n");
  log(`wrote ${file} (and latest.md beside it)`);
}

/** `--report-only`: recompute the targets and the markdown from bench/results/latest.json, without measuring. */
async function reportOnly(): Promise<void> {
  const {
    markdown: _markdown,
    targets: _targets,
    ...partial
  } = JSON.parse(readFileSync("bench/results/latest.json", "utf8")) as Results & { fleet?: FleetResult };
  const targets = evaluateTargets(partial);
  const markdown = renderMarkdown({ ...partial, targets }) + (partial.fleet ? `\n\n${fleetMarkdown(partial.fleet)}` : "");
  await writeResults({ ...partial, targets, markdown });
  console.log(markdown);
}

(process.argv.includes("--report-only") ? reportOnly() : main())
  .then(async () => {
    await cleanup();
    process.exit(0);
  })
  .catch(async (error: unknown) => {
    if (isInterrupted()) return; // the signal handler is cleaning up and exits
    console.error(`\nbenchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    await cleanup();
    process.exit(1);
  });
