// `npm start`: the whole product. Builds what is missing or stale (the service
// into dist/, the portal into portal/build), starts the credentials service (on
// DATABASE_URL or the embedded PostgreSQL), then the admin portal, waits for both
// to be healthy, and prints where to sign in. Ctrl-C or SIGTERM stops both cleanly.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { ensurePortalBuild } from "@provider-credentials/wire/build/portal-build";
import { ensureServiceBuild, rootDir as root, serviceEntry, serviceNodeArgs } from "../../scripts/ensure-build.js";
import { portFrom } from "../runtime/config.js";
import { assertEmbeddedCanReach, dataDirFrom, isServiceReadyMessage, READY_OVER_IPC, type ServiceReadyMessage } from "../runtime/local.js";
import { refuseSecretConflicts, SERVICE_SECRET_SETTINGS } from "../runtime/secret-files.js";

const children: ChildProcess[] = [];
let stopping = false;

function say(message: string): void {
  console.error(`[start] ${message}`);
}

/**
 * Runs the service, its output passed through, and resolves once it says over its IPC channel that it
 * serves (whatever LOG_LEVEL lets it log), with the first administrator's notice if it made one.
 */
function startService(name: string, command: string, args: string[], env: NodeJS.ProcessEnv): Promise<ServiceReadyMessage> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    children.push(child);
    let isReady = false;
    child.on("message", (message) => {
      if (isReady || !isServiceReadyMessage(message)) return;
      isReady = true;
      resolve(message);
    });
    child.once("exit", (code, signal) => {
      if (!isReady) reject(new Error(`${name} exited before it was ready (${signal ?? `code ${code}`})`));
      else if (!stopping) {
        say(`${name} stopped unexpectedly (${signal ?? `code ${code}`}); stopping everything`);
        void stopAll(1);
      }
    });
  });
}

async function stopAll(code: number): Promise<never> {
  stopping = true;
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
          setTimeout(() => child.kill("SIGKILL"), 15_000).unref();
        }),
    ),
  );
  process.exit(code);
}

async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url, { redirect: "manual" });
      if (res.status < 500) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no answer from ${url} within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The portal's admin token: SERVICE_ADMIN_TOKEN_FILE handed on as it is (the portal reads the file), else the token itself. */
function serviceAdminToken(): { SERVICE_ADMIN_TOKEN_FILE: string } | { SERVICE_ADMIN_TOKEN: string } {
  if (process.env.SERVICE_ADMIN_TOKEN_FILE) return { SERVICE_ADMIN_TOKEN_FILE: process.env.SERVICE_ADMIN_TOKEN_FILE };
  return { SERVICE_ADMIN_TOKEN: serviceAdminTokenValue() };
}

function serviceAdminTokenValue(): string {
  if (process.env.SERVICE_ADMIN_TOKEN) return process.env.SERVICE_ADMIN_TOKEN;
  const secrets = path.join(dataDirFrom(process.env), "secrets.env");
  const match = existsSync(secrets) ? /^SERVICE_ADMIN_TOKEN=(.+)$/m.exec(readFileSync(secrets, "utf8")) : null;
  if (!match) throw new Error("SERVICE_ADMIN_TOKEN is not set: the portal needs an admin token to talk to the service");
  return match[1];
}

async function main(): Promise<void> {
  process.on("SIGINT", () => void stopAll(0));
  process.on("SIGTERM", () => void stopAll(0));

  // Secrets given as NAME_FILE are handed on as files: the service and the portal read them (and
  // warn about their modes) themselves. Only the conflict is refused here, before building.
  refuseSecretConflicts(process.env, SERVICE_SECRET_SETTINGS);
  // The embedded database's one start-up failure that building first would only delay.
  if (!process.env.DATABASE_URL && !process.env.DATABASE_URL_FILE && process.env.NODE_ENV !== "production") await assertEmbeddedCanReach(process.env);
  await ensureServiceBuild((message) => say(message));
  await ensurePortalBuild((message) => say(message));

  const grpcPort = portFrom(process.env, "GRPC_PORT", 50051);
  const connectPort = portFrom(process.env, "CONNECT_PORT", 50052);
  const portalPort = portFrom(process.env, "PORTAL_PORT", 3000);
  const metricsPort = portFrom(process.env, "METRICS_PORT", 9464);
  say("starting the credentials service");
  // The compiled service (dist/), run by node itself (no wrapper, so that signals reach the service directly;
  // no tsx loader, whose thread and heap cost 25-45 MiB), with serviceNodeArgs(): source maps, and the
  // single-threaded collector when this machine or container gives us one core.
  const { firstAdminNotice } = await startService("credentials service", process.execPath, [...serviceNodeArgs(), serviceEntry], {
    ...process.env,
    GRPC_PORT: String(grpcPort),
    CONNECT_PORT: String(connectPort),
    METRICS_PORT: String(metricsPort),
    [READY_OVER_IPC]: "1",
  });
  const firstAdmin = firstAdminNotice?.split("\n") ?? [];

  // ORIGIN only when the operator sets it (behind a TLS proxy); otherwise the portal takes it from the Host header.
  const origin = process.env.ORIGIN || `http://127.0.0.1:${portalPort}`;
  say("starting the admin portal");
  // The portal holds no database connection and no master key: it gets only the variables it reads
  // (docs/configuration.md) and the runtime's own, never the rest of this process's environment
  // (MASTER_KEY, DATABASE_URL, fallback provider keys, ADMIN_PASSWORD, ...).
  const portalVariables = [
    ...["PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL", "NODE_ENV", "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS"],
    ...["ORIGIN", "PROTOCOL_HEADER", "HOST_HEADER", "PORT_HEADER", "ADDRESS_HEADER", "XFF_DEPTH", "BODY_SIZE_LIMIT", "SHUTDOWN_TIMEOUT_MS", "LOG_LEVEL"],
    ...["CREDENTIALS_SERVICE_CA_FILE", "CREDENTIALS_SERVICE_CERT_FILE", "CREDENTIALS_SERVICE_KEY_FILE"],
  ];
  const portalEnv: NodeJS.ProcessEnv = {
    ...Object.fromEntries(portalVariables.filter((name) => process.env[name] !== undefined).map((name) => [name, process.env[name]])),
    PORTAL_PORT: String(portalPort),
    HOST: process.env.PORTAL_HOST || "127.0.0.1",
    CREDENTIALS_SERVICE_URL: process.env.CREDENTIALS_SERVICE_URL || `http://127.0.0.1:${grpcPort}`,
    ...serviceAdminToken(),
  };
  const portal = spawn(process.execPath, [path.join(root, "portal/server.js")], { cwd: root, env: portalEnv, stdio: ["ignore", "inherit", "inherit"] });
  children.push(portal);
  portal.once("exit", (code, signal) => {
    if (!stopping) {
      say(`admin portal stopped (${signal ?? `code ${code}`}); stopping everything`);
      void stopAll(1);
    }
  });
  await waitForHttp(`http://127.0.0.1:${portalPort}/healthz`, 60_000);

  const lines = [
    "",
    "Provider Credentials is running.",
    `  Admin portal:         ${origin}  (REST API under ${origin}/api, docs at ${origin}/api/docs)`,
    `  Credentials service:  gRPC on 127.0.0.1:${grpcPort}; Connect and gRPC-Web on 127.0.0.1:${connectPort}`,
    `  Metrics (Prometheus): http://127.0.0.1:${metricsPort}/metrics  (authorization: Bearer <a metrics or admin token>)`,
    ...(firstAdmin.length > 0 ? ["", ...firstAdmin.map((l) => `  ${l}`)] : []),
    "",
    "Press Ctrl-C to stop.",
    "",
  ];
  console.log(lines.join("\n"));
}

main().catch(async (error) => {
  say(`cannot start: ${error instanceof Error ? error.message : String(error)}`);
  await stopAll(1);
});
