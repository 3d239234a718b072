import { fail, redirect } from "@sveltejs/kit";
import { ConnectError } from "@connectrpc/connect";
import type { Actions, PageServerLoad } from "./$types";
import { describeFailure, redirectWithFlash, field } from "$lib/server/page-actions";
import { serviceConnection } from "$lib/server/service-client";
import { SESSION_COOKIE } from "$lib/server/session";

/** Everyone's own page: change the password of the signed-in account. */
export const load: PageServerLoad = () => ({});

type PasswordField = "current_password" | "new_password" | "confirm_password";

/** A refusal: never the typed passwords back, only which field is at fault. */
function refuse(status: number, fieldName: PasswordField | null, message: string) {
  return fail(status, { message, errors: (fieldName ? { [fieldName]: message } : {}) as Record<string, string> });
}

export const actions: Actions = {
  default: async (event) => {
    const token = event.cookies.get(SESSION_COOKIE);
    if (!event.locals.admin || !token) redirect(303, "/login?redirectTo=%2Faccount");
    const form = await event.request.formData();
    const current = field(form, "current_password");
    const next = field(form, "new_password");
    if (current === "") return refuse(400, "current_password", "Enter your current password.");
    if (next === "") return refuse(400, "new_password", "Enter a new password.");
    if (next !== field(form, "confirm_password")) return refuse(400, "confirm_password", "The two new passwords differ.");
    try {
      // The session says whose password changes; the service checks the current one.
      await serviceConnection().asPortal(event.getClientAddress()).admin.changePassword({ sessionToken: token, currentPassword: current, newPassword: next });
    } catch (thrown) {
      if (!(thrown instanceof ConnectError)) throw thrown;
      const failure = describeFailure(thrown, ["current_password", "new_password"]);
      if (failure.code === "unauthorized") return refuse(400, "current_password", "The current password is wrong.");
      if (failure.status >= 500) return refuse(503, null, "The credentials service is unavailable; try again shortly.");
      const named = (Object.keys(failure.errors)[0] as PasswordField | undefined) ?? (failure.code === "bad_request" ? "new_password" : null);
      return refuse(failure.status, named, named && failure.errors[named] ? `${failure.errors[named]}` : failure.message);
    }
    redirectWithFlash(event, "/account", { kind: "success", message: "Your password was changed." });
  },
};
