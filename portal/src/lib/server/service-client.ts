import { readFileSync } from "node:fs";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
// Relative imports (not a Kit alias) so that tests and the root `tsc` can load this module too.
import { CredentialService, OrganizationService } from "../../../../service/src/gen/credentials_pb.js";
import { AdminService } from "../../../../service/src/gen/admin_pb.js";

/** Header with which an admin-scope caller names the administrator it acts for (service/src/rpc/interceptors.ts). */
export const ACTOR_HEADER = "x-provider-credentials-actor";
/** Header with which an admin-scope caller passes its client's address for the audit log. */
export const SOURCE_HEADER = "x-provider-credentials-source";

export const DEFAULT_SERVICE_URL = "http://127.0.0.1:50051";

export interface ServiceClients {
  credentials: Client<typeof CredentialService>;
  organizations: Client<typeof OrganizationService>;
  admin: Client<typeof AdminService>;
}

/**
 * The portal's one connection to the credentials service: gRPC over a shared
 * HTTP/2 connection. Every call says who it is for through its headers.
 */
export interface ServiceConnection {
  /** Calls made by the portal itself with SERVICE_ADMIN_TOKEN: sign-in, session checks, sign-out. */
  asPortal(): ServiceClients;
  /** Calls for a signed-in administrator: SERVICE_ADMIN_TOKEN, naming the person so that the service records them. */
  asAdmin(email: string, source?: string | null): ServiceClients;
  /** Calls for a REST caller: their own bearer token, which the service authenticates and authorises. */
  withToken(token: string, source?: string | null): ServiceClients;
}

export interface ServiceConnectionOptions {
  /** CREDENTIALS_SERVICE_URL, e.g. http://127.0.0.1:50051 (h2c) or https://... */
  baseUrl: string;
  /** SERVICE_ADMIN_TOKEN: the portal's admin-scope token. */
  serviceAdminToken: string | undefined;
  /** Deadline of every call (ms). */
  timeoutMs?: number;
  /** For an https service URL: the CA to trust, and a client certificate when the service requires mutual TLS. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
}

/** A transport that adds fixed headers to every call made through it. */
function withHeaders(transport: Transport, headers: Record<string, string>): Transport {
  const merge = (header: HeadersInit | undefined) => {
    const merged = new Headers(header);
    for (const [name, value] of Object.entries(headers)) merged.set(name, value);
    return merged;
  };
  return {
    unary: (method, signal, timeoutMs, header, input, contextValues) => transport.unary(method, signal, timeoutMs, merge(header), input, contextValues),
    stream: (method, signal, timeoutMs, header, input, contextValues) => transport.stream(method, signal, timeoutMs, merge(header), input, contextValues),
  };
}

/** A transport whose every call fails: the portal was started without SERVICE_ADMIN_TOKEN. */
const missingTokenTransport: Transport = {
  unary: () => Promise.reject(new ConnectError("the portal has no SERVICE_ADMIN_TOKEN", Code.Unavailable)),
  stream: () => Promise.reject(new ConnectError("the portal has no SERVICE_ADMIN_TOKEN", Code.Unavailable)),
};

function clientsOver(transport: Transport): ServiceClients {
  return {
    credentials: createClient(CredentialService, transport),
    organizations: createClient(OrganizationService, transport),
    admin: createClient(AdminService, transport),
  };
}

export function createServiceConnection(options: ServiceConnectionOptions): ServiceConnection {
  const shared = createGrpcTransport({
    baseUrl: options.baseUrl,
    defaultTimeoutMs: options.timeoutMs ?? 15_000,
    // Keep the HTTP/2 connection healthy across idle periods; reconnects happen on demand.
    pingIntervalMs: 30_000,
    idleConnectionTimeoutMs: 5 * 60_000,
    ...(options.tls ? { nodeOptions: options.tls } : {}),
  });
  const token = options.serviceAdminToken;
  const portalTransport = token ? withHeaders(shared, { authorization: `Bearer ${token}` }) : missingTokenTransport;
  const portalClients = clientsOver(portalTransport);
  return {
    asPortal: () => portalClients,
    asAdmin: (email, source) =>
      token ? clientsOver(withHeaders(shared, { authorization: `Bearer ${token}`, [ACTOR_HEADER]: email, ...sourceHeader(source) })) : portalClients,
    withToken: (callerToken, source) => clientsOver(withHeaders(shared, { authorization: `Bearer ${callerToken}`, ...sourceHeader(source) })),
  };
}

function sourceHeader(source: string | null | undefined): Record<string, string> {
  return source && /^[\x21-\x7e]{1,128}$/.test(source) ? { [SOURCE_HEADER]: source } : {};
}

/** CREDENTIALS_SERVICE_CA_FILE, and CREDENTIALS_SERVICE_CERT_FILE with CREDENTIALS_SERVICE_KEY_FILE for mutual TLS. */
function tlsFromEnvironment(env: NodeJS.ProcessEnv): ServiceConnectionOptions["tls"] {
  const read = (name: string) => (env[name] ? readFileSync(env[name]!) : undefined);
  const tls = { ca: read("CREDENTIALS_SERVICE_CA_FILE"), cert: read("CREDENTIALS_SERVICE_CERT_FILE"), key: read("CREDENTIALS_SERVICE_KEY_FILE") };
  return tls.ca || tls.cert || tls.key ? tls : undefined;
}

let fromEnvironment: ServiceConnection | undefined;

/** The process-wide connection, configured from CREDENTIALS_SERVICE_URL and SERVICE_ADMIN_TOKEN. */
export function serviceConnection(env: NodeJS.ProcessEnv = process.env): ServiceConnection {
  fromEnvironment ??= createServiceConnection({
    baseUrl: env.CREDENTIALS_SERVICE_URL || DEFAULT_SERVICE_URL,
    serviceAdminToken: env.SERVICE_ADMIN_TOKEN || undefined,
    tls: tlsFromEnvironment(env),
  });
  return fromEnvironment;
}
