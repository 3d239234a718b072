import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type PortalResponse, type TestPortal } from "../support/portal-harness.js";

// The fleet operations of the REST API and the tRPC procedures behind them, over real HTTP
// (portal process → service → PostgreSQL): numbered pages with totals, the organisation
// typeahead, the cross-organisation credential search, the uncovered organisations, batch
// actions (all or none, by the database) and offboarding (a typed confirmation, then a cascade).

let portal: TestPortal;
/** Every API key this file stores; no response body may ever contain one. */
const keys: string[] = [];
/** A fallback key in the service's environment: Gemini is covered everywhere. */
const GEMINI_FALLBACK = FAKE_KEYS.gemini();
/** Refused at once: nothing listens on the discard port (a credential never called). */
const API_BASE = "http://127.0.0.1:9/v1";

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);
const query = (sql: string, params?: unknown[]) => portal.service.db.query(sql, params);

function expectBadRequest(response: PortalResponse, field: string, message?: RegExp) {
  expect(response.status, response.text).toBe(400);
  expect(response.json.code).toBe("bad_request");
  expect(response.json.message).toMatch(new RegExp(`^${field.replace(/\./g, "\\.")}\\b`));
  expect(response.json.issues.map((i: { path: string }) => i.path)).toContain(field);
  if (message) expect(response.json.message).toMatch(message);
}

async function organization(id: string, name: string) {
  const response = await api("POST", "/api/organizations", { body: { organization_id: id, name } });
  expect(response.status, response.text).toBe(201);
}

async function credential(organizationId: string, name: string, provider: "openai" | "anthropic" = "openai"): Promise<string> {
  const apiKey = FAKE_KEYS[provider]();
  keys.push(apiKey);
  const response = await api("POST", "/api/provider-credentials/create", {
    body: { organization_id: organizationId, provider, credential_name: name, api_key: apiKey, api_base: API_BASE },
  });
  expect(response.status, response.text).toBe(201);
  return response.json.credential_id;
}

const names = (list: Array<{ credential_name: string }>) => list.map((c) => c.credential_name);
const isActive = async (ids: string[]) =>
  Object.fromEntries((await query("select id, is_active from provider_credentials where id = any($1)", [ids])).map((r) => [r.id, r.is_active]));

const ids = { acme: [] as string[], beta: [] as string[] };
let limitedToken = "";

beforeAll(async () => {
  portal = await startTestPortal({ env: { GEMINI_API_KEY: GEMINI_FALLBACK } });
  await organization("fleet-acme", "Acme Widgets");
  await organization("fleet-beta", "Beta Gadgets");
  await organization("fleet-empty", "Nothing Yet");
  // Acme: openai and anthropic, active. Beta: an openai key, inactive (so openai is uncovered there).
  for (const name of ["Prod one", "Prod two", "Prod three", "Staging", "Batch me"]) ids.acme.push(await credential("fleet-acme", name));
  ids.acme.push(await credential("fleet-acme", "Claude", "anthropic"));
  ids.beta.push(await credential("fleet-beta", "Prod backup"));
  expect((await api("PUT", `/api/provider-credentials/${ids.beta[0]}/deactivate`)).status).toBe(200);
  limitedToken = (await portal.service.service.parts.tokens.create("fleet-acme-only", "admin", "test", { organizationIds: ["fleet-acme"] })).token;
}, 120_000);

afterAll(async () => {
  if (portal) {
    for (const body of portal.bodies) for (const key of [...keys, GEMINI_FALLBACK]) expect(body).not.toContain(key);
    await portal.close();
  }
});

describe("numbered pages of an organisation's credentials", () => {
  it("`offset` skips, `total` counts every match on every page", async () => {
    const all = await api("GET", "/api/provider-credentials/organization/fleet-acme");
    expect(all.status, all.text).toBe(200);
    expect(all.json.total).toBe(6);
    const page = await api("GET", "/api/provider-credentials/organization/fleet-acme?limit=2&offset=2");
    expect(page.status, page.text).toBe(200);
    expect(page.json.total).toBe(6);
    expect(names(page.json.credentials)).toEqual(names(all.json.credentials).slice(2, 4));
    const last = await api("GET", "/api/provider-credentials/organization/fleet-acme?limit=4&offset=4");
    expect(names(last.json.credentials)).toEqual(names(all.json.credentials).slice(4));
    expect(last.json.next_cursor).toBeNull();
    const filtered = await api("GET", "/api/provider-credentials/organization/fleet-acme?provider=anthropic");
    expect(filtered.json.total).toBe(1);
  });

  it("a bad offset is 400 naming it", async () => {
    expectBadRequest(await api("GET", "/api/provider-credentials/organization/fleet-acme?offset=-1"), "offset");
    expectBadRequest(await api("GET", "/api/provider-credentials/organization/fleet-acme?offset=two"), "offset");
    const first = await api("GET", "/api/provider-credentials/organization/fleet-acme?limit=1");
    expectBadRequest(await api("GET", `/api/provider-credentials/organization/fleet-acme?offset=1&cursor=${first.json.next_cursor}`), "offset");
  });
});

describe("the organisation typeahead", () => {
  it("`q` matches the id or the name, ignoring case, with offset and total", async () => {
    const byName = await api("GET", "/api/organizations?q=GADGETS");
    expect(byName.status, byName.text).toBe(200);
    expect(byName.json.organizations.map((o: { organization_id: string }) => o.organization_id)).toEqual(["fleet-beta"]);
    expect(byName.json.total).toBe(1);
    const fleet = await api("GET", "/api/organizations?q=fleet-&limit=1&offset=1");
    expect(fleet.json.total).toBe(3);
    expect(fleet.json.organizations.map((o: { organization_id: string }) => o.organization_id)).toEqual(["fleet-beta"]);
    const none = await api("GET", "/api/organizations?q=no-such-organisation");
    expect(none.json).toEqual({ organizations: [], next_cursor: null, total: 0 });
    expectBadRequest(await api("GET", `/api/organizations?q=${"x".repeat(201)}`), "q");
  });

  it("a limited token lists and counts only its own", async () => {
    const mine = await api("GET", "/api/organizations?q=fleet", { token: limitedToken });
    expect(mine.status, mine.text).toBe(200);
    expect(mine.json.total).toBe(1);
    expect(mine.json.organizations.map((o: { organization_id: string }) => o.organization_id)).toEqual(["fleet-acme"]);
  });
});

describe("the credential search", () => {
  it("finds by name, key hint, organisation name and whole id, across organisations, with their names", async () => {
    const prod = await api("GET", "/api/provider-credentials/search?q=prod");
    expect(prod.status, prod.text).toBe(200);
    expect(Object.keys(prod.json).sort()).toEqual(["credentials", "organizations", "total"]);
    expect(prod.json.total).toBe(4);
    // By organisation id, provider, name, then id.
    expect(names(prod.json.credentials)).toEqual(["Prod one", "Prod three", "Prod two", "Prod backup"]);
    expect(prod.json.organizations).toEqual(
      expect.arrayContaining([
        { organization_id: "fleet-acme", name: "Acme Widgets" },
        { organization_id: "fleet-beta", name: "Beta Gadgets" },
      ]),
    );
    const byOrgName = await api("GET", "/api/provider-credentials/search?q=gadgets");
    expect(names(byOrgName.json.credentials)).toEqual(["Prod backup"]);
    const byId = await api("GET", `/api/provider-credentials/search?q=${ids.acme[3]}`);
    expect(names(byId.json.credentials)).toEqual(["Staging"]);
    const hint = (await api("GET", `/api/provider-credentials/${ids.acme[5]}`)).json.key_hint as string;
    const byHint = await api("GET", `/api/provider-credentials/search?q=${encodeURIComponent(hint.slice(-4))}`);
    expect(names(byHint.json.credentials)).toContain("Claude");
  });

  it("narrows by view, provider and organisation; pages by limit and offset", async () => {
    const inactive = await api("GET", "/api/provider-credentials/search?view=inactive");
    expect(names(inactive.json.credentials)).toEqual(["Prod backup"]);
    expect(inactive.json.total).toBe(1);
    const anthropic = await api("GET", "/api/provider-credentials/search?provider=anthropic");
    expect(names(anthropic.json.credentials)).toEqual(["Claude"]);
    const acme = await api("GET", "/api/provider-credentials/search?organization_id=fleet-acme&limit=2&offset=2");
    expect(acme.json.total).toBe(6);
    expect(acme.json.credentials).toHaveLength(2);
    const failing = await api("GET", "/api/provider-credentials/search?view=failing");
    expect(failing.json).toEqual({ credentials: [], total: 0, organizations: [] });
  });

  it("a limited token finds only its own organisation's", async () => {
    const mine = await api("GET", "/api/provider-credentials/search?q=prod", { token: limitedToken });
    expect(mine.status, mine.text).toBe(200);
    expect(mine.json.total).toBe(3);
    expect(mine.text).not.toContain("fleet-beta");
    expect(mine.text).not.toContain(ids.beta[0]);
  });

  it("bad input is 400 naming the field", async () => {
    expectBadRequest(await api("GET", `/api/provider-credentials/search?q=${"x".repeat(201)}`), "q");
    expectBadRequest(await api("GET", "/api/provider-credentials/search?view=broken"), "view");
    expectBadRequest(await api("GET", "/api/provider-credentials/search?provider=nope"), "provider");
    expectBadRequest(await api("GET", "/api/provider-credentials/search?offset=-3"), "offset");
    expectBadRequest(await api("GET", "/api/provider-credentials/search?limit=0"), "limit");
    expectBadRequest(await api("GET", "/api/provider-credentials/search?apiKey=x"), "apiKey");
  });

  it("over tRPC too, with the same shapes", async () => {
    const input = encodeURIComponent(JSON.stringify({ q: "staging", view: undefined }));
    const response = await api("GET", `/api/trpc/credentials.search?input=${input}`);
    expect(response.status, response.text).toBe(200);
    expect(response.json.result.data.total).toBe(1);
    expect(names(response.json.result.data.credentials)).toEqual(["Staging"]);
  });
});

describe("uncovered organisations", () => {
  it("lists those with no active credential for a provider, without the environment's fallback providers", async () => {
    const all = await api("GET", "/api/uncovered-organizations?limit=200");
    expect(all.status, all.text).toBe(200);
    const byId = Object.fromEntries(all.json.organizations.map((o: { organization_id: string; providers: string[] }) => [o.organization_id, o]));
    expect(byId["fleet-acme"].providers).toEqual(["fireworks"]);
    expect(byId["fleet-acme"].name).toBe("Acme Widgets");
    expect(byId["fleet-beta"].providers).toEqual(["openai", "anthropic", "fireworks"]);
    expect(byId["fleet-empty"].providers).toEqual(["openai", "anthropic", "fireworks"]);
    expect(all.json.total).toBe(all.json.organizations.length);

    const openai = await api("GET", "/api/uncovered-organizations?provider=openai");
    expect(openai.json.organizations.map((o: { organization_id: string }) => o.organization_id)).toEqual(["fleet-beta", "fleet-empty"]);
    expect(openai.json.total).toBe(2);
    const second = await api("GET", "/api/uncovered-organizations?provider=openai&limit=1&offset=1");
    expect(second.json).toEqual({ organizations: [{ organization_id: "fleet-empty", name: "Nothing Yet", providers: ["openai"] }], total: 2 });
    // Covered by the environment: nobody is uncovered for Gemini.
    const gemini = await api("GET", "/api/uncovered-organizations?provider=gemini");
    expect(gemini.json).toEqual({ organizations: [], total: 0 });
  });

  it("a limited token sees only its own; bad input is 400 naming the field", async () => {
    const mine = await api("GET", "/api/uncovered-organizations", { token: limitedToken });
    expect(mine.status, mine.text).toBe(200);
    expect(mine.json.organizations.map((o: { organization_id: string }) => o.organization_id)).toEqual(["fleet-acme"]);
    expect(mine.json.total).toBe(1);
    expectBadRequest(await api("GET", "/api/uncovered-organizations?provider=openai2"), "provider");
    expectBadRequest(await api("GET", "/api/uncovered-organizations?offset=-1"), "offset");
  });

  it("takes no organisation's id: organisations named `uncovered` and `search` stay reachable, and credentials by id", async () => {
    for (const id of ["uncovered", "search"]) {
      await organization(id, `Named ${id}`);
      const got = await api("GET", `/api/organizations/${id}`);
      expect(got.status, got.text).toBe(200);
      expect(got.json.name).toBe(`Named ${id}`);
      const gone = await api("DELETE", `/api/organizations/${id}`);
      expect(gone.json, gone.text).toEqual({ organization_id: id, deleted: true });
    }
    expect((await api("GET", `/api/provider-credentials/${ids.acme[0]}`)).json.credential_name).toBe("Prod one");
    // `search` is no credential id: the search answers, not "credential_id: is not a UUID".
    expect((await api("GET", "/api/provider-credentials/search")).json.total).toBeGreaterThan(0);
  });
});

describe("batch actions", () => {
  it("deactivate and activate several at once, each audited", async () => {
    const two = [ids.acme[0], ids.acme[1]];
    const off = await api("POST", "/api/provider-credentials/batch", { body: { action: "deactivate", credential_ids: two } });
    expect(off.status, off.text).toBe(200);
    expect(off.json.credentials.map((c: { credential_id: string; is_active: boolean }) => [c.credential_id, c.is_active])).toEqual([
      [two[0], false],
      [two[1], false],
    ]);
    expect(await isActive(two)).toEqual({ [two[0]]: false, [two[1]]: false });
    const events = await query("select credential_id from audit_events where action = 'credential.deactivate' and credential_id = any($1)", [two]);
    expect(events).toHaveLength(2);
    const on = await api("POST", "/api/provider-credentials/batch", { body: { action: "activate", credential_ids: two } });
    expect(on.status, on.text).toBe(200);
    expect(await isActive(two)).toEqual({ [two[0]]: true, [two[1]]: true });
  });

  it("all or none: an unknown id is 404 and nothing changes", async () => {
    const missing = randomUUID();
    const before = await query("select id, is_active, version from provider_credentials where organization_id = 'fleet-acme' order by id");
    const response = await api("POST", "/api/provider-credentials/batch", { body: { action: "deactivate", credential_ids: [ids.acme[0], missing] } });
    expect(response.status, response.text).toBe(404);
    expect(response.json.code).toBe("not_found");
    expect(response.json.message).toContain(missing);
    const deletion = await api("POST", "/api/provider-credentials/batch", { body: { action: "delete", credential_ids: [ids.acme[2], missing] } });
    expect(deletion.status, deletion.text).toBe(404);
    expect(await query("select id, is_active, version from provider_credentials where organization_id = 'fleet-acme' order by id")).toEqual(before);
  });

  it("a limited token naming another organisation's credential is refused whole", async () => {
    const before = await isActive([ids.acme[0], ids.beta[0]]);
    const response = await api("POST", "/api/provider-credentials/batch", {
      token: limitedToken,
      body: { action: "activate", credential_ids: [ids.acme[0], ids.beta[0]] },
    });
    expect(response.status, response.text).toBe(403);
    expect(response.json.code).toBe("forbidden");
    expect(await isActive([ids.acme[0], ids.beta[0]])).toEqual(before);
  });

  it("delete removes them", async () => {
    const response = await api("POST", "/api/provider-credentials/batch", { body: { action: "delete", credential_ids: [ids.acme[4]] } });
    expect(response.status, response.text).toBe(200);
    expect(response.json.credentials[0].credential_name).toBe("Batch me");
    expect(await query("select id from provider_credentials where id = $1", [ids.acme[4]])).toEqual([]);
  });

  it("bad input is 400 naming the field, and changes nothing", async () => {
    const batch = (body: unknown) => api("POST", "/api/provider-credentials/batch", { body });
    const before = await query("select id, is_active, version from provider_credentials order by id");
    expectBadRequest(await batch({ action: "deactivate", credential_ids: [] }), "credential_ids");
    expectBadRequest(await batch({ action: "deactivate", credential_ids: Array.from({ length: 201 }, () => randomUUID()) }), "credential_ids");
    expectBadRequest(await batch({ action: "explode", credential_ids: [ids.acme[0]] }), "action");
    expectBadRequest(await batch({ credential_ids: [ids.acme[0]] }), "action");
    expectBadRequest(await batch({ action: "deactivate", credential_ids: "all" }), "credential_ids");
    expectBadRequest(await batch({ action: "deactivate", credential_ids: [ids.acme[0]], force: true }), "force");
    const duplicate = await batch({ action: "deactivate", credential_ids: [ids.acme[0], ids.acme[0]] });
    expect(duplicate.status, duplicate.text).toBe(400);
    expect(duplicate.json.message).toMatch(/^credential_ids/);
    expect(await query("select id, is_active, version from provider_credentials order by id")).toEqual(before);
  });
});

describe("offboarding", () => {
  it("a confirmation that does not repeat the id exactly is 400 naming it, and nothing is deleted", async () => {
    for (const confirm of ["fleet-beta ", "FLEET-BETA", "fleet-acme", ""]) {
      const response = await api("POST", "/api/organizations/fleet-beta/offboard", { body: { confirm_organization_id: confirm } });
      expectBadRequest(response, "confirm_organization_id", /type the organization's id to confirm/);
    }
    expectBadRequest(await api("POST", "/api/organizations/fleet-beta/offboard", { body: {} }), "confirm_organization_id");
    expectBadRequest(
      await api("POST", "/api/organizations/fleet-beta/offboard", { body: { confirm_organization_id: "fleet-beta", cascade: false } }),
      "cascade",
    );
    expect(await query("select id from organizations where id = 'fleet-beta'")).toEqual([{ id: "fleet-beta" }]);
    expect(await query("select id from provider_credentials where organization_id = 'fleet-beta'")).toHaveLength(1);
  });

  it("a limited token cannot offboard another organisation; a missing one is 404", async () => {
    const refused = await api("POST", "/api/organizations/fleet-beta/offboard", { token: limitedToken, body: { confirm_organization_id: "fleet-beta" } });
    expect(refused.status, refused.text).toBe(403);
    const missing = await api("POST", "/api/organizations/fleet-nope/offboard", { body: { confirm_organization_id: "fleet-nope" } });
    expect(missing.status, missing.text).toBe(404);
    expect(await query("select id from organizations where id = 'fleet-beta'")).toEqual([{ id: "fleet-beta" }]);
  });

  it("deletes the organisation with its credentials and teams, and says how many", async () => {
    for (const team of ["beta-one", "beta-two"]) {
      const response = await api("POST", "/api/organizations/fleet-beta/teams", { body: { team_id: team, name: team } });
      expect(response.status, response.text).toBe(201);
    }
    expect((await api("DELETE", "/api/organizations/fleet-beta")).status).toBe(409);
    const response = await api("POST", "/api/organizations/fleet-beta/offboard", { body: { confirm_organization_id: "fleet-beta" } });
    expect(response.status, response.text).toBe(200);
    expect(response.json).toEqual({ organization_id: "fleet-beta", deleted: true, deleted_credentials: 1, deleted_teams: 2 });
    expect(await query("select id from organizations where id = 'fleet-beta'")).toEqual([]);
    expect(await query("select id from provider_credentials where organization_id = 'fleet-beta'")).toEqual([]);
    expect(await query("select id from teams where organization_id = 'fleet-beta'")).toEqual([]);
    expect((await api("GET", "/api/organizations/fleet-beta")).status).toBe(404);
  });

  it("for a signed-in owner, needs a recent sign-in: 409 reauthentication_required, then works", async () => {
    const email = "fleet-owner@example.com";
    const password = "offboarding-correct-horse-42";
    await portal.service.service.parts.admins.create(email, password, { actor: "test", source: null }, "password", { role: "owner" });
    const { session } = await portal.signIn(email, password);
    expect(session).toBeDefined();
    await organization("fleet-old-session", "Old session");
    await credential("fleet-old-session", "Kept until confirmed");
    await query("update admin_sessions set authenticated_at = now() - interval '11 minutes' where id_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')", [
      session,
    ]);
    const offboard = () =>
      api("POST", "/api/organizations/fleet-old-session/offboard", {
        token: null,
        session,
        headers: { origin: portal.url },
        body: { confirm_organization_id: "fleet-old-session" },
      });
    const stale = await offboard();
    expect(stale.status, stale.text).toBe(409);
    expect(stale.json.code).toBe("reauthentication_required");
    expect(await query("select id from provider_credentials where organization_id = 'fleet-old-session'")).toHaveLength(1);
    await query("update admin_sessions set authenticated_at = now() where id_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')", [session]);
    const fresh = await offboard();
    expect(fresh.status, fresh.text).toBe(200);
    expect(fresh.json.deleted_credentials).toBe(1);
    const events = await query("select actor from audit_events where action = 'credential.delete' and organization_id = 'fleet-old-session'");
    expect(events).toHaveLength(1);
    expect(events[0].actor).toMatch(new RegExp(`^${email.replace(/\./g, "\\.")} \\(owner\\)`));
  });

  it("deleting credentials together needs a recent sign-in too (409 reauthentication_required); deactivating does not", async () => {
    const email = "fleet-bulk-owner@example.com";
    const password = "bulk-deleting-correct-horse-42";
    await portal.service.service.parts.admins.create(email, password, { actor: "test", source: null }, "password", { role: "owner" });
    const { session } = await portal.signIn(email, password);
    await organization("fleet-bulk-stale", "Bulk stale");
    const ids = [await credential("fleet-bulk-stale", "One"), await credential("fleet-bulk-stale", "Two")];
    const authenticatedAt = (at: string) =>
      query(`update admin_sessions set authenticated_at = ${at} where id_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')`, [session]);
    await authenticatedAt("now() - interval '11 minutes'");
    const batch = (action: string) =>
      api("POST", "/api/provider-credentials/batch", { token: null, session, headers: { origin: portal.url }, body: { action, credential_ids: ids } });
    expect((await batch("deactivate")).status).toBe(200);
    const stale = await batch("delete");
    expect(stale.status, stale.text).toBe(409);
    expect(stale.json.code).toBe("reauthentication_required");
    expect(await query("select id from provider_credentials where organization_id = 'fleet-bulk-stale'")).toHaveLength(2);
    await authenticatedAt("now()");
    const fresh = await batch("delete");
    expect(fresh.status, fresh.text).toBe(200);
    expect(await query("select id from provider_credentials where organization_id = 'fleet-bulk-stale'")).toHaveLength(0);
  });

  it("over tRPC, the mismatch names the field in `issues`", async () => {
    const response = await api("POST", "/api/trpc/organizations.offboard", {
      body: { organization_id: "fleet-empty", confirm_organization_id: "fleet-emptY" },
    });
    expect(response.status, response.text).toBe(400);
    expect(response.json.error.data.apiCode).toBe("bad_request");
    expect(response.json.error.data.issues).toEqual([{ path: "confirm_organization_id", message: expect.stringMatching(/type the organization's id/) }]);
    const done = await api("POST", "/api/trpc/organizations.offboard", { body: { organization_id: "fleet-empty", confirm_organization_id: "fleet-empty" } });
    expect(done.status, done.text).toBe(200);
    expect(done.json.result.data).toEqual({ organization_id: "fleet-empty", deleted: true, deleted_credentials: 0, deleted_teams: 0 });
  });
});
