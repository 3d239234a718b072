import { error } from "@sveltejs/kit";
import type { PageServerLoad } from "./$types";
import { callerFor, loading } from "$lib/server/page-actions";

/** Removing an account: the confirmation without JavaScript; it posts to the account page's remove action. */
export const load: PageServerLoad = async (event) => {
  // Only an account the signed-in one may see (as on the account's page): no confirmation for one that is not there.
  const { accounts } = await loading(() => callerFor(event).accounts.list({}));
  if (!accounts.some((a) => a.email === event.params.email)) error(404, `There is no account ${event.params.email}.`);
  return { email: event.params.email };
};
