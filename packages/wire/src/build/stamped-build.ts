import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * A build made only when it is missing or stale, shared by the service
 * (tsc into dist/) and the portal (vite into portal/build). Stale means: the
 * hash of everything the build reads (`inputs`) differs from the one stamped
 * by the last successful build. A directory lock keeps two processes from
 * building at once; a failed build leaves no stamp, so the next start tries
 * again.
 */
export interface StampedBuild {
  /** "service", "portal": the prefix of every progress line. */
  label: string;
  rootDir: string;
  /** What the build reads, files or folders relative to rootDir. */
  inputs: readonly string[];
  /** A file that exists once a build has been made. */
  output: string;
  stampFile: string;
  lockDir: string;
  build(): Promise<void>;
  /** Progress lines: forced, sources changed, first build. */
  messages: { force: string; stale: string; first: string };
}

/** The repository root: the nearest folder at or above `from` holding `marker` (a path relative to the root). */
export function findRoot(from: string, marker: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, marker))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no ${marker} above ${from}`);
  }
}

async function filesUnder(rootDir: string, relative: string): Promise<string[]> {
  const absolute = path.join(rootDir, relative);
  if (!existsSync(absolute)) return [];
  if ((await stat(absolute)).isFile()) return [relative];
  const entries = await readdir(absolute, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map((entry) => {
      const child = path.join(relative, entry.name);
      if (entry.isDirectory()) return filesUnder(rootDir, child);
      return Promise.resolve(entry.isFile() ? [child] : []);
    }),
  );
  return nested.flat();
}

/** The hash of every input file's path and contents. */
export async function sourceHash(rootDir: string, inputs: readonly string[]): Promise<string> {
  const files = (await Promise.all(inputs.map((input) => filesUnder(rootDir, input)))).flat().sort();
  const hash = createHash("sha256");
  for (const file of files) {
    hash.update(file.split(path.sep).join("/"));
    hash.update("\0");
    hash.update(await readFile(path.join(rootDir, file)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

/** Runs a Node.js tool (tsc, vite) quietly; rejects with the end of its output, headed by `what`, when it fails. */
export function runNodeTool(script: string, args: string[], options: { cwd: string; what: string; env?: NodeJS.ProcessEnv }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { cwd: options.cwd, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    const output: string[] = [];
    child.stdout.on("data", (chunk: Buffer) => output.push(chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => output.push(chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${options.what} failed (${signal ?? `exit ${code}`}):\n${output.join("").slice(-8000).trimEnd()}`));
    });
  });
}

async function currentStamp(spec: StampedBuild): Promise<string | undefined> {
  if (!existsSync(spec.output)) return undefined;
  return (await readFile(spec.stampFile, "utf8").catch(() => "")).trim() || undefined;
}

/** Takes a directory lock so that two processes never build at once; a lock older than 10 minutes is stale. */
async function withLock<T>(spec: StampedBuild, log: (msg: string) => void, work: () => Promise<T>): Promise<T> {
  await mkdir(path.dirname(spec.lockDir), { recursive: true });
  const deadline = Date.now() + 15 * 60_000;
  let announced = false;
  for (;;) {
    try {
      await mkdir(spec.lockDir);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const age = Date.now() - (await stat(spec.lockDir).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > 10 * 60_000) {
        await rm(spec.lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`another ${spec.label} build holds ${spec.lockDir}; remove it if no build is running`);
      if (!announced) log(`${spec.label}: waiting for another build of the ${spec.label} to finish…`);
      announced = true;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  try {
    return await work();
  } finally {
    await rm(spec.lockDir, { recursive: true, force: true });
  }
}

/** Makes sure the build is current, building it if not (always with `force`); progress through `log`. */
export async function ensureStampedBuild(spec: StampedBuild, log: (msg: string) => void, options: { force?: boolean } = {}): Promise<void> {
  if (!options.force && (await currentStamp(spec)) === (await sourceHash(spec.rootDir, spec.inputs))) return;
  await withLock(spec, log, async () => {
    // Another process may have built it while we waited.
    const hash = await sourceHash(spec.rootDir, spec.inputs);
    const stamp = await currentStamp(spec);
    if (!options.force && stamp === hash) return;
    const started = Date.now();
    log(`${spec.label}: ${options.force ? spec.messages.force : stamp ? spec.messages.stale : spec.messages.first}`);
    await rm(spec.stampFile, { force: true });
    await spec.build();
    // Sources edited while the build read them: it may hold some of each version, so it gets no stamp and the
    // next start builds again.
    if ((await sourceHash(spec.rootDir, spec.inputs)) !== hash) {
      log(`${spec.label}: sources changed during the build; it will be built again next time`);
      return;
    }
    await writeFile(spec.stampFile, `${hash}\n`);
    log(`${spec.label}: built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });
}
