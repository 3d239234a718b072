import type { Actions, PageServerLoad } from "./$types";
import { callerFor, loading, redirectWithFlash, refusalOf, returnTo } from "$lib/server/page-actions";

/** Deleting an organisation: the confirmation without JavaScript; the list's dialog posts to the same action. */
export const load: PageServerLoad = async (event) => ({
  organization: await loading(() => callerFor(event).organizations.get({ organization_id: event.params.organization_id })),
});

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    const id = event.params.organization_id;
    const refusal = await refusalOf(() => callerFor(event).organizations.delete({ organization_id: id }));
    if (refusal !== null) {
      redirectWithFlash(event, returnTo(form, "/organizations"), { kind: "error", message: `Organization ${id} was not deleted: ${refusal}` });
    }
    redirectWithFlash(event, "/organizations", { kind: "success", message: `Organization ${id} was deleted.` });
  },
};
