import { TRPCError } from "@trpc/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type PortalResponse, type TestPortal } from "../support/portal-harness.js";
import { ApiError } from "../../portal/src/lib/server/errors.js";
import { createServiceConnection, type ServiceConnection } from "../../portal/src/lib/server/service-client.js";
import { createContextInner, type SignedInAdmin } from "../../portal/src/lib/server/trpc/context.js";
import { createCaller } from "../../portal/src/lib/server/trpc/routers/_app.js";

// Issue #20, the portal's side: API tokens with organisations, expiry, prefix and rotation, and
// portal accounts with roles, over REST (real HTTP to the built portal), over tRPC (createCaller),
// and through the pages' form posts. The service decides who may do what; these tests check that
// the portal passes its decisions on (403, or the same answer as for something that does not exist)
// and never a 500.

let portal: TestPortal;
let connection: ServiceConnection;

const OWNER = { email: "olive@example.com", password: "owner of many green fields" };
const EDITOR = { email: "eddie@example.com", password: "editor with a quiet pencil" };
const VIEWER = { email: "vera@example.com", password: "viewer behind the window glass" };
const ORG_A = "acme";
const ORG_B = "globex";
/** Tokens and one-time passwords shown once: no later response may carry them. */
const secrets: string[] = [];
const keys: string[] = [];

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);

/** A same-origin call with a session cookie, as the portal's own pages make it. */
const asSession = (session: string, method: string, path: string, body?: unknown) =>
  api(method, path, { token: null, session, body, headers: { origin: portal.url } });

/** A form post of a page, as a browser without JavaScript sends it. */
const formPost = (session: string, path: string, fields: Record<string, string>) =>
  api("POST", path, {
    token: null,
    session,
    rawBody: new URLSearchParams(fields).toString(),
    headers: { "content-type": "application/x-www-form-urlencoded", origin: portal.url, accept: "text/html" },
  });

function expectError(response: PortalResponse, status: number, code: string, messagePattern?: RegExp) {
  expect(response.status, response.text).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(response.json.code, response.text).toBe(code);
  if (messagePattern) expect(response.json.message).toMatch(messagePattern);
  expect(response.text).not.toMatch(/\bat .*\.(js|ts):\d+|stack|node_modules/i);
}

async function signIn(email: string, password: string): Promise<string> {
  const { session, response } = await portal.signIn(email, password);
  expect(session, response.text).toBeDefined();
  return session!;
}

const sessionCaller = (admin: SignedInAdmin) => createCaller(createContextInner({ caller: { kind: "session", admin }, connection, source: "127.0.0.1" }));
const adminOf = (email: string, role: SignedInAdmin["role"], organizationIds: string[] = []): SignedInAdmin => ({
  adminId: "00000000-0000-4000-8000-000000000001",
  email,
  role,
  organizationIds,
});

async function refusal(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(TRPCError);
    expect(error).toBeInstanceOf(ApiError);
    return error as ApiError;
  }
  throw new Error("expected the call to be refused");
}

beforeAll(async () => {
  portal = await startTestPortal();
  connection = createServiceConnection({ baseUrl: `http://${portal.service.address}`, serviceAdminToken: portal.adminToken });
  await portal.createAdmin(OWNER.email, OWNER.password);
  for (const id of [ORG_A, ORG_B]) {
    const created = await api("POST", "/api/organizations", { body: { organization_id: id, name: `Org ${id}` } });
    expect(created.status, created.text).toBe(201);
  }
  const apiKey = FAKE_KEYS.openai();
  keys.push(apiKey);
  const credential = await api("POST", "/api/provider-credentials/create", {
    body: { organization_id: ORG_B, provider: "openai", credential_name: "B's key", api_key: apiKey },
  });
  expect(credential.status, credential.text).toBe(201);
});

afterAll(async () => {
  await portal?.close();
});

describe("API tokens over REST", () => {
  it("POST /api/tokens with organisations and expiry: 201, the token once, its prefix, its limits", async () => {
    const expiresAt = new Date(Date.now() + 7 * 86_400_000).toISOString();
    const created = await api("POST", "/api/tokens", { body: { name: "gw-acme", scope: "resolve", organization_ids: [ORG_A], expires_at: expiresAt } });
    expect(created.status, created.text).toBe(201);
    const token = created.json.token as string;
    secrets.push(token);
    expect(created.json).toMatchObject({ name: "gw-acme", scope: "resolve", organization_ids: [ORG_A], previous_valid_until: null });
    expect(Date.parse(created.json.expires_at)).toBe(Date.parse(expiresAt));
    expect(created.json.prefix.length).toBeGreaterThanOrEqual(6);
    expect(token.startsWith(created.json.prefix)).toBe(true);
    expect(token.length).toBeGreaterThan(created.json.prefix.length + 16);

    const metrics = await api("POST", "/api/tokens", { body: { name: "scraper", scope: "metrics" } });
    expect(metrics.status, metrics.text).toBe(201);
    secrets.push(metrics.json.token);
    expect(metrics.json).toMatchObject({ scope: "metrics", organization_ids: null, expires_at: null });
    // A metrics token may not use the API.
    expect((await api("GET", "/api/organizations", { token: metrics.json.token })).status).toBe(403);
  });

  it("GET /api/tokens lists name, scope, organisations, expiry, prefix, creator and last use; never the secret", async () => {
    const list = await api("GET", "/api/tokens");
    expect(list.status, list.text).toBe(200);
    const entry = list.json.tokens.find((t: { name: string }) => t.name === "gw-acme");
    expect(Object.keys(entry).sort()).toEqual([
      "created_at",
      "created_by",
      "expires_at",
      "last_used_at",
      "name",
      "organization_ids",
      "prefix",
      "previous_valid_until",
      "scope",
    ]);
    expect(entry).toMatchObject({ scope: "resolve", organization_ids: [ORG_A], created_by: "token:service-admin-token" });
    for (const secret of secrets) expect(list.text).not.toContain(secret);
  });

  it("an admin token limited to one organisation sees only it, and is refused elsewhere alike for a real and a missing one", async () => {
    const created = await api("POST", "/api/tokens", { body: { name: "admin-acme", scope: "admin", organization_ids: [ORG_A] } });
    expect(created.status, created.text).toBe(201);
    const token = created.json.token as string;
    secrets.push(token);
    const orgs = await api("GET", "/api/organizations", { token });
    expect(orgs.status, orgs.text).toBe(200);
    expect(orgs.json.organizations.map((o: { organization_id: string }) => o.organization_id)).toEqual([ORG_A]);
    const other = await api("GET", `/api/provider-credentials/organization/${ORG_B}`, { token });
    const missing = await api("GET", "/api/provider-credentials/organization/no-such-org", { token });
    expect(other.status, other.text).toBeGreaterThanOrEqual(400);
    expect(other.status).toBeLessThan(500);
    expect({ status: other.status, body: other.json }).toEqual({
      status: missing.status,
      body: { ...missing.json, message: missing.json.message.replace("no-such-org", ORG_B) },
    });
    // It may not make a token for every organisation.
    const wider = await api("POST", "/api/tokens", { token, body: { name: "wider", scope: "resolve" } });
    expect(wider.status, wider.text).toBe(403);
  });

  it("POST /api/tokens/{name}/rotate: a new secret for the same rules; the previous one works during the overlap only", async () => {
    const created = await api("POST", "/api/tokens", { body: { name: "rotating", scope: "admin", organization_ids: [ORG_A] } });
    const first = created.json.token as string;
    secrets.push(first);

    const rotated = await api("POST", "/api/tokens/rotating/rotate", { body: { overlap_seconds: 600 } });
    expect(rotated.status, rotated.text).toBe(200);
    const second = rotated.json.token as string;
    secrets.push(second);
    expect(second).not.toBe(first);
    expect(rotated.json).toMatchObject({ name: "rotating", scope: "admin", organization_ids: [ORG_A] });
    expect(second.startsWith(rotated.json.prefix)).toBe(true);
    const until = Date.parse(rotated.json.previous_valid_until);
    expect(until).toBeGreaterThan(Date.now() + 500_000);
    expect(until).toBeLessThan(Date.now() + 700_000);
    expect((await api("GET", "/api/organizations", { token: first })).status).toBe(200);
    expect((await api("GET", "/api/organizations", { token: second })).status).toBe(200);

    // Without an overlap (and with no body at all) the previous secret stops at once.
    const again = await api("POST", "/api/tokens/rotating/rotate");
    expect(again.status, again.text).toBe(200);
    secrets.push(again.json.token);
    expect(again.json.previous_valid_until).toBeNull();
    expectError(await api("GET", "/api/organizations", { token: second }), 401, "unauthorized");
    expect((await api("GET", "/api/organizations", { token: again.json.token })).status).toBe(200);

    expectError(await api("POST", "/api/tokens/no-such-token/rotate"), 404, "not_found");
  });

  it("bad input names the field, with 400; never a 500", async () => {
    const cases: Array<[string, string, unknown, string]> = [
      ["POST", "/api/tokens", { name: "x1", scope: "resolve", organization_ids: [] }, "organization_ids"],
      ["POST", "/api/tokens", { name: "x2", scope: "resolve", organization_ids: "acme" }, "organization_ids"],
      ["POST", "/api/tokens", { name: "x3", scope: "resolve", organization_ids: [""] }, "organization_ids.0"],
      ["POST", "/api/tokens", { name: "x4", scope: "resolve", expires_at: "tomorrow" }, "expires_at"],
      ["POST", "/api/tokens", { name: "x5", scope: "resolve", expires_at: "2001-01-01T00:00:00Z" }, "expires_at"],
      ["POST", "/api/tokens", { name: "x6", scope: "root" }, "scope"],
      ["POST", "/api/tokens", { name: "x7", scope: "resolve", organizationIds: [ORG_A] }, "organizationIds"],
      ["POST", "/api/tokens/rotating/rotate", { overlap_seconds: 86_401 }, "overlap_seconds"],
      ["POST", "/api/tokens/rotating/rotate", { overlap_seconds: -1 }, "overlap_seconds"],
      ["POST", "/api/tokens/rotating/rotate", { overlap_seconds: "600" }, "overlap_seconds"],
      ["POST", "/api/tokens/rotating/rotate", { overlap_seconds: 1.5 }, "overlap_seconds"],
      ["POST", "/api/accounts", { email: "a@example.com", role: "root" }, "role"],
      ["POST", "/api/accounts", { email: "", role: "viewer" }, "email"],
      ["POST", "/api/accounts", { email: "b@example.com", role: "owner", organization_ids: [ORG_A] }, "organization_ids"],
      ["POST", "/api/accounts", { email: "c@example.com", role: "viewer", password: "short" }, "password"],
      ["PUT", `/api/accounts/${OWNER.email}`, { disabled: "yes" }, "disabled"],
      ["PUT", `/api/accounts/${OWNER.email}`, { organization_ids: [] }, "organization_ids"],
    ];
    for (const [method, path, body, field] of cases) {
      const response = await api(method, path, { body });
      expect(response.status, `${method} ${path} ${JSON.stringify(body)}: ${response.text}`).toBe(400);
      expect(response.json.code).toBe("bad_request");
      expect(response.json.message, `${method} ${path} ${JSON.stringify(body)}`).toMatch(new RegExp(`^${field.replace(".", "\\.")}: `));
    }
    // Not a token of an organisation that does not exist: refused as a client error, naming nothing secret.
    const unknown = await api("POST", "/api/tokens", { body: { name: "x8", scope: "resolve", organization_ids: ["no-such-org"] } });
    expect(unknown.status, unknown.text).toBeGreaterThanOrEqual(400);
    expect(unknown.status).toBeLessThan(500);
    const names = (await api("GET", "/api/tokens")).json.tokens.map((t: { name: string }) => t.name);
    expect(names.filter((n: string) => /^x\d$/.test(n))).toEqual([]);
  });

  it("DELETE /api/tokens/{name}: 200, then the token is refused; 404 the second time", async () => {
    const revoked = await api("DELETE", "/api/tokens/admin-acme");
    expect(revoked.status, revoked.text).toBe(200);
    expect(revoked.json).toEqual({ name: "admin-acme", revoked: true });
    expectError(await api("DELETE", "/api/tokens/admin-acme"), 404, "not_found");
  });
});

describe("portal accounts over REST", () => {
  it("POST /api/accounts: 201 with a one-time password when none is sent; it signs in", async () => {
    const created = await api("POST", "/api/accounts", { body: { email: EDITOR.email, role: "editor", organization_ids: [ORG_A] } });
    expect(created.status, created.text).toBe(201);
    expect(Object.keys(created.json).sort()).toEqual([
      "created_at",
      "disabled",
      "email",
      "last_sign_in_at",
      "organization_ids",
      "password",
      "role",
      "two_factor_enabled",
    ]);
    expect(created.json).toMatchObject({ email: EDITOR.email, role: "editor", organization_ids: [ORG_A], disabled: false, last_sign_in_at: null });
    const oneTime = created.json.password as string;
    expect(oneTime.length).toBeGreaterThanOrEqual(12);
    secrets.push(oneTime);
    await signIn(EDITOR.email, oneTime);

    // With a chosen password: none comes back.
    const viewer = await api("POST", "/api/accounts", { body: { email: VIEWER.email, role: "viewer", password: VIEWER.password } });
    expect(viewer.status, viewer.text).toBe(201);
    expect(viewer.json).toMatchObject({ role: "viewer", organization_ids: null, password: null });
    expect(viewer.text).not.toContain(VIEWER.password);

    expectError(await api("POST", "/api/accounts", { body: { email: VIEWER.email, role: "viewer" } }), 409, "already_exists");
  });

  it("GET /api/accounts lists every account with role and organisations; never a password", async () => {
    const list = await api("GET", "/api/accounts");
    expect(list.status, list.text).toBe(200);
    const byEmail = Object.fromEntries(list.json.accounts.map((a: { email: string }) => [a.email, a]));
    expect(byEmail[OWNER.email]).toMatchObject({ role: "owner", organization_ids: null, disabled: false });
    expect(byEmail[EDITOR.email]).toMatchObject({ role: "editor", organization_ids: [ORG_A] });
    expect(Object.keys(byEmail[VIEWER.email]).sort()).toEqual([
      "created_at",
      "disabled",
      "email",
      "last_sign_in_at",
      "organization_ids",
      "role",
      "two_factor_enabled",
    ]);
    for (const secret of [...secrets, VIEWER.password, OWNER.password]) expect(list.text).not.toContain(secret);
  });

  it("PUT /api/accounts/{email} changes role, organisations and disabled; an encoded email works; 404 for none", async () => {
    const changed = await api("PUT", `/api/accounts/${encodeURIComponent(VIEWER.email)}`, { body: { organization_ids: [ORG_A, ORG_B] } });
    expect(changed.status, changed.text).toBe(200);
    expect(changed.json).toMatchObject({ email: VIEWER.email, role: "viewer", organization_ids: [ORG_A, ORG_B] });
    const back = await api("PUT", `/api/accounts/${VIEWER.email}`, { body: { organization_ids: null } });
    expect(back.status, back.text).toBe(200);
    expect(back.json.organization_ids).toBeNull();
    // The last enabled owner stays one.
    const demote = await api("PUT", `/api/accounts/${OWNER.email}`, { body: { role: "viewer" } });
    expect(demote.status, demote.text).toBe(409);
    expectError(await api("PUT", "/api/accounts/nobody@example.com", { body: { role: "viewer" } }), 404, "not_found");
    expectError(await api("DELETE", "/api/accounts/nobody@example.com"), 404, "not_found");
  });

  it("disabling an account ends its sessions and refuses its sign-in; enabling lets it in again", async () => {
    const session = await signIn(VIEWER.email, VIEWER.password);
    expect((await asSession(session, "GET", "/api/organizations")).status).toBe(200);
    const disabled = await api("PUT", `/api/accounts/${VIEWER.email}`, { body: { disabled: true } });
    expect(disabled.status, disabled.text).toBe(200);
    expect(disabled.json.disabled).toBe(true);
    expectError(await asSession(session, "GET", "/api/organizations"), 401, "unauthorized");
    const { session: refused } = await portal.signIn(VIEWER.email, VIEWER.password);
    expect(refused).toBeUndefined();
    const enabled = await api("PUT", `/api/accounts/${VIEWER.email}`, { body: { disabled: false } });
    expect(enabled.json.disabled).toBe(false);
    await signIn(VIEWER.email, VIEWER.password);
  });

  it("POST /api/accounts/{email}/sign-out ends every session of the account", async () => {
    const one = await signIn(VIEWER.email, VIEWER.password);
    const two = await signIn(VIEWER.email, VIEWER.password);
    const ended = await api("POST", `/api/accounts/${VIEWER.email}/sign-out`);
    expect(ended.status, ended.text).toBe(200);
    expect(ended.json.email).toBe(VIEWER.email);
    expect(ended.json.sessions_ended).toBeGreaterThanOrEqual(2);
    for (const session of [one, two]) expectError(await asSession(session, "GET", "/api/organizations"), 401, "unauthorized");
  });
});

describe("what each role may do, as the service decides it", () => {
  it("an editor limited to one organisation: sees only it, changes only it, manages no accounts or tokens", async () => {
    // Again, with a known password (the first time it had a generated one).
    const reset = await api("DELETE", `/api/accounts/${EDITOR.email}`);
    expect(reset.status, reset.text).toBe(200);
    const created = await api("POST", "/api/accounts", {
      body: { email: EDITOR.email, role: "editor", organization_ids: [ORG_A], password: EDITOR.password },
    });
    expect(created.status, created.text).toBe(201);
    const session = await signIn(EDITOR.email, EDITOR.password);

    const orgs = await asSession(session, "GET", "/api/organizations");
    expect(orgs.json.organizations.map((o: { organization_id: string }) => o.organization_id)).toEqual([ORG_A]);
    const team = await asSession(session, "POST", `/api/organizations/${ORG_A}/teams`, { team_id: "team-a", name: "Team A" });
    expect(team.status, team.text).toBe(201);
    const other = await asSession(session, "POST", `/api/organizations/${ORG_B}/teams`, { team_id: "team-b", name: "Team B" });
    const missing = await asSession(session, "POST", "/api/organizations/no-such-org/teams", { team_id: "team-c", name: "Team C" });
    expect(other.status, other.text).toBeGreaterThanOrEqual(400);
    expect(other.status).toBeLessThan(500);
    expect(other.status).toBe(missing.status);
    expect(other.json.code).toBe(missing.json.code);

    expectError(await asSession(session, "POST", "/api/accounts", { email: "x@example.com", role: "viewer" }), 403, "forbidden");
    expectError(await asSession(session, "POST", "/api/tokens", { name: "mine", scope: "resolve", organization_ids: [ORG_A] }), 403, "forbidden");
    expectError(await asSession(session, "POST", "/api/organizations", { organization_id: "new-org", name: "New" }), 403, "forbidden");
    const accounts = await asSession(session, "GET", "/api/accounts");
    if (accounts.status === 200) {
      // If it may read accounts at all, only those of its organisation.
      for (const account of accounts.json.accounts) expect(account.organization_ids ?? []).not.toContain(ORG_B);
    } else {
      expectError(accounts, 403, "forbidden");
    }
  });

  it("a viewer reads, and every change it posts is refused with 403; nothing changes", async () => {
    const session = await signIn(VIEWER.email, VIEWER.password);
    expect((await asSession(session, "GET", `/api/organizations/${ORG_B}/teams`)).status).toBe(200);
    expectError(await asSession(session, "POST", `/api/organizations/${ORG_B}/teams`, { team_id: "v-team", name: "V" }), 403, "forbidden");
    expectError(await asSession(session, "PUT", `/api/accounts/${VIEWER.email}`, { role: "owner" }), 403, "forbidden");
    expectError(await asSession(session, "POST", "/api/tokens/rotating/rotate", {}), 403, "forbidden");
    const teams = await api("GET", `/api/organizations/${ORG_B}/teams`);
    expect(teams.json.teams).toEqual([]);
    const account = (await api("GET", "/api/accounts")).json.accounts.find((a: { email: string }) => a.email === VIEWER.email);
    expect(account.role).toBe("viewer");
  });

  it("the same over tRPC: a session caller gets the service's refusal as FORBIDDEN, an owner may manage accounts", async () => {
    const viewer = sessionCaller(adminOf(VIEWER.email, "viewer"));
    for (const call of [
      () => viewer.accounts.create({ email: "t@example.com", role: "viewer" }),
      () => viewer.accounts.update({ email: OWNER.email, disabled: true }),
      () => viewer.accounts.delete({ email: OWNER.email }),
      () => viewer.accounts.signOutEverywhere({ email: OWNER.email }),
      () => viewer.tokens.create({ name: "t-view", scope: "resolve" }),
      () => viewer.tokens.rotate({ name: "rotating" }),
      () => viewer.teams.create({ organization_id: ORG_A, team_id: "t-team", name: "T" }),
    ]) {
      const error = await refusal(call());
      expect(error.code).toBe("FORBIDDEN");
      expect(error.status).toBe(403);
    }
    // What the page decided to show does not matter: a caller claiming "owner" is still the viewer to the service.
    const claiming = sessionCaller(adminOf(VIEWER.email, "owner"));
    expect((await refusal(claiming.accounts.create({ email: "t@example.com", role: "viewer" }))).status).toBe(403);

    // A real session, signed in just now: creating accounts and tokens needs a recent sign-in.
    const owner = sessionCaller({ ...adminOf(OWNER.email, "owner"), sessionToken: await signIn(OWNER.email, OWNER.password) });
    const created = await owner.accounts.create({ email: "trpc@example.com", role: "viewer", organization_ids: [ORG_B] });
    expect(created).toMatchObject({ email: "trpc@example.com", role: "viewer", organization_ids: [ORG_B] });
    expect(typeof created.password).toBe("string");
    secrets.push(created.password!);
    const changed = await owner.accounts.update({ email: "trpc@example.com", role: "editor" });
    expect(changed.role).toBe("editor");
    expect((await owner.accounts.list({})).accounts.map((a) => a.email)).toContain("trpc@example.com");
    const removed = await owner.accounts.delete({ email: "trpc@example.com" });
    expect(removed).toMatchObject({ email: "trpc@example.com", deleted: true });
    const token = await owner.tokens.create({ name: "trpc-token", scope: "resolve", organization_ids: [ORG_A], expires_at: null });
    secrets.push(token.token);
    expect(token).toMatchObject({ organization_ids: [ORG_A], expires_at: null });
    expect((await refusal(owner.tokens.rotate({ name: "trpc-token", overlap_seconds: 86_401 }))).status).toBe(400);
    // The audit log names the account.
    const events = await api("GET", "/api/audit-events?limit=50");
    expect(
      events.json.events.some(
        (e: { actor: string; action: string; target: string | null }) =>
          e.actor.includes(OWNER.email) && e.action === "admin.create" && e.target === "trpc@example.com",
      ),
    ).toBe(true);
  });
});

describe("the pages", () => {
  it("the Accounts page and the token form are for owners; a viewer's pages carry no change buttons", async () => {
    const owner = await signIn(OWNER.email, OWNER.password);
    const accounts = await api("GET", "/accounts", { token: null, session: owner });
    expect(accounts.status).toBe(200);
    expect(accounts.text).toContain("Create account");
    expect(accounts.text).toContain('href="/accounts"');
    const tokens = await api("GET", "/tokens", { token: null, session: owner });
    expect(tokens.text).toContain('value="metrics"');
    expect(tokens.text).toContain("Rotate");

    const viewer = await signIn(VIEWER.email, VIEWER.password);
    const home = await api("GET", `/?organization=${ORG_B}`, { token: null, session: viewer });
    expect(home.status).toBe(200);
    expect(home.text).toContain("data-credential-id=");
    for (const button of ["Add Provider Credential", "Deactivate", ">Delete", ">Edit", ">Test"]) expect(home.text, button).not.toContain(button);
    expect(home.text).not.toContain('href="/accounts"');
    const organizations = await api("GET", "/organizations", { token: null, session: viewer });
    expect(organizations.text).not.toContain("Create organization");
    const team = await api("GET", `/organizations/${ORG_B}`, { token: null, session: viewer });
    expect(team.text).not.toContain("Create team");
    expect(team.text).not.toContain("strategy-form");
    const tokenPage = await api("GET", "/tokens", { token: null, session: viewer });
    expect(tokenPage.text).not.toContain("Create token");
    // Its Accounts page, opened by URL, is refused by the service (not shown empty).
    const refused = await api("GET", "/accounts", { token: null, session: viewer });
    expect([200, 403]).toContain(refused.status);
    expect(refused.text).not.toContain("Create account");
  });

  it("creating a token in the page keeps its scope, organisations and expiry for the next one", async () => {
    const owner = await signIn(OWNER.email, OWNER.password);
    const first = await formPost(owner, "/tokens?/create", { name: "page-one", scope: "metrics", organization_ids: `${ORG_A}, ${ORG_B}`, expires_in: "30" });
    expect(first.status, first.text).toBe(200);
    expect(first.text).toContain("Token “page-one” created");
    expect(first.text).toMatch(/value="metrics" checked/);
    const again = await formPost(owner, "/tokens?/create", { name: "page-two", scope: "metrics", organization_ids: ORG_A, expires_in: "30" });
    expect(again.status, again.text).toBe(200);
    const list = (await api("GET", "/api/tokens")).json.tokens;
    const one = list.find((t: { name: string }) => t.name === "page-one");
    expect(one).toMatchObject({ scope: "metrics", organization_ids: [ORG_A, ORG_B] });
    const days = (Date.parse(one.expires_at) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29.9);
    expect(days).toBeLessThan(30.1);
    // A refused form names the field, and is no 500.
    const bad = await formPost(owner, "/tokens?/create", { name: "page-three", scope: "metrics", organization_ids: "", expires_in: "12" });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain("choose when the token expires");
    // Rotating from the page shows the new secret once.
    const rotated = await formPost(owner, "/tokens?/rotate", { name: "page-one", overlap_seconds: "0" });
    expect(rotated.status, rotated.text).toBe(200);
    expect(rotated.text).toContain("Token “page-one” rotated");
  });

  it("a viewer posting a page's form anyway is refused, and nothing changes", async () => {
    const viewer = await signIn(VIEWER.email, VIEWER.password);
    const created = await formPost(viewer, "/tokens?/create", { name: "sneaky", scope: "admin", organization_ids: "", expires_in: "" });
    expect(created.status).toBe(403);
    const team = await formPost(viewer, `/organizations/${ORG_B}?/createTeam`, { team_id: "sneaky-team", name: "Sneaky" });
    expect(team.status).toBe(403);
    const names = (await api("GET", "/api/tokens")).json.tokens.map((t: { name: string }) => t.name);
    expect(names).not.toContain("sneaky");
    expect((await api("GET", `/api/organizations/${ORG_B}/teams`)).json.teams).toEqual([]);
  });

  it("everyone changes their own password at /account, given the current one", async () => {
    const session = await signIn(VIEWER.email, VIEWER.password);
    const page = await api("GET", "/account", { token: null, session });
    expect(page.status).toBe(200);
    expect(page.text).toContain("Change your password");
    const wrong = await formPost(session, "/account", {
      current_password: "not it at all",
      new_password: "a brand new sentence here",
      confirm_password: "a brand new sentence here",
    });
    expect(wrong.status).toBe(400);
    expect(wrong.text).toContain("The current password is wrong.");
    expect(wrong.text).not.toContain("a brand new sentence here");
    const differ = await formPost(session, "/account", {
      current_password: VIEWER.password,
      new_password: "a brand new sentence here",
      confirm_password: "another one",
    });
    expect(differ.status).toBe(400);
    expect(differ.text).toContain("The two new passwords differ.");
    const weak = await formPost(session, "/account", { current_password: VIEWER.password, new_password: "short", confirm_password: "short" });
    expect(weak.status).toBe(400);
    expect(weak.text).toContain('id="new_password-error"');
    const changed = await formPost(session, "/account", {
      current_password: VIEWER.password,
      new_password: "a brand new sentence here",
      confirm_password: "a brand new sentence here",
    });
    expect(changed.status, changed.text).toBe(303);
    expect(changed.headers.get("location")).toBe("/account");
    const { session: old } = await portal.signIn(VIEWER.email, VIEWER.password);
    expect(old).toBeUndefined();
    await signIn(VIEWER.email, "a brand new sentence here");
    VIEWER.password = "a brand new sentence here";
  });

  it("no response carried a token, a one-time password or a key after it was first shown", () => {
    const later = portal.bodies.filter((body) => !/"token":|"password":"|created-token|created-account|One-time password/.test(body));
    for (const body of later) {
      for (const secret of [...secrets, ...keys]) expect(body).not.toContain(secret);
    }
    expect(portal.output.join("\n")).not.toMatch(/"level":"error"/);
  });
});
