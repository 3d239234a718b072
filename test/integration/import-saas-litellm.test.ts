// `npm run import:saas-litellm`, as a real process, from a SaaS LiteLLM database
// built here (that service's schema, rows from test/fixtures/saas-litellm/fixture.json,
// whose api_key tokens were made by Python's `cryptography` with make-fixture.py)
// into a database of ours; then a service started on it resolves the imported keys.
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { KeySource, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/keyring.js";
import { keyHint } from "../../service/src/credentials/validation.js";
import { createOrm, migrate } from "../../service/src/db/orm.js";
import { TokenStore } from "../../service/src/auth/token-store.js";
import type { ProviderName } from "../../service/src/db/entities.js";
import { legacyFernetKeyText, legacyKeyring, openLegacyToken } from "../../service/src/importer/legacy-key.js";
import { mapLegacyProvider } from "../../service/src/importer/providers.js";
import { createTestDatabase, rpcError, startTestService, type TestDatabase } from "../support/harness.js";

interface FixtureCredential {
  credential_id: string;
  organization_id: string;
  provider: string;
  credential_name: string;
  plaintext: string;
  api_key: string;
  api_base: string | null;
  is_active: boolean;
  created_at: string;
  updated_at: string;
  created_by: string | null;
  updated_by: string | null;
  expect: "imported" | "skipped" | "undecryptable";
  why: string;
}
interface Fixture {
  generated_by: string;
  encryption_key: string;
  derived_fernet_key: string;
  virtual_key: string;
  organizations: Array<{ organization_id: string; name: string; status: string; created_at: string; updated_at: string; expect: string }>;
  teams: Array<{ team_id: string; organization_id: string | null; created_at: string; updated_at: string; expect: string }>;
  credentials: FixtureCredential[];
}

const FIXTURE_DIR = new URL("../fixtures/saas-litellm/", import.meta.url);
const fixture = JSON.parse(readFileSync(new URL("fixture.json", FIXTURE_DIR), "utf8")) as Fixture;
const imported = fixture.credentials.filter((c) => c.expect === "imported");

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
const masterKey = generateMasterKey();
const ring = createKeyring(masterKey);

let target: TestDatabase;
let legacyUrl: string;
let legacyName: string;

/** Everything secret the import handles: none of it may ever be printed. */
const SECRETS = [
  ...fixture.credentials.flatMap((c) => [c.plaintext, c.api_key]),
  fixture.encryption_key,
  fixture.derived_fernet_key,
  fixture.virtual_key,
  masterKey,
];

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function importCli(args: string[], env: Record<string, string> = {}, databaseUrl = target.url): Promise<Result> {
  try {
    const { stdout, stderr } = await run(TSX, ["service/src/cli/import-saas-litellm.ts", ...args], {
      env: { PATH: process.env.PATH, DATABASE_URL: databaseUrl, MASTER_KEY: masterKey, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const fromLegacy = () => ["--from", legacyUrl, "--legacy-encryption-key", fixture.encryption_key];

function expectNoSecrets(result: Result): void {
  const output = result.stdout + result.stderr;
  for (const secret of SECRETS) expect(output, "a key, token or encryption key was printed").not.toContain(secret);
}

/** Every table's row count and a hash of its contents. */
async function checksum(db: TestDatabase): Promise<Record<string, string>> {
  const sums: Record<string, string> = {};
  for (const table of [
    "organizations",
    "teams",
    "provider_credentials",
    "provider_credentials_unbound",
    "audit_events",
    "selection_strategies",
    "api_tokens",
  ]) {
    const [row] = await db.query<{ n: string; h: string }>(
      `select count(*) as n, md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as h from ${table} t`,
    );
    sums[table] = `${row.n}:${row.h}`;
  }
  return sums;
}

/** A fixture timestamp (naive UTC, as SQLAlchemy stores datetime.utcnow()) with six fractional digits. */
function micro(timestamp: string): string {
  const [whole, fraction = ""] = timestamp.split(".");
  return `${whole}.${fraction.padEnd(6, "0")}`;
}
const UTC = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')`;

/** The section of a report that lists rows not imported. */
const problems = (stdout: string) => stdout.slice(stdout.indexOf("Skipped ("), stdout.indexOf("Notes:"));

async function withAdmin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: inject("adminDatabaseUrl") });
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}

/** The SaaS LiteLLM schema (its SQLAlchemy models: naive DateTime columns holding UTC) and the fixture's rows. */
async function buildLegacyDatabase(): Promise<void> {
  legacyName = `saas_litellm_${randomBytes(5).toString("hex")}`;
  await withAdmin(async (admin) => {
    await admin.query(`create database ${legacyName}`);
    // Its sessions run in another time zone: naive timestamps must still be read as UTC.
    await admin.query(`alter database ${legacyName} set timezone to 'America/New_York'`);
  });
  const url = new URL(inject("adminDatabaseUrl"));
  url.pathname = `/${legacyName}`;
  legacyUrl = url.toString();
  const client = new pg.Client({ connectionString: legacyUrl });
  await client.connect();
  try {
    await client.query(`
      create table organizations (
        organization_id varchar(255) primary key,
        name varchar(255) not null,
        status varchar(50) default 'active',
        metadata json,
        created_at timestamp default now(),
        updated_at timestamp default now()
      );
      create table team_credits (
        team_id varchar(255) primary key,
        organization_id varchar(255) references organizations (organization_id),
        credits_allocated integer default 0,
        credits_used integer default 0,
        credits_remaining integer generated always as (credits_allocated - credits_used) stored,
        virtual_key varchar(500),
        budget_mode varchar(50) not null default 'job_based',
        status varchar(20) not null default 'active',
        created_at timestamp not null default now(),
        updated_at timestamp not null default now()
      );
      create table provider_credentials (
        credential_id uuid primary key,
        organization_id varchar(255) not null references organizations (organization_id),
        provider varchar(50) not null,
        api_key text not null,
        api_base varchar(500),
        credential_name varchar(255) not null,
        is_active boolean not null default true,
        created_at timestamp not null default now(),
        updated_at timestamp not null default now(),
        created_by varchar(255),
        updated_by varchar(255)
      );`);
    for (const o of fixture.organizations) {
      await client.query("insert into organizations (organization_id, name, status, metadata, created_at, updated_at) values ($1, $2, $3, '{}', $4, $5)", [
        o.organization_id,
        o.name,
        o.status,
        o.created_at,
        o.updated_at,
      ]);
    }
    for (const t of fixture.teams) {
      await client.query(
        "insert into team_credits (team_id, organization_id, credits_allocated, virtual_key, created_at, updated_at) values ($1, $2, 100, $3, $4, $5)",
        [t.team_id, t.organization_id, fixture.virtual_key, t.created_at, t.updated_at],
      );
    }
    for (const c of fixture.credentials) {
      await client.query(
        `insert into provider_credentials (credential_id, organization_id, provider, api_key, api_base, credential_name, is_active, created_at, updated_at, created_by, updated_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        [
          c.credential_id,
          c.organization_id,
          c.provider,
          c.api_key,
          c.api_base,
          c.credential_name,
          c.is_active,
          c.created_at,
          c.updated_at,
          c.created_by,
          c.updated_by,
        ],
      );
    }
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  target = await createTestDatabase();
  const orm = await createOrm({ databaseUrl: target.url, poolSize: 2 });
  try {
    await migrate(orm, target.url);
  } finally {
    await orm.close(true);
  }
  await buildLegacyDatabase();
});

afterAll(async () => {
  await target?.drop();
  if (legacyName) await withAdmin((admin) => admin.query(`drop database if exists ${legacyName} with (force)`));
});

describe("the fixture", () => {
  it("was made by Python's cryptography, and our PBKDF2 derivation and Fernet open its tokens", () => {
    expect(fixture.generated_by).toMatch(/cryptography/);
    expect(legacyFernetKeyText(fixture.encryption_key)).toBe(fixture.derived_fernet_key);
    const legacy = legacyKeyring(fixture.encryption_key);
    for (const c of fixture.credentials) {
      const opened = openLegacyToken(legacy, c.api_key);
      if (c.expect === "undecryptable") expect(opened.ok).toBe(false);
      else expect(opened).toEqual({ ok: true, plaintext: c.plaintext });
    }
    // What the test below relies on is in it.
    expect(fixture.credentials.some((c) => c.api_base !== null && c.expect === "imported")).toBe(true);
    expect(fixture.credentials.some((c) => !c.is_active && c.expect === "imported")).toBe(true);
    expect(fixture.credentials.filter((c) => c.expect === "undecryptable")).toHaveLength(1);
  });
});

describe("npm run import:saas-litellm", () => {
  let first: Result;

  it("--dry-run reads and decrypts everything, reports what would happen, and writes nothing", async () => {
    const before = await checksum(target);
    const result = await importCli([...fromLegacy(), "--dry-run"]);
    expect(result.code, result.stderr).toBe(3);
    expect(result.stdout).toContain("(dry run: nothing was written)");
    expect(result.stdout).toContain("organizations: 3 would be imported, 0 already present, 1 skipped");
    expect(result.stdout).toContain("teams:         3 would be imported, 0 already present, 3 skipped");
    expect(result.stdout).toContain("credentials:   5 would be imported, 0 already present, 5 skipped, 1 could not be decrypted");
    expect(result.stderr).toMatch(/checking \(dry run\) \[#+\] 21\/21 \(100\.0%\)/);
    expectNoSecrets(result);
    expect(await checksum(target)).toEqual(before);
  });

  it("imports organisations, teams and credentials, keeping ids, names, timestamps, authors and active flags", async () => {
    first = await importCli([...fromLegacy(), "--batch-size", "3"]);
    expect(first.code, first.stderr).toBe(3);
    expectNoSecrets(first);
    expect(first.stdout).toContain("organizations: 3 imported, 0 already present, 1 skipped");
    expect(first.stdout).toContain("teams:         3 imported, 0 already present, 3 skipped");
    expect(first.stdout).toContain("credentials:   5 imported, 0 already present, 5 skipped, 1 could not be decrypted");
    expect(first.stderr).toMatch(/importing \[#+\] 21\/21 \(100\.0%\)/);

    const orgs = await target.query<{ id: string; name: string; created: string; updated: string }>(
      `select id, name, ${UTC("created_at")} as created, ${UTC("updated_at")} as updated from organizations order by id`,
    );
    expect(orgs.map((o) => o.id)).toEqual(["acme", "globex", "initech"]);
    for (const o of orgs) {
      const legacy = fixture.organizations.find((l) => l.organization_id === o.id)!;
      expect(o).toEqual({ id: o.id, name: legacy.name === "" ? o.id : legacy.name, created: micro(legacy.created_at), updated: micro(legacy.updated_at) });
    }
    const teams = await target.query<{ id: string; organization_id: string; name: string; created: string }>(
      `select id, organization_id, name, ${UTC("created_at")} as created from teams order by id`,
    );
    expect(teams).toEqual(
      fixture.teams
        .filter((t) => t.expect === "imported")
        .map((t) => ({ id: t.team_id, organization_id: t.organization_id, name: t.team_id, created: micro(t.created_at) })),
    );

    const rows = await target.query<{
      id: string;
      organization_id: string;
      provider: ProviderName;
      credential_name: string;
      encrypted_api_key: string;
      key_id: string;
      key_binding: string;
      key_hint: string;
      api_base: string | null;
      is_active: boolean;
      version: number;
      created_by: string | null;
      updated_by: string | null;
      created: string;
      updated: string;
      activated: string | null;
      key_set: string;
      last_used_at: Date | null;
      weight: number;
      use_count: string;
    }>(
      `select id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_binding, key_hint, api_base, is_active, version,
         created_by, updated_by, ${UTC("created_at")} as created, ${UTC("updated_at")} as updated, ${UTC("activated_at")} as activated,
         ${UTC("key_set_at")} as key_set, last_used_at, weight, use_count
       from provider_credentials order by id`,
    );
    expect(rows.map((r) => r.id)).toEqual(imported.map((c) => c.credential_id).sort());
    for (const row of rows) {
      const c = imported.find((i) => i.credential_id === row.id)!;
      const provider = mapLegacyProvider(c.provider)!;
      expect(row).toMatchObject({
        organization_id: c.organization_id,
        provider,
        credential_name: c.credential_name,
        api_base: c.api_base,
        is_active: c.is_active,
        version: 1,
        created_by: c.created_by,
        updated_by: c.updated_by,
        created: micro(c.created_at),
        updated: micro(c.updated_at),
        // activated_at = updated_at for active credentials; key_set_at = created_at (see the README).
        activated: c.is_active ? micro(c.updated_at) : null,
        key_set: micro(c.created_at),
        last_used_at: null,
        weight: 1,
        use_count: "0",
        key_id: ring.primaryKeyId,
        key_hint: keyHint(c.plaintext, provider),
      });
      // Re-encrypted under MASTER_KEY (not the legacy token), bound to its row, and the same key.
      expect(row.encrypted_api_key).not.toBe(c.api_key);
      expect(
        ring.decryptBound(
          { id: row.id, organizationId: row.organization_id, provider, apiBase: row.api_base },
          row.encrypted_api_key,
          row.key_id,
          row.key_binding,
        ),
      ).toBe(c.plaintext);
    }
    expect(rows.find((r) => r.id === imported.find((c) => c.provider === "google")!.credential_id)!.provider).toBe("gemini");
    expect(rows.find((r) => r.id === imported.find((c) => c.provider === "fireworks_ai")!.credential_id)!.provider).toBe("fireworks");
    expect(await target.query("select * from provider_credentials_unbound")).toEqual([]);

    // The report names every row not imported, by id, with why.
    const id = (n: number) => fixture.credentials[n - 1].credential_id;
    expect(first.stdout).toContain(
      `organization "bad org!": organization_id: must be 1-64 characters of letters, digits, '.', '_' or '-'; its teams and credentials are skipped with it`,
    );
    expect(first.stdout).toContain(`team "team with spaces" (organization "acme"): team_id: must be 1-64 characters`);
    expect(first.stdout).toContain(`team "team-of-bad-org" (organization "bad org!"): its organization "bad org!" is skipped`);
    expect(first.stdout).toContain(`team "team-no-org" (organization (none)): it has no organization`);
    expect(first.stdout).toContain(`credential ${id(6)} (organization "acme", provider "cohere"): provider "cohere" is not one this service stores`);
    expect(first.stdout).toContain(`credential ${id(7)} (organization "bad org!", provider "openai"): its organization "bad org!" is skipped`);
    expect(first.stdout).toContain(
      `credential ${id(8)} (organization "acme", provider "openai"): credential ${id(1)}, created earlier, has the same name ignoring case ("PRIMARY")`,
    );
    expect(first.stdout).toContain(
      `credential ${id(10)} (organization "acme", provider "openai"): the stored key is refused here: api_key: OpenAI keys start with "sk-"`,
    );
    expect(first.stdout).toContain(`credential ${id(11)} (organization "acme", provider "openai"): api_base: must use http or https`);
    expect(first.stdout).toMatch(
      new RegExp(
        `Could not decrypt \\(1, not imported\\):\\n  credential ${id(9)} \\(organization "acme", provider "openai"\\): api_key does not decrypt with the key derived from --legacy-encryption-key`,
      ),
    );
    expect(first.stdout).toMatch(/1 organization\(s\) are not active in SaaS LiteLLM; they are imported all the same .*"globex" \(suspended\)/);
    expect(first.stdout).toContain("10 row(s) were not imported.");
  });

  it("writes one audit event per imported row and a summary, with no key material", async () => {
    const events = await target.query<{
      actor: string;
      action: string;
      organization_id: string | null;
      credential_id: string | null;
      target: string | null;
      details: Record<string, unknown>;
    }>("select actor, action, organization_id, credential_id, target, details from audit_events order by id");
    expect(new Set(events.map((e) => e.actor))).toEqual(new Set(["import:saas-litellm"]));
    const byAction = (action: string) => events.filter((e) => e.action === action);
    expect(
      byAction("organization.import")
        .map((e) => e.organization_id)
        .sort(),
    ).toEqual(["acme", "globex", "initech"]);
    expect(
      byAction("team.import")
        .map((e) => e.target)
        .sort(),
    ).toEqual(["team-acme-1", "team-acme-2", "team-globex"]);
    const credentialEvents = byAction("credential.import");
    expect(credentialEvents.map((e) => e.credential_id).sort()).toEqual(imported.map((c) => c.credential_id).sort());
    for (const e of credentialEvents) {
      const c = imported.find((i) => i.credential_id === e.credential_id)!;
      expect(e.organization_id).toBe(c.organization_id);
      expect(e.details).toMatchObject({
        provider: mapLegacyProvider(c.provider),
        legacy_provider: c.provider,
        credential_name: c.credential_name,
        imported_from: "saas-litellm",
      });
    }
    const [summary] = byAction("saas_litellm.import");
    expect(summary.target).toMatch(/^saas-litellm:.+\/saas_litellm_/);
    expect(summary.details).toEqual({
      organizations: { imported: 3, already_present: 0, skipped: 1 },
      teams: { imported: 3, already_present: 0, skipped: 3 },
      credentials: { imported: 5, already_present: 0, skipped: 5, undecryptable: 1 },
    });
    expect(events).toHaveLength(3 + 3 + 5 + 1);
    const text = JSON.stringify(events);
    for (const secret of SECRETS) expect(text).not.toContain(secret);
  });

  it("a rerun (here with the URL and key from the environment) changes nothing and reports the same problems", async () => {
    const before = await checksum(target);
    const again = await importCli([], { LEGACY_DATABASE_URL: legacyUrl, LEGACY_ENCRYPTION_KEY: fixture.encryption_key });
    expect(again.code, again.stderr).toBe(3);
    expectNoSecrets(again);
    expect(again.stdout).toContain("organizations: 0 imported, 3 already present, 1 skipped");
    expect(again.stdout).toContain("teams:         0 imported, 3 already present, 3 skipped");
    expect(again.stdout).toContain("credentials:   0 imported, 5 already present, 5 skipped, 1 could not be decrypted");
    expect(problems(again.stdout)).toBe(problems(first.stdout));
    expect(await checksum(target)).toEqual(before);

    // The same from files (mounted secrets): LEGACY_DATABASE_URL_FILE and LEGACY_ENCRYPTION_KEY_FILE.
    const dir = mkdtempSync(path.join(tmpdir(), "pc-legacy-secrets-"));
    try {
      writeFileSync(path.join(dir, "url"), `${legacyUrl}\n`, { mode: 0o600 });
      writeFileSync(path.join(dir, "key"), `${fixture.encryption_key}\n`, { mode: 0o600 });
      const fromFiles = await importCli([], { LEGACY_DATABASE_URL_FILE: path.join(dir, "url"), LEGACY_ENCRYPTION_KEY_FILE: path.join(dir, "key") });
      expect(fromFiles.code, fromFiles.stderr).toBe(3);
      expectNoSecrets(fromFiles);
      expect(problems(fromFiles.stdout)).toBe(problems(first.stdout));
      // Both a value and a file: refused, naming them.
      const both = await importCli([], {
        LEGACY_ENCRYPTION_KEY: fixture.encryption_key,
        LEGACY_ENCRYPTION_KEY_FILE: path.join(dir, "key"),
        LEGACY_DATABASE_URL: legacyUrl,
      });
      expect(both.code).toBe(2);
      expect(both.stderr).toContain("LEGACY_ENCRYPTION_KEY and LEGACY_ENCRYPTION_KEY_FILE are both set");
      expectNoSecrets(both);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await checksum(target)).toEqual(before);
  });

  it("a service started on the imported database resolves the imported keys", async () => {
    const svc = await startTestService({ db: target, masterKey, cacheMaxEntries: 0 });
    try {
      const resolve = (scope: { case: "organizationId" | "teamId"; value: string }, provider: Provider) =>
        svc.clients().credentials.resolveKey({ scope, provider });
      // acme has two active OpenAI credentials: the most recently activated (legacy updated_at) wins.
      const proxy = fixture.credentials[2];
      const openai = await resolve({ case: "organizationId", value: "acme" }, Provider.OPENAI);
      expect({ apiKey: openai.apiKey, apiBase: openai.apiBase, credentialId: openai.credentialId }).toEqual({
        apiKey: proxy.plaintext,
        apiBase: proxy.api_base,
        credentialId: proxy.credential_id,
      });
      const gemini = await resolve({ case: "teamId", value: "team-globex" }, Provider.GEMINI);
      expect(gemini.apiKey).toBe(fixture.credentials[3].plaintext);
      const fireworks = await resolve({ case: "organizationId", value: "globex" }, Provider.FIREWORKS);
      expect(fireworks.apiKey).toBe(fixture.credentials[4].plaintext);
      // The Anthropic credential was inactive in SaaS LiteLLM, and is here.
      expect((await rpcError(resolve({ case: "teamId", value: "team-acme-1" }, Provider.ANTHROPIC))).code).toBe(Code.FailedPrecondition);
    } finally {
      await svc.close();
    }
  });
});

describe("replicas running during an import", () => {
  it("serve a newly imported key at once (NOTIFY in the import's transaction), not what they had cached", async () => {
    const fallback = "sk-FAKE-environment-fallback-key-000000";
    const svc = await startTestService({ db: target, masterKey, env: { OPENAI_API_KEY: fallback } });
    try {
      const resolve = () => svc.clients().credentials.resolveKey({ scope: { case: "organizationId", value: "initech" }, provider: Provider.OPENAI });
      const before = await resolve();
      expect({ source: before.source, apiKey: before.apiKey }).toEqual({ source: KeySource.ENVIRONMENT, apiKey: fallback });
      // A key added in SaaS LiteLLM after the first import (its token made here, as Python's Fernet would).
      const plaintext = `sk-FAKE-added-later-${randomBytes(12).toString("hex")}`;
      const id = "6f1c7a52-0b6e-4c38-9d43-2a51f0c1e0ff";
      const legacy = new pg.Client({ connectionString: legacyUrl });
      await legacy.connect();
      try {
        await legacy.query(
          `insert into provider_credentials (credential_id, organization_id, provider, api_key, credential_name, is_active, created_by, updated_by)
           values ($1, 'initech', 'openai', $2, 'Added later', true, 'frank@initech.test', 'frank@initech.test')`,
          [id, legacyKeyring(fixture.encryption_key).encrypt(plaintext).token],
        );
      } finally {
        await legacy.end();
      }
      const result = await importCli(fromLegacy());
      expect(result.stdout).toContain("credentials:   1 imported, 5 already present, 5 skipped, 1 could not be decrypted");
      expect(result.stdout + result.stderr).not.toContain(plaintext);
      const after = await resolve();
      expect({ source: after.source, apiKey: after.apiKey, credentialId: after.credentialId }).toEqual({
        source: KeySource.ORGANIZATION,
        apiKey: plaintext,
        credentialId: id,
      });
    } finally {
      await svc.close();
    }
  });
});

describe("an organisation id that API tokens are still limited to", () => {
  let reused: TestDatabase;
  beforeAll(async () => {
    reused = await createTestDatabase();
    const orm = await createOrm({ databaseUrl: reused.url, poolSize: 2 });
    try {
      await migrate(orm, reused.url);
      // A gateway token limited to "globex", whose organisation was deleted here since.
      await reused.query("insert into organizations (id, name, created_at, updated_at) values ('globex', 'Old Globex', now(), now())");
      await new TokenStore(orm).create("old-globex-gateway", "resolve", "test", { organizationIds: ["globex"] });
      await reused.query("delete from organizations where id = 'globex'");
    } finally {
      await orm.close(true);
    }
  });
  afterAll(async () => {
    await reused?.drop();
  });

  it("is not created again by the import: the organisation is skipped, with why, and its teams and credentials with it", async () => {
    const result = await importCli(fromLegacy(), {}, reused.url);
    expectNoSecrets(result);
    expect(result.stdout).toContain("organizations: 2 imported, 0 already present, 2 skipped");
    expect(result.stdout).toMatch(/"globex".*still limited to a deleted organization of this id/);
    expect((await reused.query<{ id: string }>("select id from organizations order by id")).map((o) => o.id)).toEqual(["acme", "initech"]);
    expect(await reused.query("select id from teams where organization_id = 'globex'")).toEqual([]);
    expect(await reused.query("select id from provider_credentials where organization_id = 'globex'")).toEqual([]);
  });
});

describe("npm run import:saas-litellm refuses clearly", () => {
  let empty: TestDatabase;
  beforeAll(async () => {
    empty = await createTestDatabase();
  });
  afterAll(async () => {
    await empty?.drop();
  });
  const tables = async () => (await empty.query<{ n: string }>("select count(*) as n from pg_tables where schemaname = 'public'"))[0].n;

  it("a wrong --legacy-encryption-key: says so, exits 4, and touches neither database", async () => {
    const wrong = await importCli(["--from", legacyUrl, "--legacy-encryption-key", "not-the-encryption-key"], {}, empty.url);
    expect(wrong.code, wrong.stderr).toBe(4);
    expect(wrong.stderr).toMatch(
      /none of the 1[12] stored api_key token\(s\) in .+\/saas_litellm_\w+ decrypts with the key derived from --legacy-encryption-key/,
    );
    expect(wrong.stderr).toContain("it is probably not the ENCRYPTION_KEY that SaaS LiteLLM ran with. Nothing was imported.");
    expect(wrong.stdout).toBe("");
    expectNoSecrets(wrong);
    // The derived Fernet key given instead of ENCRYPTION_KEY is recognised (and not used).
    const derived = await importCli(["--from", legacyUrl, "--legacy-encryption-key", fixture.derived_fernet_key], {}, empty.url);
    expect(derived.code).toBe(4);
    expect(derived.stderr).toContain("The value given is the derived Fernet key, not ENCRYPTION_KEY");
    expect((derived.stdout + derived.stderr).split(fixture.derived_fernet_key)).toHaveLength(1);
    expect(await tables()).toBe("0");
  });

  it("a dry run against a database that needs migrating: says so, and writes nothing", async () => {
    const result = await importCli([...fromLegacy(), "--dry-run"], {}, empty.url);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("this service's database is not migrated");
    expect(result.stderr).toContain("run npm run migrate first");
    expect(await tables()).toBe("0");
  });

  it("bad arguments, an unreachable database, and a database that is not SaaS LiteLLM's", async () => {
    const key = ["--legacy-encryption-key", fixture.encryption_key];
    const [notUrl, mysql, noKey, badBatch, unreachable, notLegacy] = await Promise.all([
      importCli(["--from", "saas litellm", ...key]),
      importCli(["--from", "mysql://user:hunter2@db.example/saas", ...key]),
      importCli(["--from", legacyUrl]),
      importCli([...fromLegacy(), "--batch-size", "0"]),
      importCli(["--from", "postgres://nobody:hunter2@127.0.0.1:1/saas", ...key]),
      importCli(["--from", target.url, ...key]),
    ]);
    expect(notUrl.code).toBe(2);
    expect(notUrl.stderr).toContain("--from must be a PostgreSQL URL such as postgres://user:password@host:5432/saas_litellm");
    expect(mysql.code).toBe(2);
    expect(mysql.stderr).toContain("--from must be a PostgreSQL URL (postgres:// or postgresql://), not mysql://...");
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain("--legacy-encryption-key is required");
    expect(badBatch.code).toBe(2);
    expect(badBatch.stderr).toContain("--batch-size must be an integer from 1 to 10000");
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain("cannot connect to the SaaS LiteLLM database at 127.0.0.1:1/saas: connection refused");
    expect(notLegacy.code).toBe(1);
    expect(notLegacy.stderr).toMatch(
      /does not look like a SaaS LiteLLM database: no table team_credits; table organizations has no column organization_id; table provider_credentials has no columns credential_id, api_key/,
    );
    for (const r of [notUrl, mysql, noKey, badBatch, unreachable, notLegacy]) {
      expect(r.stdout + r.stderr).not.toContain("hunter2");
      expectNoSecrets(r);
    }
  });
});

const pythonHasCryptography = (() => {
  try {
    execFileSync("python3", ["-c", "import cryptography.fernet"], { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
})();

describe("make-fixture.py", () => {
  it.skipIf(!pythonHasCryptography)("makes fresh tokens that our derivation opens (python3 with cryptography)", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "saas-litellm-fixture-"));
    try {
      const out = path.join(dir, "fixture.json");
      execFileSync("python3", [new URL("make-fixture.py", FIXTURE_DIR).pathname, "--out", out], { stdio: "ignore", timeout: 60_000 });
      const fresh = JSON.parse(readFileSync(out, "utf8")) as Fixture;
      expect(legacyFernetKeyText(fresh.encryption_key)).toBe(fresh.derived_fernet_key);
      const legacy = legacyKeyring(fresh.encryption_key);
      for (const c of fresh.credentials) {
        expect(c.api_key).not.toBe(fixture.credentials.find((f) => f.credential_id === c.credential_id)!.api_key); // fresh IVs
        const opened = openLegacyToken(legacy, c.api_key);
        expect(opened.ok).toBe(c.expect !== "undecryptable");
        if (opened.ok) expect(opened.plaintext).toBe(c.plaintext);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
