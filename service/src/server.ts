import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import type { TLSSocket } from "node:tls";
import { ApiBaseGuard, parseApiBaseAllow } from "./credentials/api-base-guard.js";
import type * as grpc from "@grpc/grpc-js";
import type { AddressInfo } from "node:net";
import { createRegistry } from "@bufbuild/protobuf";
import { createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createKeyring, type Keyring } from "./keyring/index.js";
import { PageTokens } from "./paging.js";
import { countLegacyRows } from "./credentials/rewrap.js";
import { createOrm, migrate, type Orm } from "./db/orm.js";
import { routeGrpcJsLogs, type Logger } from "./logger.js";
import { TokenStore } from "./auth/token-store.js";
import { CredentialStore, DEFAULT_ROTATION_DAYS } from "./credentials/credential-store.js";
import { KeyHealth } from "./credentials/key-health.js";
import { ServiceMetrics, startMetricsServer } from "./metrics.js";
import { DEFAULT_PROVIDER_CHECK_TIMEOUT_MS } from "./credentials/provider-check.js";
import { KeyResolver } from "./credentials/resolver.js";
import { environmentKeys } from "@provider-credentials/wire/providers";
import { ResolutionCache } from "./credentials/resolution-cache.js";
import { Reachability } from "./db/reachability.js";
import { DeactivationSweeper, DEFAULT_DEACTIVATION_SWEEP_MS } from "./credentials/deactivation-sweeper.js";
import { DatabaseReadiness } from "./db/readiness.js";
import { applyInvalidation, DEFAULT_HEARTBEAT_MS, InvalidationListener, type Invalidation } from "./credentials/invalidation.js";
import { OrganizationStore } from "./organizations/organization-store.js";
import { AdminStore } from "./admins/admin-store.js";
import { AdminService, file_admin } from "@provider-credentials/wire/gen/admin_pb";
import { createAdminService } from "./rpc/admin-service.js";
import { CredentialService, OrganizationService, file_credentials } from "@provider-credentials/wire/gen/credentials_pb";
import { file_grpc_health_v1_health } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { file_grpc_reflection_v1_reflection } from "@provider-credentials/wire/gen/grpc/reflection/v1/reflection_pb";
import { createCredentialService } from "./rpc/credential-service.js";
import { createOrganizationService } from "./rpc/organization-service.js";
import { createHealthService, HealthService, HealthState } from "./rpc/health.js";
import { createReflectionService, ServerReflection } from "./rpc/reflection.js";
import { authInterceptor, errorInterceptor, tokenCheck } from "./rpc/interceptors.js";
import { targetPolicyFor } from "./auth/policy.js";
import { sourceKey } from "./rpc/context.js";
import { createGrpcJsServer, listenGrpcJsServer, shutdownGrpcJsServer } from "./rpc/grpc-js-server.js";
import { addGrpcJsHealth, addGrpcJsReflection } from "./rpc/grpc-js-health-reflection.js";
import {
  authenticateBeforeBody,
  beforeBodyCheck,
  closeWhenIdle,
  HTTP1_MAX_HEADER_BYTES,
  Http1Connections,
  http1Options,
  type RpcRequest,
  type RpcResponse,
  grpcJsAuthenticateBeforeBody,
  DEFAULT_CONNECTION_LIMITS,
  DEFAULT_HEALTH_MAX_WATCHERS,
  type ConnectionLimits,
} from "./rpc/connection-limits.js";
import { createCleartextServer } from "./rpc/cleartext-port.js";
import { ChangeFeed, DEFAULT_WATCH_HEARTBEAT_MS, DEFAULT_WATCH_MAX_STREAMS } from "./rpc/watch-resolutions.js";
import { grpcServerCredentials, tlsServerOptions, type TlsConfig } from "./runtime/tls.js";

/** Largest request message accepted, in bytes: keys are at most 4 KiB. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface ServiceOptions {
  databaseUrl: string;
  /**
   * DATABASE_LISTEN_URL: a direct connection for the invalidation listener (LISTEN cannot work through
   * a pooler in transaction mode); `databaseUrl` when unset.
   */
  databaseListenUrl?: string;
  /** DATABASE_PREPARED_STATEMENTS: named prepared statements on the hot path (default true; false behind a transaction pooler). */
  preparedStatements?: boolean;
  /** How often readiness asks the database whether it answers (ms; default DEFAULT_READINESS_PROBE_MS). */
  readinessProbeMs?: number;
  /** MASTER_KEY: one Fernet key or a comma-separated list, first encrypts. */
  masterKey: string;
  /** SERVICE_ADMIN_TOKEN, accepted as an admin token when set. */
  serviceAdminToken?: string;
  /** Where the provider fallback keys (OPENAI_API_KEY, ...) are read from. */
  env: NodeJS.ProcessEnv;
  host: string;
  /** The gRPC port (grpc-js: the hot path for internal callers); 0 picks a free port. */
  port: number;
  /** The Connect and gRPC-Web port (connect-node; also answers gRPC); 0 picks a free port. */
  connectPort: number;
  logger: Logger;
  poolSize?: number;
  /** How long SIGTERM waits for calls in flight before closing connections (ms). */
  drainTimeoutMs?: number;
  /** TLS for both ports (and mutual TLS with a client CA); cleartext HTTP/2 when unset. */
  tls?: TlsConfig;
  /** ResolveKey cache bound (entries; 0 disables) and safety-net TTL (ms). */
  cacheMaxEntries?: number;
  cacheTtlMs?: number;
  /**
   * After the invalidation connection drops, how long what was cached may still
   * answer ResolveKey (and cached tokens authenticate) while the database cannot
   * be reached (ms; 0: never).
   */
  cacheOutageGraceMs?: number;
  /** How often the invalidation connection proves it is alive; an answer slower than this counts as a drop (ms). */
  cacheHeartbeatMs?: number;
  /** Consecutive authentication or quota failures that mark a credential failing (FAILURE_THRESHOLD, default 3). */
  failureThreshold?: number;
  /** Prometheus metrics at /metrics on this port (METRICS_PORT); 0 picks a free port; unset: not served. */
  metricsPort?: number;
  /** Keys older than this many days are flagged "rotation due" (ROTATION_DAYS, default 90). */
  rotationDays?: number;
  /** Budget of one key check against a provider, ms (KEY_CHECK_TIMEOUT_MS, default 10 000). */
  keyCheckTimeoutMs?: number;
  /** How long a portal session lasts after sign-in, used or not (ADMIN_SESSION_LIFETIME_HOURS, default 7 days). */
  sessionLifetimeHours?: number;
  /** Hosts and networks an api_base may point at although private (API_BASE_ALLOW: host names, addresses, CIDR networks, comma-separated). */
  apiBaseAllow?: string;
  /**
   * Per port: open connections (RPC_MAX_CONNECTIONS), concurrent streams per connection
   * (RPC_MAX_STREAMS_PER_CONNECTION), and how long a connection without a stream stays open
   * (RPC_IDLE_TIMEOUT_MS). Defaults in rpc/connection-limits.ts.
   */
  connectionLimits?: Partial<ConnectionLimits>;
  /** Open health Watch streams, both ports together (HEALTH_MAX_WATCHERS). */
  healthMaxWatchers?: number;
  /** How often this replica carries out scheduled deactivations (RollCredential's overlap), ms (default 1000). */
  deactivationSweepMs?: number;
  /** A heartbeat on a quiet WatchResolutions stream after this many ms (WATCH_HEARTBEAT_MS). */
  watchHeartbeatMs?: number;
  /** Open WatchResolutions streams, both ports together (WATCH_MAX_STREAMS). */
  watchMaxStreams?: number;
}

export interface RunningService {
  host: string;
  /** gRPC (grpc-js). */
  port: number;
  /** Connect, gRPC-Web and gRPC (connect-node). */
  connectPort: number;
  /** Prometheus metrics (plain HTTP/1.1), when served. */
  metricsPort: number | undefined;
  tls: TlsConfig | undefined;
  orm: Orm;
  parts: ServiceParts;
  health: HealthState;
  /** Health to NOT_SERVING, stop accepting, finish calls in flight, close the database. */
  close(): Promise<void>;
}

export class StartupError extends Error {
  override readonly name = "StartupError";
}

export interface ServiceParts {
  keyring: Keyring;
  /** Page tokens of every list, authenticated with a key derived from MASTER_KEY (the same on every replica). */
  pages: PageTokens;
  cache: ResolutionCache;
  tokens: TokenStore;
  credentials: CredentialStore;
  organizations: OrganizationStore;
  admins: AdminStore;
  resolver: KeyResolver;
  keyHealth: KeyHealth;
  metrics: ServiceMetrics;
  health: HealthState;
  /** WatchResolutions' change stream, fed by the invalidation listener. */
  feed: ChangeFeed;
}

export const DEFAULT_FAILURE_THRESHOLD = 3;

export const DEFAULT_CACHE_MAX_ENTRIES = 100_000;
/** A safety net only: every change through the service (or its CLIs) is announced, and a silent invalidation connection is noticed within the heartbeat. */
export const DEFAULT_CACHE_TTL_MS = 600_000;
export const DEFAULT_CACHE_OUTAGE_GRACE_MS = 5_000;

export function createParts(
  orm: Orm,
  options: Pick<
    ServiceOptions,
    | "masterKey"
    | "serviceAdminToken"
    | "env"
    | "cacheMaxEntries"
    | "cacheTtlMs"
    | "cacheOutageGraceMs"
    | "failureThreshold"
    | "rotationDays"
    | "keyCheckTimeoutMs"
    | "sessionLifetimeHours"
    | "apiBaseAllow"
    | "preparedStatements"
  >,
): ServiceParts {
  const keyring = createKeyring(options.masterKey);
  const pages = new PageTokens(keyring);
  const outageGraceMs = options.cacheOutageGraceMs ?? DEFAULT_CACHE_OUTAGE_GRACE_MS;
  const cache = new ResolutionCache({
    maxEntries: options.cacheMaxEntries ?? DEFAULT_CACHE_MAX_ENTRIES,
    ttlMs: options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS,
    outageGraceMs,
  });
  // This replica forgets what a change made stale as soon as it commits; the others hear it through NOTIFY.
  const metrics = new ServiceMetrics({ cacheEntries: () => cache.size, cacheBytes: () => cache.bytes });
  const onChange = (change: Invalidation) => applyInvalidation(cache, change, metrics);
  const credentials = new CredentialStore(orm, keyring, onChange, options.rotationDays ?? DEFAULT_ROTATION_DAYS);
  const keyHealth = new KeyHealth(
    orm,
    keyring,
    credentials,
    {
      failureThreshold: options.failureThreshold ?? DEFAULT_FAILURE_THRESHOLD,
      checkTimeoutMs: options.keyCheckTimeoutMs ?? DEFAULT_PROVIDER_CHECK_TIMEOUT_MS,
      apiBaseGuard: new ApiBaseGuard(parseApiBaseAllow(options.apiBaseAllow)),
    },
    onChange,
  );
  keyHealth.metrics = metrics;
  const reachability = new Reachability();
  const resolver = new KeyResolver(orm, keyring, environmentKeys(options.env), cache, undefined, reachability);
  resolver.metrics = metrics;
  resolver.preparedStatements = options.preparedStatements ?? true;
  return {
    keyring,
    pages,
    cache,
    tokens: new TokenStore(orm, { serviceAdminToken: options.serviceAdminToken, outageGraceMs, reachability }),
    credentials,
    keyHealth,
    metrics,
    organizations: new OrganizationStore(orm, pages, onChange),
    admins: new AdminStore(orm, {
      sessionLifetimeMs: options.sessionLifetimeHours === undefined ? undefined : options.sessionLifetimeHours * 3_600_000,
      keyring,
    }),
    resolver,
    health: new HealthState([CredentialService.typeName, OrganizationService.typeName, AdminService.typeName]),
    feed: new ChangeFeed(),
  };
}

/** Both ports' Connect interceptors, outermost first: errors mapped in one place, then authentication. */
function interceptorsFor(parts: ServiceParts, logger: Logger) {
  return [errorInterceptor(logger), authInterceptor(parts.tokens, parts.admins, targetPolicyFor(parts.credentials, parts.organizations, parts.cache))];
}

/** The files that describe what both ports answer (for reflection). */
const SERVED_FILES = [file_credentials, file_admin, file_grpc_health_v1_health, file_grpc_reflection_v1_reflection];
/** Every service both ports answer, health and reflection included (reflection lists these). */
const SERVED_SERVICES = [CredentialService, OrganizationService, AdminService, HealthService, ServerReflection].map((s) => s.typeName);
/** The services that need a token: all but health. */
const GUARDED_SERVICES: ReadonlySet<string> = new Set(SERVED_SERVICES.filter((name) => name !== HealthService.typeName));

/** The product's own services: the one place that says which implementation answers which RPC, on both ports. */
export function apiRoutes(orm: Orm, parts: ServiceParts) {
  return (router: ConnectRouter) => {
    router.service(CredentialService, createCredentialService(parts));
    router.service(OrganizationService, createOrganizationService(parts.organizations));
    router.service(AdminService, createAdminService({ orm, admins: parts.admins, tokens: parts.tokens, pages: parts.pages }));
  };
}

/** What the Connect port answers: the product's services, health and reflection (connect-node serves every kind of RPC). */
export function routes(orm: Orm, parts: ServiceParts) {
  const registry = createRegistry(...SERVED_FILES);
  const api = apiRoutes(orm, parts);
  return (router: ConnectRouter) => {
    api(router);
    router.service(HealthService, createHealthService(parts.health));
    router.service(ServerReflection, createReflectionService(registry, SERVED_SERVICES));
  };
}

/**
 * The grpc-js server for internal callers: the product's services (unary and server streaming) through the
 * Connect implementations, health and reflection from grpc-health-check and @grpc/reflection.
 */
export function createInternalGrpcServer(orm: Orm, parts: ServiceParts, logger: Logger, limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS): grpc.Server {
  const server = createGrpcJsServer({
    routes: apiRoutes(orm, parts),
    interceptors: interceptorsFor(parts, logger),
    maxReceiveMessageLength: MAX_REQUEST_BYTES,
    serverOptions: {
      // No request message is read before its token is accepted (health needs none).
      interceptors: [grpcJsAuthenticateBeforeBody(GUARDED_SERVICES, beforeBodyCheck(parts.tokens, tokenCheck(parts.tokens)))],
      // SETTINGS_MAX_CONCURRENT_STREAMS; a connection with no open stream is closed (GOAWAY) after the idle timeout.
      "grpc.max_concurrent_streams": limits.maxStreamsPerConnection,
      "grpc.max_connection_idle_ms": limits.idleTimeoutMs,
    },
    // The caller's address (sourceKey) is read from the connection only when a handler audits.
    addressKey: sourceKey,
    logger,
  });
  addGrpcJsHealth(server, parts.health);
  addGrpcJsReflection(server, SERVED_FILES, SERVED_SERVICES, tokenCheck(parts.tokens));
  return server;
}

/**
 * Connect percent-encodes the grpc-message trailer with encodeURIComponent, so
 * `api_key: ...` travels as `api_key%3A%20...`; grpc-js decodes it with
 * decodeURI, which leaves `%3A`, `%2C`, `%3B` (and other reserved characters)
 * encoded, and its callers would see `api_key%3A ...`. Re-encode it as the gRPC
 * spec does: only `%` and bytes outside 0x20-0x7E.
 */
function encodeGrpcMessageTrailer(res: http2.Http2ServerResponse): void {
  const addTrailers = res.addTrailers.bind(res);
  res.addTrailers = (trailers) => {
    const message = trailers["grpc-message"];
    if (typeof message === "string") {
      let text: string | undefined;
      try {
        text = decodeURIComponent(message);
      } catch {
        text = undefined; // not Connect's encoding: pass it on unchanged
      }
      if (text !== undefined) {
        const encoded = [...Buffer.from(text, "utf8")]
          .map((b) => (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`))
          .join("");
        trailers = { ...trailers, "grpc-message": encoded };
      }
    }
    addTrailers(trailers);
  };
}

/** The longest delay a Node.js timer takes (ms); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const GRPC_TIMEOUT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * A valid deadline longer than a Node.js timer can wait (about 24.8 days: `grpc-timeout: 2147484S`,
 * `99999999M`, `connect-timeout-ms: 9999999999`) is a long deadline, not an immediate one:
 * connect-node arms a plain setTimeout, so such a header is lowered to the longest a timer
 * waits before connect-node reads it. Malformed values are left for connect-node to refuse.
 */
function clampTimeoutHeaders(req: RpcRequest): void {
  const grpcTimeout = req.headers["grpc-timeout"];
  if (typeof grpcTimeout === "string") {
    const match = /^(\d{1,8})([HMSmun])$/.exec(grpcTimeout);
    if (match && Number(match[1]) * GRPC_TIMEOUT_MS[match[2]] > MAX_TIMER_MS) req.headers["grpc-timeout"] = `${Math.floor(MAX_TIMER_MS / 1000)}S`;
  }
  const connectTimeout = req.headers["connect-timeout-ms"];
  if (typeof connectTimeout === "string" && /^\d{1,10}$/.test(connectTimeout) && Number(connectTimeout) > MAX_TIMER_MS) {
    req.headers["connect-timeout-ms"] = String(MAX_TIMER_MS);
  }
}

/** Refuses to start when stored rows were encrypted under keys MASTER_KEY does not hold. */
async function checkKeysCoverData(orm: Orm, keyring: Keyring): Promise<void> {
  const rows: Array<{ key_id: string; count: string }> = await orm.em
    .getConnection()
    .execute("select key_id, count(*) as count from provider_credentials group by key_id");
  const missing = rows.filter((r) => !keyring.has(r.key_id));
  if (missing.length > 0) {
    const list = missing.map((r) => `${r.key_id} (${r.count} credential${r.count === "1" ? "" : "s"})`).join(", ");
    throw new StartupError(
      `MASTER_KEY does not hold the key(s) that encrypted stored credentials: ${list}. ` +
        `Add the missing key(s) to MASTER_KEY (comma-separated; the first encrypts, all decrypt). Configured: ${keyring.keyIds.join(", ")}.`,
    );
  }
}

export async function startService(options: ServiceOptions): Promise<RunningService> {
  const { logger } = options;
  routeGrpcJsLogs(logger);
  const orm = await createOrm({ databaseUrl: options.databaseUrl, poolSize: options.poolSize });
  let parts: ServiceParts;
  try {
    parts = createParts(orm, options);
    const applied = await migrate(orm, options.databaseUrl);
    if (applied.length > 0) logger.info({ migrations: applied }, `applied ${applied.length} migration(s)`);
    await checkKeysCoverData(orm, parts.keyring);
    const legacy = await countLegacyRows(orm);
    if (legacy > 0) {
      logger.warn(
        { unbound: legacy },
        `${legacy} stored key(s) written before row binding existed are refused until an operator binds them: npm run bind-legacy-keys`,
      );
    }
  } catch (error) {
    await orm.close(true);
    throw error;
  }
  // The cache stays off until invalidations can be heard.
  parts.cache.setEnabled(false);
  const listener = new InvalidationListener(
    options.databaseListenUrl ?? options.databaseUrl,
    parts.cache,
    logger,
    parts.metrics,
    options.cacheHeartbeatMs ?? DEFAULT_HEARTBEAT_MS,
  );
  parts.feed.maxStreams = options.watchMaxStreams ?? DEFAULT_WATCH_MAX_STREAMS;
  parts.feed.heartbeatMs = options.watchHeartbeatMs ?? DEFAULT_WATCH_HEARTBEAT_MS;
  // The change stream hears what the cache hears, after the cache.
  listener.observer = parts.feed;
  await listener.start();
  // Scheduled deactivations (RollCredential's overlap) are carried out by every replica, whether or not anyone is signed in.
  const sweeper = new DeactivationSweeper(parts.credentials, logger, options.deactivationSweepMs ?? DEFAULT_DEACTIVATION_SWEEP_MS);
  sweeper.start();

  const interceptors = interceptorsFor(parts, logger);
  const serviceRoutes = routes(orm, parts);
  const limits: ConnectionLimits = { ...DEFAULT_CONNECTION_LIMITS, ...options.connectionLimits };
  parts.health.maxWatchers = options.healthMaxWatchers ?? DEFAULT_HEALTH_MAX_WATCHERS;

  // gRPC on grpc-js: a fraction of connect-node's CPU per call (docs/performance.md).
  const grpcServer = createInternalGrpcServer(orm, parts, logger, limits);
  let grpcPort: number;
  try {
    grpcPort = await listenGrpcJsServer(grpcServer, options.host, options.port, grpcServerCredentials(options.tls), limits.maxConnections);
  } catch (error) {
    await sweeper.stop();
    await listener.stop();
    await orm.close(true);
    throw new StartupError(`cannot listen for gRPC on ${options.host}:${options.port}: ${(error as Error).message}`);
  }

  // Connect, gRPC-Web (and gRPC) on connect-node, for browsers, curl and Connect clients.
  const handler = connectNodeAdapter({
    routes: serviceRoutes,
    interceptors,
    readMaxBytes: MAX_REQUEST_BYTES,
    // As the REST API: a misspelt field or enum value is refused, never silently dropped
    // (a ListCredentials "provider": "openai" would otherwise list every provider's credentials).
    jsonOptions: { ignoreUnknownFields: false },
    contextValues: (req) => {
      const values = createContextValues();
      values.set(sourceKey, req.socket?.remoteAddress ?? null);
      return values;
    },
  });
  // No request body is read before its token is known to be good (connection-limits.ts); health needs none.
  const serve = authenticateBeforeBody(GUARDED_SERVICES, beforeBodyCheck(parts.tokens, tokenCheck(parts.tokens)), (req, res) => {
    // gRPC (trailers in HTTP trailers) is HTTP/2 only; gRPC-Web carries them in the body.
    if (res instanceof http2.Http2ServerResponse) encodeGrpcMessageTrailer(res);
    clampTimeoutHeaders(req);
    handler(req, res);
  });
  // HTTP/1.1 is served too, so Connect's JSON (and gRPC-Web) works from curl, urllib and any
  // HTTP client: with TLS, ALPN picks; in cleartext, the first bytes of each connection do (cleartext-port.ts).
  const tls = options.tls;
  const http2Options = { settings: { maxConcurrentStreams: limits.maxStreamsPerConnection } };
  const h1Options = http1Options(limits);
  const http1 = new Http1Connections(limits.idleTimeoutMs);
  let server: net.Server;
  let h2: http2.Http2Server | http2.Http2SecureServer;
  let h1: http.Server | undefined;
  if (tls) {
    const secure = http2.createSecureServer(
      { ...tlsServerOptions(tls), ...http2Options, allowHTTP1: true, handshakeTimeout: limits.idleTimeoutMs },
      serve as never,
    );
    // Node.js's HTTP/1.1 code reads these from the server it serves (the HTTP/2 one here); its largest head is Node.js's default, HTTP1_MAX_HEADER_BYTES.
    Object.assign(secure, h1Options);
    secure.on("secureConnection", (socket: TLSSocket) => {
      if (socket.alpnProtocol !== "h2") http1.add(socket);
    });
    server = h2 = secure;
  } else {
    h2 = http2.createServer(http2Options, serve);
    h1 = http.createServer({ ...h1Options, maxHeaderSize: HTTP1_MAX_HEADER_BYTES }, serve);
    server = createCleartextServer(h2, h1, limits.idleTimeoutMs, (socket) => http1.add(socket));
  }
  (h1 ?? h2).on("request", (req: RpcRequest, res: RpcResponse) => http1.request(req, res));
  // A connection past the bound is closed at once; HTTP/1.1 connections count too (one listening server takes both).
  server.maxConnections = limits.maxConnections;
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    closeWhenIdle(session, limits.idleTimeoutMs);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.connectPort, options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    await shutdownGrpcJsServer(grpcServer, 0);
    await sweeper.stop();
    await listener.stop();
    await orm.close(true);
    throw new StartupError(`cannot listen for Connect on ${options.host}:${options.connectPort}: ${(error as Error).message}`);
  }
  // The HTTP/1.1 server never listens itself: "listening" starts its head and request timeout checks.
  h1?.emit("listening");
  const address = server.address() as AddressInfo;

  let metricsServer: { port: number; close(): Promise<void> } | undefined;
  if (options.metricsPort !== undefined) {
    try {
      metricsServer = await startMetricsServer({
        host: options.host,
        port: options.metricsPort,
        metrics: parts.metrics,
        tokens: parts.tokens,
        logger,
        tls: options.tls,
      });
    } catch (error) {
      await shutdownGrpcJsServer(grpcServer, 0);
      server.close();
      h1?.close(() => undefined);
      await sweeper.stop();
      await listener.stop();
      await orm.close(true);
      throw new StartupError(`cannot listen for metrics on ${options.host}:${options.metricsPort}: ${(error as Error).message}`);
    }
  }

  // Readiness (health service READINESS_SERVICE) follows whether the database answers, past the outage grace.
  const readiness = new DatabaseReadiness(orm, parts.health, logger, {
    graceMs: options.cacheOutageGraceMs ?? DEFAULT_CACHE_OUTAGE_GRACE_MS,
    probeMs: options.readinessProbeMs,
  });
  readiness.start();

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      const drainMs = options.drainTimeoutMs ?? 10_000;
      readiness.stop();
      // Health watchers hear NOT_SERVING, then their streams end so that they do not hold the drain.
      parts.health.shutDown();
      // Change streams end now too (their clients reconnect elsewhere).
      parts.feed.shutDown();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Its timeout checks stop (it was not listening: the error that says so is of no interest).
      h1?.close(() => undefined);
      // GOAWAY: clients stop sending new calls here; calls in flight finish (HTTP/1.1: idle connections close now).
      for (const session of sessions) session.close();
      http1.close();
      const timer = setTimeout(() => {
        for (const session of sessions) session.destroy();
        http1.destroy();
      }, drainMs);
      await Promise.all([closed, shutdownGrpcJsServer(grpcServer, drainMs), metricsServer?.close()]);
      clearTimeout(timer);
      await parts.resolver.flushUsage();
      await sweeper.stop();
      await listener.stop();
      await orm.close(true);
    })());

  return {
    host: options.host,
    port: grpcPort,
    connectPort: address.port,
    metricsPort: metricsServer?.port,
    tls: options.tls,
    orm,
    parts,
    health: parts.health,
    close,
  };
}
