import { takeFlash } from "$lib/server/page-actions";
import type { LayoutServerLoad } from "./$types";

export const load: LayoutServerLoad = (event) => {
  // Runs again on every navigation (it reads the URL), so a message is shown on the next page only.
  void event.url.href;
  return {
    admin: event.locals.admin ? { email: event.locals.admin.email } : null,
    flash: takeFlash(event),
  };
};
