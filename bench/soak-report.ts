// The soak's results: the JSON written to bench/results/soak-latest.json and
// its markdown rendering (printed at the end and written beside it).
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { SeedSummary } from "./soak-seed.js";

export interface ReplicaResult {
  name: string;
  calls: number;
  callsPerSec: number;
  /** Calls of the administrator loop (changes and checks) to this replica. */
  adminCalls: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** VmRSS right after the warm-up, at the last sample, and the highest sample after the warm-up. */
  rssStartMiB: number;
  rssEndMiB: number;
  rssPeakMiB: number;
  /** VmHWM at the end. */
  hwmMiB: number;
  growthPct: number;
  startSeconds: number;
  exit?: { code: number | null; signal: string | null; ms: number };
  logIssues: string[];
  errorLogLines: number;
}

export interface SoakResults {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  status: "PASS" | "FAIL";
  failures: string[];
  settings: {
    durationSeconds: number;
    warmupSeconds: number;
    /** A --seconds run: growth is reported, not judged, and results are written only with --json. */
    short: boolean;
    memoryJudged: boolean;
    memoryLimitPct: number;
    inFlightPerReplica: number;
    mutationsPerSec: number;
    staleGraceMs: number;
    sampleEverySeconds: number;
  };
  machine: {
    cpuModel: string;
    cores: number;
    memoryGiB: number;
    kernel: string;
    node: string;
    postgres: string;
    database: "embedded" | "external";
    loadAverageAtStart: number[];
    loadAverageAtEnd: number[];
  };
  seed: SeedSummary;
  totals: {
    loadSeconds: number;
    calls: number;
    callsPerSec: number;
    outcomes: { organization: number; environment: number; failedPrecondition: number; staleWithinGrace: number; fixedPairs: number; mutablePairs: number };
    mutations: number;
    mutationsPerSec: number;
    mutationsByOp: Record<string, number>;
    expectedRefusals: number;
    checks: number;
    skippedMutationTicks: number;
    mutationP50Ms: number;
    mutationP99Ms: number;
    finalCheck: { resolves: number; listedOrganizations: number; mismatches: number };
    errors: number;
    errorsByKind: Record<string, number>;
    errorExamples: string[];
  };
  replicas: ReplicaResult[];
  driver: { rssStartMiB: number; rssEndMiB: number };
  memorySamples: Array<{ t: number; rssMiB: number[]; driverMiB: number }>;
  markdown: string;
}

const int = (n: number) => Math.round(n).toLocaleString("en");
const mib = (n: number) => (Number.isFinite(n) ? `${n.toFixed(1)} MiB` : "?");
const pct = (n: number) => (Number.isFinite(n) ? `${n >= 0 ? "+" : ""}${n.toFixed(1)}%` : "?");
const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(2)} ms` : "?");

function duration(seconds: number): string {
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60} min`;
  return seconds >= 60 ? `${(seconds / 60).toFixed(1)} min` : `${seconds} s`;
}

export function renderMarkdown(r: Omit<SoakResults, "markdown">): string {
  const t = r.totals;
  const s = r.settings;
  const m = r.machine;
  const lines: string[] = [];
  lines.push(`### Soak: ${r.startedAt}`, "");
  const growth = r.replicas.map((x) => `${x.name} ${pct(x.growthPct)}`).join(", ");
  lines.push(
    `**${r.status}**: ${int(t.errors)} errors in ${int(t.calls)} ResolveKey calls and ${int(t.mutations)} administrator changes over ${duration(s.durationSeconds)}; ` +
      `resident memory growth after the warm-up: ${growth} (limit ${s.memoryLimitPct}%${s.memoryJudged ? "" : "; not judged: a run shorter than 5 minutes"}).`,
    "",
  );
  if (r.failures.length > 0) {
    for (const f of r.failures) lines.push(`- FAIL: ${f}`);
    lines.push("");
  }
  lines.push(
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB; Linux ${m.kernel}; Node.js ${m.node}; ${m.postgres} (${m.database}). ` +
      `Load average at start ${m.loadAverageAtStart.map((x) => x.toFixed(2)).join(" ")}, at end ${m.loadAverageAtEnd.map((x) => x.toFixed(2)).join(" ")}. ` +
      `Nothing pinned: both replicas, PostgreSQL and the soak driver share the cores.`,
    "",
    `Run: ${duration(s.durationSeconds)} of load after seeding (warm-up ${s.warmupSeconds} s, then RSS "start"; "end" is the last sample; sampled every ${s.sampleEverySeconds} s from /proc/<pid>/status VmRSS). ` +
      `Two replicas (\`node --import tsx service/src/main.ts\`, separate processes, one database, default cache settings). ` +
      `ResolveKey: ${s.inFlightPerReplica} calls in flight per replica, plain @grpc/grpc-js client with a \`resolve\`-scope token, uniformly over every organisation and team and the four providers. ` +
      `Administrator changes: ${s.mutationsPerSec}/s with the admin token, alternating replicas, on the mutable organisations only; a superseded answer is tolerated for ${s.staleGraceMs} ms after a change (cross-replica invalidation).`,
    "",
    `Data (seeded through the service's gRPC API in ${r.seed.seconds.toFixed(1)} s, ${int(r.seed.calls)} calls): ${r.seed.organizations} organisations ` +
      `(${r.seed.fixedOrganizations} fixed, ${r.seed.mutableOrganizations} mutable), ${r.seed.teams} teams, ${r.seed.credentials} credentials (${r.seed.inactiveCredentials} inactive). ` +
      `Fixed organisation/provider pairs must always answer: their seeded key ${r.seed.fixedPairs.organization}, the environment fallback ${r.seed.fixedPairs.environment}, ` +
      `FAILED_PRECONDITION (Fireworks has no fallback) ${r.seed.fixedPairs.failedPrecondition}.`,
    "",
  );
  lines.push(
    "| replica | ResolveKey calls | calls/s | p50 | p99 | max | admin calls | RSS start | RSS end | growth | peak after warm-up | VmHWM | exit after SIGTERM |",
  );
  lines.push("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const x of r.replicas) {
    const exit = x.exit ? `code ${x.exit.code ?? "-"}${x.exit.signal ? ` (${x.exit.signal})` : ""} in ${int(x.exit.ms)} ms` : "?";
    lines.push(
      `| ${x.name} | ${int(x.calls)} | ${int(x.callsPerSec)} | ${ms(x.p50Ms)} | ${ms(x.p99Ms)} | ${ms(x.maxMs)} | ${int(x.adminCalls)} | ${mib(x.rssStartMiB)} | ${mib(x.rssEndMiB)} | ${pct(x.growthPct)} | ${mib(x.rssPeakMiB)} | ${mib(x.hwmMiB)} | ${exit} |`,
    );
  }
  lines.push(`| total | ${int(t.calls)} | ${int(t.callsPerSec)} | | | | | | | | | | |`, "");

  lines.push("| figure | value |", "| --- | --- |");
  lines.push(`| ResolveKey calls | ${int(t.calls)} in ${t.loadSeconds.toFixed(1)} s (${int(t.callsPerSec)}/s) |`);
  lines.push(
    `| right answers | ${int(t.outcomes.organization)} stored key, ${int(t.outcomes.environment)} environment fallback, ${int(t.outcomes.failedPrecondition)} FAILED_PRECONDITION where expected; ` +
      `${int(t.outcomes.fixedPairs)} for fixed pairs (exact seeded answer), ${int(t.outcomes.mutablePairs)} for mutable pairs |`,
  );
  lines.push(`| superseded answers within ${s.staleGraceMs} ms of a change (tolerated) | ${int(t.outcomes.staleWithinGrace)} |`);
  lines.push(
    `| administrator changes | ${int(t.mutations)} (${t.mutationsPerSec.toFixed(1)}/s; p50 ${ms(t.mutationP50Ms)}, p99 ${ms(t.mutationP99Ms)}; ${int(t.skippedMutationTicks)} ticks skipped) |`,
  );
  lines.push(
    `| changes by operation | ${
      Object.entries(t.mutationsByOp)
        .sort()
        .map(([op, n]) => `${op} ${int(n)}`)
        .join(", ") || "none"
    } |`,
  );
  lines.push(`| stale expected_version refused with ABORTED (expected) | ${int(t.expectedRefusals)} |`);
  lines.push(`| checks by the administrator loop (new/deleted teams and organisations on the other replica) | ${int(t.checks)} |`);
  lines.push(
    `| final check (both replicas, every pair, after the load) | ${int(t.finalCheck.resolves)} resolves and ${t.finalCheck.listedOrganizations} organisations' listings compared with the model: ${t.finalCheck.mismatches} mismatches |`,
  );
  lines.push(`| driver (this process) RSS | ${mib(r.driver.rssStartMiB)} → ${mib(r.driver.rssEndMiB)} |`);
  lines.push(
    `| **errors** | **${int(t.errors)}**${
      t.errors
        ? `: ${Object.entries(t.errorsByKind)
            .map(([k, n]) => `${k} ${int(n)}`)
            .join(", ")}`
        : ""
    } |`,
    "",
  );

  if (t.errorExamples.length > 0) {
    lines.push("First errors:", "");
    for (const e of t.errorExamples) lines.push(`- ${e.replace(/\|/g, "\\|")}`);
    lines.push("");
  }

  // A compact RSS timeline: about a dozen rows.
  if (r.memorySamples.length > 0) {
    const every = Math.max(1, Math.ceil(r.memorySamples.length / 12));
    const rows = r.memorySamples.filter((_, i) => i % every === 0 || i === r.memorySamples.length - 1);
    lines.push(`| elapsed | ${r.replicas.map((x) => `${x.name} VmRSS`).join(" | ")} |`, `| --- | ${r.replicas.map(() => "---").join(" | ")} |`);
    for (const row of rows) lines.push(`| ${row.t.toFixed(0)} s${row.t < s.warmupSeconds ? " (warm-up)" : ""} | ${row.rssMiB.map(mib).join(" | ")} |`);
    lines.push("");
  }
  const issues = r.replicas.flatMap((x) => x.logIssues.map((l) => `${x.name}: ${l}`));
  if (issues.length > 0) {
    lines.push(
      `Service log lines at warn or above (first ${issues.length}; ${r.replicas.map((x) => `${x.name} ${x.errorLogLines} at error`).join(", ")}):`,
      "",
    );
    for (const l of issues) lines.push(`- \`${l.replace(/`/g, "'")}\``);
    lines.push("");
  }
  return lines.join("\n");
}

export async function writeResults(results: SoakResults, jsonPath: string): Promise<{ json: string; markdown: string }> {
  await mkdir(path.dirname(jsonPath), { recursive: true });
  const markdownPath = jsonPath.endsWith(".json") ? `${jsonPath.slice(0, -5)}.md` : `${jsonPath}.md`;
  await writeFile(jsonPath, JSON.stringify(results, null, 2) + "\n");
  await writeFile(markdownPath, results.markdown + "\n");
  return { json: jsonPath, markdown: markdownPath };
}
