import { Code, ConnectError } from "@connectrpc/connect";
import type { ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { CredentialService, KeySource, type ResolveKeyResponseSchema } from "@provider-credentials/wire/gen/credentials_pb";
import type { CredentialStore } from "../credentials/credential-store.js";
import type { KeyResolver, Resolution } from "../credentials/resolver.js";
import { MAX_SUCCESS_REPORT, type KeyHealth } from "../credentials/key-health.js";
import type { ProviderCheckResult } from "../credentials/provider-check.js";
import type { ProviderName } from "../db/entities.js";
import { pageSize } from "../paging.js";
import { invalid, ServiceError } from "../errors.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import type { ResolveResult, ServiceMetrics } from "../metrics.js";
import { validateApiBase, validateApiKey, validateCredentialId, validateId, validateName } from "../credentials/validation.js";
import { outside, requireOrganization, requireRecentSignInForApiBase } from "../auth/policy.js";
import { actorOf, principalOf } from "./context.js";
import { watchResolutions, type ChangeFeed } from "./watch-resolutions.js";
import type { TokenStore } from "../auth/token-store.js";
import { explainResolutionRpc, rollCredentialRpc } from "./roll-explain.js";
import { listUncoveredOrganizationsRpc, searchCredentialsRpc } from "./fleet-search.js";
import { validateOffset } from "../credentials/credential-search.js";
import { batchCredentialActionRpc } from "./batch-action.js";
import { credentialMessage, failureKindName, keyCheckMessage, providerName, selectionPolicyMessage, strategyName } from "./convert.js";

export interface CredentialServiceDeps {
  credentials: CredentialStore;
  resolver: KeyResolver;
  keyHealth: KeyHealth;
  metrics?: ServiceMetrics;
  /** The change stream (WatchResolutions); without it the method answers UNIMPLEMENTED. */
  feed?: ChangeFeed;
  /** Re-checks a live stream's token (a revoked token ends it). */
  tokens?: TokenStore;
}

const RESULT_OF_KIND: Partial<Record<ServiceError["kind"], ResolveResult>> = {
  not_found: "not_found",
  failed_precondition: "failed_precondition",
  // A caller limited to other organisations: its own mistake, not the service's (the error-rate alert leaves it out).
  permission_denied: "permission_denied",
  data_loss: "data_loss",
  unavailable: "unavailable",
  invalid_argument: "invalid_argument",
};

function resolveResultOf(error: unknown): ResolveResult {
  if (error instanceof ServiceError) return RESULT_OF_KIND[error.kind] ?? "error";
  return isDatabaseUnavailable(error) ? "unavailable" : "error";
}

function validateWeight(weight: number | undefined): number | undefined {
  if (weight === undefined) return undefined;
  if (!Number.isInteger(weight) || weight < 0 || weight > 1000) throw invalid("weight", "must be an integer from 0 to 1000");
  return weight;
}

/** Verify before saving: anything but `valid` refuses the write, naming api_key and what the provider said. */
function requireValid(result: ProviderCheckResult): void {
  if (result.outcome === "valid") return;
  throw new ServiceError(
    "failed_precondition",
    `api_key: the provider check did not pass (${result.outcome.replace("_", " ")}): ${result.message.replace(/\.$/, "")}; nothing was saved`,
    "api_key",
    undefined,
    "PROVIDER_CHECK_FAILED",
  );
}

/** Records a failed ResolveKey in the metrics and answers the error, to be thrown. */
function resolveFailed(metrics: ServiceMetrics | undefined, provider: ProviderName, started: number, error: unknown): unknown {
  metrics?.resolved(provider, "none", resolveResultOf(error), (performance.now() - started) / 1000);
  return error;
}

/** Records a resolution in the metrics and answers it as the response. */
function resolved(
  metrics: ServiceMetrics | undefined,
  provider: ProviderName,
  started: number,
  resolution: Resolution,
): MessageInitShape<typeof ResolveKeyResponseSchema> {
  metrics?.resolved(provider, resolution.source, "ok", (performance.now() - started) / 1000);
  return {
    apiKey: resolution.apiKey,
    apiBase: resolution.apiBase ?? undefined,
    source: resolution.source === "organization" ? KeySource.ORGANIZATION : KeySource.ENVIRONMENT,
    credentialId: resolution.credentialId ?? undefined,
    organizationId: resolution.organizationId,
    failing: resolution.failing,
  };
}

/** Refuses a credential outside the caller's organisations (auth/policy.ts), looked up once per call and only for a limited caller. */
function allowCredential(values: Parameters<typeof principalOf>[0], id: string): void | Promise<void> {
  const principal = principalOf(values);
  return principal.targets.credential(principal, id);
}

/** credentials.v1.CredentialService: validation and mapping only; the stores do the work. Who may call what: auth/policy.ts. */
export function createCredentialService({
  credentials,
  resolver,
  keyHealth: health,
  metrics,
  feed,
  tokens,
}: CredentialServiceDeps): ServiceImpl<typeof CredentialService> {
  return {
    async createCredential(req, ctx) {
      const organizationId = validateId("organization_id", req.organizationId);
      const provider = providerName(req.provider);
      const credentialName = validateName("credential_name", req.credentialName);
      const apiBase = req.apiBase === undefined ? null : validateApiBase(req.apiBase);
      const apiKey = validateApiKey(req.apiKey, provider, apiBase);
      const weight = validateWeight(req.weight);
      requireOrganization(principalOf(ctx.values), organizationId);
      await requireRecentSignInForApiBase(principalOf(ctx.values), null, apiBase);
      await health.refuseApiBase(apiBase);
      if (req.verify) requireValid(await health.checkKey(provider, apiKey, apiBase, ctx.signal));
      const view = await credentials.create({ organizationId, provider, credentialName, apiKey, apiBase, weight }, actorOf(ctx.values));
      return { credential: credentialMessage(view) };
    },

    async getCredential(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      await allowCredential(ctx.values, id);
      return { credential: credentialMessage(await credentials.get(id)) };
    },

    async listCredentials(req, ctx) {
      const organizationId = validateId("organization_id", req.organizationId);
      const offset = validateOffset(req.offset, req.pageToken);
      requireOrganization(principalOf(ctx.values), organizationId);
      const page = await credentials.list({
        organizationId,
        provider: req.provider === undefined ? undefined : providerName(req.provider),
        activeOnly: req.activeOnly,
        rotationDueOnly: req.rotationDueOnly,
        failingOnly: req.failingOnly,
        limit: pageSize(req.pageSize),
        pageToken: req.pageToken,
        offset,
      });
      return { credentials: page.credentials.map(credentialMessage), nextPageToken: page.nextPageToken, totalSize: page.totalSize };
    },

    async updateCredential(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      const credentialName = req.credentialName === undefined ? undefined : validateName("credential_name", req.credentialName);
      if (req.expectedVersion !== undefined && req.expectedVersion < 1) {
        throw invalid("expected_version", "must be a positive integer (the credential's current version)");
      }
      const weight = validateWeight(req.weight);
      await allowCredential(ctx.values, id);
      if (req.apiBase !== undefined) {
        const apiBase = validateApiBase(req.apiBase);
        // A different api_base sends the key elsewhere: made for a portal account, it needs a recent sign-in.
        if (principalOf(ctx.values).role !== null) await requireRecentSignInForApiBase(principalOf(ctx.values), (await credentials.get(id)).apiBase, apiBase);
        await health.refuseApiBase(apiBase);
      }
      let provider: ProviderName | undefined;
      const view = await credentials.update(
        id,
        {
          credentialName,
          apiKey: req.apiKey,
          apiBase: req.apiBase,
          expectedVersion: req.expectedVersion,
          weight,
          verifyKey: req.verify
            ? async (apiKey, apiBase) => {
                provider ??= (await credentials.get(id)).provider;
                requireValid(await health.checkKey(provider, apiKey, apiBase, ctx.signal));
              }
            : undefined,
        },
        actorOf(ctx.values),
      );
      return { credential: credentialMessage(view) };
    },

    async activateCredential(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      await allowCredential(ctx.values, id);
      const view = await credentials.setActive(id, true, actorOf(ctx.values));
      return { credential: credentialMessage(view) };
    },

    async deactivateCredential(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      await allowCredential(ctx.values, id);
      const view = await credentials.setActive(id, false, actorOf(ctx.values));
      return { credential: credentialMessage(view) };
    },

    async deleteCredential(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      await allowCredential(ctx.values, id);
      await credentials.delete(id, actorOf(ctx.values));
      return {};
    },

    async verifyCredential(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      await allowCredential(ctx.values, id);
      const { check, credential } = await health.verify(id, actorOf(ctx.values), ctx.signal);
      return { check: keyCheckMessage(check), credential: credentialMessage(credential) };
    },

    async reportKeyFailure(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      const kind = failureKindName(req.kind);
      await allowCredential(ctx.values, id);
      return health.reportFailure(id, kind, actorOf(ctx.values));
    },

    async reportKeySuccess(req, ctx) {
      if (req.credentialIds.length === 0) throw invalid("credential_ids", "must name at least one credential");
      if (req.credentialIds.length > MAX_SUCCESS_REPORT) throw invalid("credential_ids", `must name at most ${MAX_SUCCESS_REPORT} credentials per report`);
      const ids = req.credentialIds.map((id, i) => validateCredentialId(id, `credential_ids[${i}]`));
      const principal = principalOf(ctx.values);
      await principal.targets.credentials(principal, ids, (i) => `credential_ids[${i}]`);
      return health.reportSuccess(ids, actorOf(ctx.values));
    },

    async setSelectionStrategy(req, ctx) {
      const organizationId = validateId("organization_id", req.organizationId);
      const provider = providerName(req.provider);
      const strategy = strategyName(req.strategy);
      requireOrganization(principalOf(ctx.values), organizationId);
      return { policy: selectionPolicyMessage(await health.setStrategy(organizationId, provider, strategy, actorOf(ctx.values))) };
    },

    async listSelectionStrategies(req, ctx) {
      const organizationId = validateId("organization_id", req.organizationId);
      requireOrganization(principalOf(ctx.values), organizationId);
      const policies = await health.listStrategies(organizationId);
      return { policies: policies.map(selectionPolicyMessage) };
    },

    // Not an async function: a cache hit answers without a promise (see KeyResolver.resolve).
    resolveKey(req, ctx) {
      const provider = providerName(req.provider);
      // The caller's organisations: a set look-up here for an organisation, in the resolver for a team (its organisation is cached there).
      const { organizations } = principalOf(ctx.values);
      const scope =
        req.scope.case === "organizationId"
          ? { organizationId: validateId("organization_id", req.scope.value) }
          : req.scope.case === "teamId"
            ? { teamId: validateId("team_id", req.scope.value) }
            : undefined;
      if (!scope) throw invalid("scope", "set organization_id or team_id");
      if (organizations !== null && scope.organizationId !== undefined && !organizations.has(scope.organizationId)) {
        throw resolveFailed(metrics, provider, metrics ? performance.now() : 0, outside("organization_id", "organization", scope.organizationId));
      }
      const started = metrics ? performance.now() : 0;
      let resolution: Resolution | Promise<Resolution>;
      try {
        resolution = resolver.resolve(scope, provider, organizations);
      } catch (error) {
        throw resolveFailed(metrics, provider, started, error);
      }
      if (resolution instanceof Promise) {
        return resolution.then(
          (answer) => resolved(metrics, provider, started, answer),
          (error: unknown) => {
            throw resolveFailed(metrics, provider, started, error);
          },
        );
      }
      return resolved(metrics, provider, started, resolution);
    },

    // Not a generator: the request is checked and the stream admitted before the first message (refusals are plain errors).
    watchResolutions(req, ctx) {
      if (!feed) throw new ConnectError("WatchResolutions is not served by this server", Code.Unimplemented);
      return watchResolutions(feed, tokens, req, ctx);
    },

    explainResolution(req, ctx) {
      return explainResolutionRpc({ credentials, resolver, keyHealth: health }, req, ctx);
    },

    rollCredential(req, ctx) {
      return rollCredentialRpc({ credentials, resolver, keyHealth: health }, req, ctx);
    },

    searchCredentials(req, ctx) {
      return searchCredentialsRpc(credentials, req, ctx);
    },

    listUncoveredOrganizations(req, ctx) {
      return listUncoveredOrganizationsRpc({ credentials, resolver }, req, ctx);
    },

    batchCredentialAction(req, ctx) {
      return batchCredentialActionRpc(credentials, req, ctx);
    },
  };
}
