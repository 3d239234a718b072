import type pg from "pg";
import type { Orm } from "./orm.js";
import { DB_HOT_PATH_TIMEOUT_MS } from "./orm.js";
import type { HealthState } from "../rpc/health.js";
import type { Logger } from "../logger.js";

/** What the probe uses of knex's client: its pool's pg connections. */
interface KnexClient {
  acquireConnection(): Promise<pg.Client>;
  releaseConnection(connection: pg.Client): Promise<unknown>;
}

/** How often readiness asks PostgreSQL whether it answers (ms). */
export const DEFAULT_READINESS_PROBE_MS = 1_000;

export interface ReadinessOptions {
  /** How long the database may stay unreachable before readiness says NOT_SERVING (the outage grace, ms). */
  graceMs: number;
  /** How often to ask (ms). */
  probeMs?: number;
  /** How long one probe may take before it counts as a failure (ms). */
  timeoutMs?: number;
}

/**
 * Readiness for grpc.health.v1 (READINESS_SERVICE, docs/operations/health.md): every `probeMs`
 * a `select 1` through the service's own pool (DATABASE_URL, the path every call takes, PgBouncer
 * included). When probes have failed for longer than `graceMs` (the resolution cache's outage
 * grace: until then, cached resolutions still answer), readiness turns NOT_SERVING; the first
 * probe that succeeds turns it SERVING again. Liveness is not touched: a restart would not bring
 * the database back.
 */
export class DatabaseReadiness {
  private timer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private failingSince = 0;
  private probing = false;
  private stopped = false;
  private notReady = false;

  constructor(
    private readonly orm: Orm,
    private readonly health: HealthState,
    private readonly logger: Logger,
    private readonly options: ReadinessOptions,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.probe(), this.options.probeMs ?? DEFAULT_READINESS_PROBE_MS);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.graceTimer);
  }

  /** One probe (skipped while the previous one is still waiting). */
  async probe(): Promise<void> {
    if (this.probing || this.stopped) return;
    this.probing = true;
    try {
      await this.selectOne(this.options.timeoutMs ?? DB_HOT_PATH_TIMEOUT_MS);
      this.succeeded();
    } catch (error) {
      this.failed(error);
    } finally {
      this.probing = false;
    }
  }

  /**
   * `select 1` on a connection of the pool, straight on the pg client: the probe is not one of
   * the service's queries (knex's "query" event, which tests count, does not see it). A probe that
   * outlasts `timeoutMs` ends its connection, which knex then throws away instead of reusing.
   */
  private async selectOne(timeoutMs: number): Promise<void> {
    const client = this.orm.em.getConnection().getKnex().client as KnexClient;
    const connection = await client.acquireConnection(); // waits at most DB_ACQUIRE_TIMEOUT_MS
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        connection.query("select 1"),
        new Promise((_, reject) => {
          timer = setTimeout(() => {
            void connection.end().catch(() => undefined);
            reject(new Error(`no answer to select 1 within ${timeoutMs} ms`));
          }, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      await client.releaseConnection(connection);
    }
  }

  private succeeded(): void {
    if (this.stopped) return;
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    const since = this.failingSince;
    this.failingSince = 0;
    if (this.notReady) {
      this.notReady = false;
      this.health.setReady(true);
      this.logger.info({ unreachableMs: Date.now() - since }, "the database answers again: readiness SERVING");
    }
  }

  private failed(error: unknown): void {
    if (this.stopped || this.failingSince !== 0) return;
    this.failingSince = Date.now();
    const message = error instanceof Error ? error.message : String(error);
    this.logger.warn({ reason: message }, `the database does not answer: readiness turns NOT_SERVING if it still does not in ${this.options.graceMs} ms`);
    const notReady = () => {
      if (this.stopped || this.failingSince === 0) return;
      this.notReady = true;
      this.health.setReady(false);
      // A warning, not an error: the outage is the database's, and the calls that fail say so (UNAVAILABLE).
      this.logger.warn({ unreachableMs: Date.now() - this.failingSince }, "the database is unreachable past the outage grace: readiness NOT_SERVING");
    };
    if (this.options.graceMs <= 0) notReady();
    else {
      this.graceTimer = setTimeout(notReady, this.options.graceMs);
      this.graceTimer.unref();
    }
  }
}
