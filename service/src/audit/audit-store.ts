import type { EntityManager } from "@mikro-orm/postgresql";
import { AuditEventEntity } from "../db/entities.js";

export interface AuditEvent {
  actor: string;
  /** e.g. credential.create, credential.update, organization.delete, token.revoke */
  action: string;
  organizationId?: string | null;
  credentialId?: string | null;
  /** Another object the action names (a team id, a token name). */
  target?: string | null;
  source?: string | null;
  /** What changed, by field name. Never key material: callers pass names and flags, not values of keys. */
  details?: Record<string, unknown>;
}

/** Queues an audit row in the caller's unit of work, so it commits with the change it records. */
export function recordAudit(em: EntityManager, event: AuditEvent): void {
  em.create(AuditEventEntity, {
    occurredAt: new Date(),
    actor: event.actor,
    action: event.action,
    organizationId: event.organizationId ?? null,
    credentialId: event.credentialId ?? null,
    target: event.target ?? null,
    source: event.source ?? null,
    details: event.details ?? {},
  });
}
