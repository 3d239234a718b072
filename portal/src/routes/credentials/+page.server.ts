import { redirect } from "@sveltejs/kit";
import type { PageServerLoad } from "./$types";

/** /credentials is the start page's other name: the same list, the same filters. */
export const load: PageServerLoad = ({ url }) => {
  redirect(307, `/${url.search}`);
};
