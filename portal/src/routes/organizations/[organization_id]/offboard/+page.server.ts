import { error, fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad, RequestEvent } from "./$types";
import { canManageOrganizations } from "$lib/roles";
import { callerFor, describeFailure, field, loading, redirectWithFlash, type PageCaller } from "$lib/server/page-actions";

/**
 * Offboarding an organisation: it goes with all its credentials and teams, in one transaction, once the person has
 * typed its id. Owners only; a sign-in older than the service allows for it goes by /reauthenticate (callerFor).
 */

function ownersOnly(event: RequestEvent): PageCaller {
  const caller = callerFor(event); // signed out: to the sign-in page first
  const admin = event.locals.admin!;
  if (!canManageOrganizations({ email: admin.email, role: admin.role, organization_ids: null })) {
    error(403, "Only an owner can offboard an organization.");
  }
  return caller;
}

async function teamCount(caller: PageCaller, organizationId: string): Promise<number> {
  let count = 0;
  let cursor: string | undefined;
  for (;;) {
    const page = await caller.teams.list({ organization_id: organizationId, limit: 200, cursor });
    count += page.teams.length;
    if (!page.next_cursor) return count;
    cursor = page.next_cursor;
  }
}

export const load: PageServerLoad = async (event) => {
  const caller = ownersOnly(event);
  const id = event.params.organization_id;
  const [organization, credentials, teams] = await loading(() =>
    Promise.all([caller.organizations.get({ organization_id: id }), caller.credentials.list({ organization_id: id, limit: 1 }), teamCount(caller, id)]),
  );
  return { organization, credentialCount: credentials.total, teamCount: teams };
};

const CONFIRM = "confirm_organization_id";

export const actions: Actions = {
  default: async (event) => {
    const caller = ownersOnly(event);
    const form = await event.request.formData();
    const id = event.params.organization_id;
    const typed = field(form, CONFIRM).trim();
    if (typed !== id) {
      return fail(400, {
        typed,
        message: "",
        errors: { [CONFIRM]: typed === "" ? `Type the organization's id, ${id}, to confirm.` : `That is not this organization's id: type ${id} exactly.` },
      });
    }
    let outcome;
    try {
      outcome = await caller.organizations.offboard({ organization_id: id, confirm_organization_id: typed });
    } catch (thrown) {
      const failure = describeFailure(thrown, [CONFIRM]);
      const atField = Object.keys(failure.errors).length > 0;
      return fail(failure.status, { typed, message: atField ? "" : `Nothing was deleted: ${failure.message}`, errors: failure.errors });
    }
    const what = [
      outcome.deleted_credentials === 1 ? "1 credential" : `${outcome.deleted_credentials} credentials`,
      outcome.deleted_teams === 1 ? "1 team" : `${outcome.deleted_teams} teams`,
    ].join(" and ");
    redirectWithFlash(event, "/organizations", { kind: "success", message: `Organization ${id} was offboarded: it was deleted with its ${what}.` });
  },
};
