import { error } from "@sveltejs/kit";
import type { PageServerLoad } from "./$types";
import { callerFor, loading } from "$lib/server/page-actions";

/** Rotating a token: the confirmation without JavaScript; it posts to the tokens page's rotate action, which shows the new secret. */
export const load: PageServerLoad = async (event) => {
  const { tokens } = await loading(() => callerFor(event).tokens.list({}));
  const token = tokens.find((t) => t.name === event.params.name);
  if (!token) error(404, `There is no API token named "${event.params.name}".`);
  return { token: { name: token.name, scope: token.scope } };
};
