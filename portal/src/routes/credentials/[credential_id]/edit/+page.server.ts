import { fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { PROVIDERS } from "$lib/providers";
import {
  callerFor,
  checkbox,
  checkFields,
  describeFailure,
  field,
  loadCredentialPage,
  redirectWithFlash,
  returnTo,
  weightField,
} from "$lib/server/page-actions";

const FIELDS = ["credential_name", "api_key", "api_base", "expected_version", "weight"] as const;

export const load: PageServerLoad = (event) => loadCredentialPage(event, event.params.credential_id);

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    const values = {
      credential_name: field(form, "credential_name"),
      api_base: field(form, "api_base").trim(),
      weight: field(form, "weight").trim(),
      verify: checkbox(form, "verify"),
    };
    const apiKey = field(form, "api_key");
    const version = Number(field(form, "expected_version"));
    const weight = weightField(values.weight);
    if (!weight.ok)
      return fail(400, {
        values,
        conflict: false,
        message: "Check the highlighted field.",
        errors: { weight: `Weight ${weight.problem}.` } as Record<string, string>,
      });
    let updated;
    try {
      updated = await callerFor(event).credentials.update({
        credential_id: event.params.credential_id,
        credential_name: values.credential_name,
        api_base: values.api_base === "" ? null : values.api_base,
        // Empty keeps the current key.
        ...(apiKey.trim() === "" ? {} : { api_key: apiKey }),
        ...(Number.isInteger(version) && version > 0 ? { expected_version: version } : {}),
        weight: weight.value,
        verify: values.verify,
      });
    } catch (thrown) {
      const failure = describeFailure(thrown, FIELDS);
      if (failure.code === "stale_version") {
        return fail(409, {
          values,
          conflict: true,
          message:
            "This credential was changed by someone else after you opened it, so your change was not saved. Reload to see the current values, then make your change again.",
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
    const rotated = apiKey.trim() !== "";
    redirectWithFlash(event, returnTo(form, `/?organization=${encodeURIComponent(updated.organization_id)}`), {
      kind: "success",
      message: `The ${PROVIDERS[updated.provider].label} credential “${updated.credential_name}” was updated.${
        values.verify ? ` ${PROVIDERS[updated.provider].label} accepted its key.` : ""
      }${rotated ? ` Its new key (${updated.key_hint}) is stored encrypted and will not be shown again.` : ""}`,
    });
  },
};
