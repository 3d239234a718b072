// `npm run start:prod [-- service|portal]`: a production installation (`npm ci --omit=dev` plus the
// output of `npm run build`, docs/operations/deploy.md) started with plain node: the credentials
// service, the admin portal, or both. Unlike `npm start` it builds nothing, runs no TypeScript, writes
// nothing into the installation, never starts the embedded PostgreSQL (NODE_ENV=production: the
// service refuses to start without DATABASE_URL), and never makes up a secret.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { portFrom } from "../runtime/config.js";

/** The installation's root: this file runs as dist/service/src/cli/start-production.js. */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");
const serviceEntry = path.join(root, "dist", "service", "src", "main.js");
const portalEntry = path.join(root, "portal", "server.js");
const portalBuild = path.join(root, "portal", "build", "handler.js");

const USAGE = `Usage: npm run start:prod [-- service|portal]

Starts the built service and admin portal (both, or the one named) with NODE_ENV=production.
Needs the output of \`npm run build\` and, for the service, DATABASE_URL and MASTER_KEY (or
DATABASE_URL_FILE and MASTER_KEY_FILE). See docs/operations/deploy.md.`;

function say(message: string): void {
  console.error(`[start:prod] ${message}`);
}

function exitWith(message: string, code: number): never {
  console.error(message);
  process.exit(code);
}

/** The portal's settings, read from its own schema (portal/src/lib/server/settings.js) at run time. */
async function portalSettingNames(): Promise<{ names: string[]; secrets: string[] }> {
  const settings = (await import(pathToFileURL(path.join(root, "portal", "src", "lib", "server", "settings.js")).href)) as {
    PORTAL_SETTINGS: Record<string, unknown>;
    PORTAL_SECRET_SETTINGS: readonly string[];
  };
  return { names: Object.keys(settings.PORTAL_SETTINGS), secrets: [...settings.PORTAL_SECRET_SETTINGS] };
}

/**
 * The portal's environment when both run from here: only the variables the portal reads (its settings,
 * NAME_FILE for its secrets) and the runtime's own, never the service's database URL, master key or
 * provider keys. The portal listens on PORTAL_HOST (HOST is the service's) and reaches the service on
 * CREDENTIALS_SERVICE_URL, by default this machine's GRPC_PORT (https when the service serves TLS).
 */
async function portalEnvironment(env: NodeJS.ProcessEnv): Promise<NodeJS.ProcessEnv> {
  const { names, secrets } = await portalSettingNames();
  const runtime = ["PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL", "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS"];
  const excluded = new Set(["HOST", "DATA_DIR", "DATABASE_URL", "DATABASE_URL_FILE"]);
  const wanted = [...runtime, ...names, ...secrets.map((name) => `${name}_FILE`)].filter((name) => !excluded.has(name));
  const portalEnv: NodeJS.ProcessEnv = Object.fromEntries(wanted.filter((name) => env[name] !== undefined).map((name) => [name, env[name]]));
  const tls = Boolean(env.TLS_CERT_FILE);
  portalEnv.NODE_ENV = "production";
  portalEnv.HOST = env.PORTAL_HOST || "127.0.0.1";
  portalEnv.CREDENTIALS_SERVICE_URL = env.CREDENTIALS_SERVICE_URL || `${tls ? "https" : "http"}://127.0.0.1:${portFrom(env, "GRPC_PORT", 50051)}`;
  return portalEnv;
}

function checkBuilt(what: "service" | "portal"): void {
  const entry = what === "service" ? serviceEntry : portalBuild;
  if (!existsSync(entry)) {
    exitWith(`The ${what} is not built: ${path.relative(root, entry)} is missing. Run \`npm run build\` where the dev dependencies are installed.`, 1);
  }
}

async function runBoth(): Promise<void> {
  checkBuilt("service");
  checkBuilt("portal");
  const children: ChildProcess[] = [];
  let stopping = false;
  const stopAll = (code: number) => {
    if (stopping) return;
    stopping = true;
    let left = children.filter((child) => child.exitCode === null && child.signalCode === null).length;
    if (left === 0) process.exit(code);
    for (const child of children) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      child.once("exit", () => {
        if (--left === 0) process.exit(code);
      });
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 30_000).unref();
    }
  };
  const start = (name: string, entry: string, env: NodeJS.ProcessEnv) => {
    const child = spawn(process.execPath, ["--enable-source-maps", entry], { cwd: root, env, stdio: ["ignore", "inherit", "inherit"] });
    children.push(child);
    child.once("exit", (code, signal) => {
      if (stopping) return;
      say(`${name} stopped (${signal ?? `code ${code}`}); stopping everything`);
      stopAll(code === 0 ? 1 : (code ?? 1));
    });
  };
  process.on("SIGINT", () => stopAll(0));
  process.on("SIGTERM", () => stopAll(0));
  const portalEnv = await portalEnvironment(process.env);
  start("credentials service", serviceEntry, process.env);
  start("admin portal", portalEntry, portalEnv);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes("--help") || args.includes("-h")) exitWith(USAGE, 0);
  if (args.length > 1 || (args.length === 1 && args[0] !== "service" && args[0] !== "portal")) exitWith(`Unknown arguments: ${args.join(" ")}\n\n${USAGE}`, 2);
  if (process.env.NODE_ENV && process.env.NODE_ENV !== "production") say(`NODE_ENV=${process.env.NODE_ENV} replaced by production`);
  process.env.NODE_ENV = "production";
  // One of them alone runs in this process: signals reach it directly, and its exit code is ours.
  if (args[0] === "service") {
    checkBuilt("service");
    await import(pathToFileURL(serviceEntry).href);
  } else if (args[0] === "portal") {
    checkBuilt("portal");
    await import(pathToFileURL(portalEntry).href);
  } else {
    await runBoth();
  }
}

main().catch((error: unknown) => exitWith(`Cannot start: ${error instanceof Error ? error.message : String(error)}`, 1));
