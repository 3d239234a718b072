import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  CredentialAction,
  CredentialView,
  KeyCheckOutcome,
  Provider,
  SelectionStrategy,
  type Credential,
  type KeyCheck,
  type Organization,
  type SelectionPolicy,
  type Team,
  type UncoveredOrganization,
} from "@provider-credentials/wire/gen/credentials_pb";
import type { TokenScope } from "@provider-credentials/wire/auth";
import type { Admin, ApiToken, AuditEvent } from "@provider-credentials/wire/gen/admin_pb";
import { PROVIDER_NAMES, PROVIDERS } from "@provider-credentials/wire/providers";
import type { CredentialActionName, CredentialViewName, KeyCheckOutcomeName, ProviderName, SelectionStrategyName } from "./trpc/schemas.js";
import { accountRole } from "./session.js";

/**
 * Service messages → the JSON the API returns: snake_case, every field present,
 * null where unset, ISO 8601 timestamps. Each function names its fields
 * explicitly, so a field added to a message never leaks by accident.
 */

/** The proto enum value of each registry provider (@provider-credentials/wire/providers), by its enumName. */
const TO_ENUM = Object.fromEntries(PROVIDER_NAMES.map((name) => [name, Provider[PROVIDERS[name].enumName]])) as Record<ProviderName, Provider>;
const TO_NAME = new Map<Provider, ProviderName>(PROVIDER_NAMES.map((name) => [TO_ENUM[name], name]));

export function providerEnum(name: ProviderName): Provider {
  return TO_ENUM[name];
}

function providerName(provider: Provider): ProviderName {
  const name = TO_NAME.get(provider);
  if (!name) throw new Error(`the service returned an unknown provider (${provider})`);
  return name;
}

const OUTCOME_NAMES: Partial<Record<KeyCheckOutcome, KeyCheckOutcomeName>> = {
  [KeyCheckOutcome.VALID]: "valid",
  [KeyCheckOutcome.INVALID_KEY]: "invalid_key",
  [KeyCheckOutcome.NO_PERMISSION]: "no_permission",
  [KeyCheckOutcome.RATE_LIMITED]: "rate_limited",
  [KeyCheckOutcome.UNREACHABLE]: "unreachable",
  [KeyCheckOutcome.UNEXPECTED]: "unexpected",
};

const STRATEGY_ENUMS: Record<SelectionStrategyName, SelectionStrategy> = {
  newest: SelectionStrategy.NEWEST,
  round_robin: SelectionStrategy.ROUND_ROBIN,
  weighted: SelectionStrategy.WEIGHTED,
};

export function strategyEnum(name: SelectionStrategyName): SelectionStrategy {
  return STRATEGY_ENUMS[name];
}

function strategyName(strategy: SelectionStrategy): SelectionStrategyName {
  // Unset means the default, as the proto says.
  if (strategy === SelectionStrategy.UNSPECIFIED) return "newest";
  const name = (Object.keys(STRATEGY_ENUMS) as SelectionStrategyName[]).find((n) => STRATEGY_ENUMS[n] === strategy);
  if (!name) throw new Error(`the service returned an unknown selection strategy (${strategy})`);
  return name;
}

/** int64 → a JSON number (use counts stay far below 2^53). */
function count(value: bigint): number {
  return Number(value);
}

function iso(ts: Timestamp | undefined): string {
  if (!ts) throw new Error("the service returned a message without a required timestamp");
  return timestampDate(ts).toISOString();
}

function isoOrNull(ts: Timestamp | undefined): string | null {
  return ts ? timestampDate(ts).toISOString() : null;
}

/** "" (proto3's unset) → null. */
function cursor(token: string): string | null {
  return token === "" ? null : token;
}

export function credentialJson(c: Credential) {
  return {
    credential_id: c.credentialId,
    organization_id: c.organizationId,
    provider: providerName(c.provider),
    credential_name: c.credentialName,
    api_base: c.apiBase ?? null,
    is_active: c.isActive,
    key_hint: c.keyHint,
    version: c.version,
    created_at: iso(c.createdAt),
    updated_at: iso(c.updatedAt),
    created_by: c.createdBy ?? null,
    updated_by: c.updatedBy ?? null,
    last_used_at: isoOrNull(c.lastUsedAt),
    weight: c.weight,
    use_count: count(c.useCount),
    last_check: c.lastCheck ? keyCheckJson(c.lastCheck) : null,
    failing: c.failing,
    failure_streak: c.failureStreak,
    key_set_at: iso(c.keySetAt),
    rotation_due: c.rotationDue,
  };
}

export function keyCheckJson(k: KeyCheck) {
  const outcome = OUTCOME_NAMES[k.outcome];
  if (!outcome) throw new Error(`the service returned an unknown key check outcome (${k.outcome})`);
  return {
    outcome,
    http_status: k.httpStatus ?? null,
    latency_ms: k.latencyMs,
    message: k.message,
    checked_at: iso(k.checkedAt),
  };
}

export function selectionPolicyJson(p: SelectionPolicy) {
  return {
    organization_id: p.organizationId,
    provider: providerName(p.provider),
    strategy: strategyName(p.strategy),
    updated_at: isoOrNull(p.updatedAt),
    updated_by: p.updatedBy ?? null,
  };
}

export function organizationJson(o: Organization) {
  return { organization_id: o.organizationId, name: o.name, created_at: iso(o.createdAt), updated_at: iso(o.updatedAt) };
}

/** An organisation's id and name only (the organisations of a search page). */
export function organizationRefJson(o: Organization) {
  return { organization_id: o.organizationId, name: o.name };
}

export function uncoveredOrganizationJson(u: UncoveredOrganization) {
  const o = u.organization;
  if (!o) throw new Error("the service returned an uncovered organisation without its organisation");
  return { organization_id: o.organizationId, name: o.name, providers: u.providers.map(providerName) };
}

const VIEW_ENUMS: Record<CredentialViewName, CredentialView> = {
  failing: CredentialView.FAILING,
  rotation_due: CredentialView.ROTATION_DUE,
  inactive: CredentialView.INACTIVE,
};

/** A search's fleet view → the proto enum; absent: every credential. */
export function credentialViewEnum(name: CredentialViewName | undefined): CredentialView {
  return name === undefined ? CredentialView.UNSPECIFIED : VIEW_ENUMS[name];
}

const ACTION_ENUMS: Record<CredentialActionName, CredentialAction> = {
  activate: CredentialAction.ACTIVATE,
  deactivate: CredentialAction.DEACTIVATE,
  delete: CredentialAction.DELETE,
};

export function credentialActionEnum(name: CredentialActionName): CredentialAction {
  return ACTION_ENUMS[name];
}

export function teamJson(t: Team) {
  return { team_id: t.teamId, organization_id: t.organizationId, name: t.name, created_at: iso(t.createdAt), updated_at: iso(t.updatedAt) };
}

function details(json: string): Record<string, unknown> {
  if (json === "") return {};
  try {
    const value: unknown = JSON.parse(json);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : { value };
  } catch {
    return {};
  }
}

export function auditEventJson(e: AuditEvent) {
  return {
    event_id: e.eventId,
    occurred_at: iso(e.occurredAt),
    actor: e.actor,
    action: e.action,
    organization_id: e.organizationId ?? null,
    credential_id: e.credentialId ?? null,
    target: e.target ?? null,
    source: e.source ?? null,
    details: details(e.detailsJson),
  };
}

/** A repeated organisation list → null when empty (proto3: every organisation). */
function organizations(ids: readonly string[]): string[] | null {
  return ids.length === 0 ? null : [...ids];
}

export function apiTokenJson(t: ApiToken) {
  return {
    name: t.name,
    scope: t.scope as TokenScope,
    organization_ids: organizations(t.organizationIds),
    expires_at: isoOrNull(t.expiresAt),
    prefix: t.prefix,
    created_at: iso(t.createdAt),
    created_by: t.createdBy ?? null,
    last_used_at: isoOrNull(t.lastUsedAt),
    previous_valid_until: isoOrNull(t.previousValidUntil),
  };
}

export function accountJson(a: Admin) {
  return {
    email: a.email,
    role: accountRole(a.role),
    organization_ids: organizations(a.organizationIds),
    disabled: a.disabled,
    two_factor_enabled: a.twoFactorEnabled,
    created_at: iso(a.createdAt),
    last_sign_in_at: isoOrNull(a.lastSignInAt),
  };
}

export { cursor as nextCursor };
