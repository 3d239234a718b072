import type { PageServerLoad } from "./$types";
import { allOrganizations, callerFor, cursorParam, describeFailure, loadFailed, pageNumberParam } from "$lib/server/page-actions";
import { AUDIT_ACTIONS, isAuditAction } from "@provider-credentials/wire/audit-actions";
import { ACTION_OPTIONS, auditFilters, auditQuery, FilterError } from "$lib/server/audit-filters";

const PAGE_SIZE = 50;

export const load: PageServerLoad = async (event) => {
  const { url } = event;
  const caller = callerFor(event);
  const filters = auditFilters(url);
  let organizations;
  try {
    organizations = (await allOrganizations(caller)).organizations;
  } catch (thrown) {
    loadFailed(thrown);
  }
  let events: Awaited<ReturnType<typeof caller.audit.list>>["events"] = [];
  let next_cursor: string | null = null;
  let listError: string | null = null;
  let filterErrors: Record<string, string> = {};
  try {
    const page = await caller.audit.list({ ...auditQuery(filters), limit: PAGE_SIZE, cursor: cursorParam(url) });
    events = page.events;
    next_cursor = page.next_cursor;
  } catch (thrown) {
    if (thrown instanceof FilterError) filterErrors = { [thrown.field]: thrown.message };
    else {
      const failure = describeFailure(thrown);
      if (failure.status >= 500) loadFailed(thrown);
      listError = failure.message;
    }
  }
  const names = new Map(organizations.map((o) => [o.organization_id, o.name]));
  return {
    organizations,
    actions: ACTION_OPTIONS,
    filters,
    filterErrors,
    events: events.map((e) => ({
      event_id: e.event_id,
      occurred_at: e.occurred_at,
      actor: e.actor,
      action: e.action,
      organization_id: e.organization_id,
      organization_name: e.organization_id === null ? null : (names.get(e.organization_id) ?? null),
      action_label: isAuditAction(e.action) ? AUDIT_ACTIONS[e.action] : null,
      credential_id: e.credential_id,
      target: e.target,
      source: e.source,
      subject: subjectOf(e),
      summary: summarize(e.details),
    })),
    next_cursor,
    listError,
    pageNumber: pageNumberParam(url),
  };
};

/** What the event was done to, in words: the credential's name, else the team, token or person named. */
function subjectOf(e: { details: Record<string, unknown>; target: string | null; credential_id: string | null }): string | null {
  const name = e.details.credential_name ?? e.details.name;
  if (typeof name === "string" && name !== "") return e.target && e.target !== name ? `${name} (${e.target})` : name;
  return e.target ?? e.credential_id;
}

const PROVIDER_LABELS: Record<string, string> = { openai: "OpenAI", anthropic: "Anthropic", gemini: "Google Gemini", fireworks: "Fireworks AI" };

/**
 * What an event's details say, in a line. Details hold names, hints and flags
 * (never keys); only known, plain fields are shown.
 */
function summarize(details: Record<string, unknown>): string {
  const parts: string[] = [];
  const text = (key: string) => (typeof details[key] === "string" ? (details[key] as string) : undefined);
  const provider = text("provider");
  if (provider) parts.push(PROVIDER_LABELS[provider] ?? provider);
  const hint = text("key_hint");
  if (hint) parts.push(`key ${hint}`);
  if (Array.isArray(details.changed) && details.changed.every((c) => typeof c === "string")) {
    parts.push(`changed: ${(details.changed as string[]).join(", ")}`);
  }
  const scope = text("scope");
  if (scope) parts.push(`scope ${scope}`);
  return parts.join(" · ");
}
