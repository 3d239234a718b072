// `npm run soak` in short: two real replicas on the test PostgreSQL, ResolveKey
// load and administrator changes for 20 s, every answer judged by the soak's
// model. The soak runs as its own process (`node --import tsx`, so that
// signals reach it), in a fresh database it creates and drops.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, inject, it } from "vitest";
import type { SoakResults } from "../../bench/soak-report.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The made-up keys' prefixes (bench/soak-model.ts): none may ever appear in the output. */
const KEY_PATTERN = /sk-proj-soak|sk-ant-api03-soak|AIzaSoak|fw_soak/;

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once("exit", (code) => resolve(code));
  });
}

describe("soak (bench/soak.ts), a 20-second run", () => {
  it("serves resolves on both replicas and administrator changes with zero errors", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "pc-soak-test-"));
    const json = path.join(dir, "soak.json");
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "bench/soak.ts",
        "--seconds",
        "20",
        "--database-url",
        inject("adminDatabaseUrl"),
        "--json",
        json,
        "--in-flight",
        "8",
        "--organizations",
        "100",
      ],
      { cwd: ROOT, env: { ...process.env, SOAK_SERVICE_LOG_LEVEL: "warn" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    try {
      const code = await exited(child);
      expect(code, output).toBe(0);
      const text = await readFile(json, "utf8");
      const results = JSON.parse(text) as SoakResults;
      expect(results.status, output).toBe("PASS");
      expect(results.totals.errors, JSON.stringify(results.totals.errorExamples)).toBe(0);
      expect(results.totals.calls).toBeGreaterThan(0);
      expect(results.totals.mutations).toBeGreaterThan(0);
      expect(results.totals.checks).toBeGreaterThan(0);
      expect(results.totals.finalCheck.mismatches).toBe(0);
      expect(results.totals.finalCheck.resolves).toBeGreaterThan(0);
      expect(results.replicas).toHaveLength(2);
      for (const replica of results.replicas) {
        expect(replica.calls, replica.name).toBeGreaterThan(0);
        expect(replica.adminCalls, replica.name).toBeGreaterThan(0);
        expect(replica.rssStartMiB, replica.name).toBeGreaterThan(0);
        expect(replica.rssEndMiB, replica.name).toBeGreaterThan(0);
        expect(replica.exit?.code, replica.name).toBe(0);
      }
      // Seeded through the API: fixed pairs answer their seeded key, the fallback and FAILED_PRECONDITION.
      expect(results.totals.outcomes.organization).toBeGreaterThan(0);
      expect(results.totals.outcomes.environment).toBeGreaterThan(0);
      expect(results.totals.outcomes.failedPrecondition).toBeGreaterThan(0);
      expect(results.settings.memoryJudged).toBe(false);
      // No provider key, in the output or in the results.
      expect(output).not.toMatch(KEY_PATTERN);
      expect(text).not.toMatch(KEY_PATTERN);
      expect(await readFile(json.replace(/\.json$/, ".md"), "utf8")).toContain("| replica-A |");
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM"); // the soak stops its replicas and drops its database
        await exited(child);
      }
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
