// Ciphertext bound to its row: someone with write access to the database who
// moves, copies or edits a stored key (or the row's organisation, provider or
// api_base) gets DATA_LOSS from the service, never the key, and verify-keys
// names the row. The token itself stays plain Fernet.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { createKeyring, generateMasterKey, type Keyring } from "../../service/src/keyring/keyring.js";
import { keyHint } from "../../service/src/credentials/validation.js";
import { bindLegacyRows, listLegacyRows } from "../../service/src/credentials/rewrap.js";
import { createTestDatabase, FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");

let db: TestDatabase;
let t: TestService;
let keyring: Keyring;

interface Stored {
  id: string;
  organization_id: string;
  encrypted_api_key: string;
  key_id: string;
  key_binding: string | null;
  api_base: string | null;
}

const stored = async (id: string): Promise<Stored> =>
  (await db.query<Stored>("select id, organization_id, encrypted_api_key, key_id, key_binding, api_base from provider_credentials where id = $1", [id]))[0];

const resolveOrg = (organizationId: string, provider = Provider.OPENAI) =>
  t.clients().credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider });

async function org(id: string): Promise<string> {
  await t.clients().organizations.createOrganization({ organizationId: id, name: id });
  return id;
}

async function credential(organizationId: string, apiKey = FAKE_KEYS.openai(), extra: { apiBase?: string; credentialName?: string } = {}) {
  const { credential } = await t.clients().credentials.createCredential({
    organizationId,
    provider: Provider.OPENAI,
    credentialName: extra.credentialName ?? "main",
    apiKey,
    apiBase: extra.apiBase,
  });
  return { id: credential!.credentialId, apiKey };
}

/** DATA_LOSS naming the credential, with none of the given secrets anywhere in the message or the logs. */
async function expectRefused(promise: Promise<unknown>, credentialId: string, secrets: string[]) {
  const err = await rpcError(promise);
  expect(err.code, err.message).toBe(Code.DataLoss);
  expect(err.message).toContain(credentialId);
  expect(err.message).toContain("not bound to its row");
  for (const secret of secrets) {
    expect(err.message).not.toContain(secret);
    for (const line of t.logs) expect(line).not.toContain(secret);
  }
}

const cli = (script: string, masterKey: string) =>
  run(TSX, [`service/src/cli/${script}.ts`], { env: { PATH: process.env.PATH, DATABASE_URL: db.url, MASTER_KEY: masterKey } }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );

beforeAll(async () => {
  db = await createTestDatabase();
  // No cache: every resolve reads the row as it is in the database now.
  t = await startTestService({ db, cacheMaxEntries: 0 });
  keyring = createKeyring(t.masterKey);
});

afterAll(async () => {
  await t?.close();
  await db?.drop();
});

describe("the stored row", () => {
  it("keeps the token plain Fernet and stores a binding next to it, never the key", async () => {
    const o = await org("rb-plain");
    const { id, apiKey } = await credential(o);
    const row = await stored(id);
    expect(row.key_binding).toMatch(/^rb1\.[A-Za-z0-9_-]{43}$/);
    expect(row.key_binding).not.toContain(apiKey);
    // Any Fernet implementation holding the master key opens the token on its own.
    expect(keyring.decrypt(row.encrypted_api_key)).toBe(apiKey);
    expect((await resolveOrg(o)).apiKey).toBe(apiKey);
  });
});

describe("tampering in the database", () => {
  it("refuses organisation A's ciphertext (and binding) moved into organisation B's row, while A keeps working", async () => {
    const a = await org("rb-a");
    const b = await org("rb-b");
    const keyA = await credential(a);
    const keyB = await credential(b);
    const rowA = await stored(keyA.id);
    await db.query("update provider_credentials set encrypted_api_key = $1, key_id = $2, key_binding = $3 where id = $4", [
      rowA.encrypted_api_key,
      rowA.key_id,
      rowA.key_binding,
      keyB.id,
    ]);
    await expectRefused(resolveOrg(b), keyB.id, [keyA.apiKey, keyB.apiKey, rowA.encrypted_api_key]);
    expect((await resolveOrg(a)).apiKey).toBe(keyA.apiKey);
  });

  it("refuses a ciphertext copied to another credential of the same organisation", async () => {
    const o = await org("rb-copy");
    const first = await credential(o, FAKE_KEYS.openai(), { credentialName: "first" });
    const second = await credential(o, FAKE_KEYS.openai(), { credentialName: "second" }); // newest: the one resolved
    const row = await stored(first.id);
    await db.query("update provider_credentials set encrypted_api_key = $1, key_binding = $2 where id = $3", [
      row.encrypted_api_key,
      row.key_binding,
      second.id,
    ]);
    await expectRefused(resolveOrg(o), second.id, [first.apiKey, second.apiKey]);
  });

  it("refuses a row moved to another organisation, or to another provider", async () => {
    const from = await org("rb-from");
    const to = await org("rb-to");
    const moved = await credential(from);
    await db.query("update provider_credentials set organization_id = $1 where id = $2", [to, moved.id]);
    await expectRefused(resolveOrg(to), moved.id, [moved.apiKey]);

    const other = await org("rb-provider");
    const switched = await credential(other);
    await db.query("update provider_credentials set provider = 'fireworks' where id = $1", [switched.id]);
    await expectRefused(resolveOrg(other, Provider.FIREWORKS), switched.id, [switched.apiKey]);
  });

  it("refuses an api_base pointed elsewhere behind the service's back (the key would go to another host)", async () => {
    const o = await org("rb-base");
    const { id, apiKey } = await credential(o, FAKE_KEYS.openai(), { apiBase: "https://gateway.example.com/v1" });
    expect((await resolveOrg(o)).apiBase).toBe("https://gateway.example.com/v1");
    await db.query("update provider_credentials set api_base = 'https://attacker.example.net/v1' where id = $1", [id]);
    await expectRefused(resolveOrg(o), id, [apiKey]);
    await db.query("update provider_credentials set api_base = null where id = $1", [id]);
    await expectRefused(resolveOrg(o), id, [apiKey]);
  });

  it("refuses a binding that was removed or edited", async () => {
    const o = await org("rb-edit");
    const { id, apiKey } = await credential(o);
    const row = await stored(id);
    await db.query("update provider_credentials set key_binding = null where id = $1", [id]);
    await expectRefused(resolveOrg(o), id, [apiKey]);
    const flipped = row.key_binding!.slice(0, -2) + (row.key_binding!.endsWith("AA") ? "BA" : "AA");
    await db.query("update provider_credentials set key_binding = $1 where id = $2", [flipped, id]);
    await expectRefused(resolveOrg(o), id, [apiKey]);
  });

  it("does not move a tampered row to another api_base without the key, and writes nothing", async () => {
    const o = await org("rb-rebind");
    const victim = await credential(o, FAKE_KEYS.openai(), { apiBase: "https://gateway.example.com/v1" });
    const donor = await credential(await org("rb-donor"));
    const donorRow = await stored(donor.id);
    await db.query("update provider_credentials set encrypted_api_key = $1, key_binding = $2 where id = $3", [
      donorRow.encrypted_api_key,
      donorRow.key_binding,
      victim.id,
    ]);
    const before = await stored(victim.id);
    for (const verify of [false, true]) {
      const err = await rpcError(
        t.clients().credentials.updateCredential({ credentialId: victim.id, apiBase: "https://other-gateway.example.com/v1", verify }),
      );
      expect(err.code, err.message).toBe(Code.InvalidArgument);
      expect(err.message).toMatch(/^api_key: enter the key again to change api_base/);
      for (const secret of [victim.apiKey, donor.apiKey]) expect(err.message).not.toContain(secret);
      expect(await stored(victim.id)).toEqual(before);
    }
    // Entering the key again (a new api_key) is how an administrator repairs it, and moves it.
    const fresh = FAKE_KEYS.openai();
    await t.clients().credentials.updateCredential({ credentialId: victim.id, apiKey: fresh, apiBase: "https://other-gateway.example.com/v1" });
    expect((await resolveOrg(o)).apiKey).toBe(fresh);
  });

  it("changes api_base through the service only with the key entered again, sealing it anew", async () => {
    const o = await org("rb-legit");
    const { id, apiKey } = await credential(o, FAKE_KEYS.openai(), { apiBase: "https://gateway.example.com/v1" });
    const before = await stored(id);
    // Without the key, the stored key is not re-bound to (and so never sent to) the new api_base.
    const refused = await rpcError(t.clients().credentials.updateCredential({ credentialId: id, apiBase: "https://gateway-2.example.com/v1" }));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.message).toMatch(/^api_key: enter the key again to change api_base/);
    expect(await stored(id)).toEqual(before);
    await t.clients().credentials.updateCredential({ credentialId: id, apiBase: "https://gateway-2.example.com/v1", apiKey });
    const after = await stored(id);
    expect(after.api_base).toBe("https://gateway-2.example.com/v1");
    expect(after.encrypted_api_key).not.toBe(before.encrypted_api_key);
    expect(after.key_binding).not.toBe(before.key_binding);
    expect((await resolveOrg(o)).apiKey).toBe(apiKey);
    await t.clients().credentials.updateCredential({ credentialId: id, apiBase: "", apiKey });
    const cleared = await resolveOrg(o);
    expect(cleared.apiKey).toBe(apiKey);
    expect(cleared.apiBase ?? "").toBe("");
    expect((await stored(id)).api_base).toBeNull();
  });
});

describe("with the resolution cache on", () => {
  it("checks a row once when it is read, then serves it from the cache; a refused row stays refused on every call", async () => {
    const cached = await startTestService({ db, masterKey: t.masterKey, adminToken: t.adminToken, cacheMaxEntries: 100 });
    try {
      const resolve = (organizationId: string) =>
        cached.clients().credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider: Provider.OPENAI });
      const good = await org("rb-cached-good");
      const bad = await org("rb-cached-bad");
      const goodKey = await credential(good);
      const badKey = await credential(bad);
      const rowGood = await stored(goodKey.id);
      // Bad gets good's ciphertext and binding behind the service's back (no notification: its cache has not seen bad yet).
      await db.query("update provider_credentials set encrypted_api_key = $1, key_binding = $2 where id = $3", [
        rowGood.encrypted_api_key,
        rowGood.key_binding,
        badKey.id,
      ]);
      for (let i = 0; i < 3; i++) {
        // The first call reads and checks the row, the next ones come from the cache.
        expect((await resolve(good)).apiKey).toBe(goodKey.apiKey);
        const err = await rpcError(resolve(bad));
        expect(err.code, err.message).toBe(Code.DataLoss);
        expect(err.message).toContain(badKey.id);
        expect(err.message).toContain("not bound to its row");
        expect(err.message).not.toContain(goodKey.apiKey);
      }
      for (const line of cached.logs) expect(line).not.toContain(goodKey.apiKey);
    } finally {
      await cached.close();
    }
  });
});

describe("rows written before row binding existed", () => {
  const insertUnbound = async (id: string, organizationId: string, provider: "openai" | "anthropic", apiKey: string) => {
    const { token, keyId } = keyring.encrypt(apiKey);
    await db.query(
      `insert into provider_credentials (id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_hint,
         is_active, activated_at, version, created_at, updated_at) values ($1, $2, $3, 'legacy', $4, $5, $6, true, now(), 1, now(), now())`,
      [id, organizationId, provider, token, keyId, keyHint(apiKey, provider)],
    );
  };
  const bindCli = (args: string[]) =>
    run(TSX, ["service/src/cli/bind-legacy-keys.ts", ...args], { env: { PATH: process.env.PATH, DATABASE_URL: db.url, MASTER_KEY: t.masterKey } }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );

  it("are refused, never bound by a start, until an operator binds the listed rows with bind-legacy-keys", async () => {
    const o = await org("rb-legacy");
    const legacyKey = FAKE_KEYS.openai();
    const strayKey = FAKE_KEYS.anthropic();
    const legacyId = "00000000-0000-4000-8000-00000000aaaa";
    const strayId = "00000000-0000-4000-8000-00000000bbbb";
    await insertUnbound(legacyId, o, "openai", legacyKey);
    await insertUnbound(strayId, o, "anthropic", strayKey);
    // As the migration does for every row that exists when it runs; the stray row is not listed.
    await db.query("insert into provider_credentials_unbound (id) values ($1)", [legacyId]);

    const verify = await cli("verify-keys", t.masterKey);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain("1 written before row binding existed: refused until you bind them");
    expect(verify.stdout).toContain(`${strayId}  organization ${o}  anthropic: not bound to its row`);
    expect(verify.stdout).not.toContain(legacyId);

    // A replica starting on this database says so and binds nothing: the row stays refused.
    const replica = await startTestService({ db, masterKey: t.masterKey, adminToken: t.adminToken, cacheMaxEntries: 0 });
    try {
      expect(replica.logs.some((l) => l.includes("1 stored key(s) written before row binding existed are refused until an operator binds them"))).toBe(true);
      expect((await stored(legacyId)).key_binding).toBeNull();
      await expectRefused(resolveOrg(o), legacyId, [legacyKey]);
    } finally {
      await replica.close();
    }

    // Without a terminal to ask on, and without --yes, nothing happens.
    const unasked = await bindCli([]);
    expect(unasked.code).toBe(2);
    expect(unasked.stderr).toContain("pass --yes after checking the list");
    expect((await stored(legacyId)).key_binding).toBeNull();

    // With --yes: the listed row, described without its key, is bound and audited; the stray row is not listed.
    const bound = await bindCli(["--yes"]);
    expect(bound.code, bound.stderr).toBe(0);
    expect(bound.stdout).toContain(`${legacyId}  organization ${o}  openai  "legacy"  key ${keyHint(legacyKey, "openai")}`);
    expect(bound.stdout).toContain("Bound 1 key(s) to their rows.");
    expect(bound.stdout).not.toContain(strayId);
    expect(bound.stdout + bound.stderr).not.toContain(legacyKey);
    expect((await stored(legacyId)).key_binding).toMatch(/^rb1\./);
    expect(await db.query("select id from provider_credentials_unbound")).toEqual([]);
    const [audit] = await db.query<{ actor: string; details: Record<string, unknown> }>(
      "select actor, details from audit_events where action = 'credential.bind' and credential_id = $1",
      [legacyId],
    );
    expect(audit.actor).toMatch(/^cli:/);
    expect(JSON.stringify(audit.details)).not.toContain(legacyKey);
    expect((await resolveOrg(o)).apiKey).toBe(legacyKey);
    await expectRefused(resolveOrg(o, Provider.ANTHROPIC), strayId, [strayKey]);
    expect((await bindCli(["--yes"])).stdout).toContain("No stored key is waiting to be bound.");
  });

  it("a database writer cannot make the service accept another organisation's key by listing a row as unbound", async () => {
    // The attack of the security review: A's ciphertext copied into B's row, B's binding cleared and B's
    // row added to the list of rows that predate binding. No start and no key rotation binds it.
    const a = await org("rb-victim");
    const b = await org("rb-attacker");
    const victim = await credential(a);
    const target = await credential(b);
    const source = await stored(victim.id);
    await db.query("update provider_credentials set encrypted_api_key = $1, key_id = $2, key_binding = null where id = $3", [
      source.encrypted_api_key,
      source.key_id,
      target.id,
    ]);
    await db.query("insert into provider_credentials_unbound (id) values ($1)", [target.id]);
    const replica = await startTestService({ db, masterKey: t.masterKey, adminToken: t.adminToken, cacheMaxEntries: 0 });
    try {
      await expectRefused(replica.clients().credentials.resolveKey({ scope: { case: "organizationId", value: b }, provider: Provider.OPENAI }), target.id, [
        victim.apiKey,
      ]);
    } finally {
      await replica.close();
    }
    expect((await stored(target.id)).key_binding).toBeNull();
    await expectRefused(resolveOrg(b), target.id, [victim.apiKey]);
    // The victim keeps working.
    expect((await resolveOrg(a)).apiKey).toBe(victim.apiKey);
    // Binding is the operator's decision: the row is listed for them to see (organisation, provider, hint), and a
    // row changed after it was listed is not bound.
    const listed = (await listLegacyRows(t.service.orm, keyring)).find((r) => r.id === target.id);
    expect(listed).toMatchObject({ organizationId: b, provider: "openai", decrypts: true });
    await db.query("update provider_credentials set api_base = 'https://elsewhere.example/v1' where id = $1", [target.id]);
    expect(await bindLegacyRows(t.service.orm, keyring, [listed!], "test")).toEqual({ bound: [], skipped: [target.id] });
    expect((await stored(target.id)).key_binding).toBeNull();
    await db.query("delete from provider_credentials_unbound where id = $1", [target.id]);
  });
});

describe("npm run verify-keys", () => {
  it("names every tampered row with its reason, prints no key, and exits 1", async () => {
    const result = await cli("verify-keys", t.masterKey);
    expect(result.code).toBe(1);
    const failed = /(\d+) credential\(s\) FAILED:/.exec(result.stdout);
    expect(failed, result.stdout).not.toBeNull();
    const rows = await db.query<Stored & { provider: "openai" }>(
      "select id, organization_id, provider, encrypted_api_key, key_id, key_binding, api_base from provider_credentials",
    );
    // Which rows are tampered, decided independently of the service: the binding recomputed from the row.
    const tampered = rows.filter((r) => {
      try {
        keyring.decryptBound(
          { id: r.id, organizationId: r.organization_id, provider: r.provider, apiBase: r.api_base },
          r.encrypted_api_key,
          r.key_id,
          r.key_binding,
        );
        return false;
      } catch {
        return true;
      }
    });
    expect(tampered.length).toBeGreaterThanOrEqual(7);
    expect(Number(failed![1])).toBe(tampered.length);
    for (const row of tampered) expect(result.stdout).toContain(`${row.id}  organization ${row.organization_id}`);
    for (const row of rows) {
      expect(result.stdout + result.stderr).not.toContain(keyring.decrypt(row.encrypted_api_key));
      expect(result.stdout).not.toContain(row.encrypted_api_key);
    }
  });

  it("rotate-master-key leaves tampered rows untouched and reports them, and re-binds the rest under the new key", async () => {
    const newKey = generateMasterKey();
    const before = await db.query<Stored>("select id, organization_id, encrypted_api_key, key_id, key_binding, api_base from provider_credentials order by id");
    const result = await cli("rotate-master-key", `${newKey},${t.masterKey}`);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("failed their checks and were left untouched");
    const after = await db.query<Stored & { provider: string }>(
      "select id, organization_id, provider, encrypted_api_key, key_id, key_binding, api_base from provider_credentials order by id",
    );
    const both = createKeyring(`${newKey},${t.masterKey}`);
    let rewrapped = 0;
    for (const [i, row] of after.entries()) {
      const bound = { id: row.id, organizationId: row.organization_id, provider: row.provider, apiBase: row.api_base };
      let ok = true;
      try {
        both.decryptBound(bound, row.encrypted_api_key, row.key_id, row.key_binding);
      } catch {
        ok = false;
      }
      if (ok) {
        expect(row.key_id).toBe(both.primaryKeyId);
        rewrapped++;
      } else {
        expect(row).toMatchObject({ encrypted_api_key: before[i].encrypted_api_key, key_binding: before[i].key_binding }); // untouched
      }
    }
    expect(rewrapped).toBeGreaterThan(0);
    for (const row of after) expect(result.stdout + result.stderr).not.toContain(both.decrypt(row.encrypted_api_key));
  });
});
