import { readFileSync } from "node:fs";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
// No Kit alias ($lib) here, so that tests and the root `tsc` can load this module too.
import { ACTOR_HEADER, bearer, SESSION_HEADER, SESSION_PATTERN, SOURCE_HEADER, SOURCE_PATTERN } from "@provider-credentials/wire/auth";
import { CredentialService, OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { DEFAULT_SERVICE_URL, portalSettings, type PortalSettings } from "./settings.js";

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
  /** Calls made by the portal itself with SERVICE_ADMIN_TOKEN: sign-in, session checks, sign-out, password changes; `source` is the browser's address, for the audit log. */
  asPortal(source?: string | null): ServiceClients;
  /**
   * Calls for a signed-in administrator: SERVICE_ADMIN_TOKEN, naming the person so that the service records them,
   * and their session (`sessionToken`), whose last sign-in the service checks before a sensitive action.
   */
  asAdmin(email: string, source?: string | null, sessionToken?: string | null): ServiceClients;
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
  const portalTransport = token ? withHeaders(shared, { authorization: bearer(token) }) : missingTokenTransport;
  const portalClients = clientsOver(portalTransport);
  return {
    asPortal: (source) => (token && source ? clientsOver(withHeaders(shared, { authorization: bearer(token), ...sourceHeader(source) })) : portalClients),
    asAdmin: (email, source, sessionToken) =>
      token
        ? clientsOver(
            withHeaders(shared, {
              authorization: bearer(token),
              [ACTOR_HEADER]: email,
              ...sourceHeader(source),
              ...(sessionToken && SESSION_PATTERN.test(sessionToken) ? { [SESSION_HEADER]: sessionToken } : {}),
            }),
          )
        : portalClients,
    withToken: (callerToken, source) => clientsOver(withHeaders(shared, { authorization: bearer(callerToken), ...sourceHeader(source) })),
  };
}

function sourceHeader(source: string | null | undefined): Record<string, string> {
  return source && SOURCE_PATTERN.test(source) ? { [SOURCE_HEADER]: source } : {};
}

/** CREDENTIALS_SERVICE_CA_FILE, and CREDENTIALS_SERVICE_CERT_FILE with CREDENTIALS_SERVICE_KEY_FILE for mutual TLS. */
function tlsFromSettings(settings: PortalSettings): ServiceConnectionOptions["tls"] {
  const read = (file: string | undefined) => (file ? readFileSync(file) : undefined);
  const tls = {
    ca: read(settings.CREDENTIALS_SERVICE_CA_FILE),
    cert: read(settings.CREDENTIALS_SERVICE_CERT_FILE),
    key: read(settings.CREDENTIALS_SERVICE_KEY_FILE),
  };
  return tls.ca || tls.cert || tls.key ? tls : undefined;
}

let fromSettings: ServiceConnection | undefined;

/** The process-wide connection, configured from CREDENTIALS_SERVICE_URL and SERVICE_ADMIN_TOKEN. */
export function serviceConnection(): ServiceConnection {
  fromSettings ??= connectionFrom(portalSettings());
  return fromSettings;
}

function connectionFrom(settings: PortalSettings): ServiceConnection {
  return createServiceConnection({
    baseUrl: settings.CREDENTIALS_SERVICE_URL ?? DEFAULT_SERVICE_URL,
    serviceAdminToken: settings.SERVICE_ADMIN_TOKEN,
    tls: tlsFromSettings(settings),
  });
}
