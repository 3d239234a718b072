import { fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { callerFor, cursorParam, describeFailure, field, loadFailed, pageNumberParam, redirectWithFlash } from "$lib/server/page-actions";

const PAGE_SIZE = 50;

export const load: PageServerLoad = async (event) => {
  const caller = callerFor(event);
  try {
    const [organization, teams] = await Promise.all([
      caller.organizations.get({ organization_id: event.params.organization_id }),
      caller.teams.list({ organization_id: event.params.organization_id, limit: PAGE_SIZE, cursor: cursorParam(event.url) }),
    ]);
    return { organization, teams: teams.teams, next_cursor: teams.next_cursor, pageNumber: pageNumberParam(event.url) };
  } catch (thrown) {
    loadFailed(thrown);
  }
};

export const actions: Actions = {
  createTeam: async (event) => {
    const form = await event.request.formData();
    const values = { team_id: field(form, "team_id").trim(), name: field(form, "name") };
    let created;
    try {
      created = await callerFor(event).teams.create({ organization_id: event.params.organization_id, ...values });
    } catch (thrown) {
      const failure = describeFailure(thrown, ["team_id", "name"]);
      return fail(failure.status, { values, message: failure.message, errors: failure.errors });
    }
    redirectWithFlash(event, `/organizations/${encodeURIComponent(created.organization_id)}`, {
      kind: "success",
      message: `Team “${created.name}” (${created.team_id}) was created.`,
    });
  },
};
