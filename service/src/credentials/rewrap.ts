import { inTransaction, type Orm } from "../db/orm.js";
import type { ProviderName } from "../db/entities.js";
import { recordAudit } from "../audit/audit-store.js";
import { publishInvalidation } from "./invalidation.js";
import type { Logger } from "../logger.js";
import { BindingError, DecryptError, type BoundRow, type Keyring } from "../keyring/index.js";

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

/**
 * The plaintext of a stored row: its binding checked, except for rows written
 * before row binding existed (still on the unbound list), which are only
 * decrypted. Throws DecryptError or BindingError.
 */
function openRow(keyring: Keyring, row: Row): string {
  if (row.unbound && row.key_binding === null) return keyring.decrypt(row.encrypted_api_key, row.key_id);
  return keyring.decryptBound(boundRow(row), row.encrypted_api_key, row.key_id, row.key_binding);
}

function failureReason(error: unknown): string {
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
      const result = await inTransaction(orm, async (em) => {
        const tx = em.getConnection();
        const ctx = em.getTransactionContext();
        const rows: Row[] = await tx.execute(
          `select ${ROW_COLUMNS} from provider_credentials c
           where c.key_id <> ? and c.id > ? order by c.id limit ? for update of c skip locked`,
          [keyring.primaryKeyId, after, batchSize],
          "all",
          ctx,
        );
        const changed = new Set<string>();
        let count = 0;
        for (const row of rows) {
          if (failed.has(row.id)) continue;
          let plaintext: string;
          try {
            plaintext = openRow(keyring, row);
          } catch (error) {
            if (!(error instanceof DecryptError) && !(error instanceof BindingError)) throw error;
            failed.set(row.id, { keyId: row.key_id, reason: failureReason(error) });
            continue;
          }
          const { token, keyId, binding } = keyring.encryptBound(plaintext, boundRow(row));
          await tx.execute(
            "update provider_credentials set encrypted_api_key = ?, key_id = ?, key_binding = ? where id = ?",
            [token, keyId, binding, row.id],
            "run",
            ctx,
          );
          if (row.unbound) await tx.execute("delete from provider_credentials_unbound where id = ?", [row.id], "run", ctx);
          changed.add(`${row.organization_id}\u0000${row.provider}`);
          count++;
        }
        for (const pair of changed) {
          const [organizationId, provider] = pair.split("\u0000") as [string, ProviderName];
          await publishInvalidation(em, { organizationId, provider });
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

  const report: RewrapReport = {
    rewrapped,
    failed: [...failed].map(([id, f]) => ({ id, ...f })),
    stillLocked: Math.max(0, remaining),
    passes,
    ms: Date.now() - started,
  };
  await inTransaction(orm, async (em) => {
    await recordAudit(em, {
      actor: options.actor,
      action: "master_key.rotate",
      target: keyring.primaryKeyId,
      details: { rewrapped: report.rewrapped, failed: report.failed.length, still_locked: report.stillLocked, total },
    });
  });
  return report;
}

export interface VerifyReport {
  checked: number;
  byKeyId: Record<string, number>;
  /** Rows written before row binding existed that the service has not bound yet (it does at start-up). */
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
      if (row.unbound && row.key_binding === null) report.unbound++;
      if (!keyring.has(row.key_id)) fail(`encrypted under key ${row.key_id}, which MASTER_KEY does not hold`);
      try {
        openRow(keyring, row);
      } catch (error) {
        if (!(error instanceof DecryptError) && !(error instanceof BindingError)) throw error;
        if (keyring.has(row.key_id) || error instanceof BindingError) fail(failureReason(error));
      }
      report.checked++;
    }
    onProgress?.(report.checked, total);
    if (rows.length < 1000) break;
    after = rows[rows.length - 1].id;
  }
  return report;
}

/**
 * Binds the rows written before row binding existed (listed in
 * provider_credentials_unbound by the migration that introduced it), in
 * batches, at start-up. Rows that do not decrypt stay listed and unbound;
 * verify-keys reports them. Returns how many were bound.
 */
export async function bindLegacyRows(orm: Orm, keyring: Keyring, logger?: Logger): Promise<number> {
  let bound = 0;
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    // Plain FOR UPDATE (no SKIP LOCKED): a replica starting beside another one waits for its batch instead of serving unbound rows.
    const { count, last } = await inTransaction(orm, async (em) => {
      const tx = em.getConnection();
      const ctx = em.getTransactionContext();
      const rows: Row[] = await tx.execute(
        `select ${ROW_COLUMNS} from provider_credentials c join provider_credentials_unbound u on u.id = c.id
         where c.id > ? order by c.id limit 500 for update of c`,
        [after],
        "all",
        ctx,
      );
      let count = 0;
      for (const row of rows) {
        if (row.key_binding === null) {
          let binding: string;
          try {
            binding = keyring.rebind(boundRow(row), row.encrypted_api_key, row.key_id);
          } catch (error) {
            if (!(error instanceof DecryptError)) throw error;
            continue; // stays listed; verify-keys reports it
          }
          await tx.execute("update provider_credentials set key_binding = ? where id = ?", [binding, row.id], "run", ctx);
          count++;
        }
        await tx.execute("delete from provider_credentials_unbound where id = ?", [row.id], "run", ctx);
      }
      return { count, last: rows.length === 500 ? rows[rows.length - 1].id : undefined };
    });
    bound += count;
    if (!last) break;
    after = last;
  }
  if (bound > 0) logger?.info({ bound }, `bound ${bound} stored key(s) written before row binding to their rows`);
  return bound;
}
