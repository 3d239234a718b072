import { error } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { callerFor, describeFailure, loadFailed, redirectWithFlash } from "$lib/server/page-actions";

/** Deleting a team: the confirmation without JavaScript; the organisation page's dialog posts to the same action. */
export const load: PageServerLoad = async (event) => {
  const { organization_id, team_id } = event.params;
  let teams;
  try {
    // There is no GetTeam; the team is found in its organisation's list.
    const caller = callerFor(event);
    teams = [];
    let cursor: string | undefined;
    do {
      const page = await caller.teams.list({ organization_id, limit: 200, cursor });
      teams.push(...page.teams);
      cursor = page.next_cursor ?? undefined;
    } while (cursor && !teams.some((t) => t.team_id === team_id));
  } catch (thrown) {
    loadFailed(thrown);
  }
  const team = teams.find((t) => t.team_id === team_id);
  if (!team) error(404, `There is no team "${team_id}" in organization "${organization_id}".`);
  return { team };
};

export const actions: Actions = {
  default: async (event) => {
    const { organization_id, team_id } = event.params;
    const back = `/organizations/${encodeURIComponent(organization_id)}`;
    let refusal: string | null = null;
    try {
      await callerFor(event).teams.delete({ team_id });
    } catch (thrown) {
      refusal = describeFailure(thrown).message;
    }
    if (refusal !== null) redirectWithFlash(event, back, { kind: "error", message: `Team ${team_id} was not deleted: ${refusal}` });
    redirectWithFlash(event, back, { kind: "success", message: `Team ${team_id} was deleted.` });
  },
};
