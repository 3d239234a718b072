import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Builds the service ahead of time (`tsc -p tsconfig.build.json`: JavaScript
 * and source maps in dist/) only when dist/ is missing or stale, so that it
 * runs with plain node instead of under tsx's loader (whose own thread and V8
 * heap cost 25-45 MiB). Stale means: the hash of everything the build reads
 * (listed in INPUTS) differs from the one stamped in dist/ by the last
 * successful build.
 */

/** The repository root: the nearest folder up with tsconfig.build.json (this file also runs compiled, from dist/service/scripts). */
function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "tsconfig.build.json"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no tsconfig.build.json above ${from}`);
  }
}

export const rootDir = findRoot(path.dirname(fileURLToPath(import.meta.url)));
const distDir = path.join(rootDir, "dist");
/** The compiled service, to run as `node --enable-source-maps <serviceEntry>`. */
export const serviceEntry = path.join(distDir, "service", "src", "main.js");
const stampFile = path.join(distDir, ".service-build-stamp");
const lockDir = path.join(distDir, ".service-build-lock");

/**
 * What the build reads, relative to the repository root: tsconfig.build.json's
 * includes, the files service/src/cli/start.ts imports from outside them, the
 * compiler settings, and package-lock.json (the TypeScript version, @types).
 */
const INPUTS = [
  "service/src",
  "migrations",
  "service/scripts/ensure-build.ts",
  "portal/scripts/ensure-build.ts",
  "tsconfig.json",
  "tsconfig.build.json",
  "package-lock.json",
];

async function filesUnder(relative: string): Promise<string[]> {
  const absolute = path.join(rootDir, relative);
  if (!existsSync(absolute)) return [];
  if ((await stat(absolute)).isFile()) return [relative];
  const entries = await readdir(absolute, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map((entry) => {
      const child = path.join(relative, entry.name);
      if (entry.isDirectory()) return filesUnder(child);
      return Promise.resolve(entry.isFile() ? [child] : []);
    }),
  );
  return nested.flat();
}

/** The hash of every input file's path and contents. */
export async function serviceSourceHash(): Promise<string> {
  const files = (await Promise.all(INPUTS.map(filesUnder))).flat().sort();
  const hash = createHash("sha256");
  for (const file of files) {
    hash.update(file.split(path.sep).join("/"));
    hash.update("\0");
    hash.update(await readFile(path.join(rootDir, file)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

async function currentStamp(): Promise<string | undefined> {
  if (!existsSync(serviceEntry)) return undefined;
  return (await readFile(stampFile, "utf8").catch(() => "")).trim() || undefined;
}

function runTsc(): Promise<void> {
  const tsc = path.join(rootDir, "node_modules", "typescript", "bin", "tsc");
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: rootDir, stdio: ["ignore", "pipe", "pipe"] });
    const output: string[] = [];
    child.stdout.on("data", (chunk: Buffer) => output.push(chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => output.push(chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`the service build (tsc -p tsconfig.build.json) failed (${signal ?? `exit ${code}`}):\n${output.join("").trimEnd()}`));
    });
  });
}

/** Takes a directory lock so that two processes never build at once; a lock older than 10 minutes is stale. */
async function withLock<T>(log: (msg: string) => void, work: () => Promise<T>): Promise<T> {
  await mkdir(distDir, { recursive: true });
  const deadline = Date.now() + 15 * 60_000;
  let announced = false;
  for (;;) {
    try {
      await mkdir(lockDir);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const age = Date.now() - (await stat(lockDir).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > 10 * 60_000) {
        await rm(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`another service build holds ${lockDir}; remove it if no build is running`);
      if (!announced) log("service: waiting for another build of the service to finish…");
      announced = true;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  try {
    return await work();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}

/**
 * Makes sure dist/ holds the current compiled service, building it if not.
 * Prints progress through `log` (default: the console). A failed build
 * throws with tsc's output and leaves no stamp, so the next start tries again.
 */
export async function ensureServiceBuild(log: (msg: string) => void = (msg) => console.log(msg), options: { force?: boolean } = {}): Promise<void> {
  if (!options.force && (await currentStamp()) === (await serviceSourceHash())) return;
  await withLock(log, async () => {
    // Another process may have built it while we waited.
    const hash = await serviceSourceHash();
    const stamp = await currentStamp();
    if (!options.force && stamp === hash) return;
    const started = Date.now();
    log(
      options.force
        ? "service: building the service (tsc -p tsconfig.build.json)…"
        : stamp
          ? "service: sources changed, rebuilding the service (tsc)…"
          : "service: building the service (tsc; about 10-20 s)…",
    );
    await rm(stampFile, { force: true });
    await runTsc();
    await writeFile(stampFile, `${hash}\n`);
    log(`service: built into dist/ in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });
}

// `tsx service/scripts/ensure-build.ts [--force]`: build if needed (or always), from the command line.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  ensureServiceBuild(undefined, { force: process.argv.includes("--force") }).catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
