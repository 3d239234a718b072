import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Builds the portal (portal/build) only when it is missing or stale. Stale
 * means: the hash of everything the build reads (the portal's sources and
 * configs, the service's generated protobuf code, package-lock.json) differs
 * from the one stamped in the build when it was made.
 */

/** The repository root: the nearest folder up with portal/svelte.config.js (this file also runs compiled, from dist/portal/scripts). */
function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "portal", "svelte.config.js"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no portal/svelte.config.js above ${from}`);
  }
}

const rootDir = findRoot(path.dirname(fileURLToPath(import.meta.url)));
const portalDir = path.join(rootDir, "portal");
const buildDir = path.join(portalDir, "build");
const stampFile = path.join(buildDir, ".build-stamp");
const lockDir = path.join(portalDir, ".build-lock");

/** What the build reads, relative to the repository root. */
const INPUTS = [
  "portal/src",
  "portal/svelte.config.js",
  "portal/vite.config.ts",
  "portal/tsconfig.json",
  "portal/package.json",
  "service/src/gen",
  "package-lock.json",
];

async function filesUnder(relative: string): Promise<string[]> {
  const absolute = path.join(rootDir, relative);
  if (!existsSync(absolute)) return [];
  const info = await stat(absolute);
  if (info.isFile()) return [relative];
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
export async function portalSourceHash(): Promise<string> {
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
  try {
    if (!existsSync(path.join(buildDir, "handler.js"))) return undefined;
    return (await readFile(stampFile, "utf8")).trim();
  } catch {
    return undefined;
  }
}

function runViteBuild(): Promise<void> {
  const vite = path.join(rootDir, "node_modules", "vite", "bin", "vite.js");
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [vite, "build", "--logLevel", "warn"], {
      cwd: portalDir,
      env: { ...process.env, NODE_ENV: "production" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const output: string[] = [];
    child.stdout.on("data", (chunk: Buffer) => output.push(chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => output.push(chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`the portal build failed (${signal ?? `exit ${code}`}):\n${output.join("").slice(-8000)}`));
    });
  });
}

/** Takes a directory lock so that two processes never build at once; a lock older than 10 minutes is stale. */
async function withLock<T>(log: (msg: string) => void, work: () => Promise<T>): Promise<T> {
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
      if (Date.now() > deadline) throw new Error(`another portal build holds ${lockDir}; remove it if no build is running`);
      if (!announced) log("portal: waiting for another build of the portal to finish…");
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
 * Makes sure portal/build is current, building it if not. Prints progress
 * through `log` (default: the console).
 */
export async function ensurePortalBuild(log: (msg: string) => void = (msg) => console.log(msg), options: { force?: boolean } = {}): Promise<void> {
  const wanted = await portalSourceHash();
  if (!options.force && (await currentStamp()) === wanted) return;
  await withLock(log, async () => {
    // Another process may have built it while we waited.
    const hash = await portalSourceHash();
    if (!options.force && (await currentStamp()) === hash) return;
    const started = Date.now();
    log(
      options.force
        ? "portal: building portal/build…"
        : existsSync(buildDir)
          ? "portal: sources changed, rebuilding portal/build…"
          : "portal: building portal/build (first run; this takes a little while)…",
    );
    await runViteBuild();
    await writeFile(stampFile, `${hash}\n`);
    log(`portal: built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });
}

// `tsx portal/scripts/ensure-build.ts [--force]`: build if needed (or always), from the command line.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  ensurePortalBuild(undefined, { force: process.argv.includes("--force") }).catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
