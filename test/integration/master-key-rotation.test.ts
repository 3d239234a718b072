// Master-key rotation (rewrap) and verification, through the real commands.
import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/keyring.js";
import { rewrapAll } from "../../service/src/credentials/rewrap.js";
import { createOrm, migrate, type Orm } from "../../service/src/db/orm.js";
import { keyHint } from "../../service/src/credentials/validation.js";
import { createTestDatabase, type TestDatabase } from "../support/harness.js";

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
const keyA = generateMasterKey();
const keyB = generateMasterKey();
const ringA = createKeyring(keyA);
const ringB = createKeyring(keyB);

let db: TestDatabase;
let orm: Orm;
/** plaintext by credential id, to prove nothing is lost */
const plaintexts = new Map<string, string>();

async function seed(count: number, organizationId: string): Promise<void> {
  await db.query("insert into organizations (id, name, created_at, updated_at) values ($1, $1, now(), now()) on conflict do nothing", [organizationId]);
  const rows: unknown[][] = [];
  for (let i = 0; i < count; i++) {
    const id = randomUUID();
    const key = `sk-rotation-${organizationId}-${i}-${randomUUID()}`;
    plaintexts.set(id, key);
    const { token, keyId, binding } = ringA.encryptBound(key, { id, organizationId, provider: "openai", apiBase: null });
    rows.push([id, organizationId, `key ${i}`, token, keyId, binding, keyHint(key, "openai")]);
  }
  for (let i = 0; i < rows.length; i += 500) {
    const chunk = rows.slice(i, i + 500);
    const values = chunk.map(
      (_, j) =>
        `($${j * 7 + 1}::uuid, $${j * 7 + 2}, 'openai', $${j * 7 + 3}, $${j * 7 + 4}, $${j * 7 + 5}, $${j * 7 + 6}, $${j * 7 + 7}, true, now(), 1, now(), now())`,
    );
    await db.query(
      `insert into provider_credentials (id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_binding, key_hint, is_active, activated_at, version, created_at, updated_at) values ${values.join(",")}`,
      chunk.flat(),
    );
  }
}

/** Every row decrypts, with the given keyring, to the plaintext it was created with. */
async function everyRowReadable(ring = createKeyring(`${keyB},${keyA}`)): Promise<void> {
  const rows = await db.query<{ id: string; encrypted_api_key: string; key_id: string }>("select id, encrypted_api_key, key_id from provider_credentials");
  expect(rows.length).toBe(plaintexts.size);
  for (const row of rows) expect(ring.decrypt(row.encrypted_api_key, row.key_id)).toBe(plaintexts.get(row.id));
}

const cli = (script: string, masterKey: string, args: string[] = []): Promise<{ code?: number; stdout: string; stderr: string }> =>
  run(TSX, [`service/src/cli/${script}.ts`, ...args], { env: { PATH: process.env.PATH, DATABASE_URL: db.url, MASTER_KEY: masterKey } }).catch(
    (e: { code: number; stdout: string; stderr: string }) => e,
  );

beforeAll(async () => {
  db = await createTestDatabase();
  orm = await createOrm({ databaseUrl: db.url, poolSize: 4 });
  await migrate(orm, db.url);
});
afterAll(async () => {
  await orm?.close(true);
  await db?.drop();
});

describe("npm run rotate-master-key", () => {
  it("re-encrypts every row under the new key, reports, audits, and then the old key can go", async () => {
    await seed(30, "rot-org");
    const result = await cli("rotate-master-key", `${keyB},${keyA}`, ["--batch-size", "7"]);
    expect(result.stdout).toContain("Re-encrypted 30 credential(s)");
    expect(result.stdout).toContain(`Every credential is now under ${ringB.primaryKeyId}`);
    expect(result.stderr).toMatch(/re-encrypting \[#+\] 30\/30 \(100\.0%\)/);
    const byKey = await db.query<{ key_id: string; n: string }>("select key_id, count(*) as n from provider_credentials group by key_id");
    expect(byKey).toEqual([{ key_id: ringB.primaryKeyId, n: "30" }]);
    await everyRowReadable(ringB);
    const audit = await db.query<{ action: string; details: { rewrapped: number } }>(
      "select action, details from audit_events where action = 'master_key.rotate'",
    );
    expect(audit[0].details.rewrapped).toBe(30);
    // Nothing printed a key.
    for (const key of plaintexts.values()) expect(result.stdout + result.stderr).not.toContain(key);

    const again = await cli("rotate-master-key", `${keyB},${keyA}`);
    expect(again.stdout).toContain("Re-encrypted 0 credential(s)");

    const verified = await cli("verify-keys", keyB);
    expect(verified.stdout).toContain("Checked 30 credential(s).");
    expect(verified.stdout).toContain(`${ringB.primaryKeyId}: 30 (primary key)`);
    expect(verified.stdout).toContain("Every credential decrypts with the configured MASTER_KEY and is bound to its row.");
  });

  it("skips rows locked by an editor, and a rerun picks them up", async () => {
    await seed(20, "lock-org");
    const [locked] = await db.query<{ id: string }>("select id from provider_credentials where organization_id = 'lock-org' order by id limit 1");
    const editor = new pg.Client({ connectionString: db.url });
    await editor.connect();
    try {
      await editor.query("begin");
      await editor.query("select * from provider_credentials where id = $1 for update", [locked.id]);
      const report = await rewrapAll(orm, createKeyring(`${keyB},${keyA}`), { batchSize: 5, maxPasses: 2, actor: "test" });
      expect(report.rewrapped).toBe(19);
      expect(report.stillLocked).toBe(1);
      await editor.query("commit");
    } finally {
      await editor.end();
    }
    const rerun = await rewrapAll(orm, createKeyring(`${keyB},${keyA}`), { batchSize: 5, actor: "test" });
    expect(rerun.rewrapped).toBe(1);
    expect(rerun.stillLocked).toBe(0);
    await everyRowReadable(ringB);
  });

  it("killed with SIGKILL halfway, loses nothing, and a rerun finishes the job", async () => {
    await seed(4000, "kill-org");
    // node itself (not the tsx wrapper, whose child would survive the kill).
    const child = spawn(process.execPath, ["--import", "tsx", "service/src/cli/rotate-master-key.ts", "--batch-size", "20"], {
      env: { PATH: process.env.PATH, DATABASE_URL: db.url, MASTER_KEY: `${keyB},${keyA}` },
      stdio: "ignore",
    });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const newKeyRows = async () =>
      Number(
        (
          await db.query<{ n: string }>("select count(*) as n from provider_credentials where key_id = $1 and organization_id = 'kill-org'", [
            ringB.primaryKeyId,
          ])
        )[0].n,
      );
    const deadline = Date.now() + 60_000;
    while ((await newKeyRows()) < 200) {
      if (Date.now() > deadline) throw new Error("rotation made no progress");
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    await exited;
    const halfway = await newKeyRows();
    expect(halfway).toBeGreaterThan(0);
    expect(halfway).toBeLessThan(4000);
    await everyRowReadable(); // both keys configured: old and new rows alike
    const rerun = await cli("rotate-master-key", `${keyB},${keyA}`);
    expect(rerun.stdout).toContain(`Re-encrypted ${4000 - halfway} credential(s)`);
    await everyRowReadable(ringB);
  });
});

describe("rotating the master key and two-factor secrets", () => {
  it("seals the accounts' TOTP secrets (and pending ones) again under the new key, so the old key can go", async () => {
    const accounts = [randomUUID(), randomUUID()];
    const totp = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    const pending = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU";
    await db.query(
      `insert into admin_users (id, email, password_hash, created_at, updated_at, role, totp_secret, totp_enabled_at, totp_pending_secret, totp_pending_at)
       values ($1, 'enrolled@example.com', 'x', now(), now(), 'viewer', $2, now(), null, null),
              ($3, 'enrolling@example.com', 'x', now(), now(), 'viewer', null, null, $4, now())`,
      [
        accounts[0],
        ringA.sealSecret(totp, `admin_users.totp_secret:${accounts[0]}`),
        accounts[1],
        ringA.sealSecret(pending, `admin_users.totp_pending_secret:${accounts[1]}`),
      ],
    );
    const report = await rewrapAll(orm, createKeyring(`${keyB},${keyA}`), { actor: "test" });
    expect(report.twoFactorSecrets).toEqual({ resealed: 2, failed: [] });
    const [enrolled] = await db.query<{ totp_secret: string }>("select totp_secret from admin_users where id = $1", [accounts[0]]);
    const [enrolling] = await db.query<{ totp_pending_secret: string }>("select totp_pending_secret from admin_users where id = $1", [accounts[1]]);
    // Under the new key alone, for the same account and column only.
    expect(enrolled.totp_secret.startsWith(`as1.${ringB.primaryKeyId}.`)).toBe(true);
    expect(ringB.openSecret(enrolled.totp_secret, `admin_users.totp_secret:${accounts[0]}`)).toEqual({ plaintext: totp, keyId: ringB.primaryKeyId });
    expect(ringB.openSecret(enrolling.totp_pending_secret, `admin_users.totp_pending_secret:${accounts[1]}`).plaintext).toBe(pending);
    expect(() => ringA.openSecret(enrolled.totp_secret, `admin_users.totp_secret:${accounts[0]}`)).toThrow();
    const [audit] = await db.query<{ details: Record<string, unknown> }>(
      "select details from audit_events where action = 'master_key.rotate' order by id desc limit 1",
    );
    expect(audit.details).toMatchObject({ two_factor_secrets_resealed: 2, two_factor_secrets_failed: 0 });
    // Nothing left to do; a secret no configured key opens is reported by account, never shown, and left alone.
    expect((await rewrapAll(orm, ringB, { actor: "test" })).twoFactorSecrets).toEqual({ resealed: 0, failed: [] });
    const orphan = createKeyring(generateMasterKey()).sealSecret(totp, `admin_users.totp_secret:${accounts[0]}`);
    await db.query("update admin_users set totp_secret = $2 where id = $1", [accounts[0], orphan]);
    const stuck = await rewrapAll(orm, ringB, { actor: "test" });
    expect(stuck.twoFactorSecrets.failed).toEqual([{ email: "enrolled@example.com", column: "totp_secret", reason: expect.any(String) }]);
    expect(JSON.stringify(stuck)).not.toContain(totp);
    const [after] = await db.query<{ totp_secret: string }>("select totp_secret from admin_users where id = $1", [accounts[0]]);
    expect(after.totp_secret).toBe(orphan);
    await db.query("delete from admin_users where id = any($1::uuid[])", [accounts]);
  });
});

describe("npm run verify-keys", () => {
  it("reports rows that fail to decrypt, by id and without any key, and exits non-zero", async () => {
    const [victim] = await db.query<{ id: string }>("select id from provider_credentials order by id limit 1");
    const stranger = createKeyring(generateMasterKey()).encrypt("sk-planted-by-someone-else-000");
    await db.query("update provider_credentials set encrypted_api_key = $1 where id = $2", [stranger.token, victim.id]);
    const result = await cli("verify-keys", keyB);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("1 credential(s) FAILED:");
    expect(result.stdout).toContain(`${victim.id}  organization`);
    expect(result.stdout).toContain("does not decrypt with any configured key (corrupted or tampered)");
    expect(result.stdout + result.stderr).not.toContain("sk-planted-by-someone-else-000");
    for (const key of plaintexts.values()) expect(result.stdout).not.toContain(key);

    const unknownKey = await cli("verify-keys", generateMasterKey());
    expect(unknownKey.code).toBe(1);
    expect(unknownKey.stdout).toContain(`${ringB.primaryKeyId}: ${plaintexts.size} (NOT in MASTER_KEY)`);
  });
});
