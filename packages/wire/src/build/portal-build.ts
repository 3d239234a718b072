import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensureStampedBuild, findRoot, runNodeTool, type StampedBuild } from "./stamped-build.js";

/**
 * Builds the portal (portal/build) only when it is missing or stale: when the
 * hash of everything the build reads (the portal's sources and configs, this
 * package, package-lock.json) differs from the one stamped in the build when
 * it was made. Here, not under portal/, because `npm start` (the service's
 * launcher) builds the portal too, and the service imports nothing from portal/.
 */

/** The repository root (this file also runs compiled, from dist/packages/wire/src/build). */
const rootDir = findRoot(path.dirname(fileURLToPath(import.meta.url)), path.join("portal", "svelte.config.js"));
const portalDir = path.join(rootDir, "portal");
const buildDir = path.join(portalDir, "build");

const PORTAL_BUILD: StampedBuild = {
  label: "portal",
  rootDir,
  inputs: [
    "portal/src",
    "portal/svelte.config.js",
    "portal/vite.config.ts",
    "portal/tsconfig.json",
    "portal/package.json",
    "packages/wire/src",
    "packages/wire/package.json",
    "package-lock.json",
  ],
  output: path.join(buildDir, "handler.js"),
  stampFile: path.join(buildDir, ".build-stamp"),
  lockDir: path.join(portalDir, ".build-lock"),
  build: () =>
    runNodeTool(path.join(rootDir, "node_modules", "vite", "bin", "vite.js"), ["build", "--logLevel", "warn"], {
      cwd: portalDir,
      env: { ...process.env, NODE_ENV: "production" },
      what: "the portal build",
    }),
  messages: {
    force: "building portal/build…",
    stale: "sources changed, rebuilding portal/build…",
    first: "building portal/build (first run; this takes a little while)…",
  },
};

/** Makes sure portal/build is current, building it if not; progress through `log` (default: the console). */
export function ensurePortalBuild(log: (msg: string) => void = (msg) => console.log(msg), options: { force?: boolean } = {}): Promise<void> {
  return ensureStampedBuild(PORTAL_BUILD, log, options);
}
