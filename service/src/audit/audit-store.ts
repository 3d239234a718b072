import type { FilterQuery } from "@mikro-orm/core";
import type { EntityManager } from "@mikro-orm/postgresql";
import { AuditEventEntity, type AuditEventRow } from "../db/entities.js";
import { escapeLike } from "../db/like.js";
import { malformedPageToken, type PageTokens } from "../paging.js";
import type { AuditAction } from "@provider-credentials/wire/audit-actions";

export interface AuditEvent {
  actor: string;
  /** The token `actor` acted through when an admin token named them ("token:portal"); the row's actor names both. */
  via?: string | null;
  /** The portal account's role when `actor` is one; the row's actor shows it ("alice@example.com (editor) via token:portal"). */
  role?: string | null;
  /** One of AUDIT_ACTIONS (packages/wire/src/audit-actions.ts), e.g. credential.create, token.revoke. */
  action: AuditAction;
  organizationId?: string | null;
  credentialId?: string | null;
  /** Another object the action names (a team id, a token name). */
  target?: string | null;
  source?: string | null;
  /** What changed, by field name. Never key material: callers pass names and flags, not values of keys. */
  details?: Record<string, unknown>;
}

/**
 * Writes an audit row in the caller's transaction (an explicit INSERT on `em`, the one inTransaction hands out),
 * so it commits, or rolls back, with the change it records. Await it.
 */
export async function recordAudit(em: EntityManager, event: AuditEvent): Promise<void> {
  await em.insert(AuditEventEntity, auditRow(event));
}

/** Rows per INSERT: PostgreSQL takes at most 65,535 parameters in one statement, and an audit row has about a dozen. */
const AUDIT_ROWS_PER_INSERT = 1_000;

/** recordAudit for several events, in order, a thousand rows per INSERT (an offboarding may write tens of thousands); nothing when there are none. */
export async function recordAudits(em: EntityManager, events: readonly AuditEvent[]): Promise<void> {
  for (let start = 0; start < events.length; start += AUDIT_ROWS_PER_INSERT) {
    await em.insertMany(AuditEventEntity, events.slice(start, start + AUDIT_ROWS_PER_INSERT).map(auditRow));
  }
}

/** Who acted, as an audit row names them: "alice@example.com (editor) via token:portal", "token:gw", "cli:root". */
export function auditActorText({ actor, role, via }: { actor: string; role?: string | null; via?: string | null }): string {
  return `${actor}${role ? ` (${role})` : ""}${via ? ` via ${via}` : ""}`;
}

/** The row an event becomes: every column but the id, which the database assigns. */
function auditRow(event: AuditEvent): AuditEventRow {
  return {
    occurredAt: new Date(),
    actor: auditActorText(event),
    action: event.action,
    organizationId: event.organizationId ?? null,
    credentialId: event.credentialId ?? null,
    target: event.target ?? null,
    source: event.source ?? null,
    details: event.details ?? {},
  };
}

export interface AuditQuery {
  organizationId?: string;
  /** Only events of these organisations (a caller limited to some); events of no organisation are left out too. */
  organizationIds?: ReadonlySet<string> | null;
  credentialId?: string;
  action?: string;
  /** Only events whose actor starts with this, ignoring case. */
  actorPrefix?: string;
  /** Only events at or after this time. */
  occurredAfter?: Date;
  /** Only events before this time. */
  occurredBefore?: Date;
  limit: number;
  pageToken: string;
}

export interface AuditEventView {
  id: string;
  occurredAt: Date;
  actor: string;
  action: string;
  organizationId: string | null;
  credentialId: string | null;
  target: string | null;
  source: string | null;
  details: Record<string, unknown>;
}

/** The largest audit event id (bigint). */
const MAX_EVENT_ID = 2n ** 63n - 1n;

/** Reads the audit log, newest first, keyset-paged on the event id. */
export async function listAuditEvents(em: EntityManager, pages: PageTokens, query: AuditQuery): Promise<{ events: AuditEventView[]; nextPageToken: string }> {
  const after = pages.decode<[string]>("audit_events", "", query.pageToken, ["string"]);
  // Authenticated tokens carry what this service wrote; still, never hand the query a value a bigint cannot hold.
  if (after && (!/^[0-9]{1,19}$/.test(after[0]) || BigInt(after[0]) > MAX_EVENT_ID)) throw malformedPageToken();
  const where: FilterQuery<AuditEventRow> = {};
  if (query.organizationId !== undefined) where.organizationId = query.organizationId;
  else if (query.organizationIds) where.organizationId = { $in: [...query.organizationIds] };
  if (query.credentialId !== undefined) where.credentialId = query.credentialId;
  if (query.action !== undefined) where.action = query.action;
  if (query.actorPrefix !== undefined) where.actor = { $ilike: `${escapeLike(query.actorPrefix)}%` };
  if (query.occurredAfter !== undefined || query.occurredBefore !== undefined) {
    where.occurredAt = {
      ...(query.occurredAfter !== undefined ? { $gte: query.occurredAfter } : {}),
      ...(query.occurredBefore !== undefined ? { $lt: query.occurredBefore } : {}),
    };
  }
  if (after) where.id = { $lt: after[0] };
  const rows = await em.find(AuditEventEntity, where, { orderBy: { id: "desc" }, limit: query.limit + 1 });
  const page = rows.slice(0, query.limit);
  const last = page[page.length - 1];
  return {
    events: page.map((r) => ({
      id: String(r.id),
      occurredAt: r.occurredAt,
      actor: r.actor,
      action: r.action,
      organizationId: r.organizationId,
      credentialId: r.credentialId,
      target: r.target,
      source: r.source,
      details: r.details,
    })),
    nextPageToken: rows.length > query.limit && last ? pages.encode("audit_events", "", [String(last.id)]) : "",
  };
}
