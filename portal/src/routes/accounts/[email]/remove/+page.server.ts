import type { PageServerLoad } from "./$types";

/** Removing an account: the confirmation without JavaScript; it posts to the account page's remove action. */
export const load: PageServerLoad = (event) => ({ email: event.params.email });
