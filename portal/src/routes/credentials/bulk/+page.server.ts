import { error, fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad, RequestEvent } from "./$types";
import { canEdit } from "$lib/roles";
import { callerFor, describeFailure, field, redirectWithFlash, returnTo, returnToParam } from "$lib/server/page-actions";

/**
 * Confirming a change to several credentials at once: the list sends
 * `?action=activate|deactivate|delete&credential_id=…&credential_id=…&returnTo=…`; this page shows
 * them and posts the change (all of them or none: credentials.batch), with or without JavaScript.
 */

const ACTIONS = ["activate", "deactivate", "delete"] as const;
type BulkAction = (typeof ACTIONS)[number];
/** As many as credentials.batch takes at once. */
const MAX_IDS = 200;

/**
 * Look-ups in flight at once: up to 200 at a time would queue on the service's small database pool
 * (DB_POOL_SIZE) ahead of everyone else's calls, and fail there when the machine is busy.
 */
const LOOKUPS_AT_ONCE = 8;

/** `fn` of each item, in order, with at most `limit` running at once. */
async function mapAtMost<T, R>(limit: number, items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function isBulkAction(value: string | null): value is BulkAction {
  return (ACTIONS as readonly string[]).includes(value ?? "");
}

/** The distinct, non-empty ids asked for. */
function idsOf(values: Array<FormDataEntryValue | string>): string[] {
  const ids = values.filter((value): value is string => typeof value === "string").map((value) => value.trim());
  return [...new Set(ids.filter((id) => id !== ""))];
}

const PAST: Record<BulkAction, string> = { activate: "activated", deactivate: "deactivated", delete: "deleted" };

function credentials(n: number): string {
  return n === 1 ? "1 credential" : `${n} credentials`;
}

/** What is wrong with the request itself, in words, or null. */
function problemWith(action: string | null, ids: string[]): string | null {
  if (!isBulkAction(action)) return "Nothing to do: choose whether to activate, deactivate or delete the credentials, from the list of credentials.";
  if (ids.length === 0) return "No credentials were chosen: tick the credentials to change in the list, then choose what to do with them.";
  if (ids.length > MAX_IDS) return `Too many credentials at once: choose at most ${MAX_IDS}.`;
  return null;
}

function refuseViewers(event: RequestEvent): void {
  callerFor(event); // signed out: to the sign-in page first
  if (!canEdit(event.locals.admin ? { email: event.locals.admin.email, role: event.locals.admin.role, organization_ids: null } : null)) {
    error(403, "Your account is a viewer: it cannot activate, deactivate or delete credentials.");
  }
}

export const load: PageServerLoad = async (event) => {
  refuseViewers(event);
  const action = event.url.searchParams.get("action");
  const ids = idsOf(event.url.searchParams.getAll("credential_id"));
  const back = returnToParam(event.url, "/");
  const problem = problemWith(action, ids);
  if (problem !== null || !isBulkAction(action)) return { action: null, problem, returnTo: back, credentials: [], missing: [] };

  const caller = callerFor(event);
  const found = await mapAtMost(LOOKUPS_AT_ONCE, ids, async (id) => {
    try {
      return { ok: true as const, credential: await caller.credentials.get({ credential_id: id }) };
    } catch (thrown) {
      const failure = describeFailure(thrown);
      // An outage is not "not found": the error page says the service is unavailable.
      if (failure.status >= 500) error(503, "The credentials service is unavailable; try again shortly.");
      return { ok: false as const, id, message: failure.status === 404 || failure.status === 403 ? "not found" : failure.message };
    }
  });
  // Nothing left to confirm: the same answer whether the ids never existed or belong to organisations outside the account's.
  if (found.every((entry) => !entry.ok)) error(404, ids.length === 1 ? "The chosen credential was not found." : "None of the chosen credentials was found.");
  return {
    action,
    problem: null,
    returnTo: back,
    credentials: found.flatMap((entry) =>
      entry.ok
        ? [
            {
              credential_id: entry.credential.credential_id,
              credential_name: entry.credential.credential_name,
              provider: entry.credential.provider,
              key_hint: entry.credential.key_hint,
              organization_id: entry.credential.organization_id,
              is_active: entry.credential.is_active,
            },
          ]
        : [],
    ),
    missing: found.flatMap((entry) => (entry.ok ? [] : [{ credential_id: entry.id, message: entry.message }])),
  };
};

export const actions: Actions = {
  default: async (event) => {
    refuseViewers(event);
    const form = await event.request.formData();
    const action = field(form, "action");
    const ids = idsOf(form.getAll("credential_id"));
    const problem = problemWith(action, ids);
    if (problem !== null || !isBulkAction(action)) return fail(400, { message: problem ?? "" });
    try {
      await callerFor(event).credentials.batch({ action, credential_ids: ids });
    } catch (thrown) {
      const failure = describeFailure(thrown);
      return fail(failure.status, { message: `Nothing was changed: ${failure.message}` });
    }
    redirectWithFlash(event, returnTo(form, "/"), {
      kind: "success",
      message: `${credentials(ids.length)} ${ids.length === 1 ? "was" : "were"} ${PAST[action]}.`,
    });
  },
};
