import { EntityManager as CoreEntityManager, FlushMode, TransactionEventBroadcaster } from "@mikro-orm/core";
import { MikroORM, type EntityManager } from "@mikro-orm/postgresql";
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

/**
 * Runs `work` in a database transaction on a fresh fork of the EntityManager: commits when it resolves, rolls
 * back when it (or the COMMIT) throws, and rethrows that error. Either way the transaction ends and its pooled
 * connection goes back to the pool.
 *
 * Unlike em.transactional(), it does not run `work` inside MikroORM's TransactionContext (an AsyncLocalStorage):
 * on Node 20 the first AsyncLocalStorage.run() turns on a promise hook for the whole process, for good, a cost
 * every ResolveKey call would pay. So `work` must use the `em` it is given: the global orm.em, or another fork,
 * does not follow the transaction.
 *
 * For the same reason it never flushes: MikroORM's flush runs in an AsyncLocalStorage of its own (UnitOfWork's
 * "inside flush" guard, on every em.flush() or em.commit() that flushes). So `work` writes with explicit
 * statements on `em`, which run at once in its transaction (em.insert/insertMany, em.nativeUpdate,
 * em.nativeDelete, or SQL through em.getConnection().execute(sql, params, method, em.getTransactionContext())),
 * and must not call em.flush() itself. Reading is fine: the fork's flush mode is COMMIT, so em.find/findOne/count
 * never auto-flush (which they would only do for something queued, and nothing should be).
 *
 * Nothing queued is ever lost silently: before the COMMIT, it asks the unit of work what a flush would write,
 * without flushing (UnitOfWork.computeChangeSets(), plain code that enters no AsyncLocalStorage, then
 * getChangeSets() and friends): an entity queued with em.create/em.persist/em.remove, or a loaded entity whose
 * fields `work` changed. If there is any, that is a programming error: it throws (naming the entities), and
 * the transaction rolls back. (To change a loaded row as a working copy, load it with `disableIdentityMap: true`:
 * nothing is managed then.)
 *
 * Pass the Orm to fork orm.em, or an EntityManager (a request's fork) to fork that one instead.
 */
export async function inTransaction<T>(source: Orm | EntityManager, work: (em: EntityManager) => Promise<T>): Promise<T> {
  const em = (source instanceof CoreEntityManager ? source : source.em).fork({ flushMode: FlushMode.COMMIT });
  await em.begin();
  try {
    const result = await work(em);
    refuseUnflushedChanges(em);
    // em.commit() without its flush (which would run in MikroORM's AsyncLocalStorage, and has nothing to write).
    await em.getConnection("write").commit(em.getTransactionContext()!, new TransactionEventBroadcaster(em));
    em.resetTransactionContext();
    return result;
  } catch (error) {
    // ROLLBACK also hands the connection back. After a failed COMMIT knex has already released it and this
    // resolves without a query; a failing rollback must not hide the error that caused it.
    if (em.isInTransaction()) await em.rollback().catch(() => undefined);
    throw error;
  }
}

/**
 * Throws when em.flush() would have anything to write: an entity queued to be inserted or deleted, or a managed
 * one whose fields changed. computeChangeSets() is what a flush does first, minus the flush: it only compares
 * entities with their snapshots (the fork is thrown away right after, so what it leaves in the unit of work does
 * not matter).
 */
function refuseUnflushedChanges(em: EntityManager): void {
  const uow = em.getUnitOfWork();
  const queued = uow.getPersistStack().size + uow.getRemoveStack().size + uow.getOrphanRemoveStack().size;
  if (queued === 0 && uow.getIdentityMap().keys().length === 0) return;
  uow.computeChangeSets();
  const changes = uow.getChangeSets().map((cs) => `${cs.type} ${cs.meta.className}`);
  if (uow.getCollectionUpdates().length > 0 || uow.getExtraUpdates().size > 0) changes.push("collection or extra updates");
  if (changes.length === 0) return;
  throw new Error(
    `programming error: inTransaction never flushes, and the unit of work holds changes only a flush would write (${changes.join(", ")}); ` +
      "write them with em.insert, em.nativeUpdate or em.nativeDelete instead of em.create/em.persist/em.remove or changing a loaded entity",
  );
}

// Any fixed 64-bit number works, as long as every replica uses the same one.
const MIGRATION_LOCK_ID = 7_046_220_811;

/**
 * Applies pending migrations. Replicas starting together take turns through a
 * PostgreSQL advisory lock, so each migration runs exactly once.
 *
 * The lock is a transaction-level one (pg_advisory_xact_lock) held by a transaction
 * left open on a connection of its own while the migrations run on the pool, and
 * released by its COMMIT (or by PostgreSQL when the connection drops). A session
 * lock would not survive PgBouncer's transaction pooling: the lock and the unlock
 * could reach different server connections, and the lock would be held for ever
 * by a server connection back in PgBouncer's pool (docs/operations/pgbouncer.md).
 * The open transaction keeps one server connection for the lock holder, on PgBouncer
 * as directly.
 */
export async function migrate(orm: Orm, databaseUrl: string): Promise<string[]> {
  const lock = new pg.Client({ connectionString: databaseUrl, application_name: "provider-credentials-migration-lock" });
  // An error on the idle lock connection (the database went away) surfaces through the migrations' own connections.
  lock.on("error", () => undefined);
  await lock.connect();
  try {
    await lock.query("begin");
    await lock.query("select pg_advisory_xact_lock($1)", [MIGRATION_LOCK_ID]);
    const applied = await orm.getMigrator().up();
    return applied.map((m) => m.name);
  } finally {
    await lock.query("commit").catch(() => undefined);
    await lock.end().catch(() => undefined);
  }
}
