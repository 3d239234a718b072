// Security review #19, items 12-14, end to end over gRPC (the bad-input suite has the REST and gRPC refusals):
// page tokens are authenticated with a key derived from MASTER_KEY, so paging works across replicas, restarts
// and a master-key rotation while a token made elsewhere is refused; credential names are unique after NFKC and
// case folding, on new writes and against rows the migration kept; a key pasted into a name is refused unrepeated.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { createTestDatabase, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";
import { createOrm, migrate, type Orm } from "../../service/src/db/orm.js";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/index.js";
import { keyHint } from "../../service/src/credentials/validation.js";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";

/** Shaped like an OpenAI key; a fixed value, never a real key. */
const KEY_SHAPED = "sk-proj-Zq3vN8xR2mT7bK1wY6pL4sD9fG0hJ5cA";

describe("page tokens across replicas, restarts and a master-key rotation", () => {
  let db: TestDatabase;
  const masterKey = generateMasterKey();
  let a: TestService;
  let b: TestService;
  const ORG = "org-pages";

  beforeAll(async () => {
    db = await createTestDatabase();
    a = await startTestService({ db, masterKey });
    b = await startTestService({ db, masterKey, adminToken: a.adminToken });
    const { credentials, organizations } = a.clients();
    for (let i = 0; i < 5; i++) await organizations.createOrganization({ organizationId: i === 0 ? ORG : `${ORG}-${i}`, name: `Org ${i}` });
    for (let i = 0; i < 5; i++) {
      await organizations.createTeam({ teamId: `team-pages-${i}`, organizationId: ORG, name: `Team ${i}` });
      await credentials.createCredential({
        organizationId: ORG,
        provider: Provider.OPENAI,
        credentialName: `key ${i}`,
        apiKey: `sk-proj-pages-${i}-${randomUUID()}`,
      });
    }
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  /** Every page of a list of 2 per page, each page asked of the next replica in turn; the ids in order. */
  async function pageThrough(
    replicas: TestService[],
    list: (s: TestService, pageToken: string) => Promise<{ ids: string[]; next: string }>,
  ): Promise<string[]> {
    const ids: string[] = [];
    let token = "";
    for (let i = 0; ; i++) {
      const page = await list(replicas[i % replicas.length], token);
      ids.push(...page.ids);
      if (page.next === "") return ids;
      token = page.next;
    }
  }

  const lists = {
    credentials: async (s: TestService, pageToken: string) => {
      const page = await s.clients().credentials.listCredentials({ organizationId: ORG, pageSize: 2, pageToken });
      return { ids: page.credentials.map((c) => c.credentialId), next: page.nextPageToken };
    },
    organizations: async (s: TestService, pageToken: string) => {
      const page = await s.clients().organizations.listOrganizations({ pageSize: 2, pageToken });
      return { ids: page.organizations.map((o) => o.organizationId), next: page.nextPageToken };
    },
    teams: async (s: TestService, pageToken: string) => {
      const page = await s.clients().organizations.listTeams({ organizationId: ORG, pageSize: 2, pageToken });
      return { ids: page.teams.map((t) => t.teamId), next: page.nextPageToken };
    },
    audit: async (s: TestService, pageToken: string) => {
      const page = await createClient(AdminService, s.transport("grpc", s.adminToken)).listAuditEvents({ organizationId: ORG, pageSize: 2, pageToken });
      return { ids: page.events.map((e) => e.eventId), next: page.nextPageToken };
    },
  };

  it.each(Object.keys(lists) as Array<keyof typeof lists>)("pages the %s list alternately on two replicas, as one replica does", async (name) => {
    const alone = await pageThrough([a], lists[name]);
    expect(alone.length).toBeGreaterThanOrEqual(5);
    expect(new Set(alone).size).toBe(alone.length);
    expect(await pageThrough([a, b], lists[name])).toEqual(alone);
  });

  it("takes a token after a restart, and after MASTER_KEY gains a new primary key; refuses it on a deployment with another key", async () => {
    const first = await lists.credentials(a, "");
    const rest = await pageThrough([a], (s, token) => lists.credentials(s, token === "" ? first.next : token));
    await a.close();
    a = await startTestService({ db, masterKey, adminToken: b.adminToken });
    expect(await pageThrough([a], (s, token) => lists.credentials(s, token === "" ? first.next : token))).toEqual(rest);

    const rotated = await startTestService({ db, masterKey: `${generateMasterKey()},${masterKey}`, adminToken: b.adminToken });
    try {
      expect(await pageThrough([rotated], (s, token) => lists.credentials(s, token === "" ? first.next : token))).toEqual(rest);
    } finally {
      await rotated.close();
    }

    const elsewhere = await startTestService({ masterKey: generateMasterKey() });
    try {
      await elsewhere.clients().organizations.createOrganization({ organizationId: ORG, name: "Same id, other deployment" });
      const refused = await rpcError(elsewhere.clients().credentials.listCredentials({ organizationId: ORG, pageToken: first.next }));
      expect(refused).toEqual({ code: Code.InvalidArgument, message: "page_token: is malformed; pass the next_page_token of the previous page unchanged" });
    } finally {
      await elsewhere.close();
    }
  });
});

describe("credential names", () => {
  let t: TestService;
  const ORG = "org-names";

  beforeAll(async () => {
    t = await startTestService();
    await t.clients().organizations.createOrganization({ organizationId: ORG, name: "Names" });
  });
  afterAll(async () => {
    await t?.close();
  });

  const create = (credentialName: string) =>
    t.clients().credentials.createCredential({ organizationId: ORG, provider: Provider.OPENAI, credentialName, apiKey: `sk-proj-names-${randomUUID()}` });

  it("are unique after NFKC and case folding, on create and on rename, and may still differ in other providers", async () => {
    await create("PROD");
    await create("Straße");
    const other = (await create("staging")).credential!;
    for (const name of ["ｐｒｏｄ", "prod", "STRASSE", "strasse"]) {
      const refused = await rpcError(create(name));
      expect(refused.code, name).toBe(Code.AlreadyExists);
      expect(refused.message, name).toMatch(/^credential_name: a credential named ".*" already exists for this organization and provider$/);
    }
    const rename = await rpcError(t.clients().credentials.updateCredential({ credentialId: other.credentialId, credentialName: "Ｐｒｏｄ" }));
    expect(rename.code).toBe(Code.AlreadyExists);
    expect(rename.message).toMatch(/^credential_name: /);
    // Renaming a credential to another form of its own name is allowed.
    const renamed = await t.clients().credentials.updateCredential({ credentialId: other.credentialId, credentialName: "STAGING" });
    expect(renamed.credential!.credentialName).toBe("STAGING");
    const anthropic = await t
      .clients()
      .credentials.createCredential({ organizationId: ORG, provider: Provider.ANTHROPIC, credentialName: "ｐｒｏｄ", apiKey: `sk-ant-names-${randomUUID()}` });
    expect(anthropic.credential!.credentialName).toBe("ｐｒｏｄ");
  });

  it("refuses a key pasted into a name without repeating it anywhere, and writes nothing", async () => {
    const before = await t.db.query<{ n: number }>("select (select count(*) from provider_credentials)::int + (select count(*) from audit_events)::int as n");
    const refused = await rpcError(create(`my key ${KEY_SHAPED}`));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.message).toMatch(/^credential_name: looks like a provider API key/);
    expect(refused.message).not.toContain(KEY_SHAPED.slice(8, 20));
    expect(t.logs.join("\n")).not.toContain(KEY_SHAPED.slice(8, 20));
    const after = await t.db.query<{ n: number }>("select (select count(*) from provider_credentials)::int + (select count(*) from audit_events)::int as n");
    expect(after).toEqual(before);
  });
});

describe("the credential_name_key migration, on names that already meet", () => {
  let db: TestDatabase;
  let orm: Orm;
  const masterKey = generateMasterKey();
  const ORG = "org-legacy";
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    db = await createTestDatabase();
    orm = await createOrm({ databaseUrl: db.url, poolSize: 2 });
    await orm.getMigrator().up({ to: "Migration20261206000000_sign_in_attempts" });
    await db.query("insert into organizations (id, name, created_at, updated_at) values ($1, 'Legacy', now(), now())", [ORG]);
    const keyring = createKeyring(masterKey);
    // Oldest first: the earlier of two names that meet keeps the name's key.
    const names = ["Prod", "ＰＲＯＤ", "Straße", "STRASSE", "other"];
    for (const [i, name] of names.entries()) {
      const id = randomUUID();
      ids[name] = id;
      const key = `sk-proj-legacy-${i}-${randomUUID()}`;
      const { token, keyId, binding } = keyring.encryptBound(key, { id, organizationId: ORG, provider: "openai", apiBase: null });
      await db.query(
        `insert into provider_credentials (id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_binding, key_hint, is_active, activated_at, version, created_at, updated_at)
         values ($1, $2, 'openai', $3, $4, $5, $6, $7, true, now(), 1, now() - make_interval(mins => $8::int), now())`,
        [id, ORG, name, token, keyId, binding, keyHint(key, "openai"), 100 - i],
      );
    }
    await migrate(orm, db.url);
  });
  afterAll(async () => {
    await orm?.close(true);
    await db?.drop();
  });

  it("keys the oldest of each group of meeting names and keeps the others, unkeyed", async () => {
    const rows = await db.query<{ credential_name: string; credential_name_key: string | null }>(
      "select credential_name, credential_name_key from provider_credentials order by created_at",
    );
    expect(rows).toEqual([
      { credential_name: "Prod", credential_name_key: "prod" },
      { credential_name: "ＰＲＯＤ", credential_name_key: null },
      { credential_name: "Straße", credential_name_key: "strasse" },
      { credential_name: "STRASSE", credential_name_key: null },
      { credential_name: "other", credential_name_key: "other" },
    ]);
  });

  it("serves the kept rows, and refuses new names that meet any row, keyed or kept", async () => {
    const t = await startTestService({ db, masterKey });
    try {
      const { credentials } = t.clients();
      const listed = await credentials.listCredentials({ organizationId: ORG });
      expect(listed.credentials.map((c) => c.credentialName).sort()).toEqual(["other", "Prod", "STRASSE", "Straße", "ＰＲＯＤ"].sort());
      const create = (credentialName: string) =>
        credentials.createCredential({ organizationId: ORG, provider: Provider.OPENAI, credentialName, apiKey: `sk-proj-new-${randomUUID()}` });
      expect((await rpcError(create("prod"))).code).toBe(Code.AlreadyExists);
      // The keyed holder of "strasse" goes; the kept "STRASSE" still holds the name.
      await credentials.deleteCredential({ credentialId: ids["Straße"] });
      // Full-width: lower() (the old index) does not meet "STRASSE", the comparable form does.
      const refused = await rpcError(create("ｓｔｒａｓｓｅ"));
      expect(refused.code).toBe(Code.AlreadyExists);
      expect(refused.message).toMatch(/^credential_name: /);
      // A kept row renamed gets a key, and its new name is held like any other.
      await credentials.updateCredential({ credentialId: ids["ＰＲＯＤ"], credentialName: "Prod 2" });
      expect(await db.query("select credential_name_key from provider_credentials where id = $1", [ids["ＰＲＯＤ"]])).toEqual([
        { credential_name_key: "prod 2" },
      ]);
      expect((await rpcError(create("ｐｒｏｄ ２"))).code).toBe(Code.AlreadyExists);
      expect((await create("fresh")).credential!.credentialName).toBe("fresh");
    } finally {
      await t.close();
    }
  });
});
