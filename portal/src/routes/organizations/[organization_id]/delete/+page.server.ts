import type { Actions, PageServerLoad } from "./$types";
import { callerFor, describeFailure, loadFailed, redirectWithFlash, returnTo } from "$lib/server/page-actions";

/** Deleting an organisation: the confirmation without JavaScript; the list's dialog posts to the same action. */
export const load: PageServerLoad = async (event) => {
  try {
    return { organization: await callerFor(event).organizations.get({ organization_id: event.params.organization_id }) };
  } catch (thrown) {
    loadFailed(thrown);
  }
};

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    const id = event.params.organization_id;
    let refusal: string | null = null;
    try {
      await callerFor(event).organizations.delete({ organization_id: id });
    } catch (thrown) {
      refusal = describeFailure(thrown).message;
    }
    if (refusal !== null) {
      redirectWithFlash(event, returnTo(form, "/organizations"), { kind: "error", message: `Organization ${id} was not deleted: ${refusal}` });
    }
    redirectWithFlash(event, "/organizations", { kind: "success", message: `Organization ${id} was deleted.` });
  },
};
