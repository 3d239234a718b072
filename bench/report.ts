// Turns the measurements into the figures-against-targets table (issue 5), a
// markdown report for the console and docs/performance.md, and bench/results/latest.json.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { InvalidationResult } from "./invalidation.js";
import type { ListingResult } from "./listing.js";
import type { SeedResult } from "./seed.js";
import { MEMORY_TARGET_ENTRIES } from "./workload.js";

/** The cache must hold at least this many entries when RSS is read for the memory target to count. */
const MEMORY_MIN_ENTRIES = Math.round(MEMORY_TARGET_ENTRIES * 0.99);

export type CaseGroup = "floor-bare" | "floor-bare-2gen" | "floor-service" | "hot" | "uniform" | "nocache" | "connect-hot" | "fill";

export interface CaseResult {
  id: string;
  group: CaseGroup;
  label: string;
  /** Where the calls went: "bare grpc-js", "service (cache on)", ... */
  server: string;
  protocol: "grpc" | "connect";
  inFlight: number;
  generators: number;
  calls: number;
  callsPerSec: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  errorCodes: Record<string, number>;
  firstError?: string;
  stuck: number;
  /** CPU the server process used during the window, % of one core (from /proc/<pid>/stat). */
  serverCpuPct?: number;
  /** The server's main thread runnable but waiting for a core, % of the window (/proc/<pid>/schedstat). */
  serverWaitPct?: number;
  /** The server's main thread running or waiting to run, % of the window: near 100 = the server is the bottleneck. */
  serverBusyPct?: number;
  serverCpuUsPerCall?: number;
  /** CPU of the generator process(es) during the window, % of one core (all on the generator's core). */
  generatorCpuPct?: number;
  generatorWaitPct?: number;
  /** The generators' main threads running or waiting to run, % of the window (summed). */
  generatorBusyPct?: number;
  generatorCpuUsPerCall?: number;
  /** Cores' worth of CPU used by the benchmark's PostgreSQL during the window. */
  postgresCores?: number;
  /** Cores' worth of CPU used by other processes on the (shared) machine during the window. */
  otherCores?: number;
  /** How many times the case ran (it is repeated when other processes took CPU); the least disturbed run is kept. */
  attempts?: number;
  /** The measured window, ms (the longest of the generators'); absent in older results. */
  measuredMs?: number;
}

/** The four cases of the side-by-side panel: bare grpc-js Check, our service's Check, (b) hot set, (c) uniform. */
export const PANEL_CASES = ["bare", "check", "hot", "uniform"] as const;
export type PanelCaseName = (typeof PANEL_CASES)[number];
/** The ratios judged on the panel: (b) ÷ bare calls/s, (b) ÷ Check calls/s, (b) p99 ÷ bare p99, (c) ÷ bare calls/s. */
export const PANEL_RATIOS = ["hotBare", "hotCheck", "hotP99Bare", "uniformBare"] as const;
export type PanelRatioName = (typeof PANEL_RATIOS)[number];
export type PanelRatios = Record<PanelRatioName, number>;

export interface PanelRound {
  /** 1-based. */
  round: number;
  /** The order the cases ran in: round k (0-based) starts at PANEL_CASES[k mod 4]. */
  order: PanelCaseName[];
  cases: Record<PanelCaseName, CaseResult>;
  ratios: PanelRatios;
}

/** A case's rounds taken together: total calls ÷ total measured time, percentiles of the merged histograms. */
export type PanelPooled = Pick<CaseResult, "calls" | "callsPerSec" | "p50Ms" | "p90Ms" | "p99Ms" | "maxMs" | "errors" | "stuck"> & { measuredMs: number };

export interface PanelRatioSummary {
  /** Median of the rounds' ratios (mean of the middle two for an even number of rounds): what the targets judge. */
  median: number;
  min: number;
  max: number;
  /** The same ratio of the pooled figures, for information. */
  pooled: number;
}

/**
 * The side-by-side panel (issue: "ratios measured side by side in one run"): the four cases of the
 * ratio targets at the top in-flight level, back to back, in rounds with a rotated order, so that
 * each ratio compares figures taken seconds apart rather than minutes apart on a machine whose
 * speed drifts.
 */
export interface SidePanel {
  inFlight: number;
  generators: number;
  warmupMs: number;
  durationMs: number;
  rounds: PanelRound[];
  pooled: Record<PanelCaseName, PanelPooled>;
  ratios: Record<PanelRatioName, PanelRatioSummary>;
  /** CPU the bare grpc-js server used while it idled (pinned to the service's core) through the service's sequential cases. */
  bareIdle?: { cpuMs: number; wallMs: number };
}

/**
 * The same panel with both servers held to one share of a core by a CPU quota (bench/cpu-quota.ts), so that
 * the servers, not the generator, are the bottleneck: what the ratio targets are judged on when it ran.
 */
export interface ServerBoundPanel extends SidePanel {
  quota: { percent: number; periodUs: number; mechanism: string };
  /** The bare floor under the quota from one generator, then the same total in flight from two generator processes (both on the generator's core). */
  oneGenerator: CaseResult;
  twoGenerators: CaseResult;
}

/** The server-bound panel of a result, when it ran and measured rounds. */
function serverBoundOf(r: Pick<Results, "serverBound">): ServerBoundPanel | undefined {
  return r.serverBound && "rounds" in r.serverBound && r.serverBound.rounds.length > 0 ? r.serverBound : undefined;
}

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  postgres: string;
  database: "embedded" | "BENCH_DATABASE_URL";
  taskset: boolean;
  pinning: string;
  loadAverageAtStart: number[];
  /** Cores' worth of CPU other processes used over 1 s just before the run. */
  otherCoresAtStart?: number;
  packages: Record<string, string>;
  /** The node flags the service processes ran with (absent in results from before they were recorded). */
  serviceNodeFlags?: string[];
}

export interface KeyringResult {
  oursPerSec: number;
  npmPerSec: number;
  ratio: number;
  oursRounds: number[];
  npmRounds: number[];
}

export interface MemoryResult {
  /** Distinct (scope, provider) pairs the cold fill resolved (successful calls) before the reading. */
  entries: number;
  /**
   * The cache's entries as the service reported them (gauge provider_credentials_cache_entries on
   * METRICS_PORT), read after the RSS readings; undefined: unknown (not read, or a result from before it was).
   */
  cacheEntries?: number;
  /** provider_credentials_cache_bytes read with it: the cache's memory outside the JavaScript heap (absent in older results). */
  cacheBytes?: number;
  /** Why cacheEntries could not be read. */
  cacheEntriesError?: string;
  /**
   * What the fill's pairs make in a cache with one entry per organisation/provider (shared by the
   * organisation and its teams) and one link per team, computed from the workload's sizes and sequence.
   */
  expectedEntries?: { memoryOrganizationResolutions: number; organizationResolutions: number; teamLinks: number };
  rssBeforeMiB: number;
  /** One second after the last of them. */
  rssAfterMiB: number;
  /** After `settleSeconds` idle more (V8 gives back some of the garbage of the fill). */
  rssSettledMiB: number;
  settleSeconds: number;
  peakMiB: number;
  fillCallsPerSec: number;
  fillErrors: number;
  /** RSS of the bare grpc-js server after its cases: what any Node.js + tsx + grpc-js process holds here. */
  bareServerRssMiB?: number;
  /** The same service after the load cases that followed the fill ((c), its Check, (b), the side-by-side panel, Connect): for information. */
  rssAfterLoadMiB?: number;
}

export interface ConnectCheck {
  /** Where Connect-protocol calls went, and whether it is a separate CONNECT_PORT. */
  target: string;
  separatePort: boolean;
  pairsCompared: number;
  mismatches: number;
  firstMismatch?: string;
}

export interface Results {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  settings: {
    warmupMs: number;
    durationMs: number;
    inFlight: number[];
    invalidationTrials: number;
    listingRepetitions: number;
    /** Cache entries the cold fill makes (fillBreakdown; 100,000 in a full run; in older results, the pairs of the fill). */
    memoryEntries: number;
    /** Pairs of the fill sequence the cold fill resolves (absent in older results). */
    fillPairs?: number;
    /** HEAP_GROWING_PERCENT as the service processes got it (unset: the service's default). */
    heapGrowingPercent?: string;
    /** How the service processes were started. */
    serviceCommand?: string;
  };
  machine: Machine;
  seed: Omit<SeedResult, "resolveToken" | "invalidation">;
  cases: CaseResult[];
  /** The side-by-side panel (absent in older results: the targets then use the sequential cases). */
  panel?: SidePanel;
  /** The panel again with the servers under a CPU quota; or why it could not run (no writable cgroup). */
  serverBound?: ServerBoundPanel | { unavailable: string };
  memory?: MemoryResult;
  connect?: ConnectCheck;
  invalidation?: InvalidationResult;
  listing?: ListingResult;
  keyring?: KeyringResult;
  /** Warnings and errors the service processes logged during the run (first few). */
  serviceLogIssues: string[];
  /** How each service process ended after SIGTERM (expected: code 0 after draining). */
  serviceExits: Array<{ service: string; code: number | null; signal: string | null; ms: number }>;
  /** A hash of service/src and migrations/ when each service process started. */
  serviceStarts?: Array<{ service: string; sourceHash: string; separateConnectPort: boolean }>;
  targets: TargetRow[];
  markdown: string;
}

export interface TargetRow {
  figure: string;
  measured: string;
  target: string;
  /** PASS, MISS, or "—" when the run could not measure it (e.g. --quick). */
  result: string;
}

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || !Number.isFinite(n) ? "—" : n.toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "—" : n < 10 ? n.toFixed(2) : n.toFixed(1));
const pctWait = (cpu: number | undefined, wait: number | undefined) =>
  cpu === undefined ? "—" : `${fmt(cpu)}%${wait === undefined ? "" : ` (${fmt(wait)}%)`}`;
const cores = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "—" : n.toFixed(2));
const ratio = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "—" : n.toFixed(2));

export function findCase(cases: CaseResult[], group: CaseGroup, inFlight: number): CaseResult | undefined {
  return cases.find((c) => c.group === group && c.inFlight === inFlight);
}

/** A round's ratios, from its four cases. */
export function panelRatios(cases: Record<PanelCaseName, Pick<CaseResult, "callsPerSec" | "p99Ms">>): PanelRatios {
  return {
    hotBare: cases.hot.callsPerSec / cases.bare.callsPerSec,
    hotCheck: cases.hot.callsPerSec / cases.check.callsPerSec,
    hotP99Bare: cases.hot.p99Ms / cases.bare.p99Ms,
    uniformBare: cases.uniform.callsPerSec / cases.bare.callsPerSec,
  };
}

/** The median (the mean of the middle two for an even count); NaN for none. */
export function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Median, range and pooled value of each ratio over the panel's rounds. */
export function summarizePanel(rounds: PanelRound[], pooled: Record<PanelCaseName, PanelPooled>): Record<PanelRatioName, PanelRatioSummary> {
  const pooledRatios = panelRatios(pooled);
  const summary = {} as Record<PanelRatioName, PanelRatioSummary>;
  for (const name of PANEL_RATIOS) {
    const values = rounds.map((r) => r.ratios[name]).filter((v) => Number.isFinite(v));
    summary[name] = {
      median: median(values),
      min: values.length ? Math.min(...values) : NaN,
      max: values.length ? Math.max(...values) : NaN,
      pooled: pooledRatios[name],
    };
  }
  return summary;
}

function atLeast(value: number | undefined, target: number): string {
  if (value === undefined || !Number.isFinite(value)) return "—";
  return value >= target ? "PASS" : `MISS (${((1 - value / target) * 100).toFixed(0)}% short)`;
}

function atMost(value: number | undefined, target: number): string {
  if (value === undefined || !Number.isFinite(value)) return "—";
  return value <= target ? "PASS" : `MISS (${((value / target - 1) * 100).toFixed(0)}% over)`;
}

export function evaluateTargets(r: Omit<Results, "targets" | "markdown">): TargetRow[] {
  const top = Math.max(...r.settings.inFlight);
  const bare = findCase(r.cases, "floor-bare", top);
  const own = findCase(r.cases, "floor-service", top);
  const hot = findCase(r.cases, "hot", top);
  const uniform = findCase(r.cases, "uniform", top);
  const nocache = findCase(r.cases, "nocache", top);
  const per = (c: CaseResult | undefined, floor: CaseResult | undefined) => (c && floor ? c.callsPerSec / floor.callsPerSec : undefined);
  const rows: TargetRow[] = [];
  // (b) and (c) against the floors are judged on side-by-side medians when the result has a panel: the sequential
  // cases run minutes apart on a shared machine whose speed drifts, so their ratios mostly measure the drift. When
  // the server-bound panel ran (servers under a CPU quota, the generator shown not to be the bottleneck), it is the
  // one judged: with a core each, one grpc-js client cannot saturate the bare server, and the client-bound ratios
  // mostly measure the client. The other figures stay in each row for information.
  const clientBound = r.panel && r.panel.rounds.length > 0 ? r.panel : undefined;
  const bound = serverBoundOf(r);
  const panel: SidePanel | undefined = bound ?? clientBound;
  const judged = (name: PanelRatioName, sequentialValue: number | undefined, pooledDetail: string, sequentialDetail: string) => {
    const sequential = `${ratio(sequentialValue)} (${sequentialDetail})`;
    if (!panel) return { value: sequentialValue, measured: `${sequential}: sequential cases minutes apart (no side-by-side panel in this result)` };
    const s = panel.ratios[name];
    const other = bound && clientBound ? clientBound.ratios[name] : undefined;
    return {
      value: s.median,
      measured:
        `${ratio(s.median)}: median of ${panel.rounds.length} side-by-side rounds${bound ? `, servers held to ${bound.quota.percent}% of a core (server-bound)` : ""} ` +
        `(range ${ratio(s.min)}-${ratio(s.max)}); pooled ${ratio(s.pooled)} (${pooledDetail})` +
        (other ? `; with a core each (client-bound): ${ratio(other.median)} (range ${ratio(other.min)}-${ratio(other.max)})` : "") +
        `; sequential cases minutes apart: ${sequential}`,
    };
  };
  const pooled = panel?.pooled;
  const hotBare = judged(
    "hotBare",
    per(hot, bare),
    `${fmt(pooled?.hot.callsPerSec)} ÷ ${fmt(pooled?.bare.callsPerSec)}`,
    `${fmt(hot?.callsPerSec)} ÷ ${fmt(bare?.callsPerSec)}`,
  );
  rows.push({
    figure: `(b) hot set, calls/s ÷ bare grpc-js floor (${top} in flight)`,
    measured: hotBare.measured,
    target: "≥ 0.75",
    result: atLeast(hotBare.value, 0.75),
  });
  const hotOwn = judged(
    "hotCheck",
    per(hot, own),
    `${fmt(pooled?.hot.callsPerSec)} ÷ ${fmt(pooled?.check.callsPerSec)}`,
    `${fmt(hot?.callsPerSec)} ÷ ${fmt(own?.callsPerSec)}`,
  );
  rows.push({ figure: `(b) hot set, calls/s ÷ our service's Check (${top})`, measured: hotOwn.measured, target: "≥ 0.90", result: atLeast(hotOwn.value, 0.9) });
  const p99 = judged(
    "hotP99Bare",
    hot && bare ? hot.p99Ms / bare.p99Ms : undefined,
    `${ms(pooled?.hot.p99Ms)} ms ÷ ${ms(pooled?.bare.p99Ms)} ms`,
    `${ms(hot?.p99Ms)} ms ÷ ${ms(bare?.p99Ms)} ms`,
  );
  rows.push({ figure: `(b) hot set, p99 ÷ bare floor's p99 (${top})`, measured: p99.measured, target: "≤ 1.25", result: atMost(p99.value, 1.25) });
  const uni = judged(
    "uniformBare",
    per(uniform, bare),
    `${fmt(pooled?.uniform.callsPerSec)} ÷ ${fmt(pooled?.bare.callsPerSec)}`,
    `${fmt(uniform?.callsPerSec)} ÷ ${fmt(bare?.callsPerSec)}`,
  );
  rows.push({
    figure: `(c) uniform over all scopes, calls/s ÷ bare floor (${top})`,
    measured: uni.measured,
    target: "≥ 0.70",
    result: atLeast(uni.value, 0.7),
  });
  // (d) runs on its own service process (cache off), after the panel's bare server has stopped: sequential figures.
  const nc = per(nocache, bare);
  rows.push({
    figure: `(d) cache disabled, calls/s ÷ bare floor (${top})`,
    measured: `${ratio(nc)} (${fmt(nocache?.callsPerSec)} ÷ ${fmt(bare?.callsPerSec)}): sequential cases minutes apart (its own service process, not in the panel)`,
    target: "≥ 0.20",
    result: atLeast(nc, 0.2),
  });

  const panelCases = (p: SidePanel | undefined) => p?.rounds.flatMap((round) => PANEL_CASES.map((name) => round.cases[name])) ?? [];
  const loadCases = [
    ...r.cases.filter((c) => c.group !== "fill"),
    ...panelCases(clientBound),
    ...panelCases(bound),
    ...(bound ? [bound.oneGenerator, bound.twoGenerators] : []),
  ];
  const errors = loadCases.reduce((sum, c) => sum + c.errors + c.stuck, 0);
  const calls = loadCases.reduce((sum, c) => sum + c.calls, 0);
  rows.push({
    figure: `errors in all load cases${panel ? " (side-by-side rounds included)" : ""}`,
    measured: `${fmt(errors)} of ${fmt(calls)} calls`,
    target: "0",
    result: errors === 0 ? "PASS" : "MISS",
  });

  if (r.connect) {
    const connectTop = findCase(r.cases, "connect-hot", top);
    const ok = r.connect.mismatches === 0 && (connectTop?.errors ?? 0) === 0;
    rows.push({
      figure: `Connect protocol: same answers as grpc-js (hot set), errors at ${top}`,
      measured: `${r.connect.pairsCompared - r.connect.mismatches}/${r.connect.pairsCompared} identical, ${fmt(connectTop?.errors)} errors; ${fmt(connectTop?.callsPerSec)} calls/s, p99 ${ms(connectTop?.p99Ms)} ms (report only)`,
      target: "nothing lost",
      result: ok ? "PASS" : "MISS",
    });
  }
  if (r.invalidation) {
    const inv = r.invalidation;
    rows.push({
      figure: "invalidation across replicas, p99",
      measured: `${ms(inv.p99Ms)} ms (p50 ${ms(inv.p50Ms)} ms)`,
      target: "≤ 100 ms",
      result: atMost(inv.p99Ms, 100),
    });
    rows.push({ figure: "invalidation across replicas, max", measured: `${ms(inv.maxMs)} ms`, target: "≤ 1,000 ms", result: atMost(inv.maxMs, 1000) });
    rows.push({
      figure: "invalidation trials converged",
      measured: `${inv.converged} of ${inv.trials}`,
      target: "100 of 100",
      result: inv.trials >= 100 && inv.converged === inv.trials ? "PASS" : inv.converged === inv.trials ? "PASS (fewer trials)" : "MISS",
    });
  }
  if (r.listing) {
    const l = r.listing;
    rows.push({
      figure: `listing 10,000 credentials: page 200 ÷ page 1 (${l.path === "rest" ? "REST" : "gRPC ListCredentials, portal unavailable"})`,
      measured: `${ratio(l.ratio)} (${ms(l.page200.medianMs)} ms ÷ ${ms(l.firstPage.medianMs)} ms, medians of ${l.repetitions})`,
      target: "≤ 1.5",
      result: l.pagesLookRight ? atMost(l.ratio, 1.5) : "MISS (pages wrong)",
    });
  }
  if (r.keyring) {
    rows.push({
      figure: "keyring: our Fernet decrypts/s ÷ npm fernet 0.4.0",
      measured: `${ratio(r.keyring.ratio)}× (${fmt(r.keyring.oursPerSec)}/s vs ${fmt(r.keyring.npmPerSec)}/s)`,
      target: "≥ 8×",
      result: atLeast(r.keyring.ratio, 8),
    });
  }
  if (r.memory) {
    const m = r.memory;
    // The target is in MB (10^6 bytes); /proc reports KiB. The higher of the two readings counts.
    const worstMiB = Math.max(m.rssAfterMiB, m.rssSettledMiB);
    const mb = (mib: number) => (mib * 1024 * 1024) / 1e6;
    const rss = atMost(mb(worstMiB), 256);
    // The RSS only counts with the cache really holding (close to) 100,000 entries, as the service reports them.
    const count = m.cacheEntries;
    const errors = m.fillErrors ? `, ${fmt(m.fillErrors)} errors in the fill` : "";
    let result: string;
    if (r.quick) result = `— (--quick: ${count === undefined ? `${fmt(m.entries)} resolutions` : `${fmt(count)} entries`} only)`;
    else if (count === undefined)
      result = `— (cache entries not read from the service${m.cacheEntriesError ? `: ${m.cacheEntriesError}` : ""}; RSS alone: ${rss}${errors})`;
    else if (count < MEMORY_MIN_ENTRIES)
      result =
        rss === "PASS"
          ? `— (only ${fmt(count)} entries cached, fewer than ${fmt(MEMORY_MIN_ENTRIES)}${errors})`
          : `${rss} with only ${fmt(count)} entries cached`;
    else if (m.fillErrors) result = `— (${fmt(m.fillErrors)} errors in the fill; RSS alone: ${rss})`;
    else result = rss;
    rows.push({
      figure:
        count === undefined
          ? `service RSS after ${fmt(m.entries)} distinct resolutions (cache entries not read)`
          : `service RSS with ${fmt(count)} cached entries (count read from the service)`,
      measured:
        `${fmt(mb(worstMiB))} MB = ${fmt(worstMiB)} MiB (${fmt(m.rssAfterMiB)} MiB 1 s after the fill, ${fmt(m.rssSettledMiB)} MiB after ${m.settleSeconds} s idle; ` +
        `${fmt(m.rssBeforeMiB)} MiB before it; peak ${fmt(m.peakMiB)} MiB); ` +
        `provider_credentials_cache_entries ${count === undefined ? "unknown" : fmt(count)} after ${fmt(m.entries)} distinct resolutions`,
      target: `≤ 256 MB with ${fmt(MEMORY_TARGET_ENTRIES)} entries (≥ ${fmt(MEMORY_MIN_ENTRIES)} counted)`,
      result,
    });
    if (m.rssAfterLoadMiB !== undefined) {
      rows.push({
        figure: "service RSS after the load cases that followed the fill (for information)",
        measured: `${fmt(mb(m.rssAfterLoadMiB))} MB = ${fmt(m.rssAfterLoadMiB)} MiB`,
        target: "(none: the target is read after the fill)",
        result: "info",
      });
    }
  }
  if (r.serverBound && "unavailable" in r.serverBound) {
    rows.push({
      figure: `load generator not the bottleneck: server-bound panel`,
      measured: `not run: ${r.serverBound.unavailable}`,
      target: "servers under a CPU quota; floor does not rise with a second generator",
      result: "— (see the client-bound row below)",
    });
  }
  if (bound) {
    const one = bound.oneGenerator;
    const two = bound.twoGenerators;
    const rises = two.callsPerSec / one.callsPerSec;
    rows.push({
      figure: `load generator not the bottleneck: bare floor with the servers held to ${bound.quota.percent}% of a core (${top} in flight)`,
      measured:
        `one generator: ${fmt(one.callsPerSec)} calls/s, its main thread busy ${fmt(one.generatorBusyPct ?? one.generatorCpuPct)}%, server CPU ${fmt(one.serverCpuPct)}% of a core; ` +
        `two generator processes (both on the generator's core, leaving the servers' core to the servers): ${fmt(two.callsPerSec)} calls/s (×${ratio(rises)}); quota: ${bound.quota.mechanism}, ${bound.quota.periodUs / 1000} ms period`,
      target: "floor does not rise with a second generator (≤ ×1.10)",
      result: rises <= 1.1 ? "PASS" : `MISS (×${ratio(rises)} with two generators: the quota leaves the generator the bottleneck)`,
    });
  }
  if (bare) {
    const genBusy = bare.generatorBusyPct ?? bare.generatorCpuPct;
    const two = r.cases.find((c) => c.group === "floor-bare-2gen");
    const rises = two ? two.callsPerSec / bare.callsPerSec : undefined;
    rows.push({
      figure: `load generator not the bottleneck: bare floor with a core each (${top} in flight)${bound ? "; client-bound, for information" : ""}`,
      measured:
        `one generator: ${fmt(bare.callsPerSec)} calls/s, its main thread busy ${fmt(genBusy)}% (CPU ${fmt(bare.generatorCpuPct)}%), server busy ${fmt(bare.serverBusyPct)}% (CPU ${fmt(bare.serverCpuPct)}%)` +
        (two ? `; two generators (cores 1 and 0): ${fmt(two.callsPerSec)} calls/s (×${ratio(rises)})` : ""),
      target: "floor does not rise with a second generator (≤ ×1.10)",
      result:
        rises === undefined
          ? "—"
          : rises <= 1.1
            ? "PASS"
            : `${bound ? "info: " : "MISS "}(one grpc-js client process, one channel, does not saturate the bare server: ×${ratio(rises)} with two)`,
    });
    if (two && hot) {
      const hotTwo = hot.callsPerSec / two.callsPerSec;
      rows.push({
        figure: `(b) hot set ÷ the two-generator bare floor (${top}; for reference)`,
        measured: `${ratio(hotTwo)} (${fmt(hot.callsPerSec)} ÷ ${fmt(two.callsPerSec)})`,
        target: "≥ 0.80",
        result: `${atLeast(hotTwo, 0.8)} (info)`,
      });
    }
  }
  const serviceCases = [hot, uniform, nocache].filter((c): c is CaseResult => c !== undefined);
  if (serviceCases.length) {
    const serverLimited = serviceCases.every((c) => (c.serverBusyPct ?? 0) >= 85 && (c.generatorBusyPct ?? 100) < 90);
    rows.push({
      figure: `load generator not the bottleneck: ResolveKey cases (${top} in flight)`,
      measured: serviceCases.map((c) => `${c.group}: server busy ${fmt(c.serverBusyPct)}% / generator ${fmt(c.generatorBusyPct)}%`).join("; "),
      target: "server ≥ 85% busy, generator < 90%",
      result: serverLimited ? "PASS" : "CHECK",
    });
  }
  return rows;
}

export function renderMarkdown(r: Omit<Results, "markdown">): string {
  const lines: string[] = [];
  const m = r.machine;
  lines.push(`### Benchmark${r.quick ? " (--quick: shortened, not for the record)" : ""}: ${r.finishedAt}`);
  lines.push("");
  lines.push(
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${fmt(m.memoryGiB, 1)} GiB; Linux ${m.kernel}; Node.js ${m.node}; ${m.postgres} (${m.database}); ` +
      `${Object.entries(m.packages)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}. ${m.pinning} Load average at start: ${m.loadAverageAtStart.map((x) => x.toFixed(2)).join(" ")}` +
      `${m.otherCoresAtStart === undefined ? "" : `; other processes used ${m.otherCoresAtStart.toFixed(2)} cores just before the run`}.` +
      `${m.serviceNodeFlags === undefined ? "" : ` The service processes ran with \`node ${m.serviceNodeFlags.join(" ")}\` (as npm start runs a service with one core).`}`,
  );
  const panelCases = r.panel?.rounds.flatMap((round) => PANEL_CASES.map((name) => round.cases[name])) ?? [];
  const others = [...r.cases, ...panelCases]
    .map((c) => c.otherCores)
    .filter((x): x is number => x !== undefined)
    .sort((a, b) => a - b);
  const medianOthers = others.length ? others[Math.floor(others.length / 2)] : undefined;
  if (medianOthers !== undefined) {
    lines.push("");
    lines.push(
      medianOthers > 0.15
        ? `**Shared machine: other processes used a median ${medianOthers.toFixed(2)} of ${m.cores} cores during the measured windows (column "others"); every figure below is lower and noisier than on a quiet machine.**`
        : `Other processes used a median ${medianOthers.toFixed(2)} cores during the measured windows (quiet enough).`,
    );
  }
  lines.push("");
  lines.push(
    `Data: ${fmt(r.seed.organizations)} organisations (${fmt(r.seed.organizationsWithoutCredentials)} without credentials), ${fmt(r.seed.teams)} teams, ` +
      `${fmt(r.seed.credentials)} credentials (${fmt(r.seed.inactiveCredentials)} inactive; ${fmt(r.seed.pairsWithoutActiveCredential)} organisation/provider pairs fall back to the environment), ` +
      `plus one organisation with ${fmt(r.seed.listingCredentials)} credentials for listing` +
      `${r.seed.memoryOrganizations === undefined ? "" : ` and ${fmt(r.seed.memoryOrganizations)} organisations with ${fmt(r.seed.memoryCredentials)} credentials (one active per provider) used only by the memory fill`}; ` +
      `seeded in ${r.seed.seconds.toFixed(1)} s. ` +
      `Each case: ${r.settings.warmupMs / 1000} s warm-up, ${r.settings.durationMs / 1000} s measured, closed loop at a fixed number of calls in flight. ` +
      `Service: \`${r.settings.serviceCommand ?? "node --import tsx service/src/main.ts"}\`, HEAP_GROWING_PERCENT ${r.settings.heapGrowingPercent ?? "unset (the service's default, 100)"}.`,
  );
  lines.push("");
  lines.push("#### Targets (issue 5)");
  lines.push("");
  lines.push("| figure | measured | target | result |");
  lines.push("| --- | --- | --- | --- |");
  for (const t of r.targets) lines.push(`| ${t.figure} | ${t.measured} | ${t.target} | ${t.result} |`);
  const bound = serverBoundOf(r);
  if (bound) lines.push("", ...renderPanel(bound));
  if (r.panel && r.panel.rounds.length > 0) lines.push("", ...renderPanel(r.panel));
  lines.push("");
  lines.push("#### Load cases");
  lines.push("");
  lines.push(
    "CPU columns: % of one core used by the process, and in brackets % of the window its main thread sat runnable waiting for a core; " +
      '"others": cores\' worth of CPU used by processes outside the benchmark; "pg": the benchmark\'s embedded PostgreSQL ' +
      '(with BENCH_DATABASE_URL it is not measured and counts in "others").',
  );
  lines.push("");
  lines.push(
    "| case | server | client | in flight | calls/s | p50 ms | p99 ms | errors | server CPU (wait) | server µs/call | generator CPU (wait) | pg | others | ÷ bare floor | ÷ service Check |",
  );
  lines.push("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const c of r.cases) {
    const bare = findCase(r.cases, "floor-bare", c.inFlight);
    const own = findCase(r.cases, "floor-service", c.inFlight);
    const relative = ["hot", "uniform", "nocache", "connect-hot"].includes(c.group);
    const client = `${c.protocol === "grpc" ? "grpc-js" : "Connect (JSON)"}${c.generators > 1 ? ` ×${c.generators}` : ""}${(c.attempts ?? 1) > 1 ? ` (best of ${c.attempts})` : ""}`;
    const errors =
      c.errors + c.stuck === 0
        ? "0"
        : `${fmt(c.errors + c.stuck)} (${Object.entries(c.errorCodes)
            .map(([k, v]) => `${k} ${v}`)
            .join(", ")}${c.stuck ? `, ${c.stuck} stuck` : ""})`;
    lines.push(
      `| ${c.label} | ${c.server} | ${client} | ${c.inFlight} | ${fmt(c.callsPerSec)} | ${ms(c.p50Ms)} | ${ms(c.p99Ms)} | ${errors} | ` +
        `${pctWait(c.serverCpuPct, c.serverWaitPct)} | ${fmt(c.serverCpuUsPerCall)} | ${pctWait(c.generatorCpuPct, c.generatorWaitPct)} | ${cores(c.postgresCores)} | ${cores(c.otherCores)} | ` +
        `${relative && bare ? ratio(c.callsPerSec / bare.callsPerSec) : ""} | ${relative && own ? ratio(c.callsPerSec / own.callsPerSec) : ""} |`,
    );
  }
  lines.push("");
  if (r.invalidation) {
    const inv = r.invalidation;
    lines.push(
      `Invalidation: ${inv.converged}/${inv.trials} trials converged; deactivate on A → B stops serving the key: p50 ${ms(inv.p50Ms)} ms, p99 ${ms(inv.p99Ms)} ms, max ${ms(inv.maxMs)} ms ` +
        `(${inv.staleAnswers} stale answers from B after A's response, ${inv.wrongAnswers} wrong answers); re-activation seen by B: p50 ${ms(inv.reactivation.p50Ms)} ms, p99 ${ms(inv.reactivation.p99Ms)} ms, max ${ms(inv.reactivation.maxMs)} ms.`,
    );
  }
  if (r.listing) {
    const l = r.listing;
    lines.push(
      `Listing (${l.pathLabel}${l.restUnavailable ? `; REST not measured: ${l.restUnavailable}` : ""}): page 1 median ${ms(l.firstPage.medianMs)} ms (p90 ${ms(l.firstPage.p90Ms)}), ` +
        `page 200 median ${ms(l.page200.medianMs)} ms (p90 ${ms(l.page200.p90Ms)}), ${l.pageSize} per page, ${l.repetitions} repetitions each.`,
    );
  }
  if (r.memory) {
    const mem = r.memory;
    const expected = mem.expectedEntries;
    const expectedTotal = expected ? expected.memoryOrganizationResolutions + expected.organizationResolutions + expected.teamLinks : undefined;
    const fill =
      r.settings.fillPairs === undefined
        ? `${fmt(mem.entries)} distinct resolutions`
        : `the cold fill of ${fmt(r.settings.fillPairs)} distinct (scope, provider) pairs (${fmt(mem.entries)} resolved: the memory-fill organisations' pairs first, then the resolve workload's in a fixed permutation)`;
    lines.push(
      `Memory: VmRSS ${fmt(mem.rssBeforeMiB)} MiB idle after start, ${fmt(mem.rssAfterMiB)} MiB 1 s after ${fill}, ${fmt(mem.rssSettledMiB)} MiB after ${mem.settleSeconds} s more idle (peak ${fmt(mem.peakMiB)} MiB)` +
        `${mem.rssAfterLoadMiB === undefined ? "" : `, ${fmt(mem.rssAfterLoadMiB)} MiB after the load cases that followed`}; ` +
        `the cold fill ran at ${fmt(mem.fillCallsPerSec)} calls/s${mem.fillErrors ? ` with ${mem.fillErrors} errors` : ""}` +
        `${mem.bareServerRssMiB === undefined ? "" : `; for scale, the bare grpc-js server (Node.js + tsx + grpc-js) held ${fmt(mem.bareServerRssMiB)} MiB`}. ` +
        (mem.cacheEntries === undefined
          ? `Cache entries: not read from the service${mem.cacheEntriesError ? ` (${mem.cacheEntriesError})` : ""}.`
          : `Cache entries: the service reported ${fmt(mem.cacheEntries)} (provider_credentials_cache_entries on its /metrics, read after both RSS readings)` +
            (mem.cacheBytes === undefined
              ? "."
              : `, held in ${(mem.cacheBytes / 2 ** 20).toFixed(1)} MiB outside the JavaScript heap (provider_credentials_cache_bytes).`)) +
        (expected
          ? ` With one entry per organisation/provider (shared by the organisation and its teams) and one link per team, the fill makes ` +
            `${fmt(expected.memoryOrganizationResolutions)} memory-organisation resolutions + ${fmt(expected.organizationResolutions)} organisation resolutions + ` +
            `${fmt(expected.teamLinks)} team links = ${fmt(expectedTotal)} entries (computed from the workload's sizes; the count above is the service's).`
          : ""),
    );
  }
  if (r.keyring) {
    lines.push(
      `Keyring: ${fmt(r.keyring.oursPerSec)} decrypts/s (node:crypto Fernet) vs ${fmt(r.keyring.npmPerSec)}/s (npm fernet 0.4.0, ttl 0), same token, one process.`,
    );
  }
  if (r.connect) {
    lines.push(`Connect protocol calls went to ${r.connect.target}${r.connect.separatePort ? " (CONNECT_PORT)" : " (GRPC_PORT: no separate Connect port)"}.`);
  }
  const hashes = [...new Set((r.serviceStarts ?? []).map((s) => s.sourceHash))];
  if (hashes.length > 1) {
    lines.push(
      `**The service's source changed during the run** (${(r.serviceStarts ?? []).map((s) => `${s.service}: ${s.sourceHash}`).join(", ")}): ` +
        "figures of different service processes are not comparable; run again.",
    );
  }
  const unclean = r.serviceExits.filter((e) => e.code !== 0);
  if (unclean.length) {
    lines.push(
      `Service processes stopped with SIGTERM exited with ${[...new Set(unclean.map((e) => `code ${e.code}${e.signal ? `/${e.signal}` : ""}`))].join(", ")} ` +
        `after ${unclean.map((e) => e.ms).join(", ")} ms (expected: drain, then exit 0).`,
    );
  }
  if (r.serviceLogIssues.length) {
    lines.push("");
    lines.push(`Service warnings/errors logged during the run (${r.serviceLogIssues.length} shown):`);
    for (const issue of r.serviceLogIssues) lines.push(`- \`${issue.slice(0, 300)}\``);
  }
  lines.push("");
  lines.push("Reproduce: `npm ci && npm run bench` (`-- --quick` for a two-minute version; `BENCH_DATABASE_URL` to use another PostgreSQL).");
  return lines.join("\n");
}

const PANEL_SHORT: Record<PanelCaseName, string> = { bare: "bare", check: "Check", hot: "(b)", uniform: "(c)" };

/** The "Side by side" section: one row per round, a median row (ratios with their range) and a pooled row. */
function renderPanel(p: SidePanel | ServerBoundPanel): string[] {
  const lines: string[] = [];
  const n = p.rounds.length;
  const bound = "quota" in p ? p : undefined;
  lines.push(
    bound
      ? `#### Side by side, server-bound: servers held to ${bound.quota.percent}% of a core (${p.inFlight} in flight)`
      : `#### Side by side, a core each (${p.inFlight} in flight)`,
  );
  lines.push("");
  if (bound) {
    lines.push(
      `Both servers (the bare grpc-js server and the service) ran under one CPU quota, ${bound.quota.percent}% of a core over a ${bound.quota.periodUs / 1000} ms period ` +
        `(${bound.quota.mechanism}), still pinned to their core; the generator kept its own core. With the servers the bottleneck, calls/s measure what a call costs ` +
        `the server; the ratio targets are judged on these rounds. Shown, not assumed: the bare floor under the quota from one generator ${fmt(bound.oneGenerator.callsPerSec)} calls/s ` +
        `(generator main thread busy ${fmt(bound.oneGenerator.generatorBusyPct ?? bound.oneGenerator.generatorCpuPct)}%), from two generator processes ${fmt(bound.twoGenerators.callsPerSec)} calls/s ` +
        `(×${ratio(bound.twoGenerators.callsPerSec / bound.oneGenerator.callsPerSec)}). Latencies include the waits for the next quota period.`,
    );
    lines.push("");
  }
  lines.push(
    `${n} rounds of the four cases of the ratio targets, back to back from ${p.generators === 1 ? "one generator" : `${p.generators} generators`}: ` +
      `each case ${p.warmupMs / 1000} s warm-up, ${p.durationMs / 1000} s measured; round k starts at the k-th of (bare, Check, (b), (c)), rotating. ` +
      "A round's ratios compare figures measured seconds apart, where the sequential cases above are minutes apart on a machine whose speed drifts; " +
      `the targets for (b) and (c) against the floors are the medians over the rounds${n % 2 === 0 ? " (the mean of the middle two)" : ""}. ` +
      "Pooled: each case's calls over its total measured time, percentiles of its rounds' merged histograms. " +
      '"bare": Health/Check on the bare grpc-js server; "Check": Health/Check on our service (grpc-health-check, on grpc-js\'s own call path); (b) hot set and (c) uniform: ResolveKey on our service (cache on; grpc-js\'s own call path too).',
  );
  if (p.bareIdle) {
    const pct = (p.bareIdle.cpuMs / p.bareIdle.wallMs) * 100;
    lines.push("");
    lines.push(
      `The bare grpc-js server idled on the service's core through the service's fill and sequential cases: ${fmt(p.bareIdle.cpuMs)} ms of CPU in ${fmt(p.bareIdle.wallMs / 1000)} s ` +
        `(${pct.toFixed(pct < 0.1 ? 3 : 2)}% of a core).`,
    );
  }
  lines.push("");
  lines.push(
    "| round | order | bare calls/s | Check calls/s | (b) calls/s | (c) calls/s | bare p99 ms | Check p99 ms | (b) p99 ms | (c) p99 ms | (b) ÷ bare | (b) ÷ Check | (b) p99 ÷ bare p99 | (c) ÷ bare | others (max) |",
  );
  lines.push("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const row = (first: string, order: string, calls: string[], p99s: string[], ratios: string[], others: string) =>
    lines.push(`| ${first} | ${order} | ${[...calls, ...p99s, ...ratios].join(" | ")} | ${others} |`);
  for (const round of p.rounds) {
    const worst = Math.max(...PANEL_CASES.map((name) => round.cases[name].otherCores ?? NaN).filter((x) => Number.isFinite(x)));
    row(
      String(round.round),
      round.order.map((name) => PANEL_SHORT[name]).join(" → "),
      PANEL_CASES.map((name) => fmt(round.cases[name].callsPerSec)),
      PANEL_CASES.map((name) => ms(round.cases[name].p99Ms)),
      PANEL_RATIOS.map((name) => ratio(round.ratios[name])),
      cores(Number.isFinite(worst) ? worst : undefined),
    );
  }
  row(
    "**median**",
    "",
    PANEL_CASES.map((name) => fmt(median(p.rounds.map((round) => round.cases[name].callsPerSec)))),
    PANEL_CASES.map((name) => ms(median(p.rounds.map((round) => round.cases[name].p99Ms)))),
    PANEL_RATIOS.map((name) => `**${ratio(p.ratios[name].median)}** (${ratio(p.ratios[name].min)}-${ratio(p.ratios[name].max)})`),
    "",
  );
  row(
    "pooled",
    "",
    PANEL_CASES.map((name) => fmt(p.pooled[name].callsPerSec)),
    PANEL_CASES.map((name) => ms(p.pooled[name].p99Ms)),
    PANEL_RATIOS.map((name) => ratio(p.ratios[name].pooled)),
    "",
  );
  const failed = PANEL_CASES.filter((name) => p.pooled[name].errors + p.pooled[name].stuck > 0);
  if (failed.length) {
    lines.push("");
    lines.push(`Errors in the rounds: ${failed.map((name) => `${PANEL_SHORT[name]} ${fmt(p.pooled[name].errors + p.pooled[name].stuck)}`).join(", ")}.`);
  }
  return lines;
}

export async function writeResults(results: Results, dir = "bench/results"): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, "latest.json");
  // Histograms stay out of the committed file: the percentiles above are what matter.
  await writeFile(file, JSON.stringify(results, null, 2) + "\n");
  await writeFile(path.join(dir, "latest.md"), results.markdown + "\n");
  return file;
}
