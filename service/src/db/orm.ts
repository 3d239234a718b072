import { MikroORM } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import pg from "pg";
import { entities } from "./entities.js";
import { migrationsList } from "../../../migrations/index.js";

export type Orm = MikroORM;

/**
 * Fail fast when PostgreSQL is down or unreachable: a new connection gets this
 * long to be established (TCP, TLS, authentication) ...
 */
export const DB_CONNECT_TIMEOUT_MS = 1_000;
/** ... and a call waits at most this long for a pooled connection (knex's default is 60 s), then fails with UNAVAILABLE. */
export const DB_ACQUIRE_TIMEOUT_MS = 1_500;
/**
 * The hot path's statements (ResolveKey's query, a token's look-up) give up
 * after this long: a database that accepts connections but never answers
 * (frozen, partitioned) must not hang every LLM call. knex's timeout throws
 * the pooled connection away rather than reuse it with the statement pending.
 */
export const DB_HOT_PATH_TIMEOUT_MS = 1_500;

export interface OrmOptions {
  databaseUrl: string;
  /** Connections in the pool (default 10). */
  poolSize?: number;
}

export async function createOrm(options: OrmOptions): Promise<Orm> {
  return MikroORM.init({
    clientUrl: options.databaseUrl,
    entities,
    extensions: [Migrator],
    migrations: { migrationsList, tableName: "mikro_orm_migrations", transactional: true, allOrNothing: true, silent: true, snapshot: false },
    pool: { min: 0, max: options.poolSize ?? 10, acquireTimeoutMillis: DB_ACQUIRE_TIMEOUT_MS },
    driverOptions: { connection: { connectionTimeoutMillis: DB_CONNECT_TIMEOUT_MS } },
    // No identity map across requests: every call forks a fresh EntityManager.
    allowGlobalContext: false,
    debug: false,
    // Never ask MikroORM to diff or create the schema: migrations/ owns it.
    ensureDatabase: false,
    discovery: { warnWhenNoEntities: false },
  });
}

// Any fixed 64-bit number works, as long as every replica uses the same one.
const MIGRATION_LOCK_ID = 7_046_220_811;

/**
 * Applies pending migrations. Replicas starting together take turns through a
 * PostgreSQL advisory lock, so each migration runs exactly once.
 */
export async function migrate(orm: Orm, databaseUrl: string): Promise<string[]> {
  const lock = new pg.Client({ connectionString: databaseUrl });
  await lock.connect();
  try {
    await lock.query("select pg_advisory_lock($1)", [MIGRATION_LOCK_ID]);
    const applied = await orm.getMigrator().up();
    return applied.map((m) => m.name);
  } finally {
    await lock.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK_ID]).catch(() => undefined);
    await lock.end().catch(() => undefined);
  }
}
