import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { ErrorInfoSchema } from "@provider-credentials/wire/gen/google/rpc/error_details_pb";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { inject } from "vitest";
import { createDatabase, type TestDatabase } from "./kit.js";
import { createLogger } from "../../service/src/logger.js";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { startService, type RunningService, type ServiceOptions } from "../../service/src/server.js";
import type { TlsConfig } from "../../service/src/runtime/tls.js";
import { CredentialService, OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";

export type { TestDatabase };

/** A fresh, empty database on the test PostgreSQL, for one test file. */
export function createTestDatabase(): Promise<TestDatabase> {
  return createDatabase(inject("adminDatabaseUrl"), { prefix: "pc_test_" });
}

export interface TestService {
  service: RunningService;
  db: TestDatabase;
  /** host:port of the gRPC (grpc-js) server. */
  address: string;
  masterKey: string;
  adminToken: string;
  /** Everything the service logged, one JSON object per line. */
  logs: string[];
  /** Connect-ES clients over the gRPC protocol on a real HTTP/2 socket. */
  clients(
    token?: string,
    extraHeaders?: Record<string, string>,
  ): { credentials: Client<typeof CredentialService>; organizations: Client<typeof OrganizationService> };
  transport(protocol: "grpc" | "grpc-web" | "connect", token?: string): Transport;
  close(): Promise<void>;
}

export interface TestServiceOptions {
  env?: NodeJS.ProcessEnv;
  masterKey?: string;
  db?: TestDatabase;
  /** Reuse another replica's admin token (replicas of one deployment share SERVICE_ADMIN_TOKEN). */
  adminToken?: string;
  cacheMaxEntries?: number;
  cacheTtlMs?: number;
  /** The invalidation connection's heartbeat (ms; the service's default when unset). */
  cacheHeartbeatMs?: number;
  tls?: TlsConfig;
  failureThreshold?: number;
  rotationDays?: number;
  keyCheckTimeoutMs?: number;
  /** ADMIN_SESSION_LIFETIME_HOURS (the service's default when unset). */
  sessionLifetimeHours?: number;
  /** Serve Prometheus metrics (0: a free port). */
  metricsPort?: number;
  /** API_BASE_ALLOW; default `127.0.0.1`, where the fake providers listen. `""` allows nothing. */
  apiBaseAllow?: string;
  /** Any other service option, given last (e.g. databaseListenUrl, preparedStatements, readinessProbeMs). */
  serviceOptions?: Partial<ServiceOptions>;
}

/** Starts the real service on a free loopback port against a fresh database. */
export async function startTestService(options: TestServiceOptions = {}): Promise<TestService> {
  const db = options.db ?? (await createTestDatabase());
  const masterKey = options.masterKey ?? generateMasterKey();
  const adminToken = options.adminToken ?? generateToken();
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  });
  const service = await startService({
    databaseUrl: db.url,
    masterKey,
    serviceAdminToken: adminToken,
    env: options.env ?? {},
    host: "127.0.0.1",
    port: 0,
    connectPort: 0,
    logger: createLogger("debug", sink),
    poolSize: 5,
    cacheMaxEntries: options.cacheMaxEntries,
    cacheTtlMs: options.cacheTtlMs,
    cacheHeartbeatMs: options.cacheHeartbeatMs,
    tls: options.tls,
    failureThreshold: options.failureThreshold,
    rotationDays: options.rotationDays,
    keyCheckTimeoutMs: options.keyCheckTimeoutMs,
    sessionLifetimeHours: options.sessionLifetimeHours,
    metricsPort: options.metricsPort,
    apiBaseAllow: options.apiBaseAllow ?? "127.0.0.1",
    ...options.serviceOptions,
  });
  const address = `127.0.0.1:${service.port}`;
  // One transport (one HTTP/2 connection) per protocol, token and headers, as a real client keeps: a test that
  // makes thousands of calls must not open thousands of connections (the service caps them, RPC_MAX_CONNECTIONS).
  const transports = new Map<string, Transport>();
  const transport = (protocol: "grpc" | "grpc-web" | "connect", token?: string, extra: Record<string, string> = {}) => {
    const key = JSON.stringify([protocol, token ?? null, extra]);
    let made = transports.get(key);
    if (!made) {
      made = newTransport(protocol, token, extra);
      transports.set(key, made);
    }
    return made;
  };
  const newTransport = (protocol: "grpc" | "grpc-web" | "connect", token?: string, extra: Record<string, string> = {}): Transport => {
    // gRPC goes to the grpc-js port, as internal callers do; Connect and gRPC-Web to connect-node's.
    const baseUrl = protocol === "grpc" ? `http://${address}` : `http://127.0.0.1:${service.connectPort}`;
    const auth: Interceptor = (next) => (req) => {
      if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
      for (const [k, v] of Object.entries(extra)) req.header.set(k, v);
      return next(req);
    };
    const common = { baseUrl, httpVersion: "2" as const, interceptors: [auth] };
    if (protocol === "grpc") return createGrpcTransport(common);
    if (protocol === "grpc-web") return createGrpcWebTransport(common);
    return createConnectTransport(common);
  };
  return {
    service,
    db,
    address,
    masterKey,
    adminToken,
    logs,
    transport,
    clients(token = adminToken, extraHeaders = {}) {
      const t = transport("grpc", token, extraHeaders);
      return { credentials: createClient(CredentialService, t), organizations: createClient(OrganizationService, t) };
    },
    async close() {
      await service.close();
      if (!options.db) await db.drop();
    },
  };
}

/** Realistic-looking fake keys per provider (never real). */
export const FAKE_KEYS = {
  openai: () => `sk-proj-${randomBytes(24).toString("base64url")}`,
  anthropic: () => `sk-ant-api03-${randomBytes(24).toString("base64url")}`,
  gemini: () => `AIza${randomBytes(26).toString("base64url")}`,
  fireworks: () => `fw_${randomBytes(18).toString("base64url")}`,
};

/** The gRPC code a promise rejects with, and its message. */
export async function rpcError(promise: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await promise;
  } catch (error) {
    const e = error as { code?: number; rawMessage?: string; message?: string };
    return { code: e.code ?? -1, message: e.rawMessage ?? e.message ?? "" };
  }
  throw new Error("expected the call to fail, but it succeeded");
}

/** The refusal of a call: its code, message, and google.rpc.ErrorInfo's reason and field. */
export async function rpcRefusal(promise: Promise<unknown>): Promise<{ code: Code; message: string; reason?: string; field?: string }> {
  try {
    await promise;
  } catch (error) {
    const e = ConnectError.from(error);
    const info = e.findDetails(ErrorInfoSchema)[0];
    return { code: e.code, message: e.rawMessage, reason: info?.reason, field: info?.metadata.field };
  }
  throw new Error("expected the call to fail, but it succeeded");
}
