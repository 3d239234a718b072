import { randomUUID } from "node:crypto";
import { LockMode, type FilterQuery } from "@mikro-orm/core";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Orm } from "../db/orm.js";
import { runChange, type Change, type ChangeListener } from "../db/change.js";
import { CredentialEntity, OrganizationEntity, type CredentialRow, type ProviderName } from "../db/entities.js";
import { ServiceError, invalid } from "../errors.js";
import { openStored, type BoundRow, type Keyring } from "../keyring/index.js";
import { malformedPageToken, PageTokens } from "../paging.js";
import { CredentialSearch } from "./credential-search.js";
import { comparableName, keyHint, NAME_MAX_LENGTH, UUID_PATTERN, validateApiBase, validateApiKey } from "./validation.js";

/** A credential as the API shows it: everything but the ciphertext. */
export type CredentialView = Omit<CredentialRow, "credentialNameKey" | "encryptedApiKey" | "keyId" | "keyBinding" | "activatedAt" | "deactivateAt"> & {
  /** The key is older than ROTATION_DAYS. */
  rotationDue: boolean;
};

/** ROTATION_DAYS' default: keys older than this are flagged "rotation due". */
export const DEFAULT_ROTATION_DAYS = 90;
const DAY_MS = 86_400_000;

export interface Actor {
  actor: string;
  source: string | null;
  /** The token `actor` acted through, when an admin token named them: audit rows record both. */
  via?: string | null;
  /** The role of the portal account `actor` is, when an admin token acts for one: audit rows record it. */
  role?: string | null;
}

export interface NewCredential {
  organizationId: string;
  provider: ProviderName;
  credentialName: string;
  /** Validated and trimmed. */
  apiKey: string;
  apiBase: string | null;
  /** 0-1000; default 1. */
  weight?: number;
}

export interface CredentialChanges {
  credentialName?: string;
  /** Raw; validated here against the API base the credential will have. */
  apiKey?: string;
  /** Raw; "" clears. */
  apiBase?: string;
  expectedVersion?: number;
  /** 0-1000, validated by the caller. */
  weight?: number;
  /**
   * Called with the key (new, or stored) and the api_base the credential will
   * have, before anything is written, when the key or api_base changes; it
   * throws to refuse the update (verify before saving).
   */
  verifyKey?: (apiKey: string, apiBase: string | null) => Promise<void>;
}

export interface RollInput {
  /** Raw; validated here against the API base the new credential will have. */
  apiKey: string;
  /** Raw; undefined: the old credential's; "": none. */
  apiBase?: string;
  /** 0-86400, validated by the caller: the old credential stays active this long beside the new one. */
  overlapSeconds: number;
  expectedVersion?: number;
  /** Checks the new key with the provider before anything is written; throws to refuse the roll. */
  verifyKey?: (provider: ProviderName, apiKey: string, apiBase: string | null) => Promise<void>;
}

export interface RollResult {
  credential: CredentialView;
  previous: CredentialView;
  /** When the old credential is (or was) deactivated. */
  previousDeactivatesAt: Date;
}

/** A credential as ExplainResolution lists it. */
export interface CredentialStanding {
  id: string;
  provider: ProviderName;
  credentialName: string;
  keyHint: string;
  weight: number;
  isActive: boolean;
  failing: boolean;
  deactivateAt: Date | null;
}

/** Longest overlap of a roll, in seconds (24 hours). */
export const MAX_ROLL_OVERLAP_SECONDS = 86_400;

/** Who carries out scheduled deactivations in the audit log. */
export const SWEEPER_ACTOR: Actor = { actor: "service", source: null };

/** Scheduled deactivations carried out per statement of a sweep. */
const SWEEP_BATCH = 100;

export interface ListQuery {
  organizationId: string;
  provider?: ProviderName;
  activeOnly: boolean;
  rotationDueOnly?: boolean;
  failingOnly?: boolean;
  limit: number;
  pageToken: string;
  /** Skip this many (numbered pages); 0 when paging by token (the handler refuses both). */
  offset?: number;
}

// The range of created_at times a page token may carry: 0001-01-01 to 9999-12-31 (what a timestamp parameter can hold).
const MIN_PAGE_TIME = -62_135_596_800_000;
const MAX_PAGE_TIME = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

export type { ChangeListener } from "../db/change.js";

/**
 * Stored credentials. Every mutation is one change (runChange) with its audit
 * row; keys pass through the keyring and nothing else.
 */
export class CredentialStore {
  private readonly pages: PageTokens;

  constructor(
    private readonly orm: Orm,
    private readonly keyring: Keyring,
    private readonly onChange: ChangeListener = () => undefined,
    private readonly rotationDays = DEFAULT_ROTATION_DAYS,
  ) {
    this.pages = new PageTokens(keyring);
  }

  private fleetQueries: CredentialSearch | undefined;

  /** The fleet queries over every organisation (SearchCredentials, ListUncoveredOrganizations): credential-search.ts. */
  get fleet(): CredentialSearch {
    return (this.fleetQueries ??= new CredentialSearch(this.orm, this.rotationDays, (row) => this.view(row)));
  }

  async create(input: NewCredential, by: Actor): Promise<CredentialView> {
    const id = randomUUID();
    const { token, keyId, binding } = this.keyring.encryptBound(input.apiKey, {
      id,
      organizationId: input.organizationId,
      provider: input.provider,
      apiBase: input.apiBase,
    });
    const now = new Date();
    const row: CredentialRow = {
      id,
      organizationId: input.organizationId,
      provider: input.provider,
      credentialName: input.credentialName,
      credentialNameKey: comparableName(input.credentialName),
      encryptedApiKey: token,
      keyId,
      keyBinding: binding,
      keyHint: keyHint(input.apiKey, input.provider),
      apiBase: input.apiBase,
      isActive: true,
      activatedAt: now,
      version: 1,
      createdAt: now,
      updatedAt: now,
      createdBy: by.actor,
      updatedBy: by.actor,
      lastUsedAt: null,
      weight: input.weight ?? 1,
      useCount: 0,
      keySetAt: now,
      checkOutcome: null,
      checkHttpStatus: null,
      checkLatencyMs: null,
      checkMessage: null,
      checkedAt: null,
      failureStreak: 0,
      failingSince: null,
    };
    await this.write(
      input.credentialName,
      async ({ em, audit, invalidate }) => {
        await this.refuseNameOfKeptRow(em, row);
        await em.insert(CredentialEntity, row);
        invalidate({ organizationId: row.organizationId, provider: row.provider, reason: "credential" });
        audit({
          ...by,
          action: "credential.create",
          organizationId: row.organizationId,
          credentialId: row.id,
          details: { provider: row.provider, credential_name: row.credentialName, key_hint: row.keyHint, api_base: row.apiBase, weight: row.weight },
        });
      },
      input.organizationId,
    );
    return this.view(row);
  }

  async get(id: string): Promise<CredentialView> {
    const row = await this.orm.em.fork().findOne(CredentialEntity, { id });
    if (!row) throw notFound(id);
    return this.view(row);
  }

  /** The organisation of each of these credentials that exists (the access policy's look-up; one statement). */
  async organizationsOf(ids: readonly string[]): Promise<Map<string, string>> {
    const rows = await this.orm.em.fork().find(CredentialEntity, { id: { $in: [...ids] } }, { fields: ["id", "organizationId"] });
    return new Map(rows.map((r) => [r.id, r.organizationId]));
  }

  /**
   * Every credential of the organisation (for one provider or all), as ExplainResolution lists them: no key, no
   * ciphertext. Active ones first, most recently activated first.
   */
  async standings(organizationId: string, provider?: ProviderName): Promise<CredentialStanding[]> {
    const where: FilterQuery<CredentialRow> = { organizationId };
    if (provider) where.provider = provider;
    const rows = await this.orm.em.fork().find(CredentialEntity, where, {
      fields: ["id", "provider", "credentialName", "keyHint", "weight", "isActive", "activatedAt", "createdAt", "failingSince", "deactivateAt"],
      orderBy: [{ isActive: "desc" }, { activatedAt: "desc" }, { createdAt: "desc" }, { id: "desc" }],
      disableIdentityMap: true,
    });
    return rows.map((r) => ({
      id: r.id,
      provider: r.provider,
      credentialName: r.credentialName,
      keyHint: r.keyHint,
      weight: r.weight,
      isActive: r.isActive,
      failing: r.failingSince !== null,
      deactivateAt: r.deactivateAt ?? null,
    }));
  }

  async list(query: ListQuery): Promise<{ credentials: CredentialView[]; nextPageToken: string; totalSize: number }> {
    const em = this.orm.em.fork();
    const after = this.pages.decode<[number, string]>("credentials", query.organizationId, query.pageToken, ["number", "string"]);
    // Authenticated tokens carry what this service wrote; still, never hand the query a value it cannot take.
    if (after && (!Number.isSafeInteger(after[0]) || after[0] < MIN_PAGE_TIME || after[0] > MAX_PAGE_TIME || !UUID_PATTERN.test(after[1]))) {
      throw malformedPageToken();
    }
    const where: FilterQuery<CredentialRow> = { organizationId: query.organizationId };
    if (query.provider) where.provider = query.provider;
    if (query.activeOnly) where.isActive = true;
    if (query.rotationDueOnly) where.keySetAt = { $lt: new Date(Date.now() - this.rotationDays * DAY_MS) };
    if (query.failingOnly) where.failingSince = { $ne: null };
    // The total counts every credential the filters match, whatever the page.
    const filters: FilterQuery<CredentialRow> = { ...where };
    if (after) {
      const createdAt = new Date(after[0]);
      where.$or = [{ createdAt: { $lt: createdAt } }, { createdAt, id: { $lt: after[1] } }];
    } else if ((await em.count(OrganizationEntity, { id: query.organizationId })) === 0) {
      throw new ServiceError("not_found", `organization "${query.organizationId}" not found`);
    }
    const [rows, totalSize] = await Promise.all([
      em.find(CredentialEntity, where, {
        orderBy: [{ createdAt: "desc" }, { id: "desc" }],
        limit: query.limit + 1,
        offset: after ? undefined : query.offset || undefined,
      }),
      this.orm.em.fork().count(CredentialEntity, filters),
    ]);
    const page = rows.slice(0, query.limit);
    const last = page[page.length - 1];
    const nextPageToken = rows.length > query.limit && last ? this.pages.encode("credentials", query.organizationId, [last.createdAt.getTime(), last.id]) : "";
    return { credentials: page.map((row) => this.view(row)), nextPageToken, totalSize };
  }

  async update(id: string, changes: CredentialChanges, by: Actor): Promise<CredentialView> {
    if (changes.verifyKey && (changes.apiKey !== undefined || changes.apiBase !== undefined)) await this.verifyBeforeUpdate(id, changes);
    return this.write(changes.credentialName ?? "", async ({ em, audit, invalidate }) => {
      // A detached copy (see lock): changed here as the row will be, written below with exactly what changed.
      const row = await this.lock(em, id, changes.expectedVersion, changes.apiKey !== undefined || changes.apiBase !== undefined);
      const changed: string[] = [];
      const patch: Partial<CredentialRow> = {};
      const set = <K extends keyof CredentialRow>(field: K, value: CredentialRow[K]) => {
        row[field] = value;
        patch[field] = value;
      };
      if (changes.credentialName !== undefined && changes.credentialName !== row.credentialName) {
        set("credentialName", changes.credentialName);
        set("credentialNameKey", comparableName(changes.credentialName));
        await this.refuseNameOfKeptRow(em, row);
        changed.push("credential_name");
      }
      if (changes.apiBase !== undefined) {
        const apiBase = validateApiBase(changes.apiBase);
        if (apiBase !== row.apiBase) {
          set("apiBase", apiBase);
          changed.push("api_base");
        }
      }
      if (changes.apiKey !== undefined) {
        const apiKey = validateApiKey(changes.apiKey, row.provider, row.apiBase);
        const { token, keyId, binding } = this.keyring.encryptBound(apiKey, boundRow(row));
        set("encryptedApiKey", token);
        set("keyId", keyId);
        set("keyBinding", binding);
        set("keyHint", keyHint(apiKey, row.provider));
        // A new key: its age, check and failure history start again.
        set("keySetAt", new Date());
        set("checkOutcome", null);
        set("checkHttpStatus", null);
        set("checkLatencyMs", null);
        set("checkMessage", null);
        set("checkedAt", null);
        set("failureStreak", 0);
        set("failingSince", null);
        changed.push("api_key");
      } else if (changed.includes("api_base")) {
        // The stored key is never sent to a new destination: whoever moves it must know it.
        throw keyRequiredForApiBase();
      }
      if (changes.weight !== undefined && changes.weight !== row.weight) {
        set("weight", changes.weight);
        changed.push("weight");
      }
      if (changed.length > 0) {
        Object.assign(patch, touch(row, by));
        await em.nativeUpdate(CredentialEntity, { id: row.id }, patch);
        invalidate({ organizationId: row.organizationId, provider: row.provider, reason: "credential" });
        audit({
          ...by,
          action: "credential.update",
          organizationId: row.organizationId,
          credentialId: row.id,
          details: { changed, key_hint: row.keyHint, credential_name: row.credentialName, api_base: row.apiBase, weight: row.weight },
        });
      }
      return this.view(row);
    });
  }

  async setActive(id: string, active: boolean, by: Actor): Promise<CredentialView> {
    return this.write("", async (change) => {
      const row = await this.lock(change.em, id);
      await applyActive(change, row, active, by);
      return this.view(row);
    });
  }

  /**
   * Runs `work` as one change of this store (runChange, with its constraint errors): for changes of several
   * credentials at once (credential-batch.ts), which lock them with lockMany and change them with applyActive and
   * deleteCredentialRows, as the single-credential methods do.
   */
  change<T>(work: (change: Change) => Promise<T>): Promise<T> {
    return this.write("", work);
  }

  /** Loads these credentials for update, locked in id order (so that concurrent batches cannot deadlock), by id; unknown ids are absent. */
  async lockMany(em: EntityManager, ids: readonly string[]): Promise<Map<string, CredentialRow>> {
    const rows = await em.find(
      CredentialEntity,
      { id: { $in: [...ids] } },
      { lockMode: LockMode.PESSIMISTIC_WRITE, orderBy: { id: "asc" }, disableIdentityMap: true },
    );
    return new Map(rows.map((row) => [row.id, row]));
  }

  /**
   * RollCredential: in one change, the new key becomes a new active credential (in use at once) with the old one's
   * name, organisation, provider, weight and API base (unless given); the old one is renamed
   * `<name> (replaced YYYY-MM-DD)` and deactivated now, or scheduled for deactivation after the overlap. The key is
   * checked with the provider first when asked (outside the transaction), and nothing is written unless it passes.
   */
  async roll(id: string, input: RollInput, by: Actor): Promise<RollResult> {
    let verified: { apiKey: string; apiBase: string | null } | undefined;
    if (input.verifyKey) {
      const current = await this.orm.em.fork().findOne(CredentialEntity, { id });
      if (!current) throw notFound(id);
      const apiBase = input.apiBase === undefined ? current.apiBase : validateApiBase(input.apiBase);
      const apiKey = validateApiKey(input.apiKey, current.provider, apiBase);
      await input.verifyKey(current.provider, apiKey, apiBase);
      verified = { apiKey, apiBase };
    }
    return this.write("", async ({ em, audit, invalidate }) => {
      const old = await this.lock(em, id, input.expectedVersion);
      const apiBase = input.apiBase === undefined ? old.apiBase : validateApiBase(input.apiBase);
      const apiKey = validateApiKey(input.apiKey, old.provider, apiBase);
      if (verified && verified.apiBase !== apiBase) {
        throw new ServiceError("aborted", "the credential's api_base changed while the new key was being checked; try again", "api_base");
      }
      const now = new Date();
      const deactivatesAt = new Date(now.getTime() + input.overlapSeconds * 1000);
      const wasActive = old.isActive;
      // The old one gives up its name first (names are unique per organisation and provider).
      const previousName = await this.replacedName(em, old, now);
      const oldName = old.credentialName;
      const oldPatch: Partial<CredentialRow> = { credentialName: previousName, credentialNameKey: comparableName(previousName) };
      if (input.overlapSeconds === 0 || !wasActive) {
        oldPatch.isActive = false;
        oldPatch.deactivateAt = null;
      } else {
        oldPatch.deactivateAt = deactivatesAt;
      }
      Object.assign(old, oldPatch);
      Object.assign(oldPatch, touch(old, by));
      await em.nativeUpdate(CredentialEntity, { id: old.id }, oldPatch);

      const newId = randomUUID();
      const { token, keyId, binding } = this.keyring.encryptBound(apiKey, { id: newId, organizationId: old.organizationId, provider: old.provider, apiBase });
      const row: CredentialRow = {
        id: newId,
        organizationId: old.organizationId,
        provider: old.provider,
        credentialName: oldName,
        credentialNameKey: comparableName(oldName),
        encryptedApiKey: token,
        keyId,
        keyBinding: binding,
        keyHint: keyHint(apiKey, old.provider),
        apiBase,
        isActive: true,
        activatedAt: now,
        version: 1,
        createdAt: now,
        updatedAt: now,
        createdBy: by.actor,
        updatedBy: by.actor,
        lastUsedAt: null,
        weight: old.weight,
        useCount: 0,
        keySetAt: now,
        checkOutcome: null,
        checkHttpStatus: null,
        checkLatencyMs: null,
        checkMessage: null,
        checkedAt: null,
        failureStreak: 0,
        failingSince: null,
        deactivateAt: null,
      };
      await this.refuseNameOfKeptRow(em, row);
      await em.insert(CredentialEntity, row);
      invalidate({ organizationId: row.organizationId, provider: row.provider, reason: "credential" });
      const previousDeactivatesAt = wasActive ? deactivatesAt : now;
      audit({
        ...by,
        action: "credential.roll",
        organizationId: row.organizationId,
        credentialId: row.id,
        target: old.id,
        details: {
          provider: row.provider,
          credential_name: row.credentialName,
          key_hint: row.keyHint,
          api_base: row.apiBase,
          weight: row.weight,
          previous_credential_id: old.id,
          previous_credential_name: previousName,
          previous_key_hint: old.keyHint,
          overlap_seconds: wasActive ? input.overlapSeconds : 0,
          previous_deactivates_at: previousDeactivatesAt.toISOString(),
          verified: verified !== undefined,
        },
      });
      return { credential: this.view(row), previous: this.view(old), previousDeactivatesAt };
    });
  }

  /** `<name> (replaced YYYY-MM-DD)`, cut to the name limit, and numbered when a roll of the same day took it. */
  private async replacedName(em: EntityManager, old: CredentialRow, now: Date): Promise<string> {
    const day = now.toISOString().slice(0, 10);
    const taken = new Set(
      (
        await em.find(
          CredentialEntity,
          { organizationId: old.organizationId, provider: old.provider, id: { $ne: old.id } },
          { fields: ["credentialName"], disableIdentityMap: true },
        )
      ).map((r) => comparableName(r.credentialName)),
    );
    for (let n = 1; ; n++) {
      const suffix = n === 1 ? ` (replaced ${day})` : ` (replaced ${day}, ${n})`;
      const base = [...old.credentialName]
        .slice(0, NAME_MAX_LENGTH - suffix.length)
        .join("")
        .trimEnd();
      const name = `${base}${suffix}`;
      if (!taken.has(comparableName(name))) return name;
    }
  }

  /**
   * Carries out the deactivations that are due (a roll's overlap ended), on any replica: each credential once
   * (rows are claimed with SKIP LOCKED and the schedule is cleared), audited and announced like a deactivation.
   * Returns how many were deactivated.
   */
  async deactivateDue(now = new Date()): Promise<number> {
    // Nearly always nothing is due: one indexed read, no transaction, no lock.
    const first = await this.orm.em.fork().findOne(CredentialEntity, { deactivateAt: { $lte: now } }, { fields: ["id"], disableIdentityMap: true });
    if (first === null) return 0;
    let total = 0;
    for (;;) {
      const done = await this.write("", async ({ em, audit, invalidate }) => {
        const due = await em.find(
          CredentialEntity,
          { deactivateAt: { $lte: now } },
          { lockMode: LockMode.PESSIMISTIC_PARTIAL_WRITE, limit: SWEEP_BATCH, orderBy: { deactivateAt: "asc" }, disableIdentityMap: true },
        );
        let deactivated = 0;
        for (const row of due) {
          const wasActive = row.isActive;
          row.isActive = false;
          row.deactivateAt = null;
          const patch: Partial<CredentialRow> = { isActive: false, deactivateAt: null };
          if (wasActive) Object.assign(patch, touch(row, SWEEPER_ACTOR));
          await em.nativeUpdate(CredentialEntity, { id: row.id }, patch);
          if (!wasActive) continue;
          deactivated++;
          invalidate({ organizationId: row.organizationId, provider: row.provider, reason: "credential" });
          audit({
            ...SWEEPER_ACTOR,
            action: "credential.deactivate",
            organizationId: row.organizationId,
            credentialId: row.id,
            details: { credential_name: row.credentialName, key_hint: row.keyHint, reason: "roll_overlap_ended" },
          });
        }
        return { claimed: due.length, deactivated };
      });
      total += done.deactivated;
      if (done.claimed < SWEEP_BATCH) return total;
    }
  }

  async delete(id: string, by: Actor): Promise<void> {
    await this.write("", async (change) => {
      const row = await this.lock(change.em, id);
      await deleteCredentialRows(change, [row], by);
    });
  }

  /**
   * Verify before saving: the key the credential will have (new, or the
   * stored one) is checked against the api_base it will have, before the
   * update's transaction; the update's own checks still run after.
   */
  private async verifyBeforeUpdate(id: string, changes: CredentialChanges): Promise<void> {
    const row = await this.orm.em.fork().findOne(CredentialEntity, { id }, { populate: ["encryptedApiKey", "keyBinding"] });
    if (!row) throw notFound(id);
    const apiBase = changes.apiBase === undefined ? row.apiBase : validateApiBase(changes.apiBase);
    if (apiBase !== row.apiBase && changes.apiKey === undefined) throw keyRequiredForApiBase();
    const apiKey =
      changes.apiKey !== undefined
        ? validateApiKey(changes.apiKey, row.provider, apiBase)
        : openStored(this.keyring, boundRow(row), row.encryptedApiKey, row.keyId, row.keyBinding);
    await changes.verifyKey!(apiKey, apiBase);
  }

  /** What the API shows of a row. */
  view(row: CredentialRow, now = Date.now()): CredentialView {
    return {
      id: row.id,
      organizationId: row.organizationId,
      provider: row.provider,
      credentialName: row.credentialName,
      keyHint: row.keyHint,
      apiBase: row.apiBase,
      isActive: row.isActive,
      version: row.version,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
      createdBy: row.createdBy,
      updatedBy: row.updatedBy,
      lastUsedAt: row.lastUsedAt,
      weight: row.weight,
      useCount: Number(row.useCount),
      keySetAt: row.keySetAt,
      checkOutcome: row.checkOutcome,
      checkHttpStatus: row.checkHttpStatus,
      checkLatencyMs: row.checkLatencyMs,
      checkMessage: row.checkMessage,
      checkedAt: row.checkedAt,
      failureStreak: row.failureStreak,
      failingSince: row.failingSince,
      rotationDue: row.keySetAt.getTime() < now - this.rotationDays * DAY_MS,
    };
  }

  /**
   * Loads a row for update, holding its lock until the transaction ends (also used by KeyHealth). The row is a
   * detached copy (`disableIdentityMap`): `em` does not manage it, so changing its fields writes nothing; callers
   * write their changes with em.nativeUpdate (runChange's transaction never flushes).
   */
  async lock(em: EntityManager, id: string, expectedVersion?: number, withKey = false): Promise<CredentialRow> {
    const row = await em.findOne(
      CredentialEntity,
      { id },
      { lockMode: LockMode.PESSIMISTIC_WRITE, populate: withKey ? ["encryptedApiKey", "keyBinding"] : [], disableIdentityMap: true },
    );
    if (!row) throw notFound(id);
    if (expectedVersion !== undefined && row.version !== expectedVersion) {
      throw new ServiceError(
        "aborted",
        `expected_version: the credential is at version ${row.version}, not ${expectedVersion}; it was changed by someone else, reload it and try again`,
        "expected_version",
        undefined,
        "STALE_VERSION",
      );
    }
    return row;
  }

  /**
   * Refuses the row's name when it meets (in comparable form) the name of another row of its organisation and
   * provider that has no credential_name_key: rows kept by the credential_name_key migration, or written by a
   * replica that predates it. The unique index on credential_name_key covers every other row.
   */
  private async refuseNameOfKeptRow(em: EntityManager, row: CredentialRow): Promise<void> {
    const kept = await em.find(
      CredentialEntity,
      { organizationId: row.organizationId, provider: row.provider, credentialNameKey: null, id: { $ne: row.id } },
      { fields: ["id", "credentialName"], disableIdentityMap: true },
    );
    if (kept.some((other) => comparableName(other.credentialName) === row.credentialNameKey)) throw nameTaken(row.credentialName);
  }

  /** Runs a mutation as one change (runChange), turning constraint violations into domain errors. */
  private write<T>(name: string, work: (change: Change) => Promise<T>, organizationId?: string): Promise<T> {
    return runChange(this.orm, work, {
      onChange: this.onChange,
      constraints: {
        unique: () => nameTaken(name),
        foreignKey: () => new ServiceError("not_found", `organization "${organizationId}" not found`),
      },
    });
  }
}

/**
 * ActivateCredential's and DeactivateCredential's change of a locked row (`lock`, `lockMany`), in `change`: nothing
 * when it is already so; else the row (and `row`) changed, its resolutions invalidated and the change audited.
 * Activating sets activated_at to `activatedAt` (the most recently activated credential is the one ResolveKey
 * prefers) and drops a scheduled deactivation (a roll's overlap). Returns whether anything changed.
 */
export async function applyActive(
  { em, audit, invalidate }: Change,
  row: CredentialRow,
  active: boolean,
  by: Actor,
  activatedAt = new Date(),
): Promise<boolean> {
  if (row.isActive === active && !(active && row.deactivateAt)) return false;
  const scheduled = row.deactivateAt ?? null;
  row.isActive = active;
  row.deactivateAt = null;
  const patch: Partial<CredentialRow> = { isActive: active, deactivateAt: null };
  if (active) patch.activatedAt = row.activatedAt = activatedAt;
  Object.assign(patch, touch(row, by));
  await em.nativeUpdate(CredentialEntity, { id: row.id }, patch);
  invalidate({ organizationId: row.organizationId, provider: row.provider, reason: "credential" });
  audit({
    ...by,
    action: active ? "credential.activate" : "credential.deactivate",
    organizationId: row.organizationId,
    credentialId: row.id,
    details: scheduled
      ? { credential_name: row.credentialName, key_hint: row.keyHint, cancelled_deactivate_at: scheduled.toISOString() }
      : { credential_name: row.credentialName, key_hint: row.keyHint },
  });
  return true;
}

/**
 * DeleteCredential's change of locked rows, in `change`: deleted in one statement, each one's resolutions invalidated
 * and its deletion audited (one event per credential, in the order given). Also used by a cascading DeleteOrganization.
 */
export async function deleteCredentialRows({ em, audit, invalidate }: Change, rows: readonly CredentialRow[], by: Actor): Promise<void> {
  if (rows.length === 0) return;
  await em.nativeDelete(CredentialEntity, { id: { $in: rows.map((row) => row.id) } });
  for (const row of rows) {
    invalidate({ organizationId: row.organizationId, provider: row.provider, reason: "credential" });
    audit({
      ...by,
      action: "credential.delete",
      organizationId: row.organizationId,
      credentialId: row.id,
      details: { provider: row.provider, credential_name: row.credentialName, key_hint: row.keyHint },
    });
  }
}

/** A change: the version goes up, updated_at/updated_by record it. Sets them on `row`, and returns them to write. */
function touch(row: CredentialRow, by: Actor): Pick<CredentialRow, "version" | "updatedAt" | "updatedBy"> {
  row.version += 1;
  row.updatedAt = new Date();
  row.updatedBy = by.actor;
  return { version: row.version, updatedAt: row.updatedAt, updatedBy: row.updatedBy };
}

function boundRow(row: CredentialRow): BoundRow {
  return { id: row.id, organizationId: row.organizationId, provider: row.provider, apiBase: row.apiBase };
}

/** A name that meets another credential's of the organisation and provider (ignoring case and compatibility forms). */
function nameTaken(name: string): ServiceError {
  return new ServiceError(
    "already_exists",
    `credential_name: a credential named "${name}" already exists for this organization and provider`,
    "credential_name",
    undefined,
    "CREDENTIAL_NAME_TAKEN",
  );
}

export function notFound(id: string): ServiceError {
  return new ServiceError("not_found", `credential "${id}" not found`);
}

/** An update that changes api_base without the key: the stored key is not re-sent to another destination. */
function keyRequiredForApiBase(): ServiceError {
  return invalid("api_key", "enter the key again to change api_base: a stored key is never sent to a new api_base without it");
}
