import type { Orm } from "../db/orm.js";
import type { ProviderName } from "../db/entities.js";
import { ServiceError } from "../errors.js";
import { DecryptError, type Keyring } from "../keyring/keyring.js";
import { PROVIDERS } from "./providers.js";

export type ResolveScope = { organizationId: string } | { teamId: string };

export interface Resolution {
  apiKey: string;
  apiBase: string | null;
  source: "organization" | "environment";
  credentialId: string | null;
  organizationId: string;
}

interface ResolveRow {
  organization_id: string;
  id: string | null;
  encrypted_api_key: string | null;
  key_id: string | null;
  api_base: string | null;
}

// One round trip: the scope's organisation and, if any, its preferred active
// credential (the most recently activated). No row means no such scope.
const ACTIVE_CREDENTIAL = `
  left join lateral (
    select c.id, c.encrypted_api_key, c.key_id, c.api_base
    from provider_credentials c
    where c.organization_id = s.organization_id and c.provider = ? and c.is_active
    order by c.activated_at desc, c.id desc
    limit 1
  ) c on true`;
const BY_ORGANIZATION = `select s.organization_id, c.* from (select id as organization_id from organizations where id = ?) s ${ACTIVE_CREDENTIAL}`;
const BY_TEAM = `select s.organization_id, c.* from (select organization_id from teams where id = ?) s ${ACTIVE_CREDENTIAL}`;

/** Decrypts a stored key; a key the master keys cannot open is DATA_LOSS, never anything softer. */
export function decryptStoredKey(keyring: Keyring, credentialId: string, token: string, keyId: string): string {
  try {
    return keyring.decrypt(token, keyId);
  } catch (error) {
    if (error instanceof DecryptError) {
      throw new ServiceError(
        "data_loss",
        `credential "${credentialId}" cannot be decrypted with the configured MASTER_KEY (it was encrypted under key ${keyId})`,
      );
    }
    throw error;
  }
}

/**
 * ResolveKey's rule: the organisation's most recently activated active
 * credential, else the provider's environment variable, else
 * FAILED_PRECONDITION. A stored key that does not decrypt is DATA_LOSS, never
 * a fall back to the environment.
 */
export class KeyResolver {
  private readonly usedSinceFlush = new Set<string>();
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly orm: Orm,
    private readonly keyring: Keyring,
    private readonly environmentKeys: ReadonlyMap<ProviderName, { apiKey: string; variable: string }>,
    /** How often last_used_at is written, in ms: uses are batched, never a write per call. */
    private readonly usageFlushMs = 10_000,
  ) {}

  async resolve(scope: ResolveScope, provider: ProviderName): Promise<Resolution> {
    const [sql, id] = "teamId" in scope ? [BY_TEAM, scope.teamId] : [BY_ORGANIZATION, scope.organizationId];
    const rows: ResolveRow[] = await this.orm.em.getConnection().execute(sql, [id, provider]);
    const row = rows[0];
    if (!row) {
      throw new ServiceError("not_found", "teamId" in scope ? `team "${id}" not found` : `organization "${id}" not found`);
    }
    if (row.id !== null && row.encrypted_api_key !== null && row.key_id !== null) {
      const apiKey = decryptStoredKey(this.keyring, row.id, row.encrypted_api_key, row.key_id);
      this.noteUse(row.id);
      return { apiKey, apiBase: row.api_base, source: "organization", credentialId: row.id, organizationId: row.organization_id };
    }
    const fallback = this.environmentKeys.get(provider);
    if (fallback) {
      return { apiKey: fallback.apiKey, apiBase: null, source: "environment", credentialId: null, organizationId: row.organization_id };
    }
    const info = PROVIDERS[provider];
    throw new ServiceError(
      "failed_precondition",
      `organization "${row.organization_id}" has no active ${info.label} credential and ${info.envVars.join(" / ")} is not set`,
    );
  }

  private noteUse(credentialId: string): void {
    this.usedSinceFlush.add(credentialId);
    this.flushTimer ??= setTimeout(() => void this.flushUsage(), this.usageFlushMs).unref();
  }

  /** Writes last_used_at for every credential handed out since the last flush. */
  async flushUsage(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.usedSinceFlush.size === 0) return;
    const ids = [...this.usedSinceFlush];
    this.usedSinceFlush.clear();
    try {
      await this.orm.em
        .getConnection()
        .execute("update provider_credentials set last_used_at = now() where id = any(string_to_array(?, ',')::uuid[])", [
          ids.join(","),
        ]);
    } catch {
      // Usage times are best effort: a failed write is retried with the next batch.
      for (const id of ids) this.usedSinceFlush.add(id);
    }
  }
}
