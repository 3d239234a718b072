import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensurePortalBuild } from "@provider-credentials/wire/build/portal-build";

// The portal's stamped build is defined in @provider-credentials/wire (build/portal-build.ts), which
// `npm start` (a service script) shares without importing anything from portal/.
export { ensurePortalBuild };

// `tsx portal/scripts/ensure-build.ts [--force]`: build if needed (or always), from the command line.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  ensurePortalBuild(undefined, { force: process.argv.includes("--force") }).catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
