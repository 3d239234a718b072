import type { HandlerContext } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  CredentialView,
  Provider,
  type ListUncoveredOrganizationsRequest,
  type ListUncoveredOrganizationsResponseSchema,
  type SearchCredentialsRequest,
  type SearchCredentialsResponseSchema,
} from "@provider-credentials/wire/gen/credentials_pb";
import type { CredentialStore } from "../credentials/credential-store.js";
import type { KeyResolver } from "../credentials/resolver.js";
import { ALL_PROVIDERS } from "../credentials/explain.js";
import { validateOffset, validateSearchQuery, type SearchQuery } from "../credentials/credential-search.js";
import { validateId } from "../credentials/validation.js";
import { invalid } from "../errors.js";
import { pageSize } from "../paging.js";
import { requireOrganization } from "../auth/policy.js";
import { principalOf } from "./context.js";
import { credentialMessage, organizationMessage, providerEnum, providerName } from "./convert.js";

const VIEW: Partial<Record<CredentialView, SearchQuery["view"]>> = {
  [CredentialView.UNSPECIFIED]: "all",
  [CredentialView.FAILING]: "failing",
  [CredentialView.ROTATION_DUE]: "rotation_due",
  [CredentialView.INACTIVE]: "inactive",
};

/** SearchCredentials: credentials across every organisation the caller may read (credentials/credential-search.ts). */
export async function searchCredentialsRpc(
  credentials: CredentialStore,
  req: SearchCredentialsRequest,
  ctx: HandlerContext,
): Promise<MessageInitShape<typeof SearchCredentialsResponseSchema>> {
  const text = validateSearchQuery(req.query);
  const view = VIEW[req.view];
  if (view === undefined)
    throw invalid("view", "must be one of CREDENTIAL_VIEW_UNSPECIFIED, CREDENTIAL_VIEW_FAILING, CREDENTIAL_VIEW_ROTATION_DUE, CREDENTIAL_VIEW_INACTIVE");
  const provider = req.provider === undefined || req.provider === Provider.UNSPECIFIED ? undefined : providerName(req.provider);
  const organizationId = req.organizationId === undefined ? undefined : validateId("organization_id", req.organizationId);
  const limit = pageSize(req.pageSize);
  const offset = validateOffset(req.offset);
  const principal = principalOf(ctx.values);
  if (organizationId !== undefined) requireOrganization(principal, organizationId);
  const found = await credentials.fleet.search({ text, view, provider, organizationId, within: principal.organizations, limit, offset });
  return {
    credentials: found.credentials.map(credentialMessage),
    totalSize: found.total,
    organizations: found.organizations.map(organizationMessage),
  };
}

/**
 * ListUncoveredOrganizations: organisations (the caller's, when limited) with, for a provider, no credential ResolveKey
 * may hand out and no environment fallback in this service (KeyResolver.hasEnvironmentFallback, as ExplainResolution
 * reports it).
 */
export async function listUncoveredOrganizationsRpc(
  { credentials, resolver }: { credentials: CredentialStore; resolver: KeyResolver },
  req: ListUncoveredOrganizationsRequest,
  ctx: HandlerContext,
): Promise<MessageInitShape<typeof ListUncoveredOrganizationsResponseSchema>> {
  const asked = req.provider === undefined || req.provider === Provider.UNSPECIFIED ? ALL_PROVIDERS : [providerName(req.provider)];
  const limit = pageSize(req.pageSize);
  const offset = validateOffset(req.offset);
  const providers = asked.filter((p) => !resolver.hasEnvironmentFallback(p)).sort((a, b) => providerEnum(a) - providerEnum(b));
  const found = await credentials.fleet.uncovered({ providers, within: principalOf(ctx.values).organizations, limit, offset });
  return {
    totalSize: found.total,
    organizations: found.organizations.map(({ organization, providers: uncovered }) => ({
      organization: organizationMessage(organization),
      providers: uncovered.map(providerEnum),
    })),
  };
}
