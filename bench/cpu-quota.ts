// A CPU quota for the benchmark's server processes: a cgroup (v2 cpu.max, or
// v1 cpu.cfs_quota_us) that lets its processes use a fixed share of one core.
//
// Why: on a 2-core machine one plain grpc-js client process costs more CPU a
// call than the bare grpc-js server does, so with a core each the generator is
// the bottleneck and the floor measures the client. Limit both servers to the
// same share of a core, well below what the generator can drive, and the
// servers become the bottleneck: calls/s then measure what a call costs the
// server, the thing the ratio targets are about. The benchmark shows that it
// worked (a second generator does not raise the limited floor).
//
// Needs write access to a cgroup hierarchy with the cpu controller (root on
// this machine); where there is none, `createCpuQuota` says why and the
// benchmark runs without the server-bound panel.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface CpuQuota {
  /** "cgroup v1 cpu.cfs_quota_us" or "cgroup v2 cpu.max", and where. */
  mechanism: string;
  /** Share of one core, in percent. */
  percent: number;
  /** Scheduler period the quota is counted over, µs. */
  periodUs: number;
  /** Moves a process (all its threads) under the quota. */
  add(pid: number): void;
  /** Moves a process back to the group it was in before add(). */
  release(pid: number): void;
  /** Releases every process still under the quota and deletes the group. */
  remove(): void;
}

const V1_ROOTS = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"];
const V2_ROOT = "/sys/fs/cgroup";

function read(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** The group a process is in, as a path under the hierarchy's root ("/" for the root), from /proc/PID/cgroup. */
function groupOf(pid: number, version: 1 | 2): string | undefined {
  for (const line of (read(`/proc/${pid}/cgroup`) ?? "").split("\n")) {
    const [, controllers, group] = line.split(":");
    if (group === undefined) continue;
    if (version === 2 ? line.startsWith("0::") : controllers.split(",").includes("cpu")) return group;
  }
  return undefined;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A new group limited to `percent` of one core over `periodUs`, or why none can be made.
 * The group is empty until add(); remove() must run before exit (the benchmark's cleanup does).
 */
export function createCpuQuota(percent: number, periodUs = 10_000): CpuQuota | { unavailable: string } {
  if (!(percent > 0 && percent <= 100)) return { unavailable: `a quota of ${percent}% of a core makes no sense` };
  const quotaUs = Math.round((periodUs * percent) / 100);
  const name = `provider-credentials-bench-${process.pid}`;
  const v1Root = V1_ROOTS.find((root) => existsSync(path.join(root, "cpu.cfs_quota_us")));
  const reasons: string[] = [];
  const candidates: Array<{ version: 1 | 2; root: string }> = [];
  if (v1Root) candidates.push({ version: 1, root: v1Root });
  if (read(path.join(V2_ROOT, "cgroup.controllers")) !== undefined) candidates.push({ version: 2, root: V2_ROOT });
  if (candidates.length === 0) return { unavailable: "no cgroup hierarchy with the cpu controller under /sys/fs/cgroup" };
  for (const { version, root } of candidates) {
    const dir = path.join(root, name);
    try {
      if (version === 2) {
        if (!(read(path.join(root, "cgroup.controllers")) ?? "").split(/\s+/).includes("cpu")) throw new Error("the cpu controller is not available");
        if (!(read(path.join(root, "cgroup.subtree_control")) ?? "").split(/\s+/).includes("cpu"))
          writeFileSync(path.join(root, "cgroup.subtree_control"), "+cpu");
      }
      mkdirSync(dir);
      try {
        if (version === 1) {
          writeFileSync(path.join(dir, "cpu.cfs_period_us"), String(periodUs));
          writeFileSync(path.join(dir, "cpu.cfs_quota_us"), String(quotaUs));
        } else {
          writeFileSync(path.join(dir, "cpu.max"), `${quotaUs} ${periodUs}`);
        }
      } catch (error) {
        rmdirSync(dir);
        throw error;
      }
    } catch (error) {
      reasons.push(`cgroup v${version} at ${root}: ${errorText(error)}`);
      continue;
    }
    const origins = new Map<number, string>();
    const procsOf = (group: string) => path.join(root, group, "cgroup.procs");
    const quota: CpuQuota = {
      mechanism: `cgroup v${version} ${version === 1 ? "cpu.cfs_quota_us" : "cpu.max"} (${dir})`,
      percent,
      periodUs,
      add(pid) {
        if (!origins.has(pid)) origins.set(pid, groupOf(pid, version) ?? "/");
        writeFileSync(path.join(dir, "cgroup.procs"), String(pid));
      },
      release(pid) {
        const origin = origins.get(pid);
        if (origin === undefined) return;
        origins.delete(pid);
        try {
          writeFileSync(procsOf(origin), String(pid));
        } catch (error) {
          // Gone already (ESRCH): nothing to move.
          if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
        }
      },
      remove() {
        for (const pid of [...origins.keys()]) {
          try {
            quota.release(pid);
          } catch {
            // best effort: rmdir below says if the group is still in use
          }
        }
        if (existsSync(dir)) rmdirSync(dir);
      },
    };
    return quota;
  }
  return { unavailable: reasons.join("; ") };
}
