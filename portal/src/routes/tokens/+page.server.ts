import { fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { callerFor, describeFailure, field, loadFailed } from "$lib/server/page-actions";

export const load: PageServerLoad = async (event) => {
  try {
    return { tokens: (await callerFor(event).tokens.list({})).tokens };
  } catch (thrown) {
    loadFailed(thrown);
  }
};

export const actions: Actions = {
  /**
   * Creates a token and answers with it: the one time it is shown. It is not
   * a redirect, so the token never travels in a cookie or a URL.
   */
  create: async (event) => {
    const form = await event.request.formData();
    const values = { name: field(form, "name").trim(), scope: field(form, "scope") };
    if (values.scope !== "resolve" && values.scope !== "admin") {
      return fail(400, { values, message: "Choose the token's scope.", errors: { scope: "Choose the token's scope." } as Record<string, string> });
    }
    try {
      const created = await callerFor(event).tokens.create({ name: values.name, scope: values.scope });
      return { created: { name: created.name, scope: created.scope, token: created.token } };
    } catch (thrown) {
      const failure = describeFailure(thrown, ["name", "scope"]);
      return fail(failure.status, { values, message: failure.message, errors: failure.errors });
    }
  },
};
