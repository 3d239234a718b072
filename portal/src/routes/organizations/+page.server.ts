import type { Actions, PageServerLoad } from "./$types";
import { callerFor, cursorParam, field, loading, pageNumberParam, redirectWithFlash, refuseForm } from "$lib/server/page-actions";

const PAGE_SIZE = 50;

export const load: PageServerLoad = async (event) => {
  const page = await loading(() => callerFor(event).organizations.list({ limit: PAGE_SIZE, cursor: cursorParam(event.url) }));
  return { organizations: page.organizations, next_cursor: page.next_cursor, pageNumber: pageNumberParam(event.url) };
};

export const actions: Actions = {
  create: async (event) => {
    const form = await event.request.formData();
    const values = { organization_id: field(form, "organization_id").trim(), name: field(form, "name") };
    let created;
    try {
      created = await callerFor(event).organizations.create(values);
    } catch (thrown) {
      return refuseForm(thrown, ["organization_id", "name"], values);
    }
    redirectWithFlash(event, "/organizations", {
      kind: "success",
      message: `Organization “${created.name}” (${created.organization_id}) was created. Add its teams, then its provider credentials.`,
    });
  },
};
