import { fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { PROVIDERS } from "$lib/providers";
import { formatTime } from "$lib/format";
import { callerFor, checkbox, checkFields, describeFailure, field, loadCredentialPage, redirectWithFlash, returnTo } from "$lib/server/page-actions";

const FIELDS = ["api_key", "api_base", "overlap_seconds", "expected_version"] as const;

/** The overlaps offered: how long the old key stays active beside the new one. */
const OVERLAPS = ["0", "600", "3600", "86400"] as const;

export const load: PageServerLoad = (event) => loadCredentialPage(event, event.params.credential_id);

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    const values = {
      api_base: field(form, "api_base").trim(),
      overlap_seconds: field(form, "overlap_seconds"),
      verify: checkbox(form, "verify"),
    };
    const apiKey = field(form, "api_key");
    const currentApiBase = field(form, "current_api_base").trim();
    const version = Number(field(form, "expected_version"));
    if (!(OVERLAPS as readonly string[]).includes(values.overlap_seconds)) {
      const problem = "Choose when the old key stops: now, in 10 minutes, in 1 hour or in 24 hours.";
      return fail(400, { values, conflict: false, message: "Check the highlighted field.", errors: { overlap_seconds: problem } as Record<string, string> });
    }
    if (apiKey.trim() === "") {
      const problem = "Paste the new key.";
      return fail(400, { values, conflict: false, message: "Check the highlighted field.", errors: { api_key: problem } as Record<string, string> });
    }
    let rolled;
    try {
      rolled = await callerFor(event).resolution.roll({
        credential_id: event.params.credential_id,
        api_key: apiKey,
        // Unchanged: the old credential's; emptied: none.
        ...(values.api_base === currentApiBase ? {} : { api_base: values.api_base === "" ? null : values.api_base }),
        overlap_seconds: Number(values.overlap_seconds),
        verify: values.verify,
        ...(Number.isInteger(version) && version > 0 ? { expected_version: version } : {}),
      });
    } catch (thrown) {
      const failure = describeFailure(thrown, FIELDS);
      if (failure.code === "stale_version") {
        return fail(409, {
          values,
          conflict: true,
          message: "This credential was changed by someone else after you opened it, so nothing was rolled. Reload to see it as it is now, then roll again.",
          errors: {} as Record<string, string>,
        });
      }
      return fail(failure.status, {
        values,
        conflict: false,
        message: Object.keys(failure.errors).length > 0 ? checkFields(failure.errors) : failure.message,
        errors: failure.errors,
      });
    }
    const { credential, previous } = rolled;
    const label = PROVIDERS[credential.provider].label;
    const stops =
      values.overlap_seconds === "0" || !previous.is_active
        ? `“${previous.credential_name}” is inactive.`
        : `“${previous.credential_name}” stays active until ${formatTime(rolled.previous_deactivates_at)}, then the service deactivates it.`;
    redirectWithFlash(event, returnTo(form, `/?organization=${encodeURIComponent(credential.organization_id)}`), {
      kind: "success",
      message: `The new ${label} key (${credential.key_hint}) is stored as “${credential.credential_name}” and active now${
        values.verify ? `; ${label} accepted it` : ""
      }. ${stops}`,
    });
  },
};
