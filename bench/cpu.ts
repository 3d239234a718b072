// Where the CPU went during a measured window, from /proc: the server's and the
// generators' CPU time, how long their main threads sat runnable but waiting
// for a core (schedstat: contention), the benchmark's PostgreSQL, and the rest
// of the machine. This machine is shared, so the last figure matters: other
// processes on the same cores lower every number here.
import { readdirSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";

const CLOCK_TICKS = (() => {
  const value = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout?.trim());
  return Number.isInteger(value) && value > 0 ? value : 100;
})();

function read(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** User + system CPU time of a whole process (all threads), in ms; 10 ms resolution. */
export function processCpuMs(pid: number): number | undefined {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

function parentOf(pid: number): number | undefined {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** Main thread (the event loop, for Node.js): ns on a CPU and ns runnable but waiting for one. */
function schedstat(pid: number): { runNs: number; waitNs: number } | undefined {
  const text = read(`/proc/${pid}/schedstat`);
  if (!text) return undefined;
  const [run, wait] = text.trim().split(/\s+/).map(Number);
  return { runNs: run, waitNs: wait };
}

/** Busy and total ticks of the whole machine (all cores), from /proc/stat. */
function machineTicks(): { busy: number; total: number } | undefined {
  const line = read("/proc/stat")?.split("\n")[0];
  if (!line?.startsWith("cpu ")) return undefined;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = user + nice + system + irq + softirq + (steal || 0);
  return { busy, total: busy + idle + (iowait || 0) };
}

function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    if (parentOf(Number(name)) === pid) children.push(Number(name));
  }
  return children;
}

export interface Snapshot {
  at: number;
  machine?: { busy: number; total: number };
  server?: { cpuMs?: number; sched?: { runNs: number; waitNs: number } };
  generators: Array<{ cpuMs?: number; sched?: { runNs: number; waitNs: number } }>;
  /** CPU ms of the benchmark's PostgreSQL (postmaster and its backends), by pid. */
  postgres: Map<number, number>;
}

export function snapshot(serverPid: number | undefined, generatorPids: number[], postmasterPid: number | undefined): Snapshot {
  const postgres = new Map<number, number>();
  if (postmasterPid !== undefined) {
    for (const pid of [postmasterPid, ...childrenOf(postmasterPid)]) {
      const ms = processCpuMs(pid);
      if (ms !== undefined) postgres.set(pid, ms);
    }
  }
  return {
    at: performance.now(),
    machine: machineTicks(),
    server: serverPid === undefined ? undefined : { cpuMs: processCpuMs(serverPid), sched: schedstat(serverPid) },
    generators: generatorPids.map((pid) => ({ cpuMs: processCpuMs(pid), sched: schedstat(pid) })),
    postgres,
  };
}

export interface CpuUse {
  wallMs: number;
  /** Server process CPU, % of one core. */
  serverCpuPct?: number;
  /** Server main thread runnable but not running, % of the window. */
  serverWaitPct?: number;
  /** Server main thread on a CPU or waiting for one, % of the window: near 100 means the server is the bottleneck. */
  serverBusyPct?: number;
  generatorCpuPct?: number;
  generatorWaitPct?: number;
  /** Generator main threads on a CPU or waiting for one, % of the window (summed over generators). */
  generatorBusyPct?: number;
  /** Cores' worth of CPU used by the benchmark's PostgreSQL. */
  postgresCores?: number;
  /** Cores' worth of CPU used by everything else on the machine. */
  otherCores?: number;
  machineCores?: number;
}

export function cpuBetween(a: Snapshot, b: Snapshot): CpuUse {
  const wallMs = b.at - a.at;
  const pct = (ms: number | undefined) => (ms === undefined ? undefined : (ms / wallMs) * 100);
  const diff = (x: number | undefined, y: number | undefined) => (x === undefined || y === undefined ? undefined : y - x);
  const serverCpuMs = diff(a.server?.cpuMs, b.server?.cpuMs);
  const serverRunMs = diff(a.server?.sched?.runNs, b.server?.sched?.runNs);
  const serverWaitMs = diff(a.server?.sched?.waitNs, b.server?.sched?.waitNs);
  let generatorCpuMs: number | undefined = 0;
  let generatorRunWaitNs: number | undefined = 0;
  let generatorWaitNs: number | undefined = 0;
  a.generators.forEach((g, i) => {
    const cpu = diff(g.cpuMs, b.generators[i]?.cpuMs);
    const run = diff(g.sched?.runNs, b.generators[i]?.sched?.runNs);
    const wait = diff(g.sched?.waitNs, b.generators[i]?.sched?.waitNs);
    generatorCpuMs = cpu === undefined || generatorCpuMs === undefined ? undefined : generatorCpuMs + cpu;
    generatorRunWaitNs = run === undefined || wait === undefined || generatorRunWaitNs === undefined ? undefined : generatorRunWaitNs + run + wait;
    generatorWaitNs = wait === undefined || generatorWaitNs === undefined ? undefined : generatorWaitNs + wait;
  });
  let postgresMs = 0;
  for (const [pid, ms] of b.postgres) postgresMs += ms - (a.postgres.get(pid) ?? ms);
  const machineBusyTicks = diff(a.machine?.busy, b.machine?.busy);
  const machineTotalTicks = diff(a.machine?.total, b.machine?.total);
  const machineBusyMs = machineBusyTicks === undefined ? undefined : (machineBusyTicks * 1000) / CLOCK_TICKS;
  const ours = (serverCpuMs ?? 0) + (generatorCpuMs ?? 0) + postgresMs;
  return {
    wallMs,
    serverCpuPct: pct(serverCpuMs),
    serverWaitPct: serverWaitMs === undefined ? undefined : pct(serverWaitMs / 1e6),
    serverBusyPct: serverRunMs === undefined || serverWaitMs === undefined ? undefined : pct((serverRunMs + serverWaitMs) / 1e6),
    generatorCpuPct: pct(generatorCpuMs),
    generatorWaitPct: generatorWaitNs === undefined ? undefined : pct(generatorWaitNs / 1e6),
    generatorBusyPct: generatorRunWaitNs === undefined ? undefined : pct(generatorRunWaitNs / 1e6),
    postgresCores: a.postgres.size ? postgresMs / wallMs : undefined,
    otherCores: machineBusyMs === undefined ? undefined : Math.max(0, (machineBusyMs - ours) / wallMs),
    machineCores: machineTotalTicks === undefined ? undefined : (machineTotalTicks * 1000) / CLOCK_TICKS / wallMs,
  };
}
