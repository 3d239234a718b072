import type { PageServerLoad } from "./$types";
import { callerFor, cursorParam, describeFailure, loadFailed, pageNumberParam, type PageCaller } from "$lib/server/page-actions";
import { AUDIT_ACTIONS, isAuditAction } from "@provider-credentials/wire/audit-actions";
import { ACTION_OPTIONS, auditFilters, auditQuery, FilterError } from "$lib/server/audit-filters";
import { maskKeys } from "@provider-credentials/wire/masking";

const PAGE_SIZE = 50;

/** Organisations named when the organisation filter is no organisation's id (the picker without JavaScript). */
const MATCHES_SHOWN = 10;

/**
 * The audit log, filtered by what the URL says (`?organization=&action=&actor=&from=&to=`). The organisation
 * filter is a typeahead (OrganizationPicker): the page never loads every organisation, only the names of those
 * its events and its filter name.
 */
export const load: PageServerLoad = async (event) => {
  const { url } = event;
  const caller = callerFor(event);
  const filters = auditFilters(url);
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
      const failure = describeFailure(thrown, ["organization_id"]);
      if (failure.status >= 500) loadFailed(thrown);
      // Text that cannot be an organisation's id (a name typed without JavaScript) is a problem of the organisation filter.
      if (failure.errors.organization_id !== undefined) filterErrors = { organization: "" };
      else listError = failure.message;
    }
  }
  let names: Map<string, string>;
  try {
    names = await namesOf(caller, [filters.organization, ...events.map((e) => e.organization_id)]);
  } catch (thrown) {
    loadFailed(thrown);
  }
  // An organisation filter that names no organisation and matches no event: what was typed is no id, so say so
  // and offer the organisations whose name or id contains it. (A deleted organisation's events are still found by its id.)
  let organizationMatches: Array<{ organization_id: string; name: string }> = [];
  if (
    filters.organization !== "" &&
    !names.has(filters.organization) &&
    events.length === 0 &&
    listError === null &&
    Object.keys(filterErrors).every((f) => f === "organization")
  ) {
    try {
      organizationMatches = (await caller.organizations.list({ q: filters.organization.slice(0, 200), limit: MATCHES_SHOWN })).organizations.map((o) => ({
        organization_id: o.organization_id,
        name: o.name,
      }));
    } catch (thrown) {
      if (describeFailure(thrown).status >= 500) loadFailed(thrown);
    }
    filterErrors = {
      organization: `There is no organization with the ID “${maskKeys(filters.organization)}”.${
        organizationMatches.length > 0 ? " Did you mean one of those below?" : " Type an organization's ID, or part of its name and choose a suggestion."
      }`,
    };
  }
  return {
    organizationName: names.get(filters.organization) ?? null,
    // What was typed, as the page shows it again: a key pasted there by mistake is masked.
    organizationTyped: maskKeys(filters.organization),
    organizationMatches,
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

/** The names of the organisations `ids` names (one call each, at most a page's worth); a deleted or unknown one has none. */
async function namesOf(caller: PageCaller, ids: Array<string | null>): Promise<Map<string, string>> {
  const distinct = [...new Set(ids.filter((id): id is string => id !== null && id !== ""))];
  const named = await Promise.all(
    distinct.map(async (id) => {
      try {
        return [id, (await caller.organizations.get({ organization_id: id })).name] as const;
      } catch (thrown) {
        const failure = describeFailure(thrown);
        if (failure.status >= 500) throw thrown;
        return null;
      }
    }),
  );
  return new Map(named.filter((n) => n !== null));
}

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
