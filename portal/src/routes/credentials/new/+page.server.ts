import { fail } from "@sveltejs/kit";
import type { Actions, PageServerLoad } from "./$types";
import { isProviderName, PROVIDERS, type ProviderName } from "$lib/providers";
import {
  callerFor,
  checkbox,
  checkFields,
  describeFailure,
  field,
  loading,
  type PageCaller,
  redirectWithFlash,
  returnTo,
  weightField,
} from "$lib/server/page-actions";
import { safeRedirectTarget } from "$lib/server/session";
import { maskKeys } from "@provider-credentials/wire/masking";

const FIELDS = ["organization_id", "provider", "credential_name", "api_key", "api_base", "weight"] as const;

/** Organisations named in an unknown organisation's error, as matches for what was typed (the picker without JavaScript). */
const MATCHES_NAMED = 5;

/**
 * The Add credential page. The organisation is a typeahead (OrganizationPicker: suggestions asked page by page
 * as you type, never the whole list), pre-filled from `?organization=`; the service decides whether it exists.
 */
export const load: PageServerLoad = async (event) => {
  const { url } = event;
  const caller = callerFor(event);
  const provider = url.searchParams.get("provider");
  const organization = (url.searchParams.get("organization") ?? "").trim();
  const [anyOrganization, organizationName] = await loading(() =>
    Promise.all([caller.organizations.list({ limit: 1 }).then((page) => page.organizations.length > 0), nameOf(caller, organization)]),
  );
  return {
    anyOrganization,
    organization,
    organizationName,
    provider: (isProviderName(provider) ? provider : "openai") as ProviderName,
    // Back to the list as it was filtered.
    returnTo: safeRedirectTarget(`/${url.search}`),
  };
};

/** An organisation's name, or null when there is none by that id (or the id is none). */
async function nameOf(caller: PageCaller, organizationId: string): Promise<string | null> {
  if (organizationId === "") return null;
  try {
    return (await caller.organizations.get({ organization_id: organizationId })).name;
  } catch (thrown) {
    // None by that id, or none this account may see: the field is filled in all the same.
    if (describeFailure(thrown).status < 500) return null;
    throw thrown;
  }
}

/** What the organisation field says when no organisation has the id typed: that, and the organisations whose name or id contains it. */
async function unknownOrganization(caller: PageCaller, typed: string): Promise<string> {
  let matches: Array<{ organization_id: string; name: string }> = [];
  try {
    matches = (await caller.organizations.list({ q: typed.slice(0, 200), limit: MATCHES_NAMED })).organizations;
  } catch {
    // The error stands without them.
  }
  const named = matches.map((o) => `${o.name} (${o.organization_id})`).join(", ");
  return `There is no organization with the ID “${maskKeys(typed)}”.${
    named === ""
      ? " Type an organization's ID, or part of its name and choose a suggestion."
      : ` Type its ID: ${named}${matches.length === MATCHES_NAMED ? ", …" : ""}.`
  }`;
}

export const actions: Actions = {
  default: async (event) => {
    const form = await event.request.formData();
    const organizationId = field(form, "organization_id").trim();
    // What the form shows again after a refusal: everything but the key, which is never sent back (nor one pasted in
    // the organisation's field by mistake).
    const values = {
      organization_id: maskKeys(organizationId),
      provider: field(form, "provider"),
      credential_name: field(form, "credential_name"),
      api_base: field(form, "api_base").trim(),
      weight: field(form, "weight").trim(),
      verify: checkbox(form, "verify"),
    };
    if (organizationId === "") {
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
        organization_id: organizationId,
        provider: values.provider,
        credential_name: values.credential_name,
        api_key: field(form, "api_key"),
        api_base: values.api_base === "" ? null : values.api_base,
        weight: weight.value,
        verify: values.verify,
      });
    } catch (thrown) {
      // An organisation that is none (no such id, or text that cannot be one, such as a name): one error, at its field.
      const failure = describeFailure(thrown, FIELDS);
      if (failure.code === "not_found" || (failure.code === "bad_request" && failure.errors.organization_id !== undefined)) {
        const errors = { ...failure.errors, organization_id: await unknownOrganization(callerFor(event), organizationId) };
        return fail(failure.status, { values, message: checkFields(errors), errors });
      }
      // Any other problem at a field is shown there, once: the banner only points at it.
      const atFields = Object.keys(failure.errors).length > 0;
      return fail(failure.status, { values, message: atFields ? checkFields(failure.errors) : failure.message, errors: failure.errors });
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
