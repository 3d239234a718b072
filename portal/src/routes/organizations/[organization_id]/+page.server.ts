import type { Actions, PageServerLoad } from "./$types";
import { isStrategyName, STRATEGIES } from "$lib/key-health";
import { isProviderName, providerLabel } from "$lib/providers";
import { callerFor, cursorParam, field, loading, pageNumberParam, redirectWithFlash, refusalOf, refuseForm } from "$lib/server/page-actions";

const PAGE_SIZE = 50;

export const load: PageServerLoad = async (event) => {
  const caller = callerFor(event);
  const [organization, teams, strategies] = await loading(() =>
    Promise.all([
      caller.organizations.get({ organization_id: event.params.organization_id }),
      caller.teams.list({ organization_id: event.params.organization_id, limit: PAGE_SIZE, cursor: cursorParam(event.url) }),
      caller.selectionStrategies.list({ organization_id: event.params.organization_id }),
    ]),
  );
  return { organization, teams: teams.teams, next_cursor: teams.next_cursor, pageNumber: pageNumberParam(event.url), policies: strategies.policies };
};

export const actions: Actions = {
  /** One provider's key selection strategy; the outcome is the page's message. */
  setStrategy: async (event) => {
    const form = await event.request.formData();
    const organizationId = event.params.organization_id;
    const back = `/organizations/${encodeURIComponent(organizationId)}`;
    const provider = field(form, "provider");
    const strategy = field(form, "strategy");
    if (!isProviderName(provider) || !isStrategyName(strategy)) {
      redirectWithFlash(event, back, { kind: "error", message: "The key selection was not changed: choose a provider and a strategy from the lists." });
    }
    const refusal = await refusalOf(() => callerFor(event).selectionStrategies.set({ organization_id: organizationId, provider, strategy }));
    if (refusal !== null) {
      redirectWithFlash(event, back, { kind: "error", message: `The ${providerLabel(provider)} key selection was not changed: ${refusal}` });
    }
    redirectWithFlash(event, back, {
      kind: "success",
      message: `${providerLabel(provider)} calls of this organization now pick their key by “${STRATEGIES[strategy].label}”: ${STRATEGIES[strategy].description.replace(/ \(the default\)/, "").replace(/^./, (c) => c.toLowerCase())}`,
    });
  },

  createTeam: async (event) => {
    const form = await event.request.formData();
    const values = { team_id: field(form, "team_id").trim(), name: field(form, "name") };
    let created;
    try {
      created = await callerFor(event).teams.create({ organization_id: event.params.organization_id, ...values });
    } catch (thrown) {
      return refuseForm(thrown, ["team_id", "name"], values);
    }
    redirectWithFlash(event, `/organizations/${encodeURIComponent(created.organization_id)}`, {
      kind: "success",
      message: `Team “${created.name}” (${created.team_id}) was created.`,
    });
  },
};
