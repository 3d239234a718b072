// Fleet views against the real service: ListCredentials and ListOrganizations by offset with totals, the
// organisations' typeahead, SearchCredentials across organisations (text, views, provider, limited callers) and
// ListUncoveredOrganizations with and without an environment fallback.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { CredentialView, Provider, type Credential } from "@provider-credentials/wire/gen/credentials_pb";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";

/** No provider environment variables. */
let t: TestService;
/** OPENAI_API_KEY set: OpenAI calls never fail for want of a credential. */
let envT: TestService;

const BIG = "big-corp";
const BIG_COUNT = 65;
/** big-corp's credentials alternate Gemini (odd numbers) and OpenAI (even). */
const BIG_GEMINI = 33;
/** Every credential created in `t`, by id. */
const all = new Map<string, Credential>();
const orgNames = new Map<string, string>();
let literal: Credential;
let plain: Credential;
let percent: Credential;
let hinted: Credential;
let failing: Credential;
let old: Credential;
let inactive: Credential;
let anthropic: Credential;

const KEY_FOR: Record<number, () => string> = {
  [Provider.OPENAI]: FAKE_KEYS.openai,
  [Provider.ANTHROPIC]: FAKE_KEYS.anthropic,
  [Provider.GEMINI]: FAKE_KEYS.gemini,
  [Provider.FIREWORKS]: FAKE_KEYS.fireworks,
};

async function org(svc: TestService, id: string, name: string): Promise<void> {
  await svc.clients().organizations.createOrganization({ organizationId: id, name });
  if (svc === t) orgNames.set(id, name);
}

async function credential(svc: TestService, organizationId: string, credentialName: string, provider = Provider.OPENAI, apiKey = KEY_FOR[provider]()) {
  const { credential: made } = await svc.clients().credentials.createCredential({ organizationId, provider, credentialName, apiKey });
  if (svc === t) all.set(made!.credentialId, made!);
  return made!;
}

const search = (req: Parameters<ReturnType<TestService["clients"]>["credentials"]["searchCredentials"]>[0], token?: string) =>
  t.clients(token).credentials.searchCredentials(req);
const ids = (list: Array<{ credentialId: string }>) => list.map((c) => c.credentialId);

const PROVIDER_NAME: Record<number, string> = {
  [Provider.OPENAI]: "openai",
  [Provider.ANTHROPIC]: "anthropic",
  [Provider.GEMINI]: "gemini",
  [Provider.FIREWORKS]: "fireworks",
};

/**
 * The order SearchCredentials promises: organisation id, provider (its name), credential name, id. The ids and names
 * here sort alike in byte order and in any collation (no two differ first at a '-', '_' or ' ').
 */
function sorted(list: Credential[]): Credential[] {
  const key = (c: Credential) => [c.organizationId, PROVIDER_NAME[c.provider], c.credentialName, c.credentialId];
  return [...list].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
  });
}

beforeAll(async () => {
  [t, envT] = await Promise.all([startTestService(), startTestService({ env: { OPENAI_API_KEY: `sk-env-${randomBytes(20).toString("base64url")}` } })]);
  await org(t, BIG, "Big Corp");
  await org(t, "alpha", "Alpha Works");
  await org(t, "beta", "Beta Industries");
  await org(t, "gamma", "Umbrella Holdings");
  await org(t, "delta", "Delta 100% Owned");
  // 65 organisations for the typeahead: tenant-01 ... tenant-65, none with a credential.
  for (let i = 1; i <= 65; i++) await org(t, `tenant-${String(i).padStart(2, "0")}`, `Tenant number ${i}`);
  for (let i = 1; i <= BIG_COUNT; i++) await credential(t, BIG, `key-${String(i).padStart(3, "0")}`, [Provider.OPENAI, Provider.GEMINI][i % 2]);
  literal = await credential(t, "alpha", "za_c-literal");
  plain = await credential(t, "alpha", "abc-plain");
  percent = await credential(t, "beta", "discount 100% key", Provider.FIREWORKS);
  hinted = await credential(t, "beta", "hinted", Provider.OPENAI, `sk-proj-${randomBytes(24).toString("base64url")}Zq7Y`);
  failing = await credential(t, "gamma", "failing-one");
  old = await credential(t, "gamma", "old-one", Provider.GEMINI);
  inactive = await credential(t, "alpha", "inactive-one", Provider.GEMINI);
  anthropic = await credential(t, "alpha", "claude", Provider.ANTHROPIC);
  await t.db.query("update provider_credentials set failing_since = now(), failure_streak = 3 where id = $1", [failing.credentialId]);
  await t.db.query("update provider_credentials set key_set_at = now() - interval '91 days' where id = $1", [old.credentialId]);
  await t.clients().credentials.deactivateCredential({ credentialId: inactive.credentialId });
  // delta: an anthropic credential that is inactive, and nothing else.
  const deltaKey = await credential(t, "delta", "delta-claude", Provider.ANTHROPIC);
  await t.clients().credentials.deactivateCredential({ credentialId: deltaKey.credentialId });
}, 120_000);
afterAll(async () => {
  await Promise.all([t?.close(), envT?.close()]);
});

describe("ListCredentials by offset", () => {
  it("gives numbered pages (26-50 of 65) and the total on every page, cursor pages included", async () => {
    const { credentials } = t.clients();
    const cursorPages: string[] = [];
    let pageToken = "";
    do {
      const page = await credentials.listCredentials({ organizationId: BIG, pageSize: 25, pageToken });
      expect(page.totalSize).toBe(BIG_COUNT);
      cursorPages.push(...ids(page.credentials));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(cursorPages).toHaveLength(BIG_COUNT);

    const second = await credentials.listCredentials({ organizationId: BIG, pageSize: 25, offset: 25 });
    expect(second.totalSize).toBe(BIG_COUNT);
    expect(ids(second.credentials)).toEqual(cursorPages.slice(25, 50));
    // The next page token of an offset page continues after it.
    const third = await credentials.listCredentials({ organizationId: BIG, pageSize: 25, pageToken: second.nextPageToken });
    expect(ids(third.credentials)).toEqual(cursorPages.slice(50));
    expect(third.nextPageToken).toBe("");

    const last = await credentials.listCredentials({ organizationId: BIG, pageSize: 25, offset: 50 });
    expect(ids(last.credentials)).toEqual(cursorPages.slice(50));
    expect(last.nextPageToken).toBe("");
    const beyond = await credentials.listCredentials({ organizationId: BIG, pageSize: 25, offset: 1000 });
    expect(beyond).toMatchObject({ credentials: [], totalSize: BIG_COUNT, nextPageToken: "" });
  });

  it("counts what the filters match", async () => {
    const page = await t.clients().credentials.listCredentials({ organizationId: BIG, provider: Provider.GEMINI, pageSize: 5 });
    expect(page.totalSize).toBe(BIG_GEMINI);
    expect(page.credentials).toHaveLength(5);
    const failingOnly = await t.clients().credentials.listCredentials({ organizationId: "gamma", failingOnly: true });
    expect(failingOnly.totalSize).toBe(1);
    expect(ids(failingOnly.credentials)).toEqual([failing.credentialId]);
  });

  it("refuses a negative offset, and an offset with a page token, naming offset", async () => {
    const { credentials } = t.clients();
    const negative = await rpcError(credentials.listCredentials({ organizationId: BIG, offset: -1 }));
    expect(negative).toMatchObject({ code: Code.InvalidArgument });
    expect(negative.message).toMatch(/^offset: /);
    const first = await credentials.listCredentials({ organizationId: BIG, pageSize: 10 });
    const both = await rpcError(credentials.listCredentials({ organizationId: BIG, pageToken: first.nextPageToken, offset: 10 }));
    expect(both).toMatchObject({ code: Code.InvalidArgument });
    expect(both.message).toMatch(/^offset: .*page_token/);
  });
});

describe("ListOrganizations: typeahead, offset, total", () => {
  it("finds by part of the id or the name, ignoring case, with numbered pages (26-50 of 65)", async () => {
    const { organizations } = t.clients();
    const page = await organizations.listOrganizations({ query: "  TENANT  ", pageSize: 25, offset: 25 });
    expect(page.totalSize).toBe(65);
    expect(page.organizations.map((o) => o.organizationId)).toEqual(Array.from({ length: 25 }, (_, i) => `tenant-${String(26 + i).padStart(2, "0")}`));
    // By name only: "umbrella" is gamma's name, not its id.
    const byName = await organizations.listOrganizations({ query: "umbrella" });
    expect(byName.organizations.map((o) => o.organizationId)).toEqual(["gamma"]);
    expect(byName.totalSize).toBe(1);
    // Cursor paging still works with a query, and the total is on every page.
    const first = await organizations.listOrganizations({ query: "tenant-6", pageSize: 3 });
    expect(first.totalSize).toBe(6);
    const next = await organizations.listOrganizations({ query: "tenant-6", pageSize: 3, pageToken: first.nextPageToken });
    expect([...first.organizations, ...next.organizations].map((o) => o.organizationId)).toEqual(
      ["60", "61", "62", "63", "64", "65"].map((n) => `tenant-${n}`),
    );
    expect(next.totalSize).toBe(6);
    // No query: everything.
    expect((await organizations.listOrganizations({ pageSize: 1 })).totalSize).toBe(orgNames.size);
  });

  it("takes LIKE metacharacters literally", async () => {
    const { organizations } = t.clients();
    expect((await organizations.listOrganizations({ query: "100%" })).organizations.map((o) => o.organizationId)).toEqual(["delta"]);
    expect((await organizations.listOrganizations({ query: "%" })).organizations.map((o) => o.organizationId)).toEqual(["delta"]);
    expect((await organizations.listOrganizations({ query: "_" })).totalSize).toBe(0);
    expect((await organizations.listOrganizations({ query: "tenant\\" })).totalSize).toBe(0);
  });

  it("refuses a query over 200 characters, a negative offset, and an offset with a page token", async () => {
    const { organizations } = t.clients();
    const long = await rpcError(organizations.listOrganizations({ query: "x".repeat(201) }));
    expect(long).toMatchObject({ code: Code.InvalidArgument });
    expect(long.message).toMatch(/^query: .*200/);
    expect((await organizations.listOrganizations({ query: ` ${"x".repeat(200)} ` })).totalSize).toBe(0);
    const negative = await rpcError(organizations.listOrganizations({ offset: -5 }));
    expect(negative).toMatchObject({ code: Code.InvalidArgument });
    expect(negative.message).toMatch(/^offset: /);
    const first = await organizations.listOrganizations({ pageSize: 2 });
    const both = await rpcError(organizations.listOrganizations({ pageToken: first.nextPageToken, offset: 2 }));
    expect(both).toMatchObject({ code: Code.InvalidArgument });
    expect(both.message).toMatch(/^offset: /);
  });
});

describe("SearchCredentials", () => {
  it("without filters lists every credential in order, paged by offset with the total and the page's organisations", async () => {
    const expected = sorted([...all.values()]);
    const first = await search({ pageSize: 25 });
    expect(first.totalSize).toBe(all.size);
    expect(ids(first.credentials)).toEqual(ids(expected.slice(0, 25)));
    const second = await search({ pageSize: 25, offset: 25 });
    expect(ids(second.credentials)).toEqual(ids(expected.slice(25, 50)));
    const rest = await search({ pageSize: 200, offset: 50 });
    expect(ids(rest.credentials)).toEqual(ids(expected.slice(50)));
    expect(rest.organizations.map((o) => o.organizationId)).toEqual([...new Set(expected.slice(50).map((c) => c.organizationId))].sort());
    expect(rest.organizations.every((o) => o.name === orgNames.get(o.organizationId))).toBe(true);
    // Never a key.
    expect(JSON.stringify(rest.credentials, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toMatch(/sk-proj-[A-Za-z0-9_-]{10}/);
  });

  it("matches the name, the key hint, the organisation id and name, ignoring case", async () => {
    expect(ids((await search({ query: "LITERAL" })).credentials)).toEqual([literal.credentialId]);
    expect(ids((await search({ query: "zq7y" })).credentials)).toEqual([hinted.credentialId]);
    const beta = await search({ query: "beta" });
    expect(ids(beta.credentials)).toEqual(ids(sorted([percent, hinted])));
    expect(beta.organizations.map((o) => [o.organizationId, o.name])).toEqual([["beta", "Beta Industries"]]);
    const byOrgName = await search({ query: "umbrella hold" });
    expect(ids(byOrgName.credentials)).toEqual(ids(sorted([failing, old])));
    expect(byOrgName.totalSize).toBe(2);
  });

  it("takes LIKE metacharacters literally", async () => {
    expect(ids((await search({ query: "a_c" })).credentials)).toEqual([literal.credentialId]);
    expect(ids((await search({ query: "abc" })).credentials)).toEqual([plain.credentialId]);
    // "100%": the credential named so, and delta's, whose organisation is named so; nothing else.
    const hundred = await search({ query: "100%" });
    expect(hundred.credentials.map((c) => c.organizationId).sort()).toEqual(["beta", "delta"]);
    expect((await search({ query: "%%%" })).totalSize).toBe(0);
    expect((await search({ query: "\\" })).totalSize).toBe(0);
  });

  it("matches the whole credential id when the query is a UUID, and takes anything else as text", async () => {
    const exact = await search({ query: failing.credentialId.toUpperCase() });
    expect(ids(exact.credentials)).toEqual([failing.credentialId]);
    expect(exact.organizations.map((o) => o.organizationId)).toEqual(["gamma"]);
    // Part of an id is not an id, and is no error either.
    expect((await search({ query: failing.credentialId.slice(0, 13) })).totalSize).toBe(0);
    expect((await search({ query: "00000000-0000-0000-0000-00000000000g" })).totalSize).toBe(0);
    expect((await search({ query: "'; select 1 --" })).totalSize).toBe(0);
  });

  it("has the failing, rotation-due and inactive views, and a provider and organisation filter", async () => {
    expect(ids((await search({ view: CredentialView.FAILING })).credentials)).toEqual([failing.credentialId]);
    expect(ids((await search({ view: CredentialView.ROTATION_DUE })).credentials)).toEqual([old.credentialId]);
    const inactiveView = await search({ view: CredentialView.INACTIVE });
    expect(inactiveView.credentials.map((c) => c.credentialName)).toEqual(["inactive-one", "delta-claude"]);
    expect(inactiveView.credentials.every((c) => !c.isActive)).toBe(true);
    expect(ids((await search({ view: CredentialView.INACTIVE, provider: Provider.GEMINI })).credentials)).toEqual([inactive.credentialId]);
    const claude = await search({ provider: Provider.ANTHROPIC });
    expect(claude.credentials.map((c) => c.credentialName)).toEqual(["claude", "delta-claude"]);
    const alphaOnly = await search({ organizationId: "alpha", provider: Provider.ANTHROPIC });
    expect(ids(alphaOnly.credentials)).toEqual([anthropic.credentialId]);
    const bigGemini = await search({ organizationId: BIG, provider: Provider.GEMINI, pageSize: 10, offset: 30 });
    expect(bigGemini.totalSize).toBe(BIG_GEMINI);
    expect(bigGemini.credentials).toHaveLength(3);
    expect((await search({ query: "one", view: CredentialView.FAILING })).totalSize).toBe(1);
  });

  it("refuses bad input naming the field", async () => {
    const cases: Array<[Parameters<typeof search>[0], string]> = [
      [{ offset: -1 }, "offset"],
      [{ query: "y".repeat(201) }, "query"],
      [{ query: "a\u0000b" }, "query"],
      [{ pageSize: -1 }, "page_size"],
      [{ organizationId: "not an id" }, "organization_id"],
      [{ view: 99 as CredentialView }, "view"],
      [{ provider: 99 as Provider }, "provider"],
    ];
    for (const [request, field] of cases) {
      const error = await rpcError(search(request));
      expect(error.code, field).toBe(Code.InvalidArgument);
      expect(error.message.startsWith(`${field}: `), error.message).toBe(true);
    }
  });
});

describe("a caller limited to some organisations", () => {
  let limited: string;
  beforeAll(async () => {
    const admin = createClient(AdminService, t.transport("grpc", t.adminToken));
    limited = (await admin.createApiToken({ name: "alpha-gamma-reader", scope: "admin", organizationIds: ["alpha", "gamma"] })).token;
  });

  it("searches only its own organisations and is refused another one", async () => {
    const everything = await search({ pageSize: 200 }, limited);
    const own = sorted([...all.values()].filter((c) => c.organizationId === "alpha" || c.organizationId === "gamma"));
    expect(ids(everything.credentials)).toEqual(ids(own));
    expect(everything.totalSize).toBe(own.length);
    expect(everything.organizations.map((o) => o.organizationId)).toEqual(["alpha", "gamma"]);
    // A text that matches credentials elsewhere finds none of them.
    expect((await search({ query: "beta" }, limited)).totalSize).toBe(0);
    expect((await search({ query: hinted.credentialId }, limited)).totalSize).toBe(0);
    const denied = await rpcError(search({ organizationId: "beta" }, limited));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.message).toMatch(/^organization_id: /);
    // The same refusal for an organisation that does not exist.
    expect((await rpcError(search({ organizationId: "no-such-org" }, limited))).message).toBe(denied.message.replace("beta", "no-such-org"));
  });

  it("lists and counts only its own organisations, and only its own uncovered ones", async () => {
    const listed = await t.clients(limited).organizations.listOrganizations({});
    expect(listed.organizations.map((o) => o.organizationId)).toEqual(["alpha", "gamma"]);
    expect(listed.totalSize).toBe(2);
    expect((await t.clients(limited).organizations.listOrganizations({ query: "tenant" })).totalSize).toBe(0);
    const uncovered = await t.clients(limited).credentials.listUncoveredOrganizations({});
    expect(uncovered.organizations.map((u) => u.organization?.organizationId)).toEqual(["alpha", "gamma"]);
    expect(uncovered.totalSize).toBe(2);
  });
});

describe("ListUncoveredOrganizations", () => {
  it("without a fallback: every organisation with a provider that has no active credential, with those providers", async () => {
    const { credentials } = t.clients();
    const first = await credentials.listUncoveredOrganizations({ pageSize: 3 });
    // Every organisation lacks some provider here: big-corp has OpenAI and Gemini only.
    expect(first.totalSize).toBe(orgNames.size);
    const byId = new Map<string, Provider[]>();
    for (let offset = 0; offset < first.totalSize; offset += 50) {
      const page = await credentials.listUncoveredOrganizations({ offset });
      for (const u of page.organizations) byId.set(u.organization!.organizationId, u.providers);
    }
    expect([...byId.keys()]).toEqual([...orgNames.keys()].sort());
    expect(byId.get(BIG)).toEqual([Provider.ANTHROPIC, Provider.FIREWORKS]);
    // alpha: OpenAI and Anthropic active; its Gemini credential is inactive.
    expect(byId.get("alpha")).toEqual([Provider.GEMINI, Provider.FIREWORKS]);
    expect(byId.get("beta")).toEqual([Provider.ANTHROPIC, Provider.GEMINI]);
    // delta's only credential is inactive.
    expect(byId.get("delta")).toEqual([Provider.OPENAI, Provider.ANTHROPIC, Provider.GEMINI, Provider.FIREWORKS]);
    expect(byId.get("tenant-01")).toEqual([Provider.OPENAI, Provider.ANTHROPIC, Provider.GEMINI, Provider.FIREWORKS]);
    expect(first.organizations.map((u) => u.organization?.organizationId)).toEqual([...orgNames.keys()].sort().slice(0, 3));
  });

  it("for one provider: only the organisations without an active credential for it", async () => {
    const { credentials } = t.clients();
    const openai = await credentials.listUncoveredOrganizations({ provider: Provider.OPENAI, pageSize: 200 });
    const expected = [...orgNames.keys()].filter((id) => ![BIG, "alpha", "beta", "gamma"].includes(id)).sort();
    expect(openai.organizations.map((u) => u.organization?.organizationId)).toEqual(expected);
    expect(openai.totalSize).toBe(expected.length);
    expect(openai.organizations.every((u) => u.providers.length === 1 && u.providers[0] === Provider.OPENAI)).toBe(true);
    const paged = await credentials.listUncoveredOrganizations({ provider: Provider.OPENAI, pageSize: 25, offset: 25 });
    expect(paged.organizations.map((u) => u.organization?.organizationId)).toEqual(expected.slice(25, 50));
    // Deactivating alpha's only OpenAI credentials uncovers it.
    for (const c of [literal, plain]) await credentials.deactivateCredential({ credentialId: c.credentialId });
    try {
      const after = await credentials.listUncoveredOrganizations({ provider: Provider.OPENAI, pageSize: 200 });
      expect(after.organizations.map((u) => u.organization?.organizationId)).toContain("alpha");
      expect(after.totalSize).toBe(expected.length + 1);
    } finally {
      for (const c of [literal, plain]) await credentials.activateCredential({ credentialId: c.credentialId });
    }
    const negative = await rpcError(credentials.listUncoveredOrganizations({ offset: -1 }));
    expect(negative.code).toBe(Code.InvalidArgument);
    expect(negative.message).toMatch(/^offset: /);
  });

  it("with an environment fallback: that provider is never uncovered", async () => {
    await org(envT, "env-empty", "No credentials");
    await org(envT, "env-claude", "Anthropic only");
    await credential(envT, "env-claude", "claude", Provider.ANTHROPIC);
    const { credentials } = envT.clients();
    expect(await credentials.listUncoveredOrganizations({ provider: Provider.OPENAI })).toMatchObject({ organizations: [], totalSize: 0 });
    const every = await credentials.listUncoveredOrganizations({});
    expect(every.totalSize).toBe(2);
    expect(every.organizations.map((u) => [u.organization?.organizationId, u.providers])).toEqual([
      ["env-claude", [Provider.GEMINI, Provider.FIREWORKS]],
      ["env-empty", [Provider.ANTHROPIC, Provider.GEMINI, Provider.FIREWORKS]],
    ]);
    const claude = await credentials.listUncoveredOrganizations({ provider: Provider.ANTHROPIC });
    expect(claude.organizations.map((u) => u.organization?.organizationId)).toEqual(["env-empty"]);
  });
});
