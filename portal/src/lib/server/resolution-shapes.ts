import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  CredentialStanding,
  KeySource,
  Provider,
  SelectionStrategy,
  type ExplainResolutionResponse,
  type RollCredentialResponse,
} from "@provider-credentials/wire/gen/credentials_pb";
import { PROVIDER_NAMES, PROVIDERS } from "@provider-credentials/wire/providers";
import { credentialJson } from "./shapes.js";
import type { ProviderName, SelectionStrategyName } from "./trpc/schemas.js";
import type { CredentialStandingName } from "./trpc/resolution-schemas.js";

/** ExplainResolution and RollCredential answers → the REST API's JSON (every field named; see shapes.ts). */

const PROVIDER_OF = new Map<Provider, ProviderName>(PROVIDER_NAMES.map((name) => [Provider[PROVIDERS[name].enumName], name]));

const STANDINGS: Partial<Record<CredentialStanding, CredentialStandingName>> = {
  [CredentialStanding.IN_USE]: "in_use",
  [CredentialStanding.STANDBY]: "standby",
  [CredentialStanding.SHARED]: "shared",
  [CredentialStanding.SKIPPED_FAILING]: "skipped_failing",
  [CredentialStanding.INACTIVE]: "inactive",
  [CredentialStanding.ZERO_WEIGHT]: "zero_weight",
};

const STRATEGIES: Partial<Record<SelectionStrategy, SelectionStrategyName>> = {
  [SelectionStrategy.UNSPECIFIED]: "newest",
  [SelectionStrategy.NEWEST]: "newest",
  [SelectionStrategy.ROUND_ROBIN]: "round_robin",
  [SelectionStrategy.WEIGHTED]: "weighted",
};

function known<T>(value: T | undefined, what: string, raw: number): T {
  if (value === undefined) throw new Error(`the service returned an unknown ${what} (${raw})`);
  return value;
}

export function explanationJson(r: ExplainResolutionResponse) {
  return {
    organization_id: r.organizationId,
    resolutions: r.resolutions.map((p) => ({
      provider: known(PROVIDER_OF.get(p.provider), "provider", p.provider),
      strategy: known(STRATEGIES[p.strategy], "selection strategy", p.strategy),
      source: p.source === KeySource.ORGANIZATION ? ("organization" as const) : p.source === KeySource.ENVIRONMENT ? ("environment" as const) : null,
      environment_fallback: p.environmentFallback,
      serving_credential_id: p.servingCredentialId ?? null,
      credentials: p.credentials.map((c) => ({
        credential_id: c.credentialId,
        credential_name: c.credentialName,
        standing: known(STANDINGS[c.standing], "credential standing", c.standing),
        share: c.share,
        weight: c.weight,
        key_hint: c.keyHint,
      })),
      summary: p.summary,
    })),
  };
}

export function rollJson(r: RollCredentialResponse) {
  if (!r.credential || !r.previous || !r.previousDeactivatesAt) throw new Error("the service returned an incomplete roll");
  return {
    credential: credentialJson(r.credential),
    previous: credentialJson(r.previous),
    previous_deactivates_at: timestampDate(r.previousDeactivatesAt).toISOString(),
  };
}
