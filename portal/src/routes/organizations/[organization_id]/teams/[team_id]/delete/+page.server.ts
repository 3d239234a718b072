import { error } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { callerFor, loading, redirectWithFlash, refusalOf } from "$lib/server/page-actions";

/** Deleting a team: the confirmation without JavaScript; the organisation page's dialog posts to the same action. */
export const load: PageServerLoad = async (event) => {
  const { organization_id, team_id } = event.params;
  // There is no GetTeam; the team is found in its organisation's list.
  const teams = await loading(async () => {
    const caller = callerFor(event);
    const found = [];
    let cursor: string | undefined;
    do {
      const page = await caller.teams.list({ organization_id, limit: 200, cursor });
      found.push(...page.teams);
      cursor = page.next_cursor ?? undefined;
    } while (cursor && !found.some((t) => t.team_id === team_id));
    return found;
  });
  const team = teams.find((t) => t.team_id === team_id);
  if (!team) error(404, `There is no team "${team_id}" in organization "${organization_id}".`);
  return { team };
};

export const actions: Actions = {
  default: async (event) => {
    const { organization_id, team_id } = event.params;
    const back = `/organizations/${encodeURIComponent(organization_id)}`;
    const refusal = await refusalOf(() => callerFor(event).teams.delete({ team_id }));
    if (refusal !== null) redirectWithFlash(event, back, { kind: "error", message: `Team ${team_id} was not deleted: ${refusal}` });
    redirectWithFlash(event, back, { kind: "success", message: `Team ${team_id} was deleted.` });
  },
};
