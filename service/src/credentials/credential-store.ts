import { randomUUID } from "node:crypto";
import { LockMode, type FilterQuery } from "@mikro-orm/core";
import { isForeignKeyViolation, isUniqueViolation } from "../db/errors.js";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Orm } from "../db/orm.js";
import { CredentialEntity, OrganizationEntity, type CredentialRow, type ProviderName } from "../db/entities.js";
import { ServiceError, invalid } from "../errors.js";
import { recordAudit } from "../audit/audit-store.js";
import type { BoundRow, Keyring } from "../keyring/keyring.js";
import { decryptStoredKey } from "./resolver.js";
import { publishInvalidation, type Invalidation } from "./invalidation.js";
import { decodePageToken, encodePageToken } from "../paging.js";
import { PROVIDERS } from "./providers.js";
import { keyHint, UUID_PATTERN, validateApiBase, validateApiKey } from "./validation.js";

/** A credential as the API shows it: everything but the ciphertext. */
export type CredentialView = Omit<CredentialRow, "encryptedApiKey" | "keyId" | "keyBinding" | "activatedAt">;

export interface Actor {
  actor: string;
  source: string | null;
}

export interface NewCredential {
  organizationId: string;
  provider: ProviderName;
  credentialName: string;
  /** Validated and trimmed. */
  apiKey: string;
  apiBase: string | null;
}

export interface CredentialChanges {
  credentialName?: string;
  /** Raw; validated here against the API base the credential will have. */
  apiKey?: string;
  /** Raw; "" clears. */
  apiBase?: string;
  expectedVersion?: number;
}

export interface ListQuery {
  organizationId: string;
  provider?: ProviderName;
  activeOnly: boolean;
  limit: number;
  pageToken: string;
}

// The range of created_at times a page token may carry: 0001-01-01 to the largest JS Date.
const MIN_PAGE_TIME = -62_135_596_800_000;
const MAX_PAGE_TIME = 8.64e15;

/** Called after a change commits with what it makes stale (this replica's cache; other replicas hear it via NOTIFY). */
export type ChangeListener = (change: Invalidation) => void;

/**
 * Stored credentials. Every mutation runs in one transaction with its audit
 * row; keys pass through the keyring and nothing else.
 */
export class CredentialStore {
  constructor(
    private readonly orm: Orm,
    private readonly keyring: Keyring,
    private readonly onChange: ChangeListener = () => undefined,
  ) {}

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
    };
    await this.write(input.credentialName, async (em) => {
      em.create(CredentialEntity, row);
      await publishInvalidation(em, { organizationId: row.organizationId, provider: row.provider });
      recordAudit(em, {
        ...by,
        action: "credential.create",
        organizationId: row.organizationId,
        credentialId: row.id,
        details: { provider: row.provider, credential_name: row.credentialName, key_hint: row.keyHint, api_base: row.apiBase },
      });
    }, input.organizationId);
    this.onChange({ organizationId: row.organizationId, provider: row.provider });
    return view(row);
  }

  async get(id: string): Promise<CredentialView> {
    const row = await this.orm.em.fork().findOne(CredentialEntity, { id });
    if (!row) throw notFound(id);
    return view(row);
  }

  async list(query: ListQuery): Promise<{ credentials: CredentialView[]; nextPageToken: string }> {
    const em = this.orm.em.fork();
    const after = decodePageToken<[number, string]>(query.pageToken, ["number", "string"]);
    // A token of the right shape can still carry values the query cannot use.
    if (after && (!Number.isSafeInteger(after[0]) || after[0] < MIN_PAGE_TIME || after[0] > MAX_PAGE_TIME || !UUID_PATTERN.test(after[1]))) {
      throw invalid("page_token", "is malformed; pass the next_page_token of the previous page unchanged");
    }
    const where: FilterQuery<CredentialRow> = { organizationId: query.organizationId };
    if (query.provider) where.provider = query.provider;
    if (query.activeOnly) where.isActive = true;
    if (after) {
      const createdAt = new Date(after[0]);
      where.$or = [{ createdAt: { $lt: createdAt } }, { createdAt, id: { $lt: after[1] } }];
    } else if ((await em.count(OrganizationEntity, { id: query.organizationId })) === 0) {
      throw new ServiceError("not_found", `organization "${query.organizationId}" not found`);
    }
    const rows = await em.find(CredentialEntity, where, {
      orderBy: [{ createdAt: "desc" }, { id: "desc" }],
      limit: query.limit + 1,
    });
    const page = rows.slice(0, query.limit);
    const last = page[page.length - 1];
    const nextPageToken = rows.length > query.limit && last ? encodePageToken([last.createdAt.getTime(), last.id]) : "";
    return { credentials: page.map(view), nextPageToken };
  }

  async update(id: string, changes: CredentialChanges, by: Actor): Promise<CredentialView> {
    let affected: CredentialRow | undefined;
    const result = await this.write(changes.credentialName ?? "", async (em) => {
      const row = await this.lock(em, id, changes.expectedVersion, changes.apiKey !== undefined || changes.apiBase !== undefined);
      const before = boundRow(row);
      const changed: string[] = [];
      if (changes.credentialName !== undefined && changes.credentialName !== row.credentialName) {
        row.credentialName = changes.credentialName;
        changed.push("credential_name");
      }
      if (changes.apiBase !== undefined) {
        const apiBase = validateApiBase(changes.apiBase);
        if (apiBase !== row.apiBase) {
          row.apiBase = apiBase;
          changed.push("api_base");
        }
      }
      if (changes.apiKey !== undefined) {
        const apiKey = validateApiKey(changes.apiKey, row.provider, row.apiBase);
        const { token, keyId, binding } = this.keyring.encryptBound(apiKey, boundRow(row));
        row.encryptedApiKey = token;
        row.keyId = keyId;
        row.keyBinding = binding;
        row.keyHint = keyHint(apiKey, row.provider);
        changed.push("api_key");
      } else if (changed.includes("api_base")) {
        // The binding covers api_base: check the stored key against the row as it was, then bind it to the new api_base.
        const apiKey = decryptStoredKey(this.keyring, before, row.encryptedApiKey, row.keyId, row.keyBinding);
        // The stored key was accepted for a proxy; without one it goes to the provider, so it must be the provider's kind of key.
        if (row.apiBase === null) this.checkStoredKeyWithoutApiBase(row, apiKey);
        row.keyBinding = this.keyring.rebind(boundRow(row), row.encryptedApiKey, row.keyId);
      }
      if (changed.length > 0) {
        touch(row, by);
        await publishInvalidation(em, { organizationId: row.organizationId, provider: row.provider });
        recordAudit(em, {
          ...by,
          action: "credential.update",
          organizationId: row.organizationId,
          credentialId: row.id,
          details: { changed, key_hint: row.keyHint, credential_name: row.credentialName, api_base: row.apiBase },
        });
        affected = row;
      }
      return view(row);
    });
    if (affected) this.onChange({ organizationId: affected.organizationId, provider: affected.provider });
    return result;
  }

  async setActive(id: string, active: boolean, by: Actor): Promise<CredentialView> {
    let affected: CredentialRow | undefined;
    const result = await this.write("", async (em) => {
      const row = await this.lock(em, id);
      if (row.isActive !== active) {
        row.isActive = active;
        // The most recently activated credential is the one ResolveKey prefers.
        if (active) row.activatedAt = new Date();
        touch(row, by);
        await publishInvalidation(em, { organizationId: row.organizationId, provider: row.provider });
        recordAudit(em, {
          ...by,
          action: active ? "credential.activate" : "credential.deactivate",
          organizationId: row.organizationId,
          credentialId: row.id,
          details: { credential_name: row.credentialName, key_hint: row.keyHint },
        });
        affected = row;
      }
      return view(row);
    });
    if (affected) this.onChange({ organizationId: affected.organizationId, provider: affected.provider });
    return result;
  }

  async delete(id: string, by: Actor): Promise<void> {
    const row = await this.write("", async (em) => {
      const row = await this.lock(em, id);
      em.remove(row);
      await publishInvalidation(em, { organizationId: row.organizationId, provider: row.provider });
      recordAudit(em, {
        ...by,
        action: "credential.delete",
        organizationId: row.organizationId,
        credentialId: row.id,
        details: { provider: row.provider, credential_name: row.credentialName, key_hint: row.keyHint },
      });
      return row;
    });
    this.onChange({ organizationId: row.organizationId, provider: row.provider });
  }

  private checkStoredKeyWithoutApiBase(row: CredentialRow, apiKey: string): void {
    try {
      validateApiKey(apiKey, row.provider, null);
    } catch (error) {
      if (error instanceof ServiceError) {
        const { label, keyPrefix } = PROVIDERS[row.provider];
        throw invalid(
          "api_base",
          `cannot be cleared: the stored key is not in the ${label} format (starting with "${keyPrefix}") and works only through an api_base; send a new api_key in the same update`,
        );
      }
      throw error;
    }
  }

  /** Loads a row for update, holding its lock until the transaction ends. */
  private async lock(em: EntityManager, id: string, expectedVersion?: number, withKey = false): Promise<CredentialRow> {
    const row = await em.findOne(
      CredentialEntity,
      { id },
      { lockMode: LockMode.PESSIMISTIC_WRITE, populate: withKey ? ["encryptedApiKey", "keyBinding"] : [] },
    );
    if (!row) throw notFound(id);
    if (expectedVersion !== undefined && row.version !== expectedVersion) {
      throw new ServiceError(
        "aborted",
        `expected_version: the credential is at version ${row.version}, not ${expectedVersion}; it was changed by someone else, reload it and try again`,
        "expected_version",
      );
    }
    return row;
  }

  /** Runs a mutation in a transaction, turning constraint violations into domain errors. */
  private async write<T>(name: string, work: (em: EntityManager) => Promise<T>, organizationId?: string): Promise<T> {
    try {
      return await this.orm.em.fork().transactional(work);
    } catch (error) {
      if (isUniqueViolation(error)) {
        throw new ServiceError(
          "already_exists",
          `credential_name: a credential named "${name}" already exists for this organization and provider`,
          "credential_name",
        );
      }
      if (isForeignKeyViolation(error)) {
        throw new ServiceError("not_found", `organization "${organizationId}" not found`);
      }
      throw error;
    }
  }
}

function touch(row: CredentialRow, by: Actor): void {
  row.version += 1;
  row.updatedAt = new Date();
  row.updatedBy = by.actor;
}

function boundRow(row: CredentialRow): BoundRow {
  return { id: row.id, organizationId: row.organizationId, provider: row.provider, apiBase: row.apiBase };
}

function notFound(id: string): ServiceError {
  return new ServiceError("not_found", `credential "${id}" not found`);
}

function view(row: CredentialRow): CredentialView {
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
  };
}
