// `npm run pack:prod`: the production artifact, dist/release/provider-credentials-<version>.tgz: the
// build output (`npm run build`, made here first if missing or stale) and what `npm ci --omit=dev`
// needs to install the runtime dependencies next to it, nothing else (no TypeScript sources, no
// tests, no dev tooling). Install it with (docs/operations/deploy.md):
//   mkdir /opt/provider-credentials && tar -xzf provider-credentials-<version>.tgz -C /opt/provider-credentials
//   cd /opt/provider-credentials && npm ci --omit=dev --ignore-scripts
// The Dockerfile and CI (.ci/steps/production-install.sh) install it exactly so.
//
// A tarball rather than `npm pack`: npm pack never includes node_modules folders, and the compiled
// service finds the compiled @provider-credentials/wire through the symbolic link
// dist/node_modules/@provider-credentials/wire (service/scripts/ensure-build.ts), which tar keeps.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensureServiceBuild } from "../service/scripts/ensure-build.js";
import { ensurePortalBuild } from "../portal/scripts/ensure-build.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The package.json of every workspace the root package.json names ("packages/*", "clients/typescript"). */
function workspaceManifests(): string[] {
  const { workspaces = [] } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { workspaces?: string[] };
  return workspaces.flatMap((pattern) => {
    const dirs = pattern.endsWith("/*")
      ? readdirSync(path.join(root, pattern.slice(0, -2)), { withFileTypes: true })
          .filter((entry) => entry.isDirectory())
          .map((entry) => `${pattern.slice(0, -2)}/${entry.name}`)
      : [pattern];
    return dirs.map((dir) => `${dir}/package.json`).filter((file) => existsSync(path.join(root, file)));
  });
}

/** What the artifact holds, relative to the repository root. */
export function productionFiles(): string[] {
  const portalServerModules = readdirSync(path.join(root, "portal", "src", "lib", "server"))
    .filter((name) => name.endsWith(".js"))
    .map((name) => `portal/src/lib/server/${name}`);
  return [
    "package.json",
    "package-lock.json",
    // The workspaces npm ci links (node_modules/@provider-credentials/wire, ...), their package.json only:
    // package-lock.json names them, and npm ci refuses a lock that does not match. The service uses the
    // compiled copy of the wire package in dist/.
    ...workspaceManifests(),
    "dist",
    // portal/package.json says "type": "module" for server.js and build/.
    "portal/package.json",
    "portal/server.js",
    "portal/build",
    // What portal/server.js imports: settings, secret files, the logger (plain JavaScript).
    ...portalServerModules,
  ];
}

async function main(): Promise<void> {
  await ensureServiceBuild();
  await ensurePortalBuild();
  const { version } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { version: string };
  const outDir = path.join(root, "dist", "release");
  const out = path.join(outDir, `provider-credentials-${version}.tgz`);
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const files = productionFiles();
  for (const file of files) if (!existsSync(path.join(root, file))) throw new Error(`${file} is missing: run npm run build`);
  execFileSync(
    "tar",
    [
      "-czf",
      out,
      "--exclude=dist/release",
      "--exclude=dist/.service-build-lock",
      "--exclude=dist/.service-build-stamp",
      "--exclude=portal/build/.build-stamp",
      "--sort=name",
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "--mode=u+rwX,go+rX,go-w",
      "-C",
      root,
      ...files,
    ],
    { stdio: "inherit" },
  );
  console.log(path.relative(process.cwd(), out));
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
