import { takeFlash } from "$lib/server/page-actions";
import type { PageAccount } from "$lib/roles";
import type { SignedInAdmin } from "$lib/server/trpc/context";
import type { LayoutServerLoad } from "./$types";

/** What the pages know of the signed-in account: enough to hide the buttons its role cannot use. */
function pageAccount(admin: SignedInAdmin | null): PageAccount | null {
  if (!admin) return null;
  return { email: admin.email, role: admin.role, organization_ids: admin.organizationIds.length === 0 ? null : [...admin.organizationIds] };
}

export const load: LayoutServerLoad = (event) => {
  // Runs again on every navigation (it reads the URL), so a message is shown on the next page only.
  void event.url.href;
  return {
    admin: pageAccount(event.locals.admin),
    /** An owner without a second factor is asked (not forced, unless the policy requires it) to set one up. */
    askTwoFactor: event.locals.admin?.role === "owner" && event.locals.admin.twoFactorEnabled === false && event.url.pathname !== "/account",
    flash: takeFlash(event),
    /** When the page was rendered: relative times ("3 min ago") count from it, the same on the server and in the browser. */
    now: new Date().toISOString(),
  };
};
