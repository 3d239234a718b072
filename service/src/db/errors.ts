import { ForeignKeyConstraintViolationException, UniqueConstraintViolationException } from "@mikro-orm/core";

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

/** Raw queries return timestamps as text; entities get Dates. */
export function toDate(value: Date | string): Date;
export function toDate(value: Date | string | null): Date | null;
export function toDate(value: Date | string | null): Date | null {
  return value === null ? null : value instanceof Date ? value : new Date(value);
}
