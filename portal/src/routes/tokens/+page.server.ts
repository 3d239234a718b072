import { fail } from "@sveltejs/kit";
import { isTokenScope } from "@provider-credentials/wire/auth";
import type { Actions, PageServerLoad } from "./$types";
import { callerFor, field, loading, refuseForm } from "$lib/server/page-actions";

export const load: PageServerLoad = async (event) => ({ tokens: (await loading(() => callerFor(event).tokens.list({}))).tokens });

export const actions: Actions = {
  /**
   * Creates a token and answers with it: the one time it is shown. It is not
   * a redirect, so the token never travels in a cookie or a URL.
   */
  create: async (event) => {
    const form = await event.request.formData();
    const values = { name: field(form, "name").trim(), scope: field(form, "scope") };
    if (!isTokenScope(values.scope)) {
      return fail(400, { values, message: "Choose the token's scope.", errors: { scope: "Choose the token's scope." } as Record<string, string> });
    }
    try {
      const created = await callerFor(event).tokens.create({ name: values.name, scope: values.scope });
      return { created: { name: created.name, scope: created.scope, token: created.token } };
    } catch (thrown) {
      return refuseForm(thrown, ["name", "scope"], values);
    }
  },
};
