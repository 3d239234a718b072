import type { EntityManager } from "@mikro-orm/postgresql";
import { inTransaction, type Orm } from "./orm.js";
import { isCheckViolation, isForeignKeyViolation, isUniqueViolation } from "./errors.js";
import { recordAudits, type AuditEvent } from "../audit/audit-store.js";
import { publishInvalidation, type Invalidation } from "../credentials/invalidation.js";

/** Called after a change commits with what it makes stale (this replica's cache; other replicas hear it via NOTIFY). */
export type ChangeListener = (change: Invalidation) => void;

/** What a change's work gets: its transaction, and where it declares what the change records and makes stale. */
export interface Change {
  /** The transaction: write with explicit statements on it (see inTransaction). */
  em: EntityManager;
  /** An audit row, written in the transaction after the work, in the order declared. */
  audit(event: AuditEvent): void;
  /** What the change makes stale: notified in the transaction and given to `onChange` after the commit, once per distinct value. */
  invalidate(change: Invalidation): void;
}

export interface ChangeOptions {
  /** This replica's own invalidation, called after the commit (never when nothing committed). */
  onChange?: ChangeListener;
  /** The domain errors that constraint violations of this change mean; a violation without one is rethrown as it is. */
  constraints?: {
    unique?: () => Error;
    foreignKey?: () => Error;
    check?: () => Error;
  };
}

/**
 * The one way the service changes stored data: runs `work` in one transaction (inTransaction), writes the audit
 * rows it declared, `pg_notify`s each distinct invalidation it declared, commits, and only then calls `onChange`
 * with those invalidations. When `work`, an audit row, a notification or the COMMIT throws, nothing is written,
 * nothing is notified and `onChange` is not called; constraint violations become the errors `constraints` names.
 */
export async function runChange<T>(source: Orm | EntityManager, work: (change: Change) => Promise<T>, options: ChangeOptions = {}): Promise<T> {
  const audits: AuditEvent[] = [];
  // Keyed by the notification's payload: PostgreSQL would fold identical payloads of one transaction into one anyway.
  const invalidations = new Map<string, Invalidation>();
  let result: T;
  try {
    result = await inTransaction(source, async (em) => {
      const value = await work({
        em,
        audit: (event) => void audits.push(event),
        invalidate: (change) => void invalidations.set(JSON.stringify(change), change),
      });
      await recordAudits(em, audits);
      for (const change of invalidations.values()) await publishInvalidation(em, change);
      return value;
    });
  } catch (error) {
    throw constraintError(error, options.constraints) ?? error;
  }
  if (options.onChange) for (const change of invalidations.values()) options.onChange(change);
  return result;
}

function constraintError(error: unknown, constraints: ChangeOptions["constraints"]): Error | undefined {
  if (constraints?.unique && isUniqueViolation(error)) return constraints.unique();
  if (constraints?.foreignKey && isForeignKeyViolation(error)) return constraints.foreignKey();
  if (constraints?.check && isCheckViolation(error)) return constraints.check();
  return undefined;
}
