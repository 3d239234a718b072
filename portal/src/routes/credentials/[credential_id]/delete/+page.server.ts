import type { Actions, PageServerLoad } from "./$types";
import { providerLabel } from "$lib/providers";
import { callerFor, describeFailure, loadCredentialPage, redirectWithFlash, returnTo } from "$lib/server/page-actions";

/**
 * Deleting a credential: this page asks for confirmation when JavaScript is
 * off; with it, the list's dialog posts to the same action.
 */
export const load: PageServerLoad = (event) => loadCredentialPage(event, event.params.credential_id);

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    const caller = callerFor(event);
    let outcome: { ok: true; message: string; organization: string } | { ok: false; message: string };
    try {
      const credential = await caller.credentials.get({ credential_id: event.params.credential_id });
      await caller.credentials.delete({ credential_id: credential.credential_id });
      outcome = {
        ok: true,
        organization: credential.organization_id,
        message: `The ${providerLabel(credential.provider)} credential “${credential.credential_name}” was deleted.`,
      };
    } catch (thrown) {
      outcome = { ok: false, message: `Could not delete the credential: ${describeFailure(thrown).message}` };
    }
    const fallback = outcome.ok ? `/?organization=${encodeURIComponent(outcome.organization)}` : "/";
    redirectWithFlash(event, returnTo(form, fallback), { kind: outcome.ok ? "success" : "error", message: outcome.message });
  },
};
