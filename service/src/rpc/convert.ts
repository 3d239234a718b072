import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ProviderName } from "../db/entities.js";
import type { OrganizationRow, TeamRow } from "../db/entities.js";
import { invalid } from "../errors.js";
import type { CredentialView } from "../credentials/credential-store.js";
import { PROVIDER_NAMES } from "../credentials/providers.js";
import {
  CredentialSchema,
  OrganizationSchema,
  Provider,
  TeamSchema,
  type Credential,
  type Organization,
  type Team,
} from "../gen/credentials_pb.js";

const TO_NAME: Partial<Record<Provider, ProviderName>> = {
  [Provider.OPENAI]: "openai",
  [Provider.ANTHROPIC]: "anthropic",
  [Provider.GEMINI]: "gemini",
  [Provider.FIREWORKS]: "fireworks",
};
const TO_ENUM: Record<ProviderName, Provider> = {
  openai: Provider.OPENAI,
  anthropic: Provider.ANTHROPIC,
  gemini: Provider.GEMINI,
  fireworks: Provider.FIREWORKS,
};

export function providerName(provider: Provider, field = "provider"): ProviderName {
  const name = TO_NAME[provider];
  if (!name) throw invalid(field, `must be one of ${PROVIDER_NAMES.map((p) => `PROVIDER_${p.toUpperCase()}`).join(", ")}`);
  return name;
}

export function providerEnum(name: ProviderName): Provider {
  return TO_ENUM[name];
}

export function credentialMessage(view: CredentialView): Credential {
  return create(CredentialSchema, {
    credentialId: view.id,
    organizationId: view.organizationId,
    provider: TO_ENUM[view.provider],
    credentialName: view.credentialName,
    apiBase: view.apiBase ?? undefined,
    isActive: view.isActive,
    keyHint: view.keyHint,
    createdAt: timestampFromDate(view.createdAt),
    updatedAt: timestampFromDate(view.updatedAt),
    createdBy: view.createdBy ?? undefined,
    updatedBy: view.updatedBy ?? undefined,
    lastUsedAt: view.lastUsedAt ? timestampFromDate(view.lastUsedAt) : undefined,
    version: view.version,
  });
}

export function organizationMessage(row: OrganizationRow): Organization {
  return create(OrganizationSchema, {
    organizationId: row.id,
    name: row.name,
    createdAt: timestampFromDate(row.createdAt),
    updatedAt: timestampFromDate(row.updatedAt),
  });
}

export function teamMessage(row: TeamRow): Team {
  return create(TeamSchema, {
    teamId: row.id,
    organizationId: row.organizationId,
    name: row.name,
    createdAt: timestampFromDate(row.createdAt),
    updatedAt: timestampFromDate(row.updatedAt),
  });
}
