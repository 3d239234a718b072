import { error } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { callerFor, loading, redirectWithFlash, refusalOf } from "$lib/server/page-actions";

/** Revoking a token: the confirmation without JavaScript; the list's dialog posts to the same action. */
export const load: PageServerLoad = async (event) => {
  const { tokens } = await loading(() => callerFor(event).tokens.list({}));
  const token = tokens.find((t) => t.name === event.params.name);
  if (!token) error(404, `There is no API token named "${event.params.name}".`);
  return { token };
};

export const actions: Actions = {
  default: async (event) => {
    const name = event.params.name;
    const refusal = await refusalOf(() => callerFor(event).tokens.revoke({ name }));
    if (refusal !== null) redirectWithFlash(event, "/tokens", { kind: "error", message: `Token ${name} was not revoked: ${refusal}` });
    redirectWithFlash(event, "/tokens", { kind: "success", message: `Token ${name} was revoked; programs using it are refused within 5 seconds.` });
  },
};
