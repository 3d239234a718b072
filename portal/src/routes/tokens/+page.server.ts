import { fail } from "@sveltejs/kit";
import { isTokenScope } from "@provider-credentials/wire/auth";
import type { Actions, PageServerLoad } from "./$types";
import { expiryFrom, isExpiryChoice, organizationList, overlapSeconds } from "$lib/server/form-lists";
import { callerFor, field, loading, refuseForm } from "$lib/server/page-actions";

export const load: PageServerLoad = async (event) => ({ tokens: (await loading(() => callerFor(event).tokens.list({}))).tokens });

/** The form's fields, as typed; what the form shows again (a failure) or starts from (after a create). */
interface TokenFormValues {
  name: string;
  scope: string;
  organization_ids: string;
  expires_in: string;
}

function refuse(values: TokenFormValues, field: keyof TokenFormValues, problem: string) {
  return fail(400, { values, message: "Check the highlighted field.", errors: { [field]: problem } as Record<string, string> });
}

export const actions: Actions = {
  /**
   * Creates a token and answers with it: the one time it is shown. It is not
   * a redirect, so the token never travels in a cookie or a URL. The form
   * keeps its scope, organisations and expiry for the next token.
   */
  create: async (event) => {
    const form = await event.request.formData();
    const values: TokenFormValues = {
      name: field(form, "name").trim(),
      scope: field(form, "scope"),
      organization_ids: field(form, "organization_ids").trim(),
      expires_in: field(form, "expires_in"),
    };
    if (!isTokenScope(values.scope)) return refuse(values, "scope", "choose the token's scope");
    if (!isExpiryChoice(values.expires_in)) return refuse(values, "expires_in", "choose when the token expires");
    try {
      const created = await callerFor(event).tokens.create({
        name: values.name,
        scope: values.scope,
        organization_ids: organizationList(values.organization_ids),
        expires_at: expiryFrom(values.expires_in),
      });
      return {
        created: { name: created.name, scope: created.scope, token: created.token, rotated: false, previous_valid_until: null as string | null },
        values: { ...values, name: "" },
      };
    } catch (thrown) {
      return refuseForm(thrown, ["name", "scope", "organization_ids", "expires_at"], values);
    }
  },

  /** Gives a token a new secret and answers with it (the one time it is shown). */
  rotate: async (event) => {
    const form = await event.request.formData();
    const name = field(form, "name");
    const overlap = overlapSeconds(field(form, "overlap_seconds") || "0");
    if (overlap === null) {
      return fail(400, { message: "The overlap must be a whole number of seconds from 0 to 86400.", errors: {} as Record<string, string> });
    }
    try {
      const rotated = await callerFor(event).tokens.rotate({ name, overlap_seconds: overlap });
      return {
        created: { name: rotated.name, scope: rotated.scope, token: rotated.token, rotated: true, previous_valid_until: rotated.previous_valid_until },
      };
    } catch (thrown) {
      return refuseForm(thrown, [], undefined);
    }
  },
};
