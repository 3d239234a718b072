// What ends up at rest and in logs: plaintext keys never do; the ciphertext is
// standard Fernet that Python's `cryptography` reads; MASTER_KEY rotation with
// a comma-separated list (MultiFernet semantics) and the start-up checks.
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestService, createTestDatabase, FAKE_KEYS, rpcError, type TestDatabase, type TestService } from "../support/harness.js";
import { Code } from "@connectrpc/connect";
import { Provider, KeySource } from "@provider-credentials/wire/gen/credentials_pb";
import { createKeyring, generateMasterKey, MasterKeyError } from "../../service/src/keyring/keyring.js";
import { StartupError } from "../../service/src/server.js";

const pythonHasCryptography = (() => {
  try {
    execFileSync("python3", ["-c", "import cryptography.fernet"], { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
})();

// Reads {"key": str, "tokens": [str]} from stdin, prints the plaintexts as a JSON array.
const PY_DECRYPT = [
  "import json, sys",
  "from cryptography.fernet import Fernet",
  "req = json.load(sys.stdin)",
  "f = Fernet(req['key'].encode('ascii'))",
  "sys.stdout.write(json.dumps([f.decrypt(t.encode('ascii')).decode('utf-8') for t in req['tokens']]))",
].join("\n");

/** Every row of every table in schema public, as text. */
async function dumpDatabase(db: TestDatabase): Promise<Map<string, string[]>> {
  const tables = await db.query<{ tablename: string }>("select tablename from pg_tables where schemaname = 'public' order by tablename");
  const dump = new Map<string, string[]>();
  for (const { tablename } of tables) {
    const rows = await db.query<{ row: string }>(`select t::text as row from "${tablename}" t`);
    dump.set(
      tablename,
      rows.map((r) => r.row),
    );
  }
  return dump;
}

/** The forms a secret could leak in besides itself. */
function encodings(secret: string): string[] {
  const bytes = Buffer.from(secret, "utf8");
  return [secret, bytes.toString("base64").replace(/=+$/, ""), bytes.toString("base64url"), bytes.toString("hex")];
}

describe("at rest and in logs", () => {
  let t: TestService;
  const plaintexts: Record<"openai" | "anthropic" | "gemini" | "fireworks", string> = {
    openai: FAKE_KEYS.openai(),
    anthropic: FAKE_KEYS.anthropic(),
    gemini: FAKE_KEYS.gemini(),
    fireworks: FAKE_KEYS.fireworks(),
  };
  const PROVIDERS = [
    ["openai", Provider.OPENAI],
    ["anthropic", Provider.ANTHROPIC],
    ["gemini", Provider.GEMINI],
    ["fireworks", Provider.FIREWORKS],
  ] as const;
  /** Every key the service was ever given, including replaced and refused ones. */
  const allKeys: string[] = [];

  beforeAll(async () => {
    t = await startTestService();
    const { credentials, organizations } = t.clients();
    await organizations.createOrganization({ organizationId: "sec-org", name: "Security" });
    await organizations.createTeam({ teamId: "sec-team", organizationId: "sec-org", name: "Team" });
    for (const [name, provider] of PROVIDERS) {
      await credentials.createCredential({ organizationId: "sec-org", provider, credentialName: `${name} prod`, apiKey: plaintexts[name] });
      allKeys.push(plaintexts[name]);
      const resolved = await credentials.resolveKey({ scope: { case: "teamId", value: "sec-team" }, provider });
      expect(resolved.apiKey).toBe(plaintexts[name]);
    }
    // A key that was replaced, and one refused by validation, must not linger either.
    const old = FAKE_KEYS.openai();
    allKeys.push(old);
    const { credential } = await credentials.createCredential({ organizationId: "sec-org", provider: Provider.OPENAI, credentialName: "rotated", apiKey: old });
    const replacement = FAKE_KEYS.openai();
    allKeys.push(replacement);
    await credentials.updateCredential({ credentialId: credential!.credentialId, apiKey: replacement });
    const refused = FAKE_KEYS.anthropic();
    allKeys.push(refused);
    const err = await rpcError(
      credentials.createCredential({ organizationId: "sec-org", provider: Provider.OPENAI, credentialName: "wrong", apiKey: refused }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).not.toContain(refused);
    // Flush last_used_at now rather than at close, so the dump sees a fully used database.
    await t.service.close().catch(() => undefined);
  });
  afterAll(async () => {
    await t?.close();
  });

  it("the raw database dump contains no plaintext key, in any common encoding", async () => {
    const dump = await dumpDatabase(t.db);
    expect([...dump.keys()]).toEqual(expect.arrayContaining(["api_tokens", "audit_events", "organizations", "provider_credentials", "teams"]));
    expect(dump.get("provider_credentials")).toHaveLength(5);
    expect(dump.get("audit_events")!.length).toBeGreaterThanOrEqual(8);
    for (const [table, rows] of dump) {
      for (const row of rows) {
        for (const key of allKeys) {
          for (const form of encodings(key)) expect(row, `${table} leaks a key`).not.toContain(form);
          // Not even a long fragment: the hint shows at most the last 4 characters.
          expect(row, `${table} leaks the tail of a key`).not.toContain(key.slice(-12));
        }
        expect(row, `${table} leaks the master key`).not.toContain(t.masterKey);
        expect(row, `${table} leaks the admin token`).not.toContain(t.adminToken);
      }
    }
  });

  it("no log line contains a plaintext key, the master key or the admin token", () => {
    expect(t.logs.length).toBeGreaterThan(0); // the migration line at least: the sink works
    for (const line of t.logs) {
      for (const key of allKeys) expect(line).not.toContain(key);
      expect(line).not.toContain(t.masterKey);
      expect(line).not.toContain(t.adminToken);
    }
  });

  it("key_id is the primary key's fingerprint, not key material", async () => {
    const keyring = createKeyring(t.masterKey);
    const rows = await t.db.query<{ key_id: string }>("select distinct key_id from provider_credentials");
    expect(rows).toEqual([{ key_id: keyring.primaryKeyId }]);
    expect(keyring.primaryKeyId).toMatch(/^fk_[0-9a-f]{16}$/);
    const raw = Buffer.from(t.masterKey, "base64url");
    for (const form of [t.masterKey, t.masterKey.replace(/=+$/, ""), raw.toString("hex"), raw.toString("hex").slice(0, 16)]) {
      expect(rows[0].key_id).not.toContain(form);
    }
  });

  it("stores Fernet tokens, a fresh one per encryption, and a hint of at most the prefix and last 4 characters", async () => {
    const rows = await t.db.query<{ provider: string; encrypted_api_key: string; key_hint: string; credential_name: string }>(
      "select provider, encrypted_api_key, key_hint, credential_name from provider_credentials where credential_name like '% prod' order by provider",
    );
    for (const row of rows) {
      // Fernet: version byte 0x80, url-safe base64.
      expect(row.encrypted_api_key).toMatch(/^gAAAAA[A-Za-z0-9_-]+=*$/);
      const key = plaintexts[row.provider as keyof typeof plaintexts];
      expect(row.key_hint.endsWith(key.slice(-4))).toBe(true);
      expect(row.key_hint.replace("…", "").length).toBeLessThanOrEqual(7 + 4);
    }
    expect(new Set(rows.map((r) => r.encrypted_api_key)).size).toBe(rows.length);
  });

  it.skipIf(!pythonHasCryptography)("the stored ciphertext decrypts with Python's cryptography.fernet.Fernet(MASTER_KEY)", async () => {
    const rows = await t.db.query<{ provider: string; encrypted_api_key: string }>(
      "select provider, encrypted_api_key from provider_credentials where credential_name like '% prod' order by provider",
    );
    expect(rows).toHaveLength(4);
    const stdout = execFileSync("python3", ["-c", PY_DECRYPT], {
      input: JSON.stringify({ key: t.masterKey, tokens: rows.map((r) => r.encrypted_api_key) }),
      encoding: "utf8",
      timeout: 30_000,
    });
    const decrypted = JSON.parse(stdout) as string[];
    expect(decrypted).toEqual(rows.map((r) => plaintexts[r.provider as keyof typeof plaintexts]));
  });
});

describe("MASTER_KEY rotation and start-up checks (one database, several starts)", () => {
  let db: TestDatabase;
  const A = generateMasterKey();
  const B = generateMasterKey();
  const fpA = createKeyring(A).primaryKeyId;
  const fpB = createKeyring(B).primaryKeyId;
  const keys = { openai: FAKE_KEYS.openai(), gemini: FAKE_KEYS.gemini(), anthropic: FAKE_KEYS.anthropic(), openaiNew: FAKE_KEYS.openai() };
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  const keyIds = async () =>
    Object.fromEntries(
      (await db.query<{ credential_name: string; key_id: string }>("select credential_name, key_id from provider_credentials")).map((r) => [
        r.credential_name,
        r.key_id,
      ]),
    );

  it("stores credentials under key A", async () => {
    const s = await startTestService({ db, masterKey: A });
    try {
      const { credentials, organizations } = s.clients();
      await organizations.createOrganization({ organizationId: "rot-org", name: "Rotation" });
      ids.openai = (
        await credentials.createCredential({ organizationId: "rot-org", provider: Provider.OPENAI, credentialName: "openai", apiKey: keys.openai })
      ).credential!.credentialId;
      ids.gemini = (
        await credentials.createCredential({ organizationId: "rot-org", provider: Provider.GEMINI, credentialName: "gemini", apiKey: keys.gemini })
      ).credential!.credentialId;
    } finally {
      await s.close();
    }
    expect(await keyIds()).toEqual({ openai: fpA, gemini: fpA });
  });

  it('with MASTER_KEY "B,A" old credentials resolve, and new and re-keyed ones are written under B', async () => {
    const s = await startTestService({ db, masterKey: ` ${B} , ${A} ` });
    try {
      const { credentials } = s.clients();
      const openai = await credentials.resolveKey({ scope: { case: "organizationId", value: "rot-org" }, provider: Provider.OPENAI });
      expect(openai).toMatchObject({ apiKey: keys.openai, source: KeySource.ORGANIZATION, credentialId: ids.openai });
      const gemini = await credentials.resolveKey({ scope: { case: "organizationId", value: "rot-org" }, provider: Provider.GEMINI });
      expect(gemini.apiKey).toBe(keys.gemini);
      await credentials.createCredential({ organizationId: "rot-org", provider: Provider.ANTHROPIC, credentialName: "anthropic", apiKey: keys.anthropic });
      // Changing an old credential's key re-encrypts it under the new primary key.
      await credentials.updateCredential({ credentialId: ids.openai, apiKey: keys.openaiNew });
      // Renaming does not touch the ciphertext.
      await credentials.updateCredential({ credentialId: ids.gemini, credentialName: "gemini" + "-renamed" });
      expect((await credentials.resolveKey({ scope: { case: "organizationId", value: "rot-org" }, provider: Provider.ANTHROPIC })).apiKey).toBe(keys.anthropic);
      expect((await credentials.resolveKey({ scope: { case: "organizationId", value: "rot-org" }, provider: Provider.OPENAI })).apiKey).toBe(keys.openaiNew);
    } finally {
      await s.close();
    }
    expect(await keyIds()).toEqual({ openai: fpB, "gemini-renamed": fpA, anthropic: fpB });
  });

  it('with only "B" the service refuses to start, naming A\'s fingerprint and how many rows need it', async () => {
    const error = await startTestService({ db, masterKey: B }).then(
      () => {
        throw new Error("the service started without the key for stored credentials");
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StartupError);
    const message = (error as Error).message;
    expect(message).toContain(`${fpA} (1 credential)`);
    expect(message).not.toContain(fpB + " (");
    expect(message).toContain(`Configured: ${fpB}.`);
    for (const secret of [A, B, A.replace(/=+$/, ""), B.replace(/=+$/, "")]) expect(message).not.toContain(secret);
  });

  it('with only "A" it names B\'s fingerprint and its 2 credentials', async () => {
    const error = await startTestService({ db, masterKey: A }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StartupError);
    expect((error as Error).message).toMatch(
      new RegExp(`^MASTER_KEY does not hold the key\\(s\\) that encrypted stored credentials: ${fpB} \\(2 credentials\\)\\.`),
    );
    expect((error as Error).message).not.toContain(A);
  });

  it("with an unrelated key C it names both missing keys", async () => {
    const error = await startTestService({ db, masterKey: generateMasterKey() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StartupError);
    expect((error as Error).message).toContain(`${fpA} (1 credential)`);
    expect((error as Error).message).toContain(`${fpB} (2 credentials)`);
  });

  it("with an invalid MASTER_KEY it refuses with MasterKeyError explaining the format, without echoing the value", async () => {
    for (const bad of ["short", `${B},short`, `${B},`, `${A},${A}`]) {
      const error = await startTestService({ db, masterKey: bad }).catch((e: unknown) => e);
      expect(error, bad).toBeInstanceOf(MasterKeyError);
      const message = (error as Error).message;
      expect(message).toMatch(/^Invalid MASTER_KEY: /);
      expect(message).toContain("44 characters ending in '='");
      expect(message).toContain("comma-separated");
      expect(message).not.toContain("short");
      expect(message).not.toContain(A);
      expect(message).not.toContain(B);
    }
    const short = (await startTestService({ db, masterKey: "short" }).catch((e: unknown) => e)) as Error;
    expect(short.message).toContain("has the wrong length (5 characters, expected 44)");
  });

  it("after the refused starts, the data is intact and B,A still serves everything", async () => {
    const s = await startTestService({ db, masterKey: `${B},${A}` });
    try {
      const { credentials } = s.clients();
      const resolved = await Promise.all(
        [Provider.OPENAI, Provider.GEMINI, Provider.ANTHROPIC].map((provider) =>
          credentials.resolveKey({ scope: { case: "organizationId", value: "rot-org" }, provider }),
        ),
      );
      expect(resolved.map((r) => r.apiKey)).toEqual([keys.openaiNew, keys.gemini, keys.anthropic]);
    } finally {
      await s.close();
    }
  });
});
