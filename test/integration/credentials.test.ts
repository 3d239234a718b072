import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { toBinary, toJson, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { createKeyring } from "../../service/src/keyring/keyring.js";
import {
  CreateCredentialRequestSchema,
  CreateCredentialResponseSchema,
  CredentialSchema,
  GetCredentialResponseSchema,
  KeySource,
  ListCredentialsResponseSchema,
  Provider,
  UpdateCredentialResponseSchema,
  type Credential,
} from "@provider-credentials/wire/gen/credentials_pb";

const ADMIN_ACTOR = "token:service-admin-token";
const ACTOR_HEADER = "x-provider-credentials-actor";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t?.close();
});

let orgSeq = 0;
/** A fresh organisation, so that every test owns its data. */
async function newOrg(label = "org"): Promise<string> {
  const id = `${label}-${++orgSeq}-${randomBytes(3).toString("hex")}`;
  await t.clients().organizations.createOrganization({ organizationId: id, name: `Org ${id}` });
  return id;
}

type Clients = ReturnType<TestService["clients"]>;
type CreateInit = MessageInitShape<typeof CreateCredentialRequestSchema>;

async function createCredential(organizationId: string, init: Partial<CreateInit> = {}, headers: Record<string, string> = {}) {
  const request = {
    organizationId,
    provider: Provider.OPENAI,
    credentialName: `cred-${randomBytes(4).toString("hex")}`,
    apiKey: FAKE_KEYS.openai(),
    ...init,
  } as CreateInit;
  const { credential } = await t.clients(t.adminToken, headers).credentials.createCredential(request);
  if (!credential) throw new Error("CreateCredential returned no credential");
  return { credential, apiKey: String(request.apiKey).trim() };
}

async function credentialCount(): Promise<number> {
  const [row] = await t.db.query<{ n: number }>("select count(*)::int as n from provider_credentials");
  return row.n;
}

async function storedRow(id: string) {
  const [row] = await t.db.query<{
    encrypted_api_key: string;
    key_id: string;
    key_hint: string;
    api_base: string | null;
    credential_name: string;
    version: number;
    is_active: boolean;
    updated_at: Date;
    updated_by: string | null;
    row_text: string;
  }>("select c.*, row_to_json(c)::text as row_text from provider_credentials c where id = $1", [id]);
  return row;
}

async function auditRows(credentialId: string) {
  return t.db.query<{ actor: string; action: string; organization_id: string | null; credential_id: string | null; details: unknown; details_text: string }>(
    "select actor, action, organization_id, credential_id, details, details::text as details_text from audit_events where credential_id = $1 order by id",
    [credentialId],
  );
}

function collectStrings(value: unknown, out: string[] = []): string[] {
  if (typeof value === "string") out.push(value);
  else if (Array.isArray(value)) for (const v of value) collectStrings(v, out);
  else if (value && typeof value === "object") for (const v of Object.values(value)) collectStrings(v, out);
  return out;
}

/** Neither the JSON form nor the binary wire form of a message carries any of the secrets. */
function expectNoSecrets<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, secrets: string[]): void {
  const strings = collectStrings(toJson(schema, message));
  expect(strings.length).toBeGreaterThan(0);
  const wire = Buffer.from(toBinary(schema, message)).toString("latin1");
  for (const secret of secrets) {
    expect(secret.length).toBeGreaterThanOrEqual(8);
    for (const s of strings) expect(s).not.toContain(secret);
    expect(wire).not.toContain(secret);
  }
}

/** The key, its part after the provider prefix, and the ciphertext stored for it. */
function secretsOf(apiKey: string, prefix: string, ciphertext?: string): string[] {
  return [apiKey, apiKey.slice(prefix.length), ...(ciphertext ? [ciphertext] : [])];
}

function resolve(organizationId: string, provider = Provider.OPENAI) {
  return t.clients().credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider });
}

describe("CreateCredential", () => {
  it("stores a new active credential at version 1 with a masked hint, encrypted, and shows no key", async () => {
    const org = await newOrg();
    const apiKey = FAKE_KEYS.openai();
    const before = Date.now();
    const response = await t.clients().credentials.createCredential({
      organizationId: org,
      provider: Provider.OPENAI,
      credentialName: "  Production  ",
      apiKey,
    });
    const c = response.credential!;
    expect(c.credentialId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(c.organizationId).toBe(org);
    expect(c.provider).toBe(Provider.OPENAI);
    expect(c.credentialName).toBe("Production");
    expect(c.isActive).toBe(true);
    expect(c.version).toBe(1);
    expect(c.keyHint).toBe(`sk-…${apiKey.slice(-4)}`);
    expect(c.apiBase).toBeUndefined();
    expect(c.createdBy).toBe(ADMIN_ACTOR);
    expect(c.updatedBy).toBe(ADMIN_ACTOR);
    expect(c.lastUsedAt).toBeUndefined();
    const createdAt = timestampDate(c.createdAt!).getTime();
    expect(createdAt).toBeGreaterThanOrEqual(before - 1000);
    expect(createdAt).toBeLessThanOrEqual(Date.now() + 1000);
    expect(timestampDate(c.updatedAt!).getTime()).toBe(createdAt);

    // In the database: a Fernet token under the configured master key, never the key itself.
    const row = await storedRow(c.credentialId);
    const keyring = createKeyring(t.masterKey);
    expect(row.encrypted_api_key).not.toContain(apiKey);
    expect(row.row_text).not.toContain(apiKey);
    expect(row.row_text).not.toContain(apiKey.slice(3));
    expect(row.key_id).toBe(keyring.primaryKeyId);
    expect(keyring.decrypt(row.encrypted_api_key)).toBe(apiKey);
    expect(row.key_hint).toBe(c.keyHint);

    expectNoSecrets(CreateCredentialResponseSchema, response, secretsOf(apiKey, "sk-", row.encrypted_api_key));
    for (const line of t.logs) expect(line).not.toContain(apiKey);
  });

  it.each([
    ["anthropic", Provider.ANTHROPIC, FAKE_KEYS.anthropic, "sk-ant-"],
    ["gemini", Provider.GEMINI, FAKE_KEYS.gemini, "AIza"],
    ["fireworks", Provider.FIREWORKS, FAKE_KEYS.fireworks, "fw"],
  ] as const)("masks a %s key as its prefix and last 4 characters", async (_name, provider, makeKey, prefix) => {
    const org = await newOrg();
    const apiKey = makeKey();
    const { credential } = await createCredential(org, { provider, apiKey });
    expect(credential.provider).toBe(provider);
    expect(credential.keyHint).toBe(`${prefix}…${apiKey.slice(-4)}`);
    expectNoSecrets(CredentialSchema, credential, secretsOf(apiKey, prefix));
  });

  it("records the administrator named by the actor header as created_by and updated_by", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org, {}, { [ACTOR_HEADER]: "admin:alice" });
    expect(credential.createdBy).toBe("admin:alice");
    expect(credential.updatedBy).toBe("admin:alice");
    const [audit] = await auditRows(credential.credentialId);
    expect(audit.actor).toBe("admin:alice via token:service-admin-token");
  });

  it("refuses an unknown organisation with NOT_FOUND and writes nothing", async () => {
    const before = await credentialCount();
    const err = await rpcError(
      t.clients().credentials.createCredential({
        organizationId: "no-such-org",
        provider: Provider.OPENAI,
        credentialName: "Prod",
        apiKey: FAKE_KEYS.openai(),
      }),
    );
    expect(err.code).toBe(Code.NotFound);
    expect(err.message).toContain("no-such-org");
    expect(await credentialCount()).toBe(before);
    const audits = await t.db.query("select 1 from audit_events where organization_id = 'no-such-org'");
    expect(audits).toHaveLength(0);
  });

  it("refuses a duplicate name for the same organisation and provider, ignoring case", async () => {
    const org = await newOrg();
    await createCredential(org, { credentialName: "Prod" });
    const before = await credentialCount();
    for (const name of ["Prod", "PROD", "prod", "  pRoD "]) {
      const err = await rpcError(createCredential(org, { credentialName: name }));
      expect(err.code, name).toBe(Code.AlreadyExists);
      expect(err.message.startsWith("credential_name:"), err.message).toBe(true);
    }
    expect(await credentialCount()).toBe(before);
  });

  it("allows the same name for another provider and for another organisation", async () => {
    const org = await newOrg();
    const other = await newOrg();
    await createCredential(org, { credentialName: "Prod" });
    const anthropic = await createCredential(org, { credentialName: "Prod", provider: Provider.ANTHROPIC, apiKey: FAKE_KEYS.anthropic() });
    expect(anthropic.credential.credentialName).toBe("Prod");
    const elsewhere = await createCredential(other, { credentialName: "prod" });
    expect(elsewhere.credential.organizationId).toBe(other);
  });

  describe("validation", () => {
    const openai = FAKE_KEYS.openai();
    const anthropic = FAKE_KEYS.anthropic();
    const longBase = "https://proxy.example.com/";
    const cases: Array<[string, string, Partial<CreateInit>, RegExp?]> = [
      ["provider unspecified", "provider", { provider: Provider.UNSPECIFIED }],
      ["organization_id empty", "organization_id", { organizationId: "" }],
      ["organization_id of 65 characters", "organization_id", { organizationId: "o".repeat(65) }],
      ["organization_id with a slash", "organization_id", { organizationId: "org/one" }],
      ["organization_id with a space", "organization_id", { organizationId: "org one" }],
      ["organization_id with a non-ASCII letter", "organization_id", { organizationId: "orgé" }],
      ["credential_name empty", "credential_name", { credentialName: "" }],
      ["credential_name whitespace only", "credential_name", { credentialName: " \t\n " }],
      ["credential_name of 201 characters", "credential_name", { credentialName: "n".repeat(201) }],
      ["credential_name with a control character", "credential_name", { credentialName: "Prod\u0007Key" }],
      ["credential_name with an inner newline", "credential_name", { credentialName: "Prod\nKey" }],
      ["api_key empty", "api_key", { apiKey: "" }],
      ["api_key whitespace only", "api_key", { apiKey: "   " }],
      ["api_key of 7 characters", "api_key", { apiKey: "sk-abcd" }],
      ["api_key of 4097 characters", "api_key", { apiKey: `sk-${"a".repeat(4094)}` }],
      ["api_key with an inner space", "api_key", { apiKey: "sk-proj-abc def-ghijklmnop" }],
      ["api_key with a non-ASCII character", "api_key", { apiKey: "sk-proj-abcdéfghijklmnop" }],
      ["api_key with an inner newline", "api_key", { apiKey: "sk-proj-abcdef\nghijklmnop" }],
      ["api_key without any provider prefix", "api_key", { apiKey: "not-a-provider-key-123456" }],
      ["an OpenAI key for Anthropic", "api_key", { provider: Provider.ANTHROPIC, apiKey: openai }, /Anthropic keys start with "sk-ant-".*OpenAI/],
      ["an Anthropic key offered as OpenAI", "api_key", { provider: Provider.OPENAI, apiKey: anthropic }, /Anthropic/],
      ["a Fireworks key for Gemini", "api_key", { provider: Provider.GEMINI, apiKey: FAKE_KEYS.fireworks() }, /Gemini/],
      ["a Gemini key for Fireworks", "api_key", { provider: Provider.FIREWORKS, apiKey: FAKE_KEYS.gemini() }, /Fireworks/],
      ["an OpenAI key for Gemini", "api_key", { provider: Provider.GEMINI, apiKey: openai }],
      ["api_base ftp://x", "api_base", { apiBase: "ftp://x" }],
      ["api_base not a url", "api_base", { apiBase: "not a url" }],
      ["api_base relative", "api_base", { apiBase: "/v1" }],
      ["api_base with user and password", "api_base", { apiBase: "https://user:pass@host" }],
      ["api_base with a user only", "api_base", { apiBase: "https://user@host/v1" }],
      ["api_base of 2049 characters", "api_base", { apiBase: longBase + "a".repeat(2049 - longBase.length) }],
    ];

    it.each(cases)("refuses %s with INVALID_ARGUMENT naming %s, writing nothing", async (_label, field, init, messagePattern) => {
      const org = await newOrg();
      const before = await credentialCount();
      const request: Partial<CreateInit> = { ...init };
      const err = await rpcError(createCredential(org, request));
      expect(err.code, err.message).toBe(Code.InvalidArgument);
      expect(err.message.startsWith(`${field}: `), err.message).toBe(true);
      if (messagePattern) expect(err.message).toMatch(messagePattern);
      // The message never repeats a key.
      if (typeof init.apiKey === "string" && init.apiKey.trim().length >= 8) expect(err.message).not.toContain(init.apiKey.trim());
      expect(await credentialCount()).toBe(before);
    });

    it("accepts the boundaries: 64-character organisation id, 200-character name, 8- and 4096-character keys, 2048-character api_base", async () => {
      const org = `b-${randomBytes(31).toString("hex")}`.slice(0, 64);
      expect(org).toHaveLength(64);
      await t.clients().organizations.createOrganization({ organizationId: org, name: "Boundaries" });
      const name = "n".repeat(200);
      expect((await createCredential(org, { credentialName: name })).credential.credentialName).toBe(name);
      const short = await createCredential(org, { apiKey: "sk-abcde" });
      // A short key shows no tail, so that the hint never reveals much of it.
      expect(short.credential.keyHint).toBe("sk-…");
      const long = `sk-${"b".repeat(4089)}Zz99`;
      expect(long).toHaveLength(4096);
      expect((await createCredential(org, { apiKey: long })).credential.keyHint).toBe("sk-…Zz99");
      const base = longBase + "c".repeat(2048 - longBase.length);
      expect((await createCredential(org, { apiBase: base })).credential.apiBase).toBe(base);
    });

    it("accepts any key format when a valid api_base is set, and resolves it with that base", async () => {
      const org = await newOrg();
      const proxyKey = "proxy-key-0123456789ab";
      const { credential } = await createCredential(org, { apiKey: proxyKey, apiBase: "https://proxy.example.com/v1" });
      expect(credential.apiBase).toBe("https://proxy.example.com/v1");
      expect(credential.keyHint).toBe(`…${proxyKey.slice(-4)}`);
      expectNoSecrets(CredentialSchema, credential, [proxyKey]);
      const resolved = await resolve(org);
      expect(resolved.apiKey).toBe(proxyKey);
      expect(resolved.apiBase).toBe("https://proxy.example.com/v1");
      // An Anthropic-looking key for OpenAI is fine behind a proxy too.
      const other = await createCredential(org, { apiKey: anthropic, apiBase: "http://203.0.113.10:8080" });
      expect(other.credential.isActive).toBe(true);
    });

    it("treats an empty api_base as none, so the provider prefix is required", async () => {
      const org = await newOrg();
      const { credential } = await createCredential(org, { apiBase: "" });
      expect(credential.apiBase).toBeUndefined();
      expect((await storedRow(credential.credentialId)).api_base).toBeNull();
      const err = await rpcError(createCredential(org, { apiBase: "", apiKey: "proxy-key-0123456789ab" }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message.startsWith("api_key: ")).toBe(true);
    });

    it("trims whitespace around the key and stores and resolves the trimmed key", async () => {
      const org = await newOrg();
      const apiKey = FAKE_KEYS.openai();
      const { credential } = await createCredential(org, { apiKey: ` \t${apiKey}\r\n ` });
      expect(credential.keyHint).toBe(`sk-…${apiKey.slice(-4)}`);
      const resolved = await resolve(org);
      expect(resolved.apiKey).toBe(apiKey);
      expect(resolved.source).toBe(KeySource.ORGANIZATION);
      const row = await storedRow(credential.credentialId);
      expect(createKeyring(t.masterKey).decrypt(row.encrypted_api_key)).toBe(apiKey);
    });
  });
});

describe("GetCredential", () => {
  it("returns the stored credential without its key", async () => {
    const org = await newOrg();
    const { credential, apiKey } = await createCredential(org, { credentialName: "Fetch me", apiBase: "https://proxy.example.com" });
    const response = await t.clients().credentials.getCredential({ credentialId: credential.credentialId });
    expect(response.credential).toEqual(credential);
    const row = await storedRow(credential.credentialId);
    expectNoSecrets(GetCredentialResponseSchema, response, secretsOf(apiKey, "sk-", row.encrypted_api_key));
    // Ids are accepted in upper case too.
    const upper = await t.clients().credentials.getCredential({ credentialId: credential.credentialId.toUpperCase() });
    expect(upper.credential?.credentialId).toBe(credential.credentialId);
  });

  it("answers NOT_FOUND for an unknown id", async () => {
    const id = "3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c";
    const err = await rpcError(t.clients().credentials.getCredential({ credentialId: id }));
    expect(err.code).toBe(Code.NotFound);
    expect(err.message).toContain(id);
  });

  it.each(["", "not-a-uuid", "3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2", "3f1c2a9e5b7d4c1e9a2b0d4e6f8a1b2c", "'; drop table provider_credentials; --"])(
    "refuses the malformed id %j with INVALID_ARGUMENT credential_id",
    async (id) => {
      const err = await rpcError(t.clients().credentials.getCredential({ credentialId: id }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message.startsWith("credential_id: "), err.message).toBe(true);
    },
  );
});

describe("ListCredentials", () => {
  const list = (init: Parameters<Clients["credentials"]["listCredentials"]>[0]) => t.clients().credentials.listCredentials(init);

  it("lists newest first, without keys", async () => {
    const org = await newOrg();
    const created: Credential[] = [];
    const keys: string[] = [];
    for (let i = 0; i < 4; i++) {
      const { credential, apiKey } = await createCredential(org, { credentialName: `c${i}` });
      created.push(credential);
      keys.push(apiKey);
      await sleep(3);
    }
    const response = await list({ organizationId: org });
    expect(response.credentials.map((c) => c.credentialName)).toEqual(["c3", "c2", "c1", "c0"]);
    expect(response.credentials).toEqual([...created].reverse());
    expect(response.nextPageToken).toBe("");
    expectNoSecrets(
      ListCredentialsResponseSchema,
      response,
      keys.flatMap((k) => secretsOf(k, "sk-")),
    );
  });

  it("returns an empty list for an organisation without credentials", async () => {
    const org = await newOrg();
    const response = await list({ organizationId: org });
    expect(response.credentials).toEqual([]);
    expect(response.nextPageToken).toBe("");
  });

  it("filters by provider and by active state", async () => {
    const org = await newOrg();
    const a = await createCredential(org, { credentialName: "openai-1" });
    await createCredential(org, { credentialName: "openai-2" });
    await createCredential(org, { credentialName: "anthropic-1", provider: Provider.ANTHROPIC, apiKey: FAKE_KEYS.anthropic() });
    await t.clients().credentials.deactivateCredential({ credentialId: a.credential.credentialId });

    const names = async (init: { provider?: Provider; activeOnly?: boolean }) =>
      (await list({ organizationId: org, ...init })).credentials.map((c) => c.credentialName).sort();
    expect(await names({})).toEqual(["anthropic-1", "openai-1", "openai-2"]);
    expect(await names({ provider: Provider.OPENAI })).toEqual(["openai-1", "openai-2"]);
    expect(await names({ provider: Provider.ANTHROPIC })).toEqual(["anthropic-1"]);
    expect(await names({ provider: Provider.GEMINI })).toEqual([]);
    expect(await names({ activeOnly: true })).toEqual(["anthropic-1", "openai-2"]);
    expect(await names({ provider: Provider.OPENAI, activeOnly: true })).toEqual(["openai-2"]);
  });

  it("does not list another organisation's credentials", async () => {
    const org = await newOrg();
    const other = await newOrg();
    await createCredential(other, { credentialName: "theirs" });
    await createCredential(org, { credentialName: "mine" });
    expect((await list({ organizationId: org })).credentials.map((c) => c.credentialName)).toEqual(["mine"]);
  });

  it("pages through 7 credentials 3 at a time: 3, 3, 1, no duplicates or gaps, empty final token", async () => {
    const org = await newOrg();
    const ids = new Set<string>();
    for (let i = 0; i < 7; i++) ids.add((await createCredential(org, { credentialName: `p${i}` })).credential.credentialId);
    const sizes: number[] = [];
    const seen: string[] = [];
    let token = "";
    let lastToken = "";
    do {
      const page = await list({ organizationId: org, pageSize: 3, pageToken: token });
      sizes.push(page.credentials.length);
      seen.push(...page.credentials.map((c) => c.credentialId));
      lastToken = page.nextPageToken;
      token = page.nextPageToken;
    } while (token !== "" && sizes.length < 10);
    expect(sizes).toEqual([3, 3, 1]);
    expect(lastToken).toBe("");
    expect(new Set(seen).size).toBe(7);
    expect(new Set(seen)).toEqual(ids);
    // Paged order is the same as the unpaged one.
    expect(seen).toEqual((await list({ organizationId: org })).credentials.map((c) => c.credentialId));
  });

  it("pages exactly at a page boundary without an empty extra page", async () => {
    const org = await newOrg();
    for (let i = 0; i < 6; i++) await createCredential(org, { credentialName: `q${i}` });
    const first = await list({ organizationId: org, pageSize: 3 });
    const second = await list({ organizationId: org, pageSize: 3, pageToken: first.nextPageToken });
    expect(first.credentials).toHaveLength(3);
    expect(second.credentials).toHaveLength(3);
    expect(second.nextPageToken).toBe("");
  });

  it("caps page_size at 200 and defaults 0 to 50", async () => {
    const org = await newOrg();
    const { token, keyId } = createKeyring(t.masterKey).encrypt(FAKE_KEYS.openai());
    await t.db.query(
      `insert into provider_credentials
         (id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_hint, api_base,
          is_active, activated_at, version, created_at, updated_at, created_by, updated_by)
       select gen_random_uuid(), $1, 'openai', 'bulk-' || i, $2, $3, 'sk-…' || lpad(i::text, 4, '0'), null,
              true, ts, 1, ts, ts, 'sql', 'sql'
       from generate_series(1, 205) as i,
            lateral (select timestamptz '2026-01-01T00:00:00Z' + i * interval '1 millisecond' as ts) x`,
      [org, token, keyId],
    );
    const first = await list({ organizationId: org, pageSize: 1000 });
    expect(first.credentials).toHaveLength(200);
    expect(first.credentials[0].credentialName).toBe("bulk-205");
    expect(first.credentials[199].credentialName).toBe("bulk-6");
    expect(first.nextPageToken).not.toBe("");
    const second = await list({ organizationId: org, pageSize: 1000, pageToken: first.nextPageToken });
    expect(second.credentials.map((c) => c.credentialName)).toEqual(["bulk-5", "bulk-4", "bulk-3", "bulk-2", "bulk-1"]);
    expect(second.nextPageToken).toBe("");
    const ids = new Set([...first.credentials, ...second.credentials].map((c) => c.credentialId));
    expect(ids.size).toBe(205);

    const byDefault = await list({ organizationId: org });
    expect(byDefault.credentials).toHaveLength(50);
    expect(byDefault.nextPageToken).not.toBe("");
  });

  it("refuses a negative page_size with INVALID_ARGUMENT page_size", async () => {
    const org = await newOrg();
    const err = await rpcError(list({ organizationId: org, pageSize: -1 }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message.startsWith("page_size: "), err.message).toBe(true);
  });

  const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64url");
  it.each([
    ["xyz", "xyz"],
    ["base64 of garbage", b64("garbage")],
    ["base64 of random bytes", randomBytes(24).toString("base64url")],
    ["standard base64 with padding", Buffer.from("[1,2]").toString("base64") + "=="],
    ["JSON of the wrong shape", b64('["a","b"]')],
    ["JSON with too many elements", b64('[1,"3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c",3]')],
    ["a time out of range", b64('[1e300,"3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c"]')],
    ["a time before year 1", b64('[-8640000000000000,"3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c"]')],
    ["a fractional time", b64('[1.5,"3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c"]')],
    ["an id that is no UUID", b64(`[${Date.now()},"not-a-uuid"]`)],
  ])("refuses a malformed page_token (%s) with INVALID_ARGUMENT page_token", async (_label, pageToken) => {
    const org = await newOrg();
    await createCredential(org);
    const err = await rpcError(list({ organizationId: org, pageToken }));
    expect(err.code, err.message).toBe(Code.InvalidArgument);
    expect(err.message.startsWith("page_token: "), err.message).toBe(true);
  });

  it("answers NOT_FOUND for an unknown organisation and INVALID_ARGUMENT for a malformed id", async () => {
    const err = await rpcError(list({ organizationId: "no-such-org" }));
    expect(err.code).toBe(Code.NotFound);
    expect(err.message).toContain("no-such-org");
    const bad = await rpcError(list({ organizationId: "bad/org" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.message.startsWith("organization_id: ")).toBe(true);
  });
});

describe("UpdateCredential", () => {
  const update = (init: Parameters<Clients["credentials"]["updateCredential"]>[0], headers: Record<string, string> = {}) =>
    t.clients(t.adminToken, headers).credentials.updateCredential(init);

  it("renames, recording who did it, and bumps the version by one", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org, { credentialName: "Old" }, { [ACTOR_HEADER]: "admin:alice" });
    await sleep(2);
    const { credential: updated } = await update({ credentialId: credential.credentialId, credentialName: "  New name " }, { [ACTOR_HEADER]: "admin:bob" });
    expect(updated?.credentialName).toBe("New name");
    expect(updated?.version).toBe(2);
    expect(updated?.createdBy).toBe("admin:alice");
    expect(updated?.updatedBy).toBe("admin:bob");
    expect(updated?.keyHint).toBe(credential.keyHint);
    expect(timestampDate(updated!.updatedAt!).getTime()).toBeGreaterThan(timestampDate(credential.updatedAt!).getTime());
    expect(timestampDate(updated!.createdAt!)).toEqual(timestampDate(credential.createdAt!));
    const row = await storedRow(credential.credentialId);
    expect(row.credential_name).toBe("New name");
    expect(row.version).toBe(2);
    // A change of case only is a change.
    const recased = await update({ credentialId: credential.credentialId, credentialName: "NEW NAME" });
    expect(recased.credential?.credentialName).toBe("NEW NAME");
    expect(recased.credential?.version).toBe(3);
  });

  it("rotates the key: new hint, new ciphertext, ResolveKey returns the new key, nothing shows it", async () => {
    const org = await newOrg();
    const { credential, apiKey: oldKey } = await createCredential(org);
    const before = await storedRow(credential.credentialId);
    const newKey = FAKE_KEYS.openai();
    const response = await update({ credentialId: credential.credentialId, apiKey: `  ${newKey}\n` });
    const updated = response.credential!;
    expect(updated.version).toBe(2);
    expect(updated.keyHint).toBe(`sk-…${newKey.slice(-4)}`);
    expect(updated.keyHint).not.toBe(credential.keyHint);
    const after = await storedRow(credential.credentialId);
    expect(after.encrypted_api_key).not.toBe(before.encrypted_api_key);
    expect(createKeyring(t.masterKey).decrypt(after.encrypted_api_key)).toBe(newKey);
    expect(after.row_text).not.toContain(newKey);
    expect(after.key_hint).toBe(updated.keyHint);
    expect((await resolve(org)).apiKey).toBe(newKey);
    expectNoSecrets(UpdateCredentialResponseSchema, response, [
      ...secretsOf(newKey, "sk-", after.encrypted_api_key),
      ...secretsOf(oldKey, "sk-", before.encrypted_api_key),
    ]);
  });

  it("refuses an invalid new key and keeps the old one", async () => {
    const org = await newOrg();
    const { credential, apiKey } = await createCredential(org);
    const anthropic = FAKE_KEYS.anthropic();
    const err = await rpcError(update({ credentialId: credential.credentialId, apiKey: anthropic }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message.startsWith("api_key: ")).toBe(true);
    expect(err.message).toContain("Anthropic");
    expect(err.message).not.toContain(anthropic);
    expect((await storedRow(credential.credentialId)).version).toBe(1);
    expect((await resolve(org)).apiKey).toBe(apiKey);
  });

  it("sets api_base, then clears it with an empty string", async () => {
    const org = await newOrg();
    const { credential, apiKey } = await createCredential(org);
    // The key is entered again with every api_base change.
    const set = await update({ credentialId: credential.credentialId, apiBase: "https://proxy.example.com/v1", apiKey });
    expect(set.credential?.apiBase).toBe("https://proxy.example.com/v1");
    expect(set.credential?.version).toBe(2);
    expect((await resolve(org)).apiBase).toBe("https://proxy.example.com/v1");
    const cleared = await update({ credentialId: credential.credentialId, apiBase: "", apiKey });
    expect(cleared.credential?.apiBase).toBeUndefined();
    expect(cleared.credential?.version).toBe(3);
    expect((await storedRow(credential.credentialId)).api_base).toBeNull();
    expect((await resolve(org)).apiBase).toBeUndefined();
    const badBase = await rpcError(update({ credentialId: credential.credentialId, apiBase: "ftp://x" }));
    expect(badBase.code).toBe(Code.InvalidArgument);
    expect(badBase.message.startsWith("api_base: ")).toBe(true);
  });

  it("increments the version once per effective update, even when several fields change", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    const { credential: updated } = await update({
      credentialId: credential.credentialId,
      credentialName: "Renamed",
      apiKey: FAKE_KEYS.openai(),
      apiBase: "https://proxy.example.com",
    });
    expect(updated?.version).toBe(2);
    const audits = (await auditRows(credential.credentialId)).filter((a) => a.action === "credential.update");
    expect(audits).toHaveLength(1);
    expect((audits[0].details as { changed: string[] }).changed.sort()).toEqual(["api_base", "api_key", "credential_name"]);
  });

  it("keeps the version, updated_at and audit trail when an update changes nothing", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org, { credentialName: "Same", apiBase: "https://proxy.example.com" });
    const auditsBefore = (await auditRows(credential.credentialId)).length;
    for (const changes of [
      {},
      { credentialName: "Same" },
      { credentialName: "  Same  " },
      { apiBase: "https://proxy.example.com" },
      { credentialName: "Same", apiBase: "https://proxy.example.com", expectedVersion: 1 },
    ]) {
      const { credential: same } = await update({ credentialId: credential.credentialId, ...changes });
      expect(same?.version, JSON.stringify(changes)).toBe(1);
      expect(same?.updatedAt).toEqual(credential.updatedAt);
      expect(same?.updatedBy).toBe(credential.updatedBy);
    }
    expect((await auditRows(credential.credentialId)).length).toBe(auditsBefore);
  });

  it("refuses a stale expected_version with ABORTED and changes nothing", async () => {
    const org = await newOrg();
    const { credential, apiKey } = await createCredential(org, { credentialName: "Original" });
    await update({ credentialId: credential.credentialId, credentialName: "Second" });
    const before = await storedRow(credential.credentialId);
    const auditsBefore = (await auditRows(credential.credentialId)).length;
    const err = await rpcError(update({ credentialId: credential.credentialId, credentialName: "Third", apiKey: FAKE_KEYS.openai(), expectedVersion: 1 }));
    expect(err.code).toBe(Code.Aborted);
    expect(err.message.startsWith("expected_version: "), err.message).toBe(true);
    expect(err.message).toContain("version 2");
    const after = await storedRow(credential.credentialId);
    expect(after.row_text).toBe(before.row_text);
    expect((await auditRows(credential.credentialId)).length).toBe(auditsBefore);
    expect((await resolve(org)).apiKey).toBe(apiKey);
  });

  it("applies an update whose expected_version is current", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    const first = await update({ credentialId: credential.credentialId, credentialName: "v2", expectedVersion: 1 });
    expect(first.credential?.version).toBe(2);
    const second = await update({ credentialId: credential.credentialId, credentialName: "v3", expectedVersion: 2 });
    expect(second.credential?.version).toBe(3);
    expect(second.credential?.credentialName).toBe("v3");
  });

  it("refuses expected_version 0 or negative with INVALID_ARGUMENT", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    for (const expectedVersion of [0, -1]) {
      const err = await rpcError(update({ credentialId: credential.credentialId, credentialName: "x", expectedVersion }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message.startsWith("expected_version: ")).toBe(true);
    }
    expect((await storedRow(credential.credentialId)).version).toBe(1);
  });

  describe("checks the key against the api_base the credential will have", () => {
    it("accepts a proxy key given together with a new api_base", async () => {
      const org = await newOrg();
      const { credential } = await createCredential(org);
      const { credential: updated } = await update({
        credentialId: credential.credentialId,
        apiKey: "proxy-key-0123456789ab",
        apiBase: "https://proxy.example.com",
      });
      expect(updated?.version).toBe(2);
      expect((await resolve(org)).apiKey).toBe("proxy-key-0123456789ab");
    });

    it("accepts a proxy key for a credential that already has an api_base", async () => {
      const org = await newOrg();
      const { credential } = await createCredential(org, { apiBase: "https://proxy.example.com" });
      const { credential: updated } = await update({ credentialId: credential.credentialId, apiKey: "another-proxy-key-9876" });
      expect(updated?.keyHint).toBe("…9876");
    });

    it("refuses a proxy key given together with clearing the api_base", async () => {
      const org = await newOrg();
      const { credential } = await createCredential(org, { apiKey: "proxy-key-0123456789ab", apiBase: "https://proxy.example.com" });
      const err = await rpcError(update({ credentialId: credential.credentialId, apiKey: "proxy-key-abcdefghijkl", apiBase: "" }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message.startsWith("api_key: "), err.message).toBe(true);
      const row = await storedRow(credential.credentialId);
      expect(row.api_base).toBe("https://proxy.example.com");
      expect(row.version).toBe(1);
    });

    it("refuses changing or clearing the api_base without the key, changing nothing", async () => {
      const org = await newOrg();
      const proxyKey = "proxy-key-0123456789ab";
      const { credential } = await createCredential(org, { apiKey: proxyKey, apiBase: "https://proxy.example.com" });
      for (const apiBase of ["", "https://elsewhere.example.com/v1"]) {
        for (const verify of [false, true]) {
          const err = await rpcError(update({ credentialId: credential.credentialId, apiBase, verify }));
          expect(err.code).toBe(Code.InvalidArgument);
          expect(err.message, err.message).toMatch(/^api_key: enter the key again to change api_base/);
          expect(err.message).not.toContain(proxyKey);
        }
      }
      const row = await storedRow(credential.credentialId);
      expect(row.api_base).toBe("https://proxy.example.com");
      expect(row.version).toBe(1);
      // The proxy key is still served with its proxy, never sent to the provider's own endpoint.
      const resolved = await resolve(org);
      expect(resolved.apiKey).toBe(proxyKey);
      expect(resolved.apiBase).toBe("https://proxy.example.com");
    });

    it("refuses clearing the api_base when the key entered again is another provider's", async () => {
      const org = await newOrg();
      const anthropic = FAKE_KEYS.anthropic();
      const { credential } = await createCredential(org, { apiKey: anthropic, apiBase: "https://proxy.example.com" });
      const err = await rpcError(update({ credentialId: credential.credentialId, apiBase: "", apiKey: anthropic }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message.startsWith("api_key: "), err.message).toBe(true);
      expect((await storedRow(credential.credentialId)).api_base).toBe("https://proxy.example.com");
    });

    it("allows clearing the api_base when the key, with the provider prefix, is entered again", async () => {
      const org = await newOrg();
      const { credential, apiKey } = await createCredential(org, { apiBase: "https://proxy.example.com" });
      const { credential: updated } = await update({ credentialId: credential.credentialId, apiBase: "", apiKey });
      expect(updated?.apiBase).toBeUndefined();
      expect(updated?.version).toBe(2);
      expect((await resolve(org)).apiKey).toBe(apiKey);
    });

    it("allows clearing the api_base together with a new key that has the prefix", async () => {
      const org = await newOrg();
      const { credential } = await createCredential(org, { apiKey: "proxy-key-0123456789ab", apiBase: "https://proxy.example.com" });
      const newKey = FAKE_KEYS.openai();
      const { credential: updated } = await update({ credentialId: credential.credentialId, apiBase: "", apiKey: newKey });
      expect(updated?.apiBase).toBeUndefined();
      expect(updated?.version).toBe(2);
      const resolved = await resolve(org);
      expect(resolved.apiKey).toBe(newKey);
      expect(resolved.apiBase).toBeUndefined();
    });
  });

  it("refuses a rename to another credential's name (any case) with ALREADY_EXISTS", async () => {
    const org = await newOrg();
    await createCredential(org, { credentialName: "Taken" });
    const { credential } = await createCredential(org, { credentialName: "Free" });
    const err = await rpcError(update({ credentialId: credential.credentialId, credentialName: "tAKEN" }));
    expect(err.code).toBe(Code.AlreadyExists);
    expect(err.message.startsWith("credential_name: "), err.message).toBe(true);
    const row = await storedRow(credential.credentialId);
    expect(row.credential_name).toBe("Free");
    expect(row.version).toBe(1);
  });

  it("refuses an invalid name and answers NOT_FOUND for an unknown id", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    const err = await rpcError(update({ credentialId: credential.credentialId, credentialName: "   " }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message.startsWith("credential_name: ")).toBe(true);
    const missing = await rpcError(update({ credentialId: "3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c", credentialName: "x" }));
    expect(missing.code).toBe(Code.NotFound);
    const malformed = await rpcError(update({ credentialId: "nope", credentialName: "x" }));
    expect(malformed.code).toBe(Code.InvalidArgument);
    expect(malformed.message.startsWith("credential_id: ")).toBe(true);
  });

  it("lets exactly one of 50 concurrent updates with the same expected_version win", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    const { credentials } = t.clients();
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) =>
        credentials.updateCredential({ credentialId: credential.credentialId, credentialName: `racer-${i}`, expectedVersion: 1 }),
      ),
    );
    const won = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof credentials.updateCredential>>> => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(49);
    for (const r of lost) expect((r.reason as { code?: number }).code, String(r.reason)).toBe(Code.Aborted);
    const winner = won[0].value.credential!;
    expect(winner.version).toBe(2);
    const { credential: final } = await t.clients().credentials.getCredential({ credentialId: credential.credentialId });
    expect(final?.version).toBe(2);
    expect(final?.credentialName).toBe(winner.credentialName);
    const updates = (await auditRows(credential.credentialId)).filter((a) => a.action === "credential.update");
    expect(updates).toHaveLength(1);
  });
});

describe("ActivateCredential / DeactivateCredential", () => {
  it("toggles the state idempotently: a repeated call changes nothing", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    const { credentials } = t.clients();
    const off = await credentials.deactivateCredential({ credentialId: credential.credentialId });
    expect(off.credential?.isActive).toBe(false);
    expect(off.credential?.version).toBe(2);
    const offAgain = await credentials.deactivateCredential({ credentialId: credential.credentialId });
    expect(offAgain.credential?.isActive).toBe(false);
    expect(offAgain.credential?.version).toBe(2);
    expect(offAgain.credential?.updatedAt).toEqual(off.credential?.updatedAt);
    expect((await storedRow(credential.credentialId)).is_active).toBe(false);

    const on = await credentials.activateCredential({ credentialId: credential.credentialId });
    expect(on.credential?.isActive).toBe(true);
    expect(on.credential?.version).toBe(3);
    const onAgain = await credentials.activateCredential({ credentialId: credential.credentialId });
    expect(onAgain.credential?.isActive).toBe(true);
    expect(onAgain.credential?.version).toBe(3);
    expect((await storedRow(credential.credentialId)).is_active).toBe(true);

    const actions = (await auditRows(credential.credentialId)).map((a) => a.action);
    expect(actions).toEqual(["credential.create", "credential.deactivate", "credential.activate"]);
  });

  it("activating a new credential is idempotent too", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    const on = await t.clients().credentials.activateCredential({ credentialId: credential.credentialId });
    expect(on.credential?.version).toBe(1);
    expect(on.credential?.isActive).toBe(true);
    expect((await auditRows(credential.credentialId)).map((a) => a.action)).toEqual(["credential.create"]);
  });

  it("answers NOT_FOUND for an unknown id and INVALID_ARGUMENT for a malformed one", async () => {
    const { credentials } = t.clients();
    for (const call of [credentials.activateCredential, credentials.deactivateCredential]) {
      const missing = await rpcError(call({ credentialId: "3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c" }));
      expect(missing.code).toBe(Code.NotFound);
      const malformed = await rpcError(call({ credentialId: "123" }));
      expect(malformed.code).toBe(Code.InvalidArgument);
      expect(malformed.message.startsWith("credential_id: ")).toBe(true);
    }
  });
});

describe("audit trail", () => {
  it("records every effective change with actor, action, organisation and credential, never the key", async () => {
    const org = await newOrg();
    const alice = { [ACTOR_HEADER]: "admin:alice" };
    const { credential, apiKey } = await createCredential(org, { credentialName: "Audited" }, alice);
    const id = credential.credentialId;
    const asAlice = t.clients(t.adminToken, alice).credentials;
    const asService = t.clients().credentials;
    const rotated = FAKE_KEYS.openai();
    await asAlice.updateCredential({ credentialId: id, apiKey: rotated });
    const ciphertext = (await storedRow(id)).encrypted_api_key;
    await asAlice.updateCredential({ credentialId: id, credentialName: "Audited" }); // no change: no row
    await asService.deactivateCredential({ credentialId: id });
    await asService.deactivateCredential({ credentialId: id }); // no change: no row
    await asAlice.activateCredential({ credentialId: id });
    await asAlice.deleteCredential({ credentialId: id });

    const rows = await auditRows(id);
    expect(rows.map((r) => [r.action, r.actor])).toEqual([
      ["credential.create", "admin:alice via token:service-admin-token"],
      ["credential.update", "admin:alice via token:service-admin-token"],
      ["credential.deactivate", ADMIN_ACTOR],
      ["credential.activate", "admin:alice via token:service-admin-token"],
      ["credential.delete", "admin:alice via token:service-admin-token"],
    ]);
    for (const row of rows) {
      expect(row.organization_id).toBe(org);
      expect(row.credential_id).toBe(id);
      for (const secret of [...secretsOf(apiKey, "sk-"), ...secretsOf(rotated, "sk-", ciphertext)]) {
        expect(row.details_text).not.toContain(secret);
      }
    }
    expect((rows[1].details as { changed: string[] }).changed).toEqual(["api_key"]);
    // Nothing anywhere in the audit table or the service log carries either key.
    const [all] = await t.db.query<{ text: string }>("select coalesce(string_agg(row_to_json(a)::text, ' '), '') as text from audit_events a");
    for (const secret of [apiKey, rotated, ciphertext]) {
      expect(all.text).not.toContain(secret);
      for (const line of t.logs) expect(line).not.toContain(secret);
    }
  });
});

describe("DeleteCredential", () => {
  it("deletes permanently: Get then answers NOT_FOUND, and a second delete too", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org);
    const { credentials } = t.clients();
    await credentials.deleteCredential({ credentialId: credential.credentialId });
    expect(await t.db.query("select 1 from provider_credentials where id = $1", [credential.credentialId])).toHaveLength(0);
    const get = await rpcError(credentials.getCredential({ credentialId: credential.credentialId }));
    expect(get.code).toBe(Code.NotFound);
    const again = await rpcError(credentials.deleteCredential({ credentialId: credential.credentialId }));
    expect(again.code).toBe(Code.NotFound);
    expect(again.message).toContain(credential.credentialId);
    expect((await credentials.listCredentials({ organizationId: org })).credentials).toEqual([]);
    const deletes = (await auditRows(credential.credentialId)).filter((a) => a.action === "credential.delete");
    expect(deletes).toHaveLength(1);
  });

  it("frees the name for a new credential", async () => {
    const org = await newOrg();
    const { credential } = await createCredential(org, { credentialName: "Reuse" });
    await t.clients().credentials.deleteCredential({ credentialId: credential.credentialId });
    const { credential: again } = await createCredential(org, { credentialName: "reuse" });
    expect(again.credentialId).not.toBe(credential.credentialId);
  });
});
