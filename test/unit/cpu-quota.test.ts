import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { createCpuQuota, type CpuQuota } from "../../bench/cpu-quota.js";
import { processCpuMs } from "../../bench/cpu.js";

// The benchmark's server-bound panel limits the servers with a cgroup CPU quota. Where the
// machine gives no writable cgroup (not root, no cpu controller), the helper must say why.
const probe = createCpuQuota(20);
const available = !("unavailable" in probe);
if (available) (probe as CpuQuota).remove();

describe("createCpuQuota", () => {
  let quota: CpuQuota | undefined;
  const children: Array<ReturnType<typeof spawn>> = [];
  afterEach(() => {
    for (const child of children.splice(0)) child.kill("SIGKILL");
    quota?.remove();
    quota = undefined;
  });

  it("refuses a quota that makes no sense", () => {
    expect(createCpuQuota(0)).toEqual({ unavailable: expect.stringContaining("0%") });
    expect(createCpuQuota(150)).toEqual({ unavailable: expect.stringContaining("150%") });
  });

  it.skipIf(!available)("holds a busy process to its share of a core, and lets it go again", async () => {
    const made = createCpuQuota(20);
    if ("unavailable" in made) throw new Error(made.unavailable);
    quota = made;
    expect(made.mechanism).toMatch(/^cgroup v[12] /);
    const busy = spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" });
    children.push(busy);
    const pid = busy.pid!;
    const cpuOver = async (ms: number) => {
      const before = processCpuMs(pid)!;
      const started = performance.now();
      await new Promise((resolve) => setTimeout(resolve, ms));
      return ((processCpuMs(pid)! - before) / (performance.now() - started)) * 100;
    };
    await new Promise((resolve) => setTimeout(resolve, 200));
    made.add(pid);
    const limited = await cpuOver(1_500);
    made.release(pid);
    const free = await cpuOver(1_000);
    // 20% of a core, give or take the 10 ms clock-tick resolution; free, a busy loop takes far more.
    expect(limited).toBeLessThan(30);
    expect(limited).toBeGreaterThan(5);
    expect(free).toBeGreaterThan(limited * 2);
    const dir = made.mechanism.slice(made.mechanism.indexOf("(") + 1, -1);
    expect(existsSync(dir)).toBe(true);
    made.remove();
    quota = undefined;
    expect(existsSync(dir)).toBe(false);
  });
});
