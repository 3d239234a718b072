import { adminProcedure, router } from "../trpc.js";
import { listSelectionStrategiesInput, selectionPolicyListOutput, selectionPolicyOutput, setSelectionStrategyInput } from "../schemas.js";
import { providerEnum, selectionPolicyJson, strategyEnum } from "../../shapes.js";

const tags = ["provider credentials"];

/** How ResolveKey picks among an organisation's active credentials, per provider. */
export const selectionStrategiesRouter = router({
  list: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/provider-credentials/organization/{organization_id}/selection-strategies",
        tags,
        summary: "An organisation's selection strategy for every provider",
        description: "One entry per provider, in provider order; `newest` (the default) where none was set. 404 if the organisation does not exist.",
      },
    })
    .input(listSelectionStrategiesInput)
    .output(selectionPolicyListOutput)
    .query(async ({ ctx, input }) => {
      const { policies } = await ctx.service.credentials.listSelectionStrategies({ organizationId: input.organization_id });
      return { organization_id: input.organization_id, policies: policies.map(selectionPolicyJson) };
    }),

  set: adminProcedure
    .meta({
      openapi: {
        method: "PUT",
        path: "/provider-credentials/organization/{organization_id}/selection-strategies/{provider}",
        tags,
        summary: "Set how ResolveKey picks among an organisation's credentials for a provider",
        description: "Takes effect on every replica of the service at once. 404 if the organisation does not exist.",
        successDescription: "The policy now in force.",
      },
    })
    .input(setSelectionStrategyInput)
    .output(selectionPolicyOutput)
    .mutation(async ({ ctx, input }) => {
      const { policy } = await ctx.service.credentials.setSelectionStrategy({
        organizationId: input.organization_id,
        provider: providerEnum(input.provider),
        strategy: strategyEnum(input.strategy),
      });
      return selectionPolicyJson(policy!);
    }),
});
