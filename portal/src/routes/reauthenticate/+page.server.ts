import { fail, redirect } from "@sveltejs/kit";
import { ConnectError } from "@connectrpc/connect";
import type { Actions, PageServerLoad } from "./$types";
import { fromConnectError } from "$lib/server/errors";
import { field, redirectWithFlash } from "$lib/server/page-actions";
import { serviceConnection } from "$lib/server/service-client";
import { safeRedirectTarget, SESSION_COOKIE } from "$lib/server/session";

/**
 * Confirm who you are again: sensitive actions (tokens, accounts, the security policy, a key's api_base) need a
 * sign-in within the last 10 minutes, and the pages send the browser here when the service asks for one
 * (page-actions.ts, askingAgain). With the password, or a code for an account with a second factor; then back to
 * `next` (a path on this site only), where the action is to be repeated: it was not done.
 */
export const load: PageServerLoad = async ({ locals, url }) => ({
  next: safeRedirectTarget(url.searchParams.get("next")),
  twoFactorEnabled: locals.admin?.twoFactorEnabled === true,
});

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    const next = safeRedirectTarget(field(form, "next"));
    const token = event.cookies.get(SESSION_COOKIE);
    if (!event.locals.admin || !token) redirect(303, `/login?redirectTo=${encodeURIComponent(next)}`);
    const password = field(form, "password");
    const code = field(form, "code").trim();
    if (password === "" && code === "") {
      return fail(400, { message: event.locals.admin.twoFactorEnabled ? "Enter your password, or a code of your authenticator app." : "Enter your password." });
    }
    try {
      await serviceConnection()
        .asPortal(event.getClientAddress())
        .admin.reauthenticate({ sessionToken: token, password: password.slice(0, 1024), code: code.slice(0, 64) });
    } catch (thrown) {
      if (!(thrown instanceof ConnectError)) throw thrown;
      const failure = fromConnectError(thrown);
      // Never the typed password or code back.
      if (failure.status === 401) return fail(401, { message: code === "" ? "That password is not right." : "That password or code is not right." });
      return fail(failure.status >= 500 ? 503 : failure.status, { message: failure.message });
    }
    redirectWithFlash(event, next, {
      kind: "success",
      message: "Thank you: you are confirmed for the next 10 minutes. What you were doing was not done yet: do it again now.",
    });
  },
};
