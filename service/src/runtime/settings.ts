// The service process's configuration: every environment variable it reads, its default and
// meaning, and the rule its value must follow, in one schema. loadSettings() checks the
// environment against it at start-up; docs/configuration.md is generated from it
// (`npm run docs:config`; a test fails when the document is stale).
import { z } from "zod";
import { ConfigError } from "./config.js";
import { readSecretFiles, SERVICE_SECRET_SETTINGS } from "./secret-files.js";
import { DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_OUTAGE_GRACE_MS, DEFAULT_CACHE_TTL_MS, DEFAULT_FAILURE_THRESHOLD } from "../server.js";
import { DEFAULT_ROTATION_DAYS } from "../credentials/credential-store.js";
import { DEFAULT_HEARTBEAT_MS } from "../credentials/invalidation.js";
import { DEFAULT_PROVIDER_CHECK_TIMEOUT_MS } from "../credentials/provider-check.js";
import { parseApiBaseAllow } from "../credentials/api-base-guard.js";
import { DEFAULT_SESSION_LIFETIME_HOURS } from "../admins/admin-store.js";
import { DEFAULT_WATCH_HEARTBEAT_MS, DEFAULT_WATCH_MAX_STREAMS } from "../rpc/watch-resolutions.js";
import { DEFAULT_HEALTH_MAX_WATCHERS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_STREAMS_PER_CONNECTION } from "../rpc/connection-limits.js";

/** A default as the docs show it. */
const shown = (value: number) => `\`${value}\``;

/** One environment variable: its schema over the raw text (undefined when unset), and how the docs describe it. */
interface Setting<T> {
  schema: z.ZodType<T, string | undefined>;
  /** The default as the docs show it. */
  shown: string;
  meaning: string;
  /** Documented in the row of another variable (TLS_KEY_FILE with TLS_CERT_FILE). */
  partOf?: string;
}

const unset = (raw: string | undefined) => raw === undefined || raw === "";

function integer<F extends number | undefined>(name: string, min: number, max: number, fallback: F, rule: string) {
  return z
    .string()
    .optional()
    .transform((raw, ctx): number | F => {
      if (unset(raw)) return fallback;
      const value = Number(raw);
      if (!/^\s*\d+\s*$/.test(raw!) || !Number.isInteger(value) || value < min || value > max) {
        ctx.addIssue({ code: "custom", message: `${name} ${rule}` });
        return z.NEVER;
      }
      return value;
    });
}

const port = <F extends number | undefined>(name: string, fallback: F) => integer(name, 0, 65535, fallback, "must be a port number between 0 and 65535");
const positive = (name: string, fallback: number) => integer(name, 1, Number.MAX_SAFE_INTEGER, fallback, "must be a positive integer");
const nonNegative = (name: string, fallback: number) => integer(name, 0, Number.MAX_SAFE_INTEGER, fallback, "must be zero or a positive integer");
const text = () =>
  z
    .string()
    .optional()
    .transform((raw) => (unset(raw) ? undefined : raw));

function setting<T>(schema: z.ZodType<T, string | undefined>, shown: string, meaning: string): Setting<T> {
  return { schema, shown, meaning };
}

/** A variable documented in the row of `row`. */
function partOf<T>(row: string, schema: z.ZodType<T, string | undefined>): Setting<T> {
  return { schema, shown: "", meaning: "", partOf: row };
}

export const SERVICE_SETTINGS = {
  DATABASE_URL: setting(text(), "embedded PostgreSQL", "`postgres://user:pass@host:5432/db`. When set, nothing is generated and `MASTER_KEY` is required."),
  DATABASE_LISTEN_URL: setting(
    text(),
    "`DATABASE_URL`",
    "A direct connection to PostgreSQL for the one connection that `LISTEN`s for cache invalidations (and nothing else), when `DATABASE_URL` points at a pooler such as PgBouncer in transaction pooling mode, where `LISTEN` cannot work. See [PgBouncer](operations/pgbouncer.md).",
  ),
  DATABASE_PREPARED_STATEMENTS: setting(
    z
      .string()
      .optional()
      .transform((raw, ctx): boolean | undefined => {
        if (unset(raw)) return undefined;
        if (raw === "1") return true;
        if (raw === "0") return false;
        ctx.addIssue({ code: "custom", message: "DATABASE_PREPARED_STATEMENTS must be 1 or 0 (or unset)" });
        return z.NEVER;
      }),
    "`1`; `0` when `DATABASE_LISTEN_URL` is set to another URL than `DATABASE_URL`",
    "`1`: the hot path's queries are named prepared statements, parsed once per connection. `0`: unnamed ones, as a pooler in transaction pooling mode needs (PgBouncer before 1.21, or with `max_prepared_statements = 0`). See [PgBouncer](operations/pgbouncer.md).",
  ),
  MASTER_KEY: setting(
    text(),
    "generated locally",
    "A Fernet key (url-safe base64 of 32 bytes, 44 characters ending in `=`), or a comma-separated list: the first encrypts, all decrypt.",
  ),
  SERVICE_ADMIN_TOKEN: setting(text(), "generated locally", "Accepted as an `admin` token (the portal and automation use it). Optional with `DATABASE_URL`."),
  GRPC_PORT: setting(port("GRPC_PORT", 50051), shown(50051), "gRPC port of the service (`@grpc/grpc-js`)."),
  CONNECT_PORT: setting(port("CONNECT_PORT", 50052), shown(50052), "Connect, gRPC-Web and gRPC port of the service (`@connectrpc/connect-node`)."),
  HOST: setting(text(), "`127.0.0.1` on the embedded database, else `0.0.0.0`", "Address to listen on."),
  TLS_CERT_FILE: setting(text(), "unset", "PEM certificate and key: both ports then serve TLS (the Connect port HTTP/1.1 as well as HTTP/2)."),
  TLS_KEY_FILE: partOf("TLS_CERT_FILE", text()),
  TLS_CLIENT_CA_FILE: setting(text(), "unset", "With the two above: mutual TLS, clients must present a certificate signed by this CA."),
  NODE_ENV: setting(
    text(),
    "unset",
    "`production` refuses to start without `DATABASE_URL` and `MASTER_KEY`, never generates anything, and refuses to listen on an address other than loopback without TLS (unless `ALLOW_PLAINTEXT=1`).",
  ),
  ALLOW_PLAINTEXT: setting(
    z
      .string()
      .optional()
      .transform((raw, ctx): boolean => {
        if (unset(raw) || raw === "0") return false;
        if (raw === "1") return true;
        ctx.addIssue({ code: "custom", message: "ALLOW_PLAINTEXT must be 1 (or 0, or unset)" });
        return z.NEVER;
      }),
    "unset",
    "`1`: with `NODE_ENV=production`, listen without TLS on an address other than loopback (a warning is logged), e.g. behind a proxy or mesh that encrypts the traffic.",
  ),
  DATA_DIR: setting(text(), "`.data`", "Where the embedded database and local secrets live; the command-line tools need the same value."),
  EMBEDDED_PG_PORT: setting(port("EMBEDDED_PG_PORT", undefined), "54329 or a free port", "Port of the embedded PostgreSQL."),
  DB_POOL_SIZE: setting(positive("DB_POOL_SIZE", 10), shown(10), "Database connections per process."),
  SHUTDOWN_TIMEOUT_MS: setting(
    positive("SHUTDOWN_TIMEOUT_MS", 10_000),
    shown(10_000),
    "How long SIGTERM waits for calls in flight before closing connections.",
  ),
  RPC_MAX_CONNECTIONS: setting(
    positive("RPC_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
    shown(DEFAULT_MAX_CONNECTIONS),
    "Open connections on each RPC port (gRPC and Connect); a connection past it is closed at once. See [security](security.md#exhaustion-before-authentication).",
  ),
  RPC_MAX_STREAMS_PER_CONNECTION: setting(
    integer("RPC_MAX_STREAMS_PER_CONNECTION", 1, 2 ** 31 - 1, DEFAULT_MAX_STREAMS_PER_CONNECTION, "must be a whole number between 1 and 2147483647"),
    shown(DEFAULT_MAX_STREAMS_PER_CONNECTION),
    "Concurrent calls (HTTP/2 streams) on one connection, on both RPC ports (advertised as `SETTINGS_MAX_CONCURRENT_STREAMS`; clients queue or open another connection).",
  ),
  RPC_IDLE_TIMEOUT_MS: setting(
    positive("RPC_IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT_MS),
    shown(DEFAULT_IDLE_TIMEOUT_MS),
    "A connection to either RPC port with no call open for this long is closed (HTTP/2 `GOAWAY`, or closing an HTTP/1.1 connection on the Connect port; clients reconnect on their next call). A health `Watch` counts as an open call; an HTTP/1.1 request head must arrive within it.",
  ),
  HEALTH_MAX_WATCHERS: setting(
    positive("HEALTH_MAX_WATCHERS", DEFAULT_HEALTH_MAX_WATCHERS),
    shown(DEFAULT_HEALTH_MAX_WATCHERS),
    "Open `grpc.health.v1.Health/Watch` streams, both ports together (health needs no token); one more is refused `RESOURCE_EXHAUSTED`. `Check` is not limited.",
  ),
  WATCH_HEARTBEAT_MS: setting(
    positive("WATCH_HEARTBEAT_MS", DEFAULT_WATCH_HEARTBEAT_MS),
    shown(DEFAULT_WATCH_HEARTBEAT_MS),
    "A `WatchResolutions` stream that sent nothing for this long gets a heartbeat, so that its client knows it is alive.",
  ),
  WATCH_MAX_STREAMS: setting(
    positive("WATCH_MAX_STREAMS", DEFAULT_WATCH_MAX_STREAMS),
    shown(DEFAULT_WATCH_MAX_STREAMS),
    "Open `WatchResolutions` change streams, both ports together; one more is refused `RESOURCE_EXHAUSTED`. Each client library keeps one per process.",
  ),
  LOG_LEVEL: setting(
    z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"], {
        error: "LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent",
      })
      .optional(),
    "`info`",
    "pino level (`debug`, `info`, `warn`, ...). Logs are JSON lines on stdout.",
  ),
  OPENAI_API_KEY: setting(
    text(),
    "unset",
    "Fallback keys used when an organisation has no active credential for the provider (`GOOGLE_API_KEY` when `GEMINI_API_KEY` is not set). Read once at start-up.",
  ),
  ANTHROPIC_API_KEY: partOf("OPENAI_API_KEY", text()),
  GEMINI_API_KEY: partOf("OPENAI_API_KEY", text()),
  GOOGLE_API_KEY: partOf("OPENAI_API_KEY", text()),
  FIREWORKS_API_KEY: partOf("OPENAI_API_KEY", text()),
  RESOLVE_CACHE_MAX_ENTRIES: setting(
    nonNegative("RESOLVE_CACHE_MAX_ENTRIES", DEFAULT_CACHE_MAX_ENTRIES),
    shown(DEFAULT_CACHE_MAX_ENTRIES),
    "Bound of the `ResolveKey` cache in entries (one per organisation and provider resolved, one per team), least recently used out first; `0` turns it off.",
  ),
  RESOLVE_CACHE_TTL_MS: setting(
    positive("RESOLVE_CACHE_TTL_MS", DEFAULT_CACHE_TTL_MS),
    shown(DEFAULT_CACHE_TTL_MS),
    "Safety net: a cached resolution older than this (10 minutes) is reloaded even without an invalidation. It bounds only changes made outside the service (SQL by hand).",
  ),
  RESOLVE_CACHE_HEARTBEAT_MS: setting(
    positive("RESOLVE_CACHE_HEARTBEAT_MS", DEFAULT_HEARTBEAT_MS),
    shown(DEFAULT_HEARTBEAT_MS),
    "How often the invalidation connection proves it is alive (`select 1`); an answer slower than this counts as a dropped connection.",
  ),
  RESOLVE_CACHE_OUTAGE_GRACE_MS: setting(
    nonNegative("RESOLVE_CACHE_OUTAGE_GRACE_MS", DEFAULT_CACHE_OUTAGE_GRACE_MS),
    shown(DEFAULT_CACHE_OUTAGE_GRACE_MS),
    "While PostgreSQL is unreachable, how long cached resolutions (and tokens) go on being served after the outage began; `0` serves nothing from the cache during an outage.",
  ),
  ADMIN_EMAIL: setting(
    text(),
    "unset",
    "Create the first portal administrator at start-up when there is none. The password must have at least 12 characters, must not contain the email or the part before its `@`, and must not be easy to guess (several unrelated words); the service refuses to start otherwise.",
  ),
  ADMIN_PASSWORD: partOf("ADMIN_EMAIL", text()),
  ADMIN_SESSION_LIFETIME_HOURS: setting(
    integer("ADMIN_SESSION_LIFETIME_HOURS", 1, 24 * 366, DEFAULT_SESSION_LIFETIME_HOURS, "must be a whole number of hours between 1 and 8784"),
    shown(DEFAULT_SESSION_LIFETIME_HOURS),
    "How long a portal session lasts after sign-in, however much it is used (7 days); a session unused for 12 hours ends sooner.",
  ),
  METRICS_PORT: setting(
    port("METRICS_PORT", undefined),
    "unset (`9464` with `npm start`)",
    "Serve Prometheus metrics on this port (`0` picks a free one); unset, none are served.",
  ),
  FAILURE_THRESHOLD: setting(
    positive("FAILURE_THRESHOLD", DEFAULT_FAILURE_THRESHOLD),
    shown(DEFAULT_FAILURE_THRESHOLD),
    "Consecutive authentication or quota failures (`ReportKeyFailure`) that mark a credential failing.",
  ),
  ROTATION_DAYS: setting(
    positive("ROTATION_DAYS", DEFAULT_ROTATION_DAYS),
    shown(DEFAULT_ROTATION_DAYS),
    'Keys set longer ago than this are flagged "rotation due".',
  ),
  HEAP_GROWING_PERCENT: setting(
    nonNegative("HEAP_GROWING_PERCENT", 100),
    shown(100),
    "How far V8's heap may grow past the live data before a full collection (`0`: V8 decides, more memory, more throughput); see [performance](performance.md).",
  ),
  KEY_CHECK_TIMEOUT_MS: setting(
    positive("KEY_CHECK_TIMEOUT_MS", DEFAULT_PROVIDER_CHECK_TIMEOUT_MS),
    shown(DEFAULT_PROVIDER_CHECK_TIMEOUT_MS),
    "Budget of one check of a key against its provider (`VerifyCredential`, verify before saving).",
  ),
  API_BASE_ALLOW: setting(
    z
      .string()
      .optional()
      .transform((raw, ctx): string | undefined => {
        if (unset(raw)) return undefined;
        try {
          parseApiBaseAllow(raw);
        } catch (error) {
          ctx.addIssue({ code: "custom", message: (error as Error).message });
          return z.NEVER;
        }
        return raw;
      }),
    "unset",
    "Host names, IP addresses and CIDR networks (comma-separated, e.g. `127.0.0.1,10.0.0.0/8,llm-proxy.internal`) an `api_base` may point at although they are loopback, link-local, private, unique-local or unspecified; unset, such an `api_base` is refused on save and never called by a key check.",
  ),
};

type Settings = typeof SERVICE_SETTINGS;
export type ServiceSettings = { [K in keyof Settings]: Settings[K] extends Setting<infer T> ? T : never };

const schema = z.object(
  Object.fromEntries(Object.entries(SERVICE_SETTINGS).map(([name, s]) => [name, s.schema])) as { [K in keyof Settings]: Settings[K]["schema"] },
);

/**
 * The secret settings: each may be given as NAME_FILE instead, the path of a file that holds it.
 * Listed in secret-files.ts (SERVICE_SECRET_SETTINGS), which the command-line tools load without
 * this schema and the server it takes its defaults from: a new secret setting goes there too.
 */
export const SECRET_SETTINGS: readonly string[] = SERVICE_SECRET_SETTINGS;

/**
 * The service's settings from the environment, secrets given as NAME_FILE read from their files;
 * a ConfigError naming the first variable that breaks its rule. (The process applies the files to
 * process.env first, applySecretFiles, and logs their warnings once.)
 */
export function loadSettings(env: NodeJS.ProcessEnv): ServiceSettings {
  const fromFiles = readSecretFiles(env, SECRET_SETTINGS).values;
  const picked = Object.fromEntries(Object.keys(SERVICE_SETTINGS).map((name) => [name, fromFiles[name] ?? env[name]]));
  const result = schema.safeParse(picked);
  if (!result.success) throw new ConfigError(result.error.issues[0].message);
  return result.data as ServiceSettings;
}

/**
 * Whether the hot path uses named prepared statements: DATABASE_PREPARED_STATEMENTS when set; else
 * not when DATABASE_LISTEN_URL names another database URL than DATABASE_URL, the sign of a pooler
 * in transaction mode in front of DATABASE_URL (docs/operations/pgbouncer.md).
 */
export function usePreparedStatements(settings: Pick<ServiceSettings, "DATABASE_PREPARED_STATEMENTS" | "DATABASE_LISTEN_URL">, databaseUrl: string): boolean {
  if (settings.DATABASE_PREPARED_STATEMENTS !== undefined) return settings.DATABASE_PREPARED_STATEMENTS;
  return settings.DATABASE_LISTEN_URL === undefined || settings.DATABASE_LISTEN_URL === databaseUrl;
}

/** The note of a row with secrets: which NAME_FILE variables may give them instead. */
function fromFileNote(group: ReadonlyArray<readonly [string, Setting<unknown>]>): string {
  const files = group.filter(([n]) => SECRET_SETTINGS.includes(n)).map(([n]) => `\`${n}_FILE\``);
  if (files.length === 0) return "";
  return ` From ${files.length === 1 ? "a file" : "files"}: ${files.join(", ")} ([secrets from files](operations/secrets.md)).`;
}

/** The settings as the table of docs/configuration.md: one row per variable, or per group of variables documented together. */
export function settingsTable(): string {
  const all = Object.entries(SERVICE_SETTINGS) as Array<[string, Setting<unknown>]>;
  const rows = ["| variable | default | meaning |", "| --- | --- | --- |"];
  for (const [name, s] of all) {
    if (s.partOf !== undefined) continue;
    const group = [[name, s] as const, ...all.filter(([, other]) => other.partOf === name)];
    const names = group.map(([n]) => n);
    rows.push(`| ${names.map((n) => `\`${n}\``).join(", ")} | ${s.shown} | ${s.meaning}${fromFileNote(group)} |`);
  }
  return rows.join("\n");
}
