import { adminProcedure, router } from "../trpc.js";
import { explainResolutionInput, explainResolutionOutput, rollCredentialInput, rollCredentialOutput } from "../resolution-schemas.js";
import { providerEnum } from "../../shapes.js";
import { explanationJson, rollJson } from "../../resolution-shapes.js";

const tags = ["provider credentials"];

/** Which key is live (ExplainResolution, from the service's own selection) and rolling a key in one step (RollCredential). */
export const resolutionRouter = router({
  explain: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/provider-credentials/organization/{organization_id}/resolution",
        tags,
        summary: "Which credential ResolveKey hands out now, and why",
        description:
          "Per provider (or the one named): the organisation's selection strategy, where the key comes from now, whether an environment fallback " +
          "exists (never its value), the credential in use, and each credential's standing (in use, standby, its share, skipped as failing, inactive), " +
          "computed by the service with ResolveKey's own selection. 404 if the organisation does not exist.",
      },
    })
    .input(explainResolutionInput)
    .output(explainResolutionOutput)
    .query(async ({ ctx, input }) => {
      const answer = await ctx.service.credentials.explainResolution({
        scope: { case: "organizationId", value: input.organization_id },
        provider: input.provider === undefined ? undefined : providerEnum(input.provider),
      });
      return explanationJson(answer);
    }),

  roll: adminProcedure
    .meta({
      openapi: {
        method: "POST",
        path: "/provider-credentials/{credential_id}/roll",
        tags,
        summary: "Replace a credential's key in one step",
        description:
          "Stores the new key as a new active credential, in use at once, with the old one's name, organisation, provider, weight and API base " +
          "(unless `api_base` is given); the old one is renamed `<name> (replaced YYYY-MM-DD)` and deactivated now, or by the service after " +
          "`overlap_seconds` (at most 24 hours) whether or not anyone is signed in. One audit event (`credential.roll`) names both. " +
          "With `verify: true` the new key is first checked with the provider and nothing changes unless it passes (else 409 naming `api_key`); " +
          "a stale `expected_version` gets 409.",
        successDescription: "The new credential, the old one after the roll, and when the old one is (or was) deactivated.",
      },
    })
    .input(rollCredentialInput)
    .output(rollCredentialOutput)
    .mutation(async ({ ctx, input }) => {
      const answer = await ctx.service.credentials.rollCredential({
        credentialId: input.credential_id,
        apiKey: input.api_key,
        // null clears: the service takes an empty string for that.
        apiBase: input.api_base === null ? "" : input.api_base,
        overlapSeconds: input.overlap_seconds ?? 0,
        verify: input.verify ?? false,
        expectedVersion: input.expected_version,
      });
      return rollJson(answer);
    }),
});
