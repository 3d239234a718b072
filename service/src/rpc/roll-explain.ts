import type { HandlerContext } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CredentialStanding,
  KeySource,
  Provider,
  type ExplainResolutionRequest,
  type ExplainResolutionResponseSchema,
  type RollCredentialRequest,
  type RollCredentialResponseSchema,
} from "@provider-credentials/wire/gen/credentials_pb";
import { MAX_ROLL_OVERLAP_SECONDS, type CredentialStore } from "../credentials/credential-store.js";
import type { KeyResolver, ResolveScope } from "../credentials/resolver.js";
import type { KeyHealth } from "../credentials/key-health.js";
import type { ProviderCheckResult } from "../credentials/provider-check.js";
import { ALL_PROVIDERS, explainResolution, type StandingName } from "../credentials/explain.js";
import { invalid, ServiceError } from "../errors.js";
import { validateApiBase, validateCredentialId, validateId } from "../credentials/validation.js";
import { requireOrganization, requireRecentSignInForApiBase } from "../auth/policy.js";
import { actorOf, principalOf } from "./context.js";
import { credentialMessage, providerEnum, providerName, strategyEnum } from "./convert.js";

export interface RollExplainDeps {
  credentials: CredentialStore;
  resolver: KeyResolver;
  keyHealth: KeyHealth;
}

const STANDING: Record<StandingName, CredentialStanding> = {
  in_use: CredentialStanding.IN_USE,
  standby: CredentialStanding.STANDBY,
  shared: CredentialStanding.SHARED,
  skipped_failing: CredentialStanding.SKIPPED_FAILING,
  inactive: CredentialStanding.INACTIVE,
  zero_weight: CredentialStanding.ZERO_WEIGHT,
};

/** ExplainResolution: which credential ResolveKey hands out now and why, from ResolveKey's own ranking (credentials/explain.ts). */
export async function explainResolutionRpc(
  { credentials, resolver }: RollExplainDeps,
  req: ExplainResolutionRequest,
  ctx: HandlerContext,
): Promise<MessageInitShape<typeof ExplainResolutionResponseSchema>> {
  const principal = principalOf(ctx.values);
  let scope: ResolveScope;
  if (req.scope.case === "organizationId") {
    scope = { organizationId: validateId("organization_id", req.scope.value) };
    requireOrganization(principal, scope.organizationId);
  } else if (req.scope.case === "teamId") {
    scope = { teamId: validateId("team_id", req.scope.value) };
    await principal.targets.team(principal, scope.teamId);
  } else {
    throw invalid("scope", "set organization_id or team_id");
  }
  const providers = req.provider === undefined || req.provider === Provider.UNSPECIFIED ? ALL_PROVIDERS : [providerName(req.provider)];
  const explanation = await explainResolution(resolver, credentials, scope, providers, principal.organizations);
  return {
    organizationId: explanation.organizationId,
    resolutions: explanation.resolutions
      .map((r) => ({
        provider: providerEnum(r.provider),
        strategy: strategyEnum(r.strategy),
        source: r.source === "organization" ? KeySource.ORGANIZATION : r.source === "environment" ? KeySource.ENVIRONMENT : KeySource.UNSPECIFIED,
        environmentFallback: r.environmentFallback,
        servingCredentialId: r.servingCredentialId ?? undefined,
        credentials: r.credentials.map((c) => ({
          credentialId: c.credentialId,
          credentialName: c.credentialName,
          standing: STANDING[c.standing],
          share: c.share,
          weight: c.weight,
          keyHint: c.keyHint,
        })),
        summary: r.summary,
      }))
      .sort((a, b) => a.provider - b.provider),
  };
}

/** Verify before saving: anything but `valid` refuses the roll, naming api_key and what the provider said. */
function requireValid(result: ProviderCheckResult): void {
  if (result.outcome === "valid") return;
  throw new ServiceError(
    "failed_precondition",
    `api_key: the provider check did not pass (${result.outcome.replace("_", " ")}): ${result.message.replace(/\.$/, "")}; nothing was changed`,
    "api_key",
    undefined,
    "PROVIDER_CHECK_FAILED",
  );
}

/**
 * RollCredential: the new key as a new active credential, the old one renamed and deactivated now or after the
 * overlap (CredentialStore.roll; the sweeper carries out a later deactivation).
 */
export async function rollCredentialRpc(
  { credentials, keyHealth }: RollExplainDeps,
  req: RollCredentialRequest,
  ctx: HandlerContext,
): Promise<MessageInitShape<typeof RollCredentialResponseSchema>> {
  const id = validateCredentialId(req.credentialId);
  if (!Number.isInteger(req.overlapSeconds) || req.overlapSeconds < 0 || req.overlapSeconds > MAX_ROLL_OVERLAP_SECONDS) {
    throw invalid("overlap_seconds", `must be a whole number of seconds from 0 to ${MAX_ROLL_OVERLAP_SECONDS} (24 hours)`);
  }
  if (req.expectedVersion !== undefined && req.expectedVersion < 1) {
    throw invalid("expected_version", "must be a positive integer (the credential's current version)");
  }
  if (req.apiKey.trim() === "") throw invalid("api_key", "is required");
  const apiBase = req.apiBase === undefined ? undefined : validateApiBase(req.apiBase);
  const principal = principalOf(ctx.values);
  await principal.targets.credential(principal, id);
  if (apiBase !== undefined) {
    // Sending a key to another address is a sensitive action for a portal account (a recent sign-in).
    if (principal.role !== null) await requireRecentSignInForApiBase(principal, (await credentials.get(id)).apiBase, apiBase);
    await keyHealth.refuseApiBase(apiBase);
  }
  const result = await credentials.roll(
    id,
    {
      apiKey: req.apiKey,
      apiBase: req.apiBase,
      overlapSeconds: req.overlapSeconds,
      expectedVersion: req.expectedVersion,
      verifyKey: req.verify ? async (provider, apiKey, base) => requireValid(await keyHealth.checkKey(provider, apiKey, base, ctx.signal)) : undefined,
    },
    actorOf(ctx.values),
  );
  return {
    credential: credentialMessage(result.credential),
    previous: credentialMessage(result.previous),
    previousDeactivatesAt: timestampFromDate(result.previousDeactivatesAt),
  };
}
