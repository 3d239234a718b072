import pg from "pg";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { ProviderName } from "../db/entities.js";
import type { Logger } from "../logger.js";
import type { ServiceMetrics } from "../metrics.js";
import type { ResolutionCache } from "./resolution-cache.js";
import { PROVIDER_NAMES } from "@provider-credentials/wire/providers";

/** The PostgreSQL channel every replica listens on. */
export const INVALIDATION_CHANNEL = "provider_credentials_changes";

/** Why a change was published (WatchResolutions' ChangeReason); absent in payloads of older replicas. */
export type ChangeReasonName = "credential" | "selection_strategy" | "key_health" | "organization" | "team" | "all";
const REASONS: readonly ChangeReasonName[] = ["credential", "selection_strategy", "key_health", "organization", "team", "all"];

/**
 * What a committed change makes stale. `reason` (and a team's `organizationId`) are for the
 * change stream (WatchResolutions); the cache ignores them, and payloads without them are read.
 */
export type Invalidation = (
  | { organizationId: string; provider?: ProviderName }
  | { teamId: string; /** The team's organisation, so that callers limited to organisations hear of it. */ organizationId?: string }
  | { all: true }
) & { reason?: ChangeReasonName };

export function applyInvalidation(cache: ResolutionCache, change: Invalidation, metrics?: ServiceMetrics, origin: "local" | "notify" = "local"): void {
  if ("all" in change) cache.clear();
  else if ("teamId" in change) cache.invalidateTeam(change.teamId);
  else cache.invalidateOrganization(change.organizationId, change.provider);
  metrics?.invalidated("all" in change ? "all" : "teamId" in change ? "team" : "organization", origin);
}

/**
 * Queues the notification in the caller's transaction: PostgreSQL delivers it
 * to every listening replica when, and only if, the transaction commits.
 */
export async function publishInvalidation(em: EntityManager, change: Invalidation): Promise<void> {
  await em.getConnection().execute("select pg_notify(?, ?)", [INVALIDATION_CHANNEL, JSON.stringify(change)], "run", em.getTransactionContext());
}

export function parseInvalidation(payload: string | undefined): Invalidation | undefined {
  try {
    const value = JSON.parse(payload ?? "") as Record<string, unknown>;
    const reason = REASONS.find((r) => r === value.reason);
    const why = reason === undefined ? {} : { reason };
    if (value.all === true) return { all: true, ...why };
    if (typeof value.teamId === "string") {
      return typeof value.organizationId === "string"
        ? { teamId: value.teamId, organizationId: value.organizationId, ...why }
        : { teamId: value.teamId, ...why };
    }
    if (typeof value.organizationId === "string") {
      const provider = PROVIDER_NAMES.find((p) => p === value.provider);
      return provider ? { organizationId: value.organizationId, provider, ...why } : { organizationId: value.organizationId, ...why };
    }
  } catch {
    // fall through: an unreadable notification makes everything suspect
  }
  return undefined;
}

/**
 * Who else hears what the listener hears (the change stream, rpc/watch-resolutions.ts), always
 * after this replica's cache has applied it: `change` for each notification, `down` when the
 * connection drops (changes may be missed from now on), `up` when it is connected again
 * (`first`: the first time since start).
 */
export interface InvalidationObserver {
  change(change: Invalidation): void;
  down(): void;
  up(first: boolean): void;
}

/** How often the listening connection proves it is alive (RESOLVE_CACHE_HEARTBEAT_MS). */
export const DEFAULT_HEARTBEAT_MS = 2_000;

/**
 * Keeps one connection LISTENing for invalidations, to DATABASE_LISTEN_URL (server.ts; DATABASE_URL
 * when unset): LISTEN needs a session of its own, which PgBouncer's transaction pooling does not
 * give (docs/operations/pgbouncer.md). While it is down the cache
 * is switched off (every call goes to the database), so a replica never serves
 * a resolution it could have missed an invalidation for while the database can
 * answer; only when the database cannot be reached either, entries cached
 * before the drop answer for the cache's outage grace window. It reconnects by
 * itself with backoff, and the cache starts empty again.
 *
 * A connection can also die without a word (a network partition, a frozen
 * server): no error, no end, and no notifications, while other replicas go on
 * changing keys. So every `heartbeatMs` the connection runs `select 1`; an
 * answer that takes longer than `heartbeatMs` counts as a drop. (PostgreSQL
 * delivers a listening session's pending notifications before it answers, so
 * an answered heartbeat also means nothing committed before it was missed.)
 */
export class InvalidationListener {
  private client: pg.Client | undefined;
  private stopped = false;
  private retryMs = 100;
  private timer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private connectedBefore = false;
  /** Told of every notification after the cache applied it, and of drops and reconnections. */
  observer: InvalidationObserver | undefined;
  /** Resolves the first time the listener is connected (or gives up at stop). */
  readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(
    private readonly databaseUrl: string,
    private readonly cache: ResolutionCache,
    private readonly logger: Logger,
    private readonly metrics?: ServiceMetrics,
    private readonly heartbeatMs = DEFAULT_HEARTBEAT_MS,
  ) {
    this.ready = new Promise((resolve) => (this.markReady = resolve));
  }

  start(): Promise<void> {
    void this.connect();
    return this.ready;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    this.markReady();
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({
      connectionString: this.databaseUrl,
      application_name: "provider-credentials-invalidation",
      // A database that accepts the connection but never answers must not stall reconnection.
      connectionTimeoutMillis: 5_000,
    });
    let failed = false;
    const onDown = (error?: Error) => {
      if (failed) return;
      failed = true;
      if (this.client === client) {
        this.client = undefined;
        clearInterval(this.heartbeat);
      }
      client.removeAllListeners("notification");
      void client.end().catch(() => undefined);
      if (this.stopped) return;
      this.cache.suspend();
      this.metrics?.invalidationListener(false);
      this.observer?.down();
      this.logger.warn({ err: error }, "cache invalidation connection lost: cache bypassed until it reconnects");
      this.timer = setTimeout(() => void this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 5_000);
    };
    client.on("error", onDown);
    client.on("end", () => onDown());
    client.on("notification", (message) => {
      // This replica's cache first, then the change stream: a caller that asks again after an event gets the new answer.
      const change = parseInvalidation(message.payload) ?? { all: true };
      applyInvalidation(this.cache, change, this.metrics, "notify");
      this.observer?.change(change);
    });
    try {
      await client.connect();
      await client.query(`listen ${INVALIDATION_CHANNEL}`);
    } catch (error) {
      onDown(error as Error);
      return;
    }
    if (this.stopped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.retryMs = 100;
    this.startHeartbeat(client, onDown);
    this.cache.setEnabled(true);
    this.metrics?.invalidationListener(true);
    this.metrics?.invalidated("all", "reconnect");
    this.observer?.up(!this.connectedBefore);
    this.connectedBefore = true;
    this.logger.debug("listening for cache invalidations");
    this.markReady();
  }

  private startHeartbeat(client: pg.Client, onDown: (error?: Error) => void): void {
    clearInterval(this.heartbeat);
    let waiting = false;
    this.heartbeat = setInterval(() => {
      if (waiting) return;
      waiting = true;
      const deadline = setTimeout(
        () => onDown(new Error(`the invalidation connection did not answer its heartbeat within ${this.heartbeatMs} ms`)),
        this.heartbeatMs,
      );
      client.query("select 1").then(
        () => {
          waiting = false;
          clearTimeout(deadline);
        },
        (error: Error) => {
          clearTimeout(deadline);
          onDown(error);
        },
      );
    }, this.heartbeatMs);
    this.heartbeat.unref();
  }
}
