import { error, fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad, RequestEvent } from "./$types";
import { organizationList } from "$lib/server/form-lists";
import { callerFor, field, loading, redirectWithFlash, refusalOf, refuseForm } from "$lib/server/page-actions";
import { ACCOUNT_ROLES } from "$lib/server/trpc/schemas";

type Role = (typeof ACCOUNT_ROLES)[number];
const isRole = (value: string): value is Role => (ACCOUNT_ROLES as readonly string[]).includes(value);

export const load: PageServerLoad = async (event) => {
  const { accounts } = await loading(() => callerFor(event).accounts.list({}));
  const account = accounts.find((a) => a.email === event.params.email);
  if (!account) error(404, `There is no account ${event.params.email}.`);
  return { account };
};

const here = (event: RequestEvent) => `/accounts/${encodeURIComponent(event.params.email)}`;

/** Makes a change and goes back to the account's page, saying what happened. */
async function change(event: RequestEvent, work: () => Promise<unknown>, done: string, to = here(event)) {
  const refusal = await refusalOf(work);
  if (refusal !== null) redirectWithFlash(event, here(event), { kind: "error", message: `Nothing changed: ${refusal}` });
  redirectWithFlash(event, to, { kind: "success", message: done });
}

export const actions: Actions = {
  /** Role and organisations together, as the form shows them. */
  update: async (event) => {
    const form = await event.request.formData();
    const values = { role: field(form, "role"), organization_ids: field(form, "organization_ids").trim() };
    if (!isRole(values.role)) {
      return fail(400, { values, message: "Check the highlighted field.", errors: { role: "Choose the account's role." } as Record<string, string> });
    }
    const email = event.params.email;
    try {
      await callerFor(event).accounts.update({ email, role: values.role, organization_ids: organizationList(values.organization_ids) });
    } catch (thrown) {
      return refuseForm(thrown, ["role", "organization_ids"], values);
    }
    redirectWithFlash(event, here(event), { kind: "success", message: `${email} was changed.` });
  },

  disable: async (event) =>
    change(
      event,
      () => callerFor(event).accounts.update({ email: event.params.email, disabled: true }),
      `${event.params.email} was disabled and signed out everywhere.`,
    ),

  enable: async (event) =>
    change(event, () => callerFor(event).accounts.update({ email: event.params.email, disabled: false }), `${event.params.email} was enabled.`),

  signOut: async (event) =>
    change(event, () => callerFor(event).accounts.signOutEverywhere({ email: event.params.email }), `${event.params.email} was signed out everywhere.`),

  resetTwoFactor: async (event) =>
    change(
      event,
      () => callerFor(event).accounts.resetTwoFactor({ email: event.params.email }),
      `Two-factor sign-in of ${event.params.email} was reset: it signs in with its password and sets up a second factor again.`,
    ),

  remove: async (event) =>
    change(event, () => callerFor(event).accounts.delete({ email: event.params.email }), `${event.params.email} was removed.`, "/accounts"),
};
