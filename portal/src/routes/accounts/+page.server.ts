import { fail, redirect } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { organizationList } from "$lib/server/form-lists";
import { callerFor, describeFailure, field, loading, redirectWithFlash, refuseForm, serviceFor } from "$lib/server/page-actions";
import { ACCOUNT_ROLES } from "$lib/server/trpc/schemas";

export const load: PageServerLoad = async (event) => ({
  accounts: (await loading(() => callerFor(event).accounts.list({}))).accounts,
  // Read as the signed-in account (the service decides who may); the switch is shown to owners only.
  requireTwoFactor: event.locals.admin ? ((await loading(() => serviceFor(event).admin.getSecurityPolicy({}))).policy?.requireTwoFactor ?? false) : false,
});

type Role = (typeof ACCOUNT_ROLES)[number];
const isRole = (value: string): value is Role => (ACCOUNT_ROLES as readonly string[]).includes(value);

export const actions: Actions = {
  /** Owners: whether every account must sign in with a second factor. The service refuses anyone else. */
  security_policy: async (event) => {
    if (!event.locals.admin) redirect(303, "/login?redirectTo=%2Faccounts");
    const form = await event.request.formData();
    const requireTwoFactor = field(form, "require_two_factor") === "on";
    try {
      await serviceFor(event).admin.setSecurityPolicy({ requireTwoFactor });
    } catch (thrown) {
      const failure = describeFailure(thrown);
      return fail(failure.status, { policyMessage: failure.message });
    }
    redirectWithFlash(event, "/accounts", {
      kind: "success",
      message: requireTwoFactor
        ? "Every account now signs in with a second factor; those without one are asked to set it up."
        : "Two-factor sign-in is now optional.",
    });
  },
  /**
   * Creates an account and answers with its one-time password: the only time
   * it is shown (not a redirect, so it never travels in a cookie or a URL).
   */
  create: async (event) => {
    const form = await event.request.formData();
    const values = { email: field(form, "email").trim(), role: field(form, "role"), organization_ids: field(form, "organization_ids").trim() };
    if (!isRole(values.role)) {
      return fail(400, { values, message: "Check the highlighted field.", errors: { role: "Choose the account's role." } as Record<string, string> });
    }
    try {
      const created = await callerFor(event).accounts.create({
        email: values.email,
        role: values.role,
        organization_ids: organizationList(values.organization_ids),
      });
      return {
        created: { email: created.email, role: created.role, organization_ids: created.organization_ids, password: created.password ?? "" },
        values: { ...values, email: "" },
      };
    } catch (thrown) {
      return refuseForm(thrown, ["email", "role", "organization_ids"], values);
    }
  },
};
