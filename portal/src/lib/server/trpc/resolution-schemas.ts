import { z } from "zod";
import { credentialIdField, credentialOutput, organizationIdField, PROVIDERS, SELECTION_STRATEGIES } from "./schemas.js";

/** Shapes of ExplainResolution and RollCredential in the REST API's snake_case (see schemas.ts for the conventions). */

/** Longest overlap of a roll: 24 hours. */
export const MAX_ROLL_OVERLAP_SECONDS = 86_400;

export const CREDENTIAL_STANDINGS = ["in_use", "standby", "shared", "skipped_failing", "inactive", "zero_weight"] as const;
export type CredentialStandingName = (typeof CREDENTIAL_STANDINGS)[number];

const timestamp = z.iso.datetime({ offset: true });

export const explainResolutionInput = z
  .object({
    organization_id: organizationIdField,
    provider: z.enum(PROVIDERS).describe("One provider; omitted: every provider.").optional(),
  })
  .strict();

export const credentialResolutionOutput = z
  .object({
    credential_id: z.string(),
    credential_name: z.string(),
    standing: z
      .enum(CREDENTIAL_STANDINGS)
      .describe(
        "`in_use`: ResolveKey hands it out; `standby`: active and healthy, another is in use; `shared`: handed out for `share` of the calls " +
          "(round robin or weighted); `skipped_failing`: marked failing and skipped while a healthy one exists; `inactive`: never handed out; " +
          "`zero_weight`: weighted strategy with weight 0.",
      ),
    share: z.number().min(0).max(1).describe("The fraction of calls it gets, 0-1."),
    weight: z.int(),
    key_hint: z.string().describe("The masked key. The key itself is never returned."),
  })
  .meta({ id: "CredentialResolution", description: "One credential's part in a provider's resolution." });

export const providerResolutionOutput = z
  .object({
    provider: z.enum(PROVIDERS),
    strategy: z.enum(SELECTION_STRATEGIES).describe("The organisation's selection strategy for the provider."),
    source: z
      .enum(["organization", "environment"])
      .nullable()
      .describe("Where ResolveKey's key comes from now; null when it would refuse (no active credential and no environment fallback)."),
    environment_fallback: z.boolean().describe("Whether the service has the provider's environment variable set (never its value)."),
    serving_credential_id: z.string().nullable().describe("The credential handed out now; null when calls are shared among several or none is active."),
    credentials: z.array(credentialResolutionOutput).describe("Every credential of the organisation for the provider, active ones first."),
    summary: z.string().describe("One sentence for people."),
  })
  .meta({ id: "ProviderResolution", description: "Which key a provider's calls get now, and why, from ResolveKey's own selection." });

export const explainResolutionOutput = z
  .object({ organization_id: z.string(), resolutions: z.array(providerResolutionOutput).describe("One per provider asked for, in provider order.") })
  .meta({ id: "ResolutionExplanation" });

export const rollCredentialInput = z
  .object({
    credential_id: credentialIdField,
    api_key: z.string().max(8192).describe("The new provider API key. Stored encrypted; never returned."),
    api_base: z.string().max(4096).nullable().describe("The new credential's custom endpoint; omitted: the old one's; null or empty: none.").optional(),
    overlap_seconds: z
      .int()
      .min(0)
      .max(MAX_ROLL_OVERLAP_SECONDS)
      .pipe(z.int())
      .describe(`How long the old credential stays active beside the new one, 0 (the default: deactivated at once) to ${MAX_ROLL_OVERLAP_SECONDS} seconds.`)
      .optional(),
    verify: z
      .boolean()
      .pipe(z.boolean())
      .describe("Check the new key with the provider first and change nothing unless it passes (else 409 naming `api_key`). Default false.")
      .optional(),
    expected_version: z
      .int()
      .min(1)
      .max(2_147_483_647)
      .pipe(z.int())
      .describe("Roll only if the old credential's version is still this (else 409).")
      .optional(),
  })
  .strict();

export const rollCredentialOutput = z
  .object({
    credential: credentialOutput.describe("The new credential: active and in use."),
    previous: credentialOutput.describe("The old credential after the roll: renamed, inactive or deactivating."),
    previous_deactivates_at: timestamp.describe("When the old credential is (or was) deactivated."),
  })
  .meta({ id: "CredentialRoll" });
