import { BigIntType, EntitySchema } from "@mikro-orm/core";
import type { TokenScope } from "@provider-credentials/wire/auth";
import type { ProviderName } from "@provider-credentials/wire/providers";

// Table rows as MikroORM entities. The schema itself lives in migrations/ (SQL),
// so that what runs in production is reviewed SQL, not a generated diff.

export interface OrganizationRow {
  id: string;
  name: string;
  createdAt: Date;
  updatedAt: Date;
}

export const OrganizationEntity = new EntitySchema<OrganizationRow>({
  name: "Organization",
  tableName: "organizations",
  properties: {
    id: { type: "text", primary: true },
    name: { type: "text" },
    createdAt: { type: "Date", columnType: "timestamptz" },
    updatedAt: { type: "Date", columnType: "timestamptz" },
  },
});

export interface TeamRow {
  id: string;
  organizationId: string;
  name: string;
  createdAt: Date;
  updatedAt: Date;
}

export const TeamEntity = new EntitySchema<TeamRow>({
  name: "Team",
  tableName: "teams",
  properties: {
    id: { type: "text", primary: true },
    organizationId: { type: "text" },
    name: { type: "text" },
    createdAt: { type: "Date", columnType: "timestamptz" },
    updatedAt: { type: "Date", columnType: "timestamptz" },
  },
});

/** The providers of the registry (providers.ts). */
export type { ProviderName };

export interface CredentialRow {
  id: string;
  organizationId: string;
  provider: ProviderName;
  credentialName: string;
  /**
   * comparableName(credentialName), unique per organisation and provider. Null on rows written before it existed
   * (or by a replica that did not know it yet) whose name collided with an older row's: see migrations
   * Migration20261206120000_credential_name_key.
   */
  credentialNameKey: string | null;
  /** A Fernet token; only the keyring can read it. */
  encryptedApiKey: string;
  /** Fingerprint of the master key that made encryptedApiKey. */
  keyId: string;
  /**
   * MAC binding encryptedApiKey to this row's id, organisation, provider and
   * api_base (see Keyring.encryptBound); null only for rows written before
   * row binding existed, until the service binds them at start-up.
   */
  keyBinding: string | null;
  keyHint: string;
  apiBase: string | null;
  isActive: boolean;
  activatedAt: Date | null;
  version: number;
  createdAt: Date;
  updatedAt: Date;
  createdBy: string | null;
  updatedBy: string | null;
  lastUsedAt: Date | null;
  /** Share under the weighted selection strategy, 0-1000. */
  weight: number;
  /** ResolveKey hand-outs, written in batches with lastUsedAt. */
  useCount: number;
  /** When the key itself was set (created or replaced): what rotation reminders go by. */
  keySetAt: Date;
  checkOutcome: KeyCheckOutcomeName | null;
  checkHttpStatus: number | null;
  checkLatencyMs: number | null;
  checkMessage: string | null;
  checkedAt: Date | null;
  /** Consecutive authentication or quota failures reported by callers. */
  failureStreak: number;
  /** Set while the credential is marked failing. */
  failingSince: Date | null;
  /**
   * When the service deactivates it (the overlap after RollCredential); ResolveKey stops handing it out from then
   * on. Null: nothing scheduled. Absent on rows read before the column existed.
   */
  deactivateAt?: Date | null;
}

export type KeyCheckOutcomeName = "valid" | "invalid_key" | "no_permission" | "rate_limited" | "unreachable" | "unexpected";

export const CredentialEntity = new EntitySchema<CredentialRow>({
  name: "Credential",
  tableName: "provider_credentials",
  properties: {
    id: { type: "uuid", primary: true },
    organizationId: { type: "text" },
    provider: { type: "text" },
    credentialName: { type: "text" },
    credentialNameKey: { type: "text", nullable: true },
    encryptedApiKey: { type: "text", lazy: true },
    keyId: { type: "text" },
    keyBinding: { type: "text", nullable: true, lazy: true },
    keyHint: { type: "text" },
    apiBase: { type: "text", nullable: true },
    isActive: { type: "boolean" },
    activatedAt: { type: "Date", columnType: "timestamptz", nullable: true },
    version: { type: "integer" },
    createdAt: { type: "Date", columnType: "timestamptz" },
    updatedAt: { type: "Date", columnType: "timestamptz" },
    createdBy: { type: "text", nullable: true },
    updatedBy: { type: "text", nullable: true },
    lastUsedAt: { type: "Date", columnType: "timestamptz", nullable: true },
    weight: { type: "integer" },
    useCount: { type: new BigIntType("number") },
    keySetAt: { type: "Date", columnType: "timestamptz" },
    checkOutcome: { type: "text", nullable: true },
    checkHttpStatus: { type: "integer", nullable: true },
    checkLatencyMs: { type: "integer", nullable: true },
    checkMessage: { type: "text", nullable: true },
    checkedAt: { type: "Date", columnType: "timestamptz", nullable: true },
    failureStreak: { type: "integer" },
    failingSince: { type: "Date", columnType: "timestamptz", nullable: true },
    deactivateAt: { type: "Date", columnType: "timestamptz", nullable: true },
  },
});

export type SelectionStrategyName = "newest" | "round_robin" | "weighted";

export interface SelectionStrategyRow {
  organizationId: string;
  provider: ProviderName;
  strategy: SelectionStrategyName;
  updatedAt: Date;
  updatedBy: string | null;
}

export const SelectionStrategyEntity = new EntitySchema<SelectionStrategyRow>({
  name: "SelectionStrategy",
  tableName: "selection_strategies",
  properties: {
    organizationId: { type: "text", primary: true },
    provider: { type: "text", primary: true },
    strategy: { type: "text" },
    updatedAt: { type: "Date", columnType: "timestamptz" },
    updatedBy: { type: "text", nullable: true },
  },
});

export type { TokenScope };

export interface ApiTokenRow {
  name: string;
  /** SHA-256 of the token, hex; the token itself is never stored. */
  tokenHash: string;
  scope: TokenScope;
  createdAt: Date;
  createdBy: string | null;
  lastUsedAt: Date | null;
  /** The organisations the token may act on; null: every organisation. */
  organizationIds: string[] | null;
  /** When the token stops working; null: never. */
  expiresAt: Date | null;
  /** `pct_` and the secret's next six characters; null for tokens created before prefixes were stored. */
  prefix: string | null;
  /** After a rotation with an overlap: the previous secret's hash, accepted until previousValidUntil. */
  previousTokenHash: string | null;
  previousValidUntil: Date | null;
}

export const ApiTokenEntity = new EntitySchema<ApiTokenRow>({
  name: "ApiToken",
  tableName: "api_tokens",
  properties: {
    name: { type: "text", primary: true },
    tokenHash: { type: "text" },
    scope: { type: "text" },
    createdAt: { type: "Date", columnType: "timestamptz" },
    createdBy: { type: "text", nullable: true },
    lastUsedAt: { type: "Date", columnType: "timestamptz", nullable: true },
    organizationIds: { type: "string[]", columnType: "text[]", nullable: true },
    expiresAt: { type: "Date", columnType: "timestamptz", nullable: true },
    prefix: { type: "text", nullable: true },
    previousTokenHash: { type: "text", nullable: true },
    previousValidUntil: { type: "Date", columnType: "timestamptz", nullable: true },
  },
});

export interface AuditEventRow {
  id?: string;
  occurredAt: Date;
  actor: string;
  action: string;
  organizationId: string | null;
  credentialId: string | null;
  target: string | null;
  source: string | null;
  details: Record<string, unknown>;
}

export const AuditEventEntity = new EntitySchema<AuditEventRow>({
  name: "AuditEvent",
  tableName: "audit_events",
  properties: {
    id: { type: "bigint", primary: true, autoincrement: true },
    occurredAt: { type: "Date", columnType: "timestamptz" },
    actor: { type: "text" },
    action: { type: "text" },
    organizationId: { type: "text", nullable: true },
    credentialId: { type: "uuid", nullable: true },
    target: { type: "text", nullable: true },
    source: { type: "text", nullable: true },
    details: { type: "json" },
  },
});

export const entities = [OrganizationEntity, TeamEntity, CredentialEntity, SelectionStrategyEntity, ApiTokenEntity, AuditEventEntity];
