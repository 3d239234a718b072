import {
  CheckConstraintViolationException,
  ConnectionException,
  ForeignKeyConstraintViolationException,
  UniqueConstraintViolationException,
} from "@mikro-orm/core";

// Raw queries (em.getConnection().execute) throw pg's errors unconverted, so
// check the SQLSTATE as well as MikroORM's classes.

export function isUniqueViolation(error: unknown): boolean {
  return error instanceof UniqueConstraintViolationException || (error as { code?: unknown })?.code === "23505";
}

/** A foreign key violation, or a blocked ON DELETE RESTRICT (SQLSTATE 23001, which MikroORM does not map). */
export function isForeignKeyViolation(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return error instanceof ForeignKeyConstraintViolationException || code === "23503" || code === "23001";
}

export function isCheckViolation(error: unknown): boolean {
  return error instanceof CheckConstraintViolationException || (error as { code?: unknown })?.code === "23514";
}

/** Raw queries return timestamps as text; entities get Dates. */
export function toDate(value: Date | string): Date;
export function toDate(value: Date | string | null): Date | null;
export function toDate(value: Date | string | null): Date | null {
  return value === null ? null : value instanceof Date ? value : new Date(value);
}

// Connection-level failures: PostgreSQL is down, restarting or unreachable.
const UNAVAILABLE_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08006"]);

/** PostgreSQL cannot be reached (down, restarting, refusing, timed out): the caller may try again shortly. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (error instanceof ConnectionException) return true;
  const e = error as { code?: unknown; name?: unknown; message?: unknown };
  if (typeof e?.code === "string" && UNAVAILABLE_CODES.has(e.code)) return true;
  if (e?.name === "KnexTimeoutError") return true;
  // pg: "timeout expired" (connectionTimeoutMillis), "... is not queryable" (a pooled connection that died);
  // knex: "Transaction query already complete" when the connection died under the transaction's BEGIN
  // (nothing here ends a transaction by hand, so that is the only way to get it).
  return (
    typeof e?.message === "string" &&
    /Connection terminated|connect ECONNREFUSED|timeout exceeded when trying to connect|^timeout expired$|is not queryable$|Transaction query already complete/.test(
      e.message,
    )
  );
}
