import type { Orm } from "../db/orm.js";
import { runChange } from "../db/change.js";
import type { ProviderName } from "../db/entities.js";
import { BindingError, DecryptError, type BoundRow, type Keyring } from "../keyring/index.js";
import { resealTwoFactorSecrets, type ResealReport } from "../admins/admin-store.js";

export interface RewrapProgress {
  done: number;
  total: number;
  failed: number;
}

export interface RewrapReport {
  rewrapped: number;
  /** Rows no configured key can decrypt, or not bound to their row: left untouched, reported by id. */
  failed: Array<{ id: string; keyId: string; reason: string }>;
  /** Rows still under an old key because they stayed locked by editors through every pass. */
  stillLocked: number;
  passes: number;
  ms: number;
  /** Portal accounts' TOTP secrets sealed again under the primary key, and those no configured key opens. */
  twoFactorSecrets: ResealReport;
}

export interface RewrapOptions {
  batchSize?: number;
  /** How many passes to make over rows that were locked by concurrent edits. */
  maxPasses?: number;
  onProgress?: (progress: RewrapProgress) => void;
  actor: string;
}

interface Row {
  id: string;
  organization_id: string;
  provider: ProviderName;
  api_base: string | null;
  encrypted_api_key: string;
  key_id: string;
  key_binding: string | null;
  /** Written before row binding existed and not yet bound (listed in provider_credentials_unbound). */
  unbound: boolean;
}

const ROW_COLUMNS = `c.id, c.organization_id, c.provider, c.api_base, c.encrypted_api_key, c.key_id, c.key_binding,
  exists (select 1 from provider_credentials_unbound u where u.id = c.id) as unbound`;

function boundRow(row: Row): BoundRow {
  return { id: row.id, organizationId: row.organization_id, provider: row.provider, apiBase: row.api_base };
}

/** The plaintext of a stored row, its binding checked. Throws DecryptError or BindingError. */
function openRow(keyring: Keyring, row: Row): string {
  return keyring.decryptBound(boundRow(row), row.encrypted_api_key, row.key_id, row.key_binding);
}

/** Written before row binding existed, listed by the migration that introduced it, and not bound since. */
function waitingToBeBound(row: Row): boolean {
  return row.unbound && row.key_binding === null;
}

function failureReason(error: unknown, row: Row): string {
  if (error instanceof BindingError && waitingToBeBound(row)) {
    return "written before row binding existed and not bound yet: run npm run bind-legacy-keys first";
  }
  if (error instanceof BindingError) {
    return "not bound to its row: the ciphertext, organization, provider or api_base was changed outside the service (moved, copied or edited)";
  }
  return "does not decrypt with any configured key (corrupted or tampered)";
}

/**
 * Re-encrypts every credential not under the keyring's primary key (Vault's
 * rewrap, MultiFernet's rotate). Batches run in their own transactions and
 * lock their rows with SKIP LOCKED, so administrators can keep editing: a row
 * being edited is skipped and retried in a later pass. Killed at any point,
 * nothing is lost (each row is either old or new ciphertext, both readable
 * while the old key stays configured) and a rerun finishes the job.
 * Nothing here ever returns or logs a plaintext key.
 */
export async function rewrapAll(orm: Orm, keyring: Keyring, options: RewrapOptions): Promise<RewrapReport> {
  const started = Date.now();
  const batchSize = options.batchSize ?? 500;
  const maxPasses = options.maxPasses ?? 20;
  const conn = orm.em.getConnection();
  const [{ n }] = await conn.execute<Array<{ n: string }>>("select count(*) as n from provider_credentials where key_id <> ?", [keyring.primaryKeyId]);
  const total = Number(n);
  const failed = new Map<string, { keyId: string; reason: string }>();
  let rewrapped = 0;
  let passes = 0;
  let remaining = total;

  while (remaining > 0 && passes < maxPasses) {
    passes++;
    let after = "00000000-0000-0000-0000-000000000000";
    for (;;) {
      const result = await runChange(orm, async ({ em, invalidate }) => {
        const tx = em.getConnection();
        const ctx = em.getTransactionContext();
        const rows: Row[] = await tx.execute(
          `select ${ROW_COLUMNS} from provider_credentials c
           where c.key_id <> ? and c.id > ? order by c.id limit ? for update of c skip locked`,
          [keyring.primaryKeyId, after, batchSize],
          "all",
          ctx,
        );
        let count = 0;
        for (const row of rows) {
          if (failed.has(row.id)) continue;
          let plaintext: string;
          try {
            plaintext = openRow(keyring, row);
          } catch (error) {
            if (!(error instanceof DecryptError) && !(error instanceof BindingError)) throw error;
            failed.set(row.id, { keyId: row.key_id, reason: failureReason(error, row) });
            continue;
          }
          const { token, keyId, binding } = keyring.encryptBound(plaintext, boundRow(row));
          await tx.execute(
            "update provider_credentials set encrypted_api_key = ?, key_id = ?, key_binding = ? where id = ?",
            [token, keyId, binding, row.id],
            "run",
            ctx,
          );
          invalidate({ organizationId: row.organization_id, provider: row.provider, reason: "credential" });
          count++;
        }
        return { count, last: rows[rows.length - 1]?.id, size: rows.length };
      });
      rewrapped += result.count;
      options.onProgress?.({ done: rewrapped, total, failed: failed.size });
      if (result.size < batchSize || !result.last) break;
      after = result.last;
    }
    const [{ n: left }] = await conn.execute<Array<{ n: string }>>("select count(*) as n from provider_credentials where key_id <> ?", [keyring.primaryKeyId]);
    remaining = Number(left) - failed.size;
    if (remaining > 0) await new Promise((r) => setTimeout(r, Math.min(200 * passes, 2_000)));
  }

  // The accounts' TOTP secrets are sealed under a key derived from the same master key: they move with it.
  const twoFactorSecrets = await resealTwoFactorSecrets(orm, keyring);
  const report: RewrapReport = {
    rewrapped,
    failed: [...failed].map(([id, f]) => ({ id, ...f })),
    stillLocked: Math.max(0, remaining),
    passes,
    ms: Date.now() - started,
    twoFactorSecrets,
  };
  await runChange(orm, async ({ audit }) =>
    audit({
      actor: options.actor,
      action: "master_key.rotate",
      target: keyring.primaryKeyId,
      details: {
        rewrapped: report.rewrapped,
        failed: report.failed.length,
        still_locked: report.stillLocked,
        total,
        two_factor_secrets_resealed: twoFactorSecrets.resealed,
        two_factor_secrets_failed: twoFactorSecrets.failed.length,
      },
    }),
  );
  return report;
}

export interface VerifyReport {
  checked: number;
  byKeyId: Record<string, number>;
  /** Rows written before row binding existed, waiting for an operator to bind them (npm run bind-legacy-keys); refused until then. */
  unbound: number;
  failures: Array<{ id: string; organizationId: string; provider: string; keyId: string; reason: string }>;
}

/** Decrypts every stored credential (in batches) and reports the ones that fail, never a key. */
export async function verifyAll(orm: Orm, keyring: Keyring, onProgress?: (checked: number, total: number) => void): Promise<VerifyReport> {
  const conn = orm.em.getConnection();
  const [{ n }] = await conn.execute<Array<{ n: string }>>("select count(*) as n from provider_credentials");
  const total = Number(n);
  const report: VerifyReport = { checked: 0, byKeyId: {}, unbound: 0, failures: [] };
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const rows: Row[] = await conn.execute(`select ${ROW_COLUMNS} from provider_credentials c where c.id > ? order by c.id limit 1000`, [after]);
    for (const row of rows) {
      report.byKeyId[row.key_id] = (report.byKeyId[row.key_id] ?? 0) + 1;
      const fail = (reason: string) =>
        report.failures.push({ id: row.id, organizationId: row.organization_id, provider: row.provider, keyId: row.key_id, reason });
      if (!keyring.has(row.key_id)) fail(`encrypted under key ${row.key_id}, which MASTER_KEY does not hold`);
      try {
        if (waitingToBeBound(row)) {
          keyring.decrypt(row.encrypted_api_key, row.key_id);
          report.unbound++;
        } else {
          openRow(keyring, row);
        }
      } catch (error) {
        if (!(error instanceof DecryptError) && !(error instanceof BindingError)) throw error;
        if (keyring.has(row.key_id) || error instanceof BindingError) fail(failureReason(error, row));
      }
      report.checked++;
    }
    onProgress?.(report.checked, total);
    if (rows.length < 1000) break;
    after = rows[rows.length - 1].id;
  }
  return report;
}

/** A stored key written before row binding existed, as bind-legacy-keys lists it (never the key). */
export interface LegacyRow {
  id: string;
  organizationId: string;
  provider: ProviderName;
  apiBase: string | null;
  credentialName: string;
  keyHint: string;
  createdAt: Date;
  /** Whether a configured master key opens it; one that does not cannot be bound. */
  decrypts: boolean;
  /** The ciphertext as listed: binding refuses a row whose ciphertext or bound fields changed since. */
  encryptedApiKey: string;
}

interface LegacyQueryRow extends Row {
  credential_name: string;
  key_hint: string;
  created_at: Date;
}

const LEGACY_SELECT = `select ${ROW_COLUMNS}, c.credential_name, c.key_hint, c.created_at
  from provider_credentials c join provider_credentials_unbound u on u.id = c.id where c.key_binding is null`;

/** How many stored keys wait for an operator to bind them (the service logs it at start). */
export async function countLegacyRows(orm: Orm): Promise<number> {
  const [{ n }] = await orm.em
    .getConnection()
    .execute<Array<{ n: string }>>(
      "select count(*) as n from provider_credentials c join provider_credentials_unbound u on u.id = c.id where c.key_binding is null",
    );
  return Number(n);
}

/** The stored keys waiting to be bound: listed by the migration that introduced binding, still without a binding. */
export async function listLegacyRows(orm: Orm, keyring: Keyring): Promise<LegacyRow[]> {
  const rows: LegacyQueryRow[] = await orm.em.getConnection().execute(`${LEGACY_SELECT} order by c.organization_id, c.provider, c.id`);
  return rows.map((row) => {
    let decrypts = true;
    try {
      keyring.decrypt(row.encrypted_api_key, row.key_id);
    } catch (error) {
      if (!(error instanceof DecryptError)) throw error;
      decrypts = false;
    }
    return {
      id: row.id,
      organizationId: row.organization_id,
      provider: row.provider,
      apiBase: row.api_base,
      credentialName: row.credential_name,
      keyHint: row.key_hint,
      createdAt: new Date(row.created_at),
      decrypts,
      encryptedApiKey: row.encrypted_api_key,
    };
  });
}

/**
 * Binds the listed rows to their rows (an operator's decision: bind-legacy-keys lists them and
 * asks first), each audited as credential.bind. A row is bound only if it is still waiting and
 * its ciphertext, organisation, provider and api_base are what was listed; otherwise it is
 * skipped and left refused.
 */
export async function bindLegacyRows(orm: Orm, keyring: Keyring, listed: readonly LegacyRow[], actor: string): Promise<{ bound: string[]; skipped: string[] }> {
  const bound: string[] = [];
  const skipped: string[] = [];
  for (let at = 0; at < listed.length; at += 500) {
    const batch = listed.slice(at, at + 500);
    const byId = new Map(batch.map((row) => [row.id, row]));
    await runChange(orm, async ({ em, audit, invalidate }) => {
      const tx = em.getConnection();
      const ctx = em.getTransactionContext();
      const ids = [...byId.keys()];
      const rows: LegacyQueryRow[] = await tx.execute(
        `${LEGACY_SELECT} and c.id in (${ids.map(() => "?").join(", ")}) order by c.id for update of c`,
        ids,
        "all",
        ctx,
      );
      const found = new Set<string>();
      for (const row of rows) {
        const was = byId.get(row.id)!;
        if (
          row.encrypted_api_key !== was.encryptedApiKey ||
          row.organization_id !== was.organizationId ||
          row.provider !== was.provider ||
          row.api_base !== was.apiBase
        ) {
          continue;
        }
        let binding: string;
        try {
          binding = keyring.rebind(boundRow(row), row.encrypted_api_key, row.key_id);
        } catch (error) {
          if (!(error instanceof DecryptError)) throw error;
          continue;
        }
        await tx.execute("update provider_credentials set key_binding = ? where id = ?", [binding, row.id], "run", ctx);
        await tx.execute("delete from provider_credentials_unbound where id = ?", [row.id], "run", ctx);
        audit({
          actor,
          action: "credential.bind",
          organizationId: row.organization_id,
          credentialId: row.id,
          details: { provider: row.provider, credential_name: row.credential_name, key_hint: row.key_hint, api_base: row.api_base },
        });
        invalidate({ organizationId: row.organization_id, provider: row.provider, reason: "credential" });
        found.add(row.id);
      }
      for (const id of byId.keys()) (found.has(id) ? bound : skipped).push(id);
    });
  }
  return { bound, skipped };
}
