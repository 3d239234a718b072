// Key health and load spreading: checking a stored key against its provider,
// failures and successes reported by the callers that use the keys, and each
// organisation's selection strategy per provider. Every change that affects
// what ResolveKey hands out (a credential marked failing or recovered, a
// strategy set) is audited and invalidates caches on every replica in the
// transaction that makes it.
import { ApiBaseGuard } from "./api-base-guard.js";
import { LockMode } from "@mikro-orm/core";
import type { Orm } from "../db/orm.js";
import type { EntityManager } from "@mikro-orm/postgresql";
import { runChange, type Change } from "../db/change.js";
import {
  CredentialEntity,
  OrganizationEntity,
  SelectionStrategyEntity,
  type CredentialRow,
  type ProviderName,
  type SelectionStrategyName,
} from "../db/entities.js";
import { ServiceError } from "../errors.js";
import { openStored, type Keyring } from "../keyring/index.js";
import { notFound, type Actor, type ChangeListener, type CredentialStore, type CredentialView } from "./credential-store.js";
import { checkProviderKey, type ProviderCheckInput, type ProviderCheckResult } from "./provider-check.js";
import { PROVIDER_NAMES } from "@provider-credentials/wire/providers";
import type { ServiceMetrics } from "../metrics.js";

export type FailureKind = "authentication" | "permission" | "rate_limit" | "quota" | "other";

/** Kinds that say the key itself is bad (revoked, out of credit): they count towards marking it failing. */
const COUNTED: ReadonlySet<FailureKind> = new Set(["authentication", "quota"]);

export interface KeyHealthOptions {
  /** Consecutive authentication or quota failures that mark a credential failing (FAILURE_THRESHOLD, default 3). */
  failureThreshold: number;
  /** Budget of one check against a provider (KEY_CHECK_TIMEOUT_MS, default 10 s). */
  checkTimeoutMs: number;
  /** Where an api_base may point (API_BASE_ALLOW); default: no loopback, link-local, private, unique-local or unspecified address. */
  apiBaseGuard?: ApiBaseGuard;
  /** The check itself; tests and the benchmark keep the default. */
  check?: (input: ProviderCheckInput) => Promise<ProviderCheckResult>;
}

export interface SelectionPolicyView {
  organizationId: string;
  provider: ProviderName;
  strategy: SelectionStrategyName;
  updatedAt: Date | null;
  updatedBy: string | null;
}

export const MAX_SUCCESS_REPORT = 1000;

export class KeyHealth {
  private readonly check: (input: ProviderCheckInput) => Promise<ProviderCheckResult>;
  /** Check outcomes and health transitions, when the service exports metrics. */
  metrics: ServiceMetrics | undefined;

  constructor(
    private readonly orm: Orm,
    private readonly keyring: Keyring,
    private readonly credentials: CredentialStore,
    private readonly options: KeyHealthOptions,
    private readonly onChange: ChangeListener = () => undefined,
  ) {
    this.check = options.check ?? checkProviderKey;
    this.guard = options.apiBaseGuard ?? new ApiBaseGuard();
  }

  private readonly guard: ApiBaseGuard;

  /** On save: refuses (INVALID_ARGUMENT naming api_base) an api_base a check would refuse to call. */
  async refuseApiBase(apiBase: string | null): Promise<void> {
    await this.guard.checkOnSave(apiBase);
  }

  /** Runs a change (runChange); this replica's cache forgets what it made stale once it commits. */
  private change<T>(source: Orm | EntityManager, work: (change: Change) => Promise<T>): Promise<T> {
    return runChange(source, work, { onChange: this.onChange });
  }

  /**
   * Checks a key that is not stored yet (verify before saving); the caller
   * refuses the write unless the outcome is `valid`.
   */
  async checkKey(provider: ProviderName, apiKey: string, apiBase: string | null, signal?: AbortSignal): Promise<ProviderCheckResult> {
    const result = await this.check({ provider, apiKey, apiBase, timeoutMs: this.options.checkTimeoutMs, signal, guard: this.guard });
    this.metrics?.checked(provider, result.outcome);
    return result;
  }

  /**
   * Checks the stored key of a credential against its provider and stores the
   * result. The provider call runs outside any transaction; the result is
   * written only if the key was not replaced meanwhile. A passing check clears
   * the failing mark.
   */
  async verify(id: string, by: Actor, signal?: AbortSignal): Promise<{ check: ProviderCheckResult; credential: CredentialView }> {
    const em = this.orm.em.fork();
    const row = await em.findOne(CredentialEntity, { id }, { populate: ["encryptedApiKey", "keyBinding"] });
    if (!row) throw notFound(id);
    const apiKey = openStored(
      this.keyring,
      { id: row.id, organizationId: row.organizationId, provider: row.provider, apiBase: row.apiBase },
      row.encryptedApiKey,
      row.keyId,
      row.keyBinding,
    );
    const check = await this.checkKey(row.provider, apiKey, row.apiBase, signal);
    let recovered = false;
    const credential = await this.change(em, async ({ em: tx, audit, invalidate }) => {
      // A detached copy (see CredentialStore.lock): what changes on it is written with one UPDATE.
      const current = await this.credentials.lock(tx, id);
      const sameKey = current.keySetAt.getTime() === row.keySetAt.getTime() && current.apiBase === row.apiBase;
      if (sameKey) {
        const patch: Partial<CredentialRow> = {
          checkOutcome: check.outcome,
          checkHttpStatus: check.httpStatus,
          checkLatencyMs: check.latencyMs,
          checkMessage: check.message,
          checkedAt: check.checkedAt,
        };
        if (check.outcome === "valid" && (current.failingSince !== null || current.failureStreak > 0)) {
          recovered = current.failingSince !== null;
          patch.failingSince = null;
          patch.failureStreak = 0;
        }
        Object.assign(current, patch);
        await tx.nativeUpdate(CredentialEntity, { id: current.id }, patch);
        if (recovered) invalidate({ organizationId: current.organizationId, provider: current.provider, reason: "key_health" });
      }
      audit({
        ...by,
        action: "credential.verify",
        organizationId: current.organizationId,
        credentialId: current.id,
        details: {
          outcome: check.outcome,
          http_status: check.httpStatus,
          latency_ms: check.latencyMs,
          key_hint: current.keyHint,
          ...(sameKey ? {} : { stored: false, reason: "the key or api_base changed while the check ran" }),
        },
      });
      if (recovered)
        audit({
          ...by,
          action: "credential.recovered",
          organizationId: current.organizationId,
          credentialId: current.id,
          details: { reason: "verification passed", key_hint: current.keyHint },
        });
      return this.credentials.view(current);
    });
    if (recovered) this.metrics?.healthChanged("recovered");
    return { check, credential };
  }

  /** A caller's call with this credential failed. */
  async reportFailure(id: string, kind: FailureKind, by: Actor): Promise<{ failureStreak: number; failing: boolean }> {
    this.metrics?.failureReported(kind);
    let marked = false;
    const result = await this.change(this.orm, async ({ em, audit, invalidate }) => {
      // A detached copy (see CredentialStore.lock): its changes are written with one UPDATE.
      const row = await this.credentials.lock(em, id);
      if (!COUNTED.has(kind)) return { failureStreak: row.failureStreak, failing: row.failingSince !== null };
      row.failureStreak += 1;
      const marks = row.failingSince === null && row.failureStreak >= this.options.failureThreshold;
      if (marks) row.failingSince = new Date();
      await em.nativeUpdate(
        CredentialEntity,
        { id: row.id },
        marks ? { failureStreak: row.failureStreak, failingSince: row.failingSince } : { failureStreak: row.failureStreak },
      );
      if (marks) {
        marked = true;
        invalidate({ organizationId: row.organizationId, provider: row.provider, reason: "key_health" });
        audit({
          ...by,
          action: "credential.failing",
          organizationId: row.organizationId,
          credentialId: row.id,
          details: { kind, failure_streak: row.failureStreak, threshold: this.options.failureThreshold, key_hint: row.keyHint },
        });
      }
      return { failureStreak: row.failureStreak, failing: row.failingSince !== null };
    });
    if (marked) this.metrics?.healthChanged("failing");
    return result;
  }

  /**
   * Calls with these credentials succeeded: their streaks reset, and any
   * marked failing recover. One statement when none had failures; unknown ids
   * are ignored.
   */
  async reportSuccess(ids: readonly string[], by: Actor): Promise<{ recovered: number }> {
    const unique = [...new Set(ids)];
    const changed = await this.change(this.orm, async ({ em, audit, invalidate }) => {
      const rows: Array<{ id: string; organization_id: string; provider: ProviderName; was_failing: boolean; key_hint: string }> = await em
        .getConnection()
        .execute(
          `with prev as (
             select id, failing_since is not null as was_failing from provider_credentials
             where id = any(string_to_array(?, ',')::uuid[]) and (failure_streak > 0 or failing_since is not null)
             for update)
           update provider_credentials c set failure_streak = 0, failing_since = null
           from prev where c.id = prev.id
           returning c.id, c.organization_id, c.provider, prev.was_failing, c.key_hint`,
          [unique.join(",")],
          "all",
          em.getTransactionContext(),
        );
      const recovered = rows.filter((r) => r.was_failing);
      for (const r of recovered) {
        invalidate({ organizationId: r.organization_id, provider: r.provider, reason: "key_health" });
        audit({
          ...by,
          action: "credential.recovered",
          organizationId: r.organization_id,
          credentialId: r.id,
          details: { reason: "a caller reported a success", key_hint: r.key_hint },
        });
      }
      return recovered;
    });
    this.metrics?.healthChanged("recovered", changed.length);
    return { recovered: changed.length };
  }

  async setStrategy(organizationId: string, provider: ProviderName, strategy: SelectionStrategyName, by: Actor): Promise<SelectionPolicyView> {
    return this.change(this.orm, async ({ em, audit, invalidate }) => {
      if ((await em.count(OrganizationEntity, { id: organizationId })) === 0) {
        throw new ServiceError("not_found", `organization "${organizationId}" not found`);
      }
      const now = new Date();
      const existing = await em.findOne(SelectionStrategyEntity, { organizationId, provider }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      const before = existing?.strategy ?? "newest";
      if (existing) {
        await em.nativeUpdate(SelectionStrategyEntity, { organizationId, provider }, { strategy, updatedAt: now, updatedBy: by.actor });
      } else {
        await em.insert(SelectionStrategyEntity, { organizationId, provider, strategy, updatedAt: now, updatedBy: by.actor });
      }
      invalidate({ organizationId, provider, reason: "selection_strategy" });
      audit({ ...by, action: "selection_strategy.set", organizationId, target: provider, details: { provider, from: before, to: strategy } });
      return { organizationId, provider, strategy, updatedAt: now, updatedBy: by.actor };
    });
  }

  async listStrategies(organizationId: string): Promise<SelectionPolicyView[]> {
    const em = this.orm.em.fork();
    if ((await em.count(OrganizationEntity, { id: organizationId })) === 0) {
      throw new ServiceError("not_found", `organization "${organizationId}" not found`);
    }
    const rows = await em.find(SelectionStrategyEntity, { organizationId });
    return PROVIDER_NAMES.map((provider) => {
      const row = rows.find((r) => r.provider === provider);
      return row
        ? { organizationId, provider, strategy: row.strategy, updatedAt: row.updatedAt, updatedBy: row.updatedBy }
        : { organizationId, provider, strategy: "newest", updatedAt: null, updatedBy: null };
    });
  }
}
