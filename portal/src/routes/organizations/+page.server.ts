import { fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { callerFor, cursorParam, describeFailure, field, loadFailed, pageNumberParam, redirectWithFlash } from "$lib/server/page-actions";

const PAGE_SIZE = 50;

export const load: PageServerLoad = async (event) => {
  try {
    const page = await callerFor(event).organizations.list({ limit: PAGE_SIZE, cursor: cursorParam(event.url) });
    return { organizations: page.organizations, next_cursor: page.next_cursor, pageNumber: pageNumberParam(event.url) };
  } catch (thrown) {
    loadFailed(thrown);
  }
};

export const actions: Actions = {
  create: async (event) => {
    const form = await event.request.formData();
    const values = { organization_id: field(form, "organization_id").trim(), name: field(form, "name") };
    let created;
    try {
      created = await callerFor(event).organizations.create(values);
    } catch (thrown) {
      const failure = describeFailure(thrown, ["organization_id", "name"]);
      return fail(failure.status, { values, message: failure.message, errors: failure.errors });
    }
    redirectWithFlash(event, "/organizations", {
      kind: "success",
      message: `Organization “${created.name}” (${created.organization_id}) was created. Add its teams, then its provider credentials.`,
    });
  },
};
