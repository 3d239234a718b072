import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensureStampedBuild, findRoot, runNodeTool, type StampedBuild } from "@provider-credentials/wire/build/stamped-build";

/**
 * Builds the service ahead of time (`tsc -p tsconfig.build.json`: JavaScript
 * and source maps in dist/) only when dist/ is missing or stale, so that it
 * runs with plain node instead of under tsx's loader (whose own thread and V8
 * heap cost 25-45 MiB).
 */

/** The repository root (this file also runs compiled, from dist/service/scripts). */
export const rootDir = findRoot(path.dirname(fileURLToPath(import.meta.url)), "tsconfig.build.json");
const distDir = path.join(rootDir, "dist");
/** The compiled service, to run as `node ...serviceNodeArgs() <serviceEntry>`. */
export const serviceEntry = path.join(distDir, "service", "src", "main.js");

/**
 * The node flags the service runs with (npm start, the benchmark): stack traces
 * that point into the TypeScript sources, and, when the service has a single
 * core (a pinned process, a 1-CPU container), `--single-threaded-gc`: the
 * collector's helper threads (parallel scavenge and marking, concurrent marking
 * and sweeping) can only take turns with the event loop on that core. Measured
 * in four alternating pairs of hot-set ResolveKey runs on one pinned core:
 * median server CPU 190 -> 152 µs a call, p99 49 -> 43 ms. It has to be a
 * command-line flag: V8 aborts when some of these are changed in a running
 * process (--no-parallel-marking through v8.setFlagsFromString, for one).
 * `cores`: the cores the service process may use (default: this process's).
 */
export function serviceNodeArgs(cores = os.availableParallelism()): string[] {
  return ["--enable-source-maps", ...(cores <= 1 ? ["--single-threaded-gc"] : [])];
}

const SERVICE_BUILD: StampedBuild = {
  label: "service",
  rootDir,
  // tsconfig.build.json's includes (the wire package among them), the files service/src/cli/start.ts
  // imports from outside them, the compiler settings, and package-lock.json (the TypeScript version, @types).
  inputs: [
    "service/src",
    "migrations",
    "service/scripts",
    "packages/wire/src",
    "packages/wire/package.json",
    "tsconfig.json",
    "tsconfig.build.json",
    "package-lock.json",
  ],
  output: serviceEntry,
  stampFile: path.join(distDir, ".service-build-stamp"),
  lockDir: path.join(distDir, ".service-build-lock"),
  build: async () => {
    await runNodeTool(path.join(rootDir, "node_modules", "typescript", "bin", "tsc"), ["-p", "tsconfig.build.json"], {
      cwd: rootDir,
      what: "the service build (tsc -p tsconfig.build.json)",
    });
    await linkCompiledWire();
  },
  messages: {
    force: "building the service (tsc -p tsconfig.build.json)…",
    stale: "sources changed, rebuilding the service (tsc)…",
    first: "building the service (tsc; about 10-20 s)…",
  },
};

/**
 * @provider-credentials/wire's package.json points at its TypeScript sources (read as they are by
 * tsx, Vite and tsc), which plain node cannot load. So dist/ gets a package of the same name over
 * the compiled copy (dist/packages/wire): dist/node_modules/@provider-credentials/wire links to it,
 * and its package.json maps the same subpaths to .js files. Node looks in dist/node_modules before
 * the repository's node_modules for every module under dist/.
 */
async function linkCompiledWire(): Promise<void> {
  const source = JSON.parse(await readFile(path.join(rootDir, "packages", "wire", "package.json"), "utf8")) as {
    name: string;
    exports: Record<string, string>;
  };
  const compiled = path.join(distDir, "packages", "wire");
  const exports = Object.fromEntries(Object.entries(source.exports).map(([subpath, target]) => [subpath, target.replace(/\.ts$/, ".js")]));
  await writeFile(path.join(compiled, "package.json"), `${JSON.stringify({ name: source.name, private: true, type: "module", exports }, null, 2)}\n`);
  const link = path.join(distDir, "node_modules", ...source.name.split("/"));
  await mkdir(path.dirname(link), { recursive: true });
  await rm(link, { recursive: true, force: true });
  await symlink(path.relative(path.dirname(link), compiled), link, "dir");
}

/** Makes sure dist/ holds the current compiled service, building it if not; progress through `log` (default: the console). */
export function ensureServiceBuild(log: (msg: string) => void = (msg) => console.log(msg), options: { force?: boolean } = {}): Promise<void> {
  return ensureStampedBuild(SERVICE_BUILD, log, options);
}

// `tsx service/scripts/ensure-build.ts [--force]`: build if needed (or always), from the command line.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  ensureServiceBuild(undefined, { force: process.argv.includes("--force") }).catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
