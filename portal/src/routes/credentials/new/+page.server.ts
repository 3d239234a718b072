import { fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { isProviderName, PROVIDERS, type ProviderName } from "$lib/providers";
import { allOrganizations, callerFor, checkbox, field, loading, redirectWithFlash, refuseForm, returnTo, weightField } from "$lib/server/page-actions";
import { safeRedirectTarget } from "$lib/server/session";

const FIELDS = ["organization_id", "provider", "credential_name", "api_key", "api_base", "weight"] as const;

export const load: PageServerLoad = async (event) => {
  const { url } = event;
  const { organizations } = await loading(() => allOrganizations(callerFor(event)));
  const provider = url.searchParams.get("provider");
  const organization = url.searchParams.get("organization") ?? "";
  return {
    organizations,
    organization,
    provider: (isProviderName(provider) ? provider : "openai") as ProviderName,
    // Back to the list as it was filtered.
    returnTo: safeRedirectTarget(`/${url.search}`),
  };
};

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    // What the form shows again after a refusal: everything but the key, which is never sent back.
    const values = {
      organization_id: field(form, "organization_id").trim(),
      provider: field(form, "provider"),
      credential_name: field(form, "credential_name"),
      api_base: field(form, "api_base").trim(),
      weight: field(form, "weight").trim(),
      verify: checkbox(form, "verify"),
    };
    if (values.organization_id === "") {
      return fail(400, { values, message: "Check the highlighted field.", errors: { organization_id: "Choose the organization." } });
    }
    if (!isProviderName(values.provider)) {
      return fail(400, { values, message: "Check the highlighted field.", errors: { provider: "Choose the provider." } });
    }
    const weight = weightField(values.weight);
    if (!weight.ok) return fail(400, { values, message: "Check the highlighted field.", errors: { weight: `Weight ${weight.problem}.` } });
    let created;
    try {
      created = await callerFor(event).credentials.create({
        organization_id: values.organization_id,
        provider: values.provider,
        credential_name: values.credential_name,
        api_key: field(form, "api_key"),
        api_base: values.api_base === "" ? null : values.api_base,
        weight: weight.value,
        verify: values.verify,
      });
    } catch (thrown) {
      return refuseForm(thrown, FIELDS, values);
    }
    const back = returnTo(form, "/");
    const target = new URL(back, event.url);
    // Show the list of the organisation the credential was added to.
    if (target.pathname === "/") target.searchParams.set("organization", created.organization_id);
    if (target.pathname === "/" && target.searchParams.get("provider") && target.searchParams.get("provider") !== created.provider) {
      target.searchParams.delete("provider");
    }
    target.searchParams.delete("cursor");
    target.searchParams.delete("page");
    // A new key is neither failing nor due for rotation: those filters would hide it.
    target.searchParams.delete("rotation_due");
    target.searchParams.delete("failing");
    redirectWithFlash(event, `${target.pathname}${target.search}`, {
      kind: "success",
      message: `The ${PROVIDERS[created.provider].label} credential “${created.credential_name}” was added and is active.${
        values.verify ? ` ${PROVIDERS[created.provider].label} accepted its key.` : ""
      } Its key (${created.key_hint}) is stored encrypted and will not be shown again.`,
    });
  },
};
