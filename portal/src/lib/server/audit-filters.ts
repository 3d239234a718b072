import { AUDIT_ACTIONS, isAuditAction, type AuditAction } from "@provider-credentials/wire/audit-actions";

/** The audit log's filters as the page's URL carries them (`?organization=&action=&actor=&from=&to=`). */
export type AuditFilters = {
  organization: string;
  action: string;
  actor: string;
  /** A day, YYYY-MM-DD (UTC): events from its start. */
  from: string;
  /** A day, YYYY-MM-DD (UTC): events to its end. */
  to: string;
};

/** Every action the service records, with its label, for the filter (the service's own list). */
export const ACTION_OPTIONS: ReadonlyArray<{ value: AuditAction; label: string }> = (Object.keys(AUDIT_ACTIONS) as AuditAction[]).map((value) => ({
  value,
  label: AUDIT_ACTIONS[value],
}));

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** A calendar day's start (UTC), or undefined when the text is no such day. */
function dayStart(text: string): Date | undefined {
  if (!DAY.test(text)) return undefined;
  const date = new Date(`${text}T00:00:00Z`);
  return Number.isNaN(date.getTime()) || date.toISOString().slice(0, 10) !== text ? undefined : date;
}

export function auditFilters(url: URL): AuditFilters {
  const get = (name: string) => url.searchParams.get(name)?.trim() ?? "";
  return { organization: get("organization"), action: get("action"), actor: get("actor"), from: get("from"), to: get("to") };
}

/** A filter the user can fix, in words, at its field. */
export class FilterError extends Error {
  constructor(
    readonly field: keyof AuditFilters,
    message: string,
  ) {
    super(message);
  }
}

/** The filters as the audit list procedure takes them; FilterError for a day or action that is none. */
export function auditQuery(filters: AuditFilters) {
  const from = filters.from === "" ? undefined : dayStart(filters.from);
  if (filters.from !== "" && from === undefined) throw new FilterError("from", "Enter the first day as YYYY-MM-DD.");
  const toDay = filters.to === "" ? undefined : dayStart(filters.to);
  if (filters.to !== "" && toDay === undefined) throw new FilterError("to", "Enter the last day as YYYY-MM-DD.");
  const before = toDay === undefined ? undefined : new Date(toDay.getTime() + 24 * 60 * 60 * 1000);
  if (from !== undefined && before !== undefined && from >= before) throw new FilterError("to", "The last day must not be before the first.");
  if (filters.action !== "" && !isAuditAction(filters.action)) throw new FilterError("action", "Choose an action from the list.");
  if (filters.actor.length > 128) throw new FilterError("actor", "Enter at most 128 characters.");
  return {
    organization_id: filters.organization || undefined,
    action: filters.action === "" ? undefined : (filters.action as AuditAction),
    actor: filters.actor || undefined,
    occurred_after: from?.toISOString(),
    occurred_before: before?.toISOString(),
  };
}
