// `npm start`: the credentials service on the configured or embedded database.
import path from "node:path";
import os from "node:os";
import v8 from "node:v8";
import { createLogger } from "./logger.js";
import { MasterKeyError } from "./keyring/index.js";
import { dataDirFrom, dataDirPrefix, openDatabase, type Database, READY_OVER_IPC, type ServiceReadyMessage } from "./runtime/local.js";
import { ConfigError } from "./runtime/config.js";
import { loadSettings, SECRET_SETTINGS, usePreparedStatements } from "./runtime/settings.js";
import { applySecretFiles } from "./runtime/secret-files.js";
import { startService, StartupError, type RunningService } from "./server.js";
import { ensureFirstAdmin } from "./admins/first-admin.js";
import { tlsFromEnv } from "./runtime/tls.js";

/**
 * Garbage collector settings for a long-running server with a large cache
 * (docs/performance.md), unless the same flag was given to node:
 * - How far the old generation may grow past what survived the last full
 *   collection before the next one (HEAP_GROWING_PERCENT, default 100; 0: V8
 *   decides). V8 allows up to 4x on a machine with memory to spare, and under
 *   load @grpc/grpc-js's HTTP/2 streams leave a few kB a call to the old
 *   generation. The cache lives outside the JavaScript heap (RecordTable), so
 *   the heap stays small with a full cache; the trade-off between resident
 *   memory and collections under load is in docs/performance.md.
 * - With a single core (a pinned or 1-CPU container), concurrent marking's
 *   helper threads only preempt the event loop.
 */
function tuneGarbageCollector(growingPercent: number): void {
  const flagName = (arg: string) =>
    arg
      .replace(/^--(no-)?/, "")
      .split("=")[0]
      .replaceAll("_", "-");
  const given = (name: string) => process.execArgv.some((arg) => flagName(arg) === name);
  if (growingPercent > 0 && !given("heap-growing-percent")) v8.setFlagsFromString(`--heap-growing-percent=${growingPercent}`);
  // npm start gives a one-core service --single-threaded-gc (serviceNodeArgs), which already turns it off.
  if (os.availableParallelism() === 1 && !given("concurrent-marking") && !given("single-threaded-gc")) v8.setFlagsFromString("--no-concurrent-marking");
}

const logger = createLogger();
const started = Date.now();
/** `npm start` runs this process and waits to hear that it is ready (not handed on to the embedded database). */
const startedByNpmStart = process.env[READY_OVER_IPC] === "1";
delete process.env[READY_OVER_IPC];

/** Whether `host` is a loopback address (reachable from this machine only). */
function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * In production, tokens and keys never cross a network in cleartext by default: listening on
 * an address other than loopback needs TLS, or ALLOW_PLAINTEXT=1 (logged as a warning).
 */
function refuseCleartext(host: string, tls: boolean, production: boolean, allowPlaintext: boolean): void {
  if (!production || tls || isLoopback(host)) return;
  const what = `listening on ${host} without TLS: API tokens, provider keys and metrics would cross the network in cleartext`;
  if (!allowPlaintext) {
    throw new ConfigError(
      `NODE_ENV=production refuses ${what}. Set TLS_CERT_FILE and TLS_KEY_FILE (every port then serves TLS), ` +
        `or HOST=127.0.0.1 behind a proxy that terminates TLS, or ALLOW_PLAINTEXT=1 when the network itself is encrypted.`,
    );
  }
  logger.warn({ host }, `ALLOW_PLAINTEXT=1: ${what}`);
}

async function main(): Promise<void> {
  let database: Database | undefined;
  let service: RunningService | undefined;
  try {
    // Secrets given as NAME_FILE (Docker, Kubernetes, systemd credentials) become NAME for everything below.
    for (const { message, variable, file, mode } of applySecretFiles(process.env, SECRET_SETTINGS)) logger.warn({ variable, file, mode }, message);
    const settings = loadSettings(process.env);
    tuneGarbageCollector(settings.HEAP_GROWING_PERCENT);
    const tls = tlsFromEnv(process.env);
    database = await openDatabase(process.env, logger, { createInstallation: true });
    const host = settings.HOST ?? (database.embedded ? "127.0.0.1" : "0.0.0.0");
    refuseCleartext(host, tls !== undefined, process.env.NODE_ENV === "production", settings.ALLOW_PLAINTEXT);
    const listenUrl = settings.DATABASE_LISTEN_URL;
    if (listenUrl !== undefined && database.embedded) throw new ConfigError("DATABASE_LISTEN_URL is set without DATABASE_URL: set both, or neither");
    const preparedStatements = usePreparedStatements(settings, database.databaseUrl);
    service = await startService({
      databaseUrl: database.databaseUrl,
      databaseListenUrl: listenUrl,
      preparedStatements,
      masterKey: database.masterKey,
      serviceAdminToken: database.serviceAdminToken,
      env: process.env,
      host,
      port: settings.GRPC_PORT,
      connectPort: settings.CONNECT_PORT,
      tls,
      logger,
      poolSize: settings.DB_POOL_SIZE,
      drainTimeoutMs: settings.SHUTDOWN_TIMEOUT_MS,
      cacheMaxEntries: settings.RESOLVE_CACHE_MAX_ENTRIES,
      cacheTtlMs: settings.RESOLVE_CACHE_TTL_MS,
      cacheOutageGraceMs: settings.RESOLVE_CACHE_OUTAGE_GRACE_MS,
      cacheHeartbeatMs: settings.RESOLVE_CACHE_HEARTBEAT_MS,
      failureThreshold: settings.FAILURE_THRESHOLD,
      rotationDays: settings.ROTATION_DAYS,
      keyCheckTimeoutMs: settings.KEY_CHECK_TIMEOUT_MS,
      apiBaseAllow: settings.API_BASE_ALLOW,
      sessionLifetimeHours: settings.ADMIN_SESSION_LIFETIME_HOURS,
      metricsPort: settings.METRICS_PORT,
      connectionLimits: {
        maxConnections: settings.RPC_MAX_CONNECTIONS,
        maxStreamsPerConnection: settings.RPC_MAX_STREAMS_PER_CONNECTION,
        idleTimeoutMs: settings.RPC_IDLE_TIMEOUT_MS,
      },
      healthMaxWatchers: settings.HEALTH_MAX_WATCHERS,
      watchHeartbeatMs: settings.WATCH_HEARTBEAT_MS,
      watchMaxStreams: settings.WATCH_MAX_STREAMS,
    });
  } catch (error) {
    await database?.stop().catch(() => undefined);
    fail(error);
  }
  let firstAdmin: Awaited<ReturnType<typeof ensureFirstAdmin>>;
  try {
    firstAdmin = await ensureFirstAdmin(service.parts.admins, process.env, database.embedded);
  } catch (error) {
    await service.close().catch(() => undefined);
    await database.stop().catch(() => undefined);
    fail(error);
  }

  const grpcAddress = `${service.host}:${service.port}`;
  const connectAddress = `${service.host}:${service.connectPort}`;
  logger.info(
    { grpc: grpcAddress, connect: connectAddress, startupMs: Date.now() - started, embedded: database.embedded },
    `credentials service ready in ${Date.now() - started} ms: gRPC on ${grpcAddress}; Connect and gRPC-Web on ${connectAddress} (${service.tls ? (service.tls.clientCa ? "mutual TLS" : "TLS, HTTP/2 and HTTP/1.1") : "h2c"})` +
      (service.metricsPort === undefined
        ? "; metrics off (set METRICS_PORT)"
        : `; Prometheus metrics on ${service.tls ? "https" : "http"}://${service.host}:${service.metricsPort}/metrics`),
  );
  if (database.embedded) {
    const secrets = path.join(dataDirFrom(process.env), "secrets.env");
    logger.info(
      `local admin token: SERVICE_ADMIN_TOKEN in ${secrets}; create more with: ${dataDirPrefix(process.env)}npm run token -- create --name NAME --scope resolve|admin`,
    );
  }

  // The generated first password is shown once, outside the JSON log, and never stored in plain text.
  const firstAdminNotice = firstAdmin?.generatedPassword
    ? `First administrator created. Sign in to the portal as ${firstAdmin.email} with password: ${firstAdmin.generatedPassword}\n` +
      `(shown only this once; set a new one with: ${dataDirPrefix(process.env)}npm run admin -- reset-password --email ${firstAdmin.email})`
    : undefined;
  if (firstAdmin && !firstAdmin.generatedPassword) {
    logger.info({ email: firstAdmin.email }, `first administrator ${firstAdmin.email} created from ADMIN_EMAIL and ADMIN_PASSWORD`);
  }
  if (process.send && startedByNpmStart) {
    // Started by `npm start` (service/src/cli/start.ts) with an IPC channel: ready is said there, whatever
    // LOG_LEVEL hides, and the notice goes into its summary. The channel is then closed. (Another
    // supervisor's channel, pm2's for one, is left alone.)
    const ready: ServiceReadyMessage = { type: "provider-credentials-ready", firstAdminNotice };
    process.send(ready, () => process.disconnect());
  } else if (firstAdminNotice) {
    console.log(`\n${firstAdminNotice}\n`);
  }

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down: health NOT_SERVING, finishing calls in flight");
    try {
      await service!.close();
      await database!.stop();
      logger.info("stopped");
      process.exit(0);
    } catch (error) {
      logger.error({ err: error }, "shutdown failed");
      process.exit(1);
    }
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

function fail(error: unknown): never {
  if (error instanceof ConfigError || error instanceof MasterKeyError || error instanceof StartupError) {
    logger.fatal(error.message);
    console.error(`\nCannot start: ${error.message}\n`);
  } else {
    logger.fatal({ err: error }, "start-up failed");
    console.error(`\nCannot start: ${error instanceof Error ? error.message : String(error)}\n`);
  }
  process.exit(1);
}

void main();
