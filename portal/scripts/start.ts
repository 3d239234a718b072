// `npm run start:portal`: builds the portal if needed, then runs it (portal/server.js).
// With no SERVICE_ADMIN_TOKEN and no DATABASE_URL it takes the token that the
// service's embedded default keeps in DATA_DIR/secrets.env (default .data/).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { ensurePortalBuild } from "./ensure-build.js";
import { loadPortalSettings, PortalConfigError } from "../src/lib/server/settings.js";

function tokenFromLocalSecrets(dataDir: string): string | undefined {
  const file = path.resolve(dataDir, "secrets.env");
  if (!existsSync(file)) return undefined;
  const line = readFileSync(file, "utf8")
    .split("\n")
    .find((l) => l.startsWith("SERVICE_ADMIN_TOKEN="));
  return line?.slice("SERVICE_ADMIN_TOKEN=".length).trim() || undefined;
}

let settings;
try {
  settings = loadPortalSettings(process.env);
} catch (error) {
  console.error(error instanceof PortalConfigError ? error.message : error);
  process.exit(2);
}
if (!settings.SERVICE_ADMIN_TOKEN && !settings.DATABASE_URL) {
  const token = tokenFromLocalSecrets(settings.DATA_DIR ?? ".data");
  if (token) process.env.SERVICE_ADMIN_TOKEN = token;
}

try {
  await ensurePortalBuild();
} catch (error) {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
}
await import("../server.js");
