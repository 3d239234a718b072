import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ProviderName } from "../db/entities.js";
import type { OrganizationRow, TeamRow } from "../db/entities.js";
import { invalid } from "../errors.js";
import type { CredentialView } from "../credentials/credential-store.js";
import type { FailureKind as FailureKindName, SelectionPolicyView } from "../credentials/key-health.js";
import type { KeyCheckOutcomeName, SelectionStrategyName } from "../db/entities.js";
import { PROVIDER_NAMES, PROVIDERS } from "@provider-credentials/wire/providers";
import {
  CredentialSchema,
  FailureKind,
  KeyCheckOutcome,
  KeyCheckSchema,
  SelectionPolicySchema,
  SelectionStrategy,
  type KeyCheck,
  type SelectionPolicy,
  OrganizationSchema,
  Provider,
  TeamSchema,
  type Credential,
  type Organization,
  type Team,
} from "@provider-credentials/wire/gen/credentials_pb";

/** The proto enum value of each registry provider (providers.ts), by its enumName. */
const TO_ENUM = Object.fromEntries(PROVIDER_NAMES.map((name) => [name, Provider[PROVIDERS[name].enumName]])) as Record<ProviderName, Provider>;
const TO_NAME = new Map<Provider, ProviderName>(PROVIDER_NAMES.map((name) => [TO_ENUM[name], name]));

export function providerName(provider: Provider, field = "provider"): ProviderName {
  const name = TO_NAME.get(provider);
  if (!name) throw invalid(field, `must be one of ${PROVIDER_NAMES.map((p) => `PROVIDER_${PROVIDERS[p].enumName}`).join(", ")}`);
  return name;
}

export function providerEnum(name: ProviderName): Provider {
  return TO_ENUM[name];
}

const OUTCOME: Record<KeyCheckOutcomeName, KeyCheckOutcome> = {
  valid: KeyCheckOutcome.VALID,
  invalid_key: KeyCheckOutcome.INVALID_KEY,
  no_permission: KeyCheckOutcome.NO_PERMISSION,
  rate_limited: KeyCheckOutcome.RATE_LIMITED,
  unreachable: KeyCheckOutcome.UNREACHABLE,
  unexpected: KeyCheckOutcome.UNEXPECTED,
};

const STRATEGY: Record<SelectionStrategyName, SelectionStrategy> = {
  newest: SelectionStrategy.NEWEST,
  round_robin: SelectionStrategy.ROUND_ROBIN,
  weighted: SelectionStrategy.WEIGHTED,
};

const FAILURE: Partial<Record<FailureKind, FailureKindName>> = {
  [FailureKind.AUTHENTICATION]: "authentication",
  [FailureKind.PERMISSION]: "permission",
  [FailureKind.RATE_LIMIT]: "rate_limit",
  [FailureKind.QUOTA]: "quota",
  [FailureKind.OTHER]: "other",
};

export function strategyName(strategy: SelectionStrategy, field = "strategy"): SelectionStrategyName {
  const name = (Object.keys(STRATEGY) as SelectionStrategyName[]).find((n) => STRATEGY[n] === strategy);
  if (!name) throw invalid(field, "must be one of SELECTION_STRATEGY_NEWEST, SELECTION_STRATEGY_ROUND_ROBIN, SELECTION_STRATEGY_WEIGHTED");
  return name;
}

export function strategyEnum(name: SelectionStrategyName): SelectionStrategy {
  return STRATEGY[name];
}

export function failureKindName(kind: FailureKind, field = "kind"): FailureKindName {
  const name = FAILURE[kind];
  if (!name) {
    throw invalid(
      field,
      "must be one of FAILURE_KIND_AUTHENTICATION, FAILURE_KIND_PERMISSION, FAILURE_KIND_RATE_LIMIT, FAILURE_KIND_QUOTA, FAILURE_KIND_OTHER",
    );
  }
  return name;
}

export function keyCheckMessage(check: {
  outcome: KeyCheckOutcomeName;
  httpStatus: number | null;
  latencyMs: number;
  message: string;
  checkedAt: Date;
}): KeyCheck {
  return create(KeyCheckSchema, {
    outcome: OUTCOME[check.outcome],
    httpStatus: check.httpStatus ?? undefined,
    latencyMs: check.latencyMs,
    message: check.message,
    checkedAt: timestampFromDate(check.checkedAt),
  });
}

export function selectionPolicyMessage(policy: SelectionPolicyView): SelectionPolicy {
  return create(SelectionPolicySchema, {
    organizationId: policy.organizationId,
    provider: TO_ENUM[policy.provider],
    strategy: STRATEGY[policy.strategy],
    updatedAt: policy.updatedAt ? timestampFromDate(policy.updatedAt) : undefined,
    updatedBy: policy.updatedBy ?? undefined,
  });
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
    weight: view.weight,
    useCount: BigInt(view.useCount),
    lastCheck:
      view.checkOutcome !== null && view.checkedAt !== null
        ? keyCheckMessage({
            outcome: view.checkOutcome,
            httpStatus: view.checkHttpStatus,
            latencyMs: view.checkLatencyMs ?? 0,
            message: view.checkMessage ?? "",
            checkedAt: view.checkedAt,
          })
        : undefined,
    failing: view.failingSince !== null,
    failureStreak: view.failureStreak,
    keySetAt: timestampFromDate(view.keySetAt),
    rotationDue: view.rotationDue,
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
