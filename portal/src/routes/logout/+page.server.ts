import { redirect } from "@sveltejs/kit";
import { ConnectError } from "@connectrpc/connect";
import type { Actions, PageServerLoad } from "./$types";
import { log } from "$lib/server/log";
import { serviceConnection } from "$lib/server/service-client";
import { clearedCookieOptions, SESSION_COOKIE } from "$lib/server/session";

export const load: PageServerLoad = ({ locals }) => {
  if (!locals.admin) redirect(303, "/login");
  return {};
};

export const actions: Actions = {
  /** Revokes the session at the service, then forgets the cookie. */
  default: async ({ cookies, url }) => {
    const token = cookies.get(SESSION_COOKIE);
    if (token) {
      try {
        await serviceConnection().asPortal().admin.signOut({ sessionToken: token });
      } catch (thrown) {
        // The cookie goes anyway; a session the service could not revoke expires on its own.
        log("error", "sign-out could not revoke the session", { code: thrown instanceof ConnectError ? thrown.code : undefined, err: thrown });
      }
    }
    cookies.delete(SESSION_COOKIE, clearedCookieOptions(url));
    redirect(303, "/login");
  },
};
