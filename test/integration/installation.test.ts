import { execFile } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { firstBlockedDirectory } from "../../service/src/runtime/embedded-postgres.js";

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
const asRoot = process.getuid?.() === 0;

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end and returns its exit code and output, whether it succeeded or not. */
async function outcome(file: string, args: string[], options: { env: NodeJS.ProcessEnv; cwd?: string }): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(file, args, { ...options, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const baseEnv = () => ({ PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: "warn" });

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "pc-installation-"));
  // mkdtemp makes it 0700; the cases below choose which folder in it is closed.
  await chmod(scratch, 0o711);
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("command-line tools never create an installation", () => {
  const commands: Array<[string, string[]]> = [
    ["admin", ["list"]],
    ["admin", ["reset-password", "--email", "admin@localhost"]],
    ["admin", ["remove", "--email", "admin@localhost"]],
    ["token", ["list"]],
    ["migrate", []],
    ["verify-keys", []],
    ["rotate-master-key", []],
  ];

  it.each(commands)("npm run %s with a DATA_DIR that holds no installation exits 2, names the folder, and creates nothing", async (script, args) => {
    const dataDir = path.join(scratch, `none-${script}`);
    const result = await outcome(TSX, [`service/src/cli/${script}.ts`, ...args], { env: { ...baseEnv(), DATA_DIR: dataDir, npm_lifecycle_event: script } });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`No installation in ${dataDir}`);
    expect(result.stderr).toContain(`DATA_DIR=/the/same/folder npm run ${script}`);
    expect(result.stderr).toContain("DATABASE_URL=postgres://... MASTER_KEY=...");
    expect(result.stderr).not.toMatch(/^\s+at /m);
    expect(existsSync(dataDir)).toBe(false);
  });

  it.each(["migrate", "verify-keys"])(
    "npm run %s refuses an unknown option with its usage (exit 2) before looking for anything, and --help prints it",
    async (script) => {
      const dataDir = path.join(scratch, `args-${script}`);
      const bad = await outcome(TSX, [`service/src/cli/${script}.ts`, "--force"], { env: { ...baseEnv(), DATA_DIR: dataDir } });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("Unknown option '--force'");
      expect(bad.stderr).toContain(`Usage: npm run ${script}`);
      const help = await outcome(TSX, [`service/src/cli/${script}.ts`, "--help"], { env: { ...baseEnv(), DATA_DIR: dataDir } });
      expect(help.code).toBe(0);
      expect(help.stderr).toContain(`Usage: npm run ${script}`);
      expect(existsSync(dataDir)).toBe(false);
    },
  );

  it("without DATA_DIR looks in .data of the working directory, and says so", async () => {
    const cwd = path.join(scratch, "elsewhere");
    await mkdir(cwd);
    const result = await outcome(TSX, [path.resolve("service/src/cli/admin.ts"), "list"], { env: { ...baseEnv(), npm_lifecycle_event: "admin" }, cwd });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`No installation in ${path.join(cwd, ".data")}`);
    expect(result.stderr).toContain("npm run admin -- list");
    expect(existsSync(path.join(cwd, ".data"))).toBe(false);
  });
});

describe.skipIf(!asRoot)("the embedded PostgreSQL as root, with the data in a folder other users cannot enter (mode 0700)", () => {
  let locked: string;
  beforeAll(async () => {
    locked = path.join(scratch, "locked");
    await mkdir(locked, { mode: 0o700 });
    await chmod(locked, 0o700);
  });

  it("npm start stops before starting or creating anything, names the folder and the three ways out, without a stack trace", async () => {
    const dataDir = path.join(locked, "data");
    const result = await outcome(TSX, ["service/src/main.ts"], { env: { ...baseEnv(), DATA_DIR: dataDir, GRPC_PORT: "0", CONNECT_PORT: "0" } });
    const output = result.stdout + result.stderr;
    expect(result.code).toBe(1);
    expect(output).toContain(`the user "postgres", and that user cannot enter ${locked} (mode 0700, owner uid 0) on the way to its data in ${dataDir}`);
    expect(output).toContain("DATA_DIR=/var/lib/provider-credentials npm start");
    expect(output).toContain("run as a user other than root");
    expect(output).toContain("DATABASE_URL=postgres://USER@HOST:5432/DATABASE npm start (with MASTER_KEY set)");
    expect(output).not.toMatch(/^\s+at /m);
    expect(output).not.toContain("EACCES");
    // Nothing created: no data folder, no secrets.
    expect(existsSync(dataDir)).toBe(false);
  });

  it("npm test stops before vitest starts when the suite's own PostgreSQL could not reach the temporary folder", async () => {
    const result = await outcome(TSX, ["test/run.ts", "--project", "integration"], { env: { ...baseEnv(), TMPDIR: locked } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`that user cannot enter ${locked} (mode 0700, owner uid 0)`);
    expect(result.stderr).toContain("TMPDIR=/var/tmp npm test");
    expect(result.stderr).toContain("TEST_DATABASE_URL=postgres://USER@HOST:5432/DATABASE npm test");
    expect(result.stderr).not.toContain("RUN");
  });
});

describe("firstBlockedDirectory judges a folder by its mode bits for the user PostgreSQL runs as", () => {
  const stranger = { uid: 54_321, gid: 54_321 };

  it("finds the folder a stranger cannot enter, and none once it may pass through", async () => {
    const dir = path.join(scratch, "modes");
    const inner = path.join(dir, "inner", "data");
    await mkdir(inner, { recursive: true });
    await chmod(dir, 0o700);
    const blocked = await firstBlockedDirectory(inner, stranger);
    expect(blocked).toEqual({ dir, mode: 0o700, owner: (await stat(dir)).uid });
    await chmod(dir, 0o711);
    expect(await firstBlockedDirectory(inner, stranger)).toBeUndefined();
  });

  it("lets the owner through by the owner's bits, and does not judge what does not exist yet", async () => {
    const dir = path.join(scratch, "owned");
    await mkdir(dir, { mode: 0o700 });
    const { uid, gid } = await stat(dir);
    expect(await firstBlockedDirectory(path.join(dir, "not", "yet"), { uid, gid })).toBeUndefined();
    await chmod(dir, 0o600);
    expect((await firstBlockedDirectory(path.join(dir, "not", "yet"), { uid, gid }))?.dir).toBe(dir);
  });
});
