// Server-side request forgery through the key check (issue #19, item 5), through the real service: without
// API_BASE_ALLOW, an api_base at a loopback, link-local, private, unique-local or unspecified address (or a
// name resolving to one) is refused on save, and a row stored while it was allowed is never called by
// VerifyCredential; what a check stores and shows never carries the target's body.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyCheckOutcome, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { startFakeProvider, type FakeProvider } from "../support/fake-provider.js";
import { createTestDatabase, FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";

let db: TestDatabase;
/** API_BASE_ALLOW unset: the default rule. */
let strict: TestService;
/** API_BASE_ALLOW=127.0.0.1,localhost on the same database: a replica (or the past) where loopback was allowed. */
let allowing: TestService;
let fake: FakeProvider;
const ORG = "org-ssrf";

beforeAll(async () => {
  fake = await startFakeProvider();
  db = await createTestDatabase();
  strict = await startTestService({ db, apiBaseAllow: "" });
  allowing = await startTestService({ db, masterKey: strict.masterKey, adminToken: strict.adminToken, apiBaseAllow: "127.0.0.1,localhost" });
  await strict.clients().organizations.createOrganization({ organizationId: ORG, name: "SSRF" });
});

afterAll(async () => {
  await allowing?.close();
  await strict?.close();
  await db?.drop();
  await fake?.close();
});

const create = (svc: TestService, apiBase: string, init: { apiKey?: string; verify?: boolean } = {}) =>
  svc.clients().credentials.createCredential({
    organizationId: ORG,
    provider: Provider.OPENAI,
    credentialName: `c-${Math.random().toString(36).slice(2, 10)}`,
    apiKey: init.apiKey ?? FAKE_KEYS.openai(),
    apiBase,
    verify: init.verify,
  });

const rowCount = async () => Number((await db.query<{ n: string }>("select count(*) as n from provider_credentials"))[0].n);

describe("on save, without API_BASE_ALLOW", () => {
  const refused = [
    "http://127.0.0.1:PORT/openai",
    "http://localhost:PORT/openai",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/v1",
    "http://172.20.0.1/v1",
    "http://192.168.1.1/v1",
    "http://[::1]:PORT/openai",
    "http://[fd00::1]/v1",
    "http://[fe80::1]/v1",
    "http://[::ffff:127.0.0.1]:PORT/openai",
    "http://0.0.0.0:PORT/openai",
  ];

  it.each(refused)("CreateCredential refuses %s, naming api_base, and writes nothing (verify or not)", async (template) => {
    const apiBase = template.replace("PORT", String(fake.port));
    const before = await rowCount();
    fake.clearRequests();
    for (const verify of [false, true]) {
      const err = await rpcError(create(strict, apiBase, { verify }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message).toMatch(/^api_base: (is|resolves to) an? [a-z-]+ address; .*API_BASE_ALLOW/);
    }
    expect(await rowCount()).toBe(before);
    expect(fake.requests).toEqual([]);
  });

  it("UpdateCredential refuses moving a credential there, even with the key", async () => {
    const apiKey = FAKE_KEYS.openai();
    const { credential } = await create(strict, "https://proxy.example.com/v1", { apiKey });
    const err = await rpcError(
      strict.clients().credentials.updateCredential({ credentialId: credential!.credentialId, apiKey, apiBase: "http://169.254.169.254/latest" }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toMatch(/^api_base: is a link-local address/);
    expect((await strict.clients().credentials.getCredential({ credentialId: credential!.credentialId })).credential?.apiBase).toBe(
      "https://proxy.example.com/v1",
    );
  });

  it("a replica with API_BASE_ALLOW=127.0.0.1,localhost accepts those, and nothing else private", async () => {
    const { credential } = await create(allowing, fake.baseUrl("openai"));
    expect(credential?.apiBase).toBe(fake.baseUrl("openai"));
    expect((await rpcError(create(allowing, "http://10.0.0.1/v1"))).message).toMatch(/^api_base: is a private address/);
  });
});

describe("at check time", () => {
  it("a row stored while loopback was allowed is not called once it is not: stored and shown as refused, naming api_base", async () => {
    const apiKey = FAKE_KEYS.openai();
    fake.setKey(apiKey, "valid");
    const { credential } = await create(allowing, fake.baseUrl("openai"), { apiKey });
    const id = credential!.credentialId;
    // Where it is allowed, the check reaches the fake provider.
    fake.clearRequests();
    const ok = await allowing.clients().credentials.verifyCredential({ credentialId: id });
    expect(ok.check?.outcome).toBe(KeyCheckOutcome.VALID);
    expect(fake.requests).toHaveLength(1);
    // Where it is not, the key is never sent.
    fake.clearRequests();
    const { check, credential: after } = await strict.clients().credentials.verifyCredential({ credentialId: id });
    expect(fake.requests).toEqual([]);
    expect(check?.outcome).toBe(KeyCheckOutcome.UNEXPECTED);
    expect(check?.httpStatus).toBeUndefined();
    expect(check?.message).toMatch(/^OpenAI was not called: the api_base is a loopback address; .*API_BASE_ALLOW\.$/);
    expect(after?.lastCheck).toMatchObject({ outcome: KeyCheckOutcome.UNEXPECTED, message: check!.message });
    const [row] = await db.query<{ check_message: string }>("select check_message from provider_credentials where id = $1", [id]);
    expect(row.check_message).toBe(check!.message);
  });

  it("a row whose host name resolves to loopback (localhost) is not called either", async () => {
    const apiKey = FAKE_KEYS.openai();
    fake.setKey(apiKey, "valid");
    const { credential } = await create(allowing, `http://localhost:${fake.port}/openai`, { apiKey });
    fake.clearRequests();
    const { check } = await strict.clients().credentials.verifyCredential({ credentialId: credential!.credentialId });
    expect(fake.requests).toEqual([]);
    expect(check?.outcome).toBe(KeyCheckOutcome.UNEXPECTED);
    expect(check?.message).toMatch(/^OpenAI was not called: the api_base resolves to a loopback address; /);
  });

  it("what a check stores and shows never contains the target's body", async () => {
    const apiKey = FAKE_KEYS.openai();
    const secret = "INTERNAL_METADATA_TOKEN_abc";
    for (const status of [400, 401, 403, 404, 429, 500, 503]) {
      fake.setKey(apiKey, { status, body: { error: { code: secret, type: secret, message: `leaked ${secret}` } } });
      const { credential } = await create(allowing, fake.baseUrl("openai"), { apiKey });
      const { check } = await allowing.clients().credentials.verifyCredential({ credentialId: credential!.credentialId });
      expect(check?.httpStatus).toBe(status);
      expect(check?.message).not.toContain(secret);
      expect(check?.message).not.toContain("leaked");
      const [row] = await db.query<{ check_message: string }>("select check_message from provider_credentials where id = $1", [credential!.credentialId]);
      expect(row.check_message).not.toContain(secret);
      const audits = await db.query<{ details: unknown }>("select details from audit_events where credential_id = $1", [credential!.credentialId]);
      expect(JSON.stringify(audits)).not.toContain(secret);
    }
  });
});
