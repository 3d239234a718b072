import type { Orm } from "../db/orm.js";
import type { ProviderName } from "../db/entities.js";
import { recordAudit } from "../audit/audit-store.js";
import { publishInvalidation } from "../credentials/invalidation.js";
import { DecryptError, type Keyring } from "./keyring.js";

export interface RewrapProgress {
  done: number;
  total: number;
  failed: number;
}

export interface RewrapReport {
  rewrapped: number;
  /** Rows no configured key can decrypt: left untouched, reported by id. */
  failed: Array<{ id: string; keyId: string }>;
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
  encrypted_api_key: string;
  key_id: string;
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
  const failed = new Map<string, string>();
  let rewrapped = 0;
  let passes = 0;
  let remaining = total;

  while (remaining > 0 && passes < maxPasses) {
    passes++;
    let after = "00000000-0000-0000-0000-000000000000";
    for (;;) {
      const result = await orm.em.fork().transactional(async (em) => {
        const tx = em.getConnection();
        const ctx = em.getTransactionContext();
        const rows: Row[] = await tx.execute(
          `select id, organization_id, provider, encrypted_api_key, key_id from provider_credentials
           where key_id <> ? and id > ? order by id limit ? for update skip locked`,
          [keyring.primaryKeyId, after, batchSize],
          "all",
          ctx,
        );
        const changed = new Set<string>();
        let count = 0;
        for (const row of rows) {
          let plaintext: string;
          try {
            plaintext = keyring.decrypt(row.encrypted_api_key, row.key_id);
          } catch (error) {
            if (!(error instanceof DecryptError)) throw error;
            failed.set(row.id, row.key_id);
            continue;
          }
          const { token, keyId } = keyring.encrypt(plaintext);
          await tx.execute("update provider_credentials set encrypted_api_key = ?, key_id = ? where id = ?", [token, keyId, row.id], "run", ctx);
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
    failed: [...failed].map(([id, keyId]) => ({ id, keyId })),
    stillLocked: Math.max(0, remaining),
    passes,
    ms: Date.now() - started,
  };
  await orm.em.fork().transactional(async (em) => {
    recordAudit(em, {
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
  failures: Array<{ id: string; organizationId: string; provider: string; keyId: string; reason: string }>;
}

/** Decrypts every stored credential (in batches) and reports the ones that fail, never a key. */
export async function verifyAll(orm: Orm, keyring: Keyring, onProgress?: (checked: number, total: number) => void): Promise<VerifyReport> {
  const conn = orm.em.getConnection();
  const [{ n }] = await conn.execute<Array<{ n: string }>>("select count(*) as n from provider_credentials");
  const total = Number(n);
  const report: VerifyReport = { checked: 0, byKeyId: {}, failures: [] };
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const rows: Row[] = await conn.execute(
      "select id, organization_id, provider, encrypted_api_key, key_id from provider_credentials where id > ? order by id limit 1000",
      [after],
    );
    for (const row of rows) {
      report.byKeyId[row.key_id] = (report.byKeyId[row.key_id] ?? 0) + 1;
      const fail = (reason: string) =>
        report.failures.push({ id: row.id, organizationId: row.organization_id, provider: row.provider, keyId: row.key_id, reason });
      if (!keyring.has(row.key_id)) fail(`encrypted under key ${row.key_id}, which MASTER_KEY does not hold`);
      try {
        keyring.decrypt(row.encrypted_api_key, row.key_id);
      } catch (error) {
        if (!(error instanceof DecryptError)) throw error;
        if (keyring.has(row.key_id)) fail("does not decrypt with any configured key (corrupted or tampered)");
      }
      report.checked++;
    }
    onProgress?.(report.checked, total);
    if (rows.length < 1000) break;
    after = rows[rows.length - 1].id;
  }
  return report;
}
