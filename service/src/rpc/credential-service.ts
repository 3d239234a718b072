import type { ServiceImpl } from "@connectrpc/connect";
import { CredentialService, KeySource } from "../gen/credentials_pb.js";
import type { CredentialStore } from "../credentials/credential-store.js";
import type { KeyResolver } from "../credentials/resolver.js";
import { pageSize } from "../paging.js";
import { invalid } from "../errors.js";
import {
  validateApiBase,
  validateApiKey,
  validateCredentialId,
  validateId,
  validateName,
} from "../credentials/validation.js";
import { actorOf } from "./context.js";
import { credentialMessage, providerName } from "./convert.js";

export interface CredentialServiceDeps {
  credentials: CredentialStore;
  resolver: KeyResolver;
}

/** credentials.v1.CredentialService: validation and mapping only; the stores do the work. */
export function createCredentialService({ credentials, resolver }: CredentialServiceDeps): ServiceImpl<typeof CredentialService> {
  return {
    async createCredential(req, ctx) {
      const organizationId = validateId("organization_id", req.organizationId);
      const provider = providerName(req.provider);
      const credentialName = validateName("credential_name", req.credentialName);
      const apiBase = req.apiBase === undefined ? null : validateApiBase(req.apiBase);
      const apiKey = validateApiKey(req.apiKey, provider, apiBase);
      const view = await credentials.create({ organizationId, provider, credentialName, apiKey, apiBase }, actorOf(ctx.values));
      return { credential: credentialMessage(view) };
    },

    async getCredential(req) {
      return { credential: credentialMessage(await credentials.get(validateCredentialId(req.credentialId))) };
    },

    async listCredentials(req) {
      const page = await credentials.list({
        organizationId: validateId("organization_id", req.organizationId),
        provider: req.provider === undefined ? undefined : providerName(req.provider),
        activeOnly: req.activeOnly,
        limit: pageSize(req.pageSize),
        pageToken: req.pageToken,
      });
      return { credentials: page.credentials.map(credentialMessage), nextPageToken: page.nextPageToken };
    },

    async updateCredential(req, ctx) {
      const id = validateCredentialId(req.credentialId);
      const credentialName = req.credentialName === undefined ? undefined : validateName("credential_name", req.credentialName);
      if (req.expectedVersion !== undefined && req.expectedVersion < 1) {
        throw invalid("expected_version", "must be a positive integer (the credential's current version)");
      }
      const view = await credentials.update(
        id,
        { credentialName, apiKey: req.apiKey, apiBase: req.apiBase, expectedVersion: req.expectedVersion },
        actorOf(ctx.values),
      );
      return { credential: credentialMessage(view) };
    },

    async activateCredential(req, ctx) {
      const view = await credentials.setActive(validateCredentialId(req.credentialId), true, actorOf(ctx.values));
      return { credential: credentialMessage(view) };
    },

    async deactivateCredential(req, ctx) {
      const view = await credentials.setActive(validateCredentialId(req.credentialId), false, actorOf(ctx.values));
      return { credential: credentialMessage(view) };
    },

    async deleteCredential(req, ctx) {
      await credentials.delete(validateCredentialId(req.credentialId), actorOf(ctx.values));
      return {};
    },

    async resolveKey(req) {
      const provider = providerName(req.provider);
      const scope =
        req.scope.case === "organizationId"
          ? { organizationId: validateId("organization_id", req.scope.value) }
          : req.scope.case === "teamId"
            ? { teamId: validateId("team_id", req.scope.value) }
            : undefined;
      if (!scope) throw invalid("scope", "set organization_id or team_id");
      const resolution = await resolver.resolve(scope, provider);
      return {
        apiKey: resolution.apiKey,
        apiBase: resolution.apiBase ?? undefined,
        source: resolution.source === "organization" ? KeySource.ORGANIZATION : KeySource.ENVIRONMENT,
        credentialId: resolution.credentialId ?? undefined,
        organizationId: resolution.organizationId,
      };
    },
  };
}
