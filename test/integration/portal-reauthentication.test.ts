// The portal's side of recent sign-in for sensitive actions, and of resetting an account's second factor, through
// the built portal over real HTTP and the real service. A session's last sign-in is made older than 10 minutes by
// moving its time back in the database, as the clock would.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Secret, TOTP } from "otpauth";
import { cookieValue, startTestPortal, type TestPortal } from "../support/portal-harness.js";

const OWNER = { email: "olga@example.com", password: "owner of seven quiet harbours" };
const GUARDED = { email: "gus@example.com", password: "guard of the northern lighthouse" };

let portal: TestPortal;
let guardedSecret = "";

const codeAt = (secret: string, timestamp = Date.now()) =>
  new TOTP({ algorithm: "SHA1", digits: 6, period: 30, secret: Secret.fromBase32(secret) }).generate({ timestamp });

/** A form post, as a browser without JavaScript sends it. */
const formPost = (session: string, path: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
  portal.request("POST", path, {
    token: null,
    session,
    rawBody: new URLSearchParams(fields).toString(),
    headers: { "content-type": "application/x-www-form-urlencoded", origin: portal.url, accept: "text/html", ...headers },
  });
const page = (session: string, path: string) => portal.request("GET", path, { token: null, session, headers: { accept: "text/html" } });

async function signIn(email: string, password: string): Promise<string> {
  const { session, response } = await portal.signIn(email, password);
  expect(session, response.text).toBeDefined();
  return session!;
}

/** The session's last sign-in, moved back `minutes` minutes. */
const age = (session: string, minutes: number) =>
  portal.service.db.query(
    "update admin_sessions set authenticated_at = now() - $2 * interval '1 minute' where id_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
    [session, minutes],
  );
const tokenNames = async () => (await portal.request("GET", "/api/tokens")).json.tokens.map((t: { name: string }) => t.name) as string[];
const auditRows = (action: string, target: string) =>
  portal.service.db.query<{ actor: string; details: Record<string, unknown> }>(
    "select actor, details from audit_events where action = $1 and target = $2 order by id",
    [action, target],
  );

beforeAll(async () => {
  portal = await startTestPortal();
  await portal.createAdmin(OWNER.email, OWNER.password);
  await portal.createAdmin(GUARDED.email, GUARDED.password);
});
afterAll(async () => {
  await portal?.close();
});

describe("a sensitive action with a sign-in older than 10 minutes", () => {
  it("a form post goes to /reauthenticate and back, without JavaScript; nothing is done until it is repeated", async () => {
    const session = await signIn(OWNER.email, OWNER.password);
    await age(session, 11);
    const refused = await formPost(session, "/tokens?/create", { name: "page-token", scope: "resolve", organization_ids: "", expires_in: "" });
    expect(refused.status, refused.text).toBe(303);
    expect(refused.headers.get("location")).toBe("/reauthenticate?next=%2Ftokens");
    expect(await tokenNames()).not.toContain("page-token");

    const asked = await page(session, "/reauthenticate?next=%2Ftokens");
    expect(asked.status).toBe(200);
    expect(asked.text).toContain("Confirm it's you");
    expect(asked.text).toContain('name="password"');
    expect(asked.text).not.toContain('name="code"');

    const wrong = await formPost(session, "/reauthenticate", { next: "/tokens", password: "not my password at all" });
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain("That password is not right.");
    expect(wrong.text).not.toContain("not my password at all");
    expect(await auditRows("admin.sign_in_failed", OWNER.email)).toEqual([
      expect.objectContaining({ details: { during: "reauthenticate", with: "password" } }),
    ]);

    const confirmed = await formPost(session, "/reauthenticate", { next: "/tokens", password: OWNER.password });
    expect(confirmed.status, confirmed.text).toBe(303);
    expect(confirmed.headers.get("location")).toBe("/tokens");
    expect(decodeURIComponent(cookieValue(confirmed.headers, "pc_flash") ?? "")).toMatch(/do it again now/);
    expect(await auditRows("admin.reauthenticate", OWNER.email)).toEqual([{ actor: OWNER.email, details: { with: "password" } }]);

    const repeated = await formPost(session, "/tokens?/create", { name: "page-token", scope: "resolve", organization_ids: "", expires_in: "" });
    expect(repeated.status, repeated.text).toBe(200);
    expect(repeated.text).toMatch(/pct_[A-Za-z0-9_-]{43}/);
    expect(await tokenNames()).toContain("page-token");
  });

  it("a form posted by the page's script gets an action result that goes to /reauthenticate", async () => {
    const session = await signIn(OWNER.email, OWNER.password);
    await age(session, 11);
    const refused = await formPost(
      session,
      `/accounts/${encodeURIComponent(GUARDED.email)}?/signOut`,
      {},
      { accept: "application/json", "x-sveltekit-action": "true" },
    );
    expect(refused.status).toBe(200);
    expect(refused.json).toEqual({
      type: "redirect",
      status: 303,
      location: `/reauthenticate?next=${encodeURIComponent(`/accounts/${encodeURIComponent(GUARDED.email)}`)}`,
    });
  });

  it("the same for a call the page makes to the service itself (the security policy)", async () => {
    const session = await signIn(OWNER.email, OWNER.password);
    await age(session, 11);
    const refused = await formPost(session, "/accounts?/security_policy", { require_two_factor: "on" });
    expect(refused.status, refused.text).toBe(303);
    expect(refused.headers.get("location")).toBe("/reauthenticate?next=%2Faccounts");
    const [policy] = await portal.service.db.query<{ require_two_factor: boolean }>("select require_two_factor from security_policy");
    expect(policy?.require_two_factor ?? false).toBe(false);
  });

  it("/reauthenticate goes back to a path on this site only", async () => {
    const session = await signIn(OWNER.email, OWNER.password);
    const elsewhere = await formPost(session, "/reauthenticate", { next: "//evil.example/x", password: OWNER.password });
    expect(elsewhere.status).toBe(303);
    expect(elsewhere.headers.get("location")).toBe("/");
  });

  it("REST and tRPC with the session cookie answer 409 reauthentication_required; a bearer token is not concerned", async () => {
    const session = await signIn(OWNER.email, OWNER.password);
    await age(session, 11);
    const rest = await portal.request("POST", "/api/tokens", {
      token: null,
      session,
      body: { name: "rest-token", scope: "resolve" },
      headers: { origin: portal.url },
    });
    expect(rest.status, rest.text).toBe(409);
    expect(rest.json).toEqual({ code: "reauthentication_required", message: expect.stringContaining("/reauthenticate") });
    const trpc = await portal.request("POST", "/api/trpc/tokens.create", {
      token: null,
      session,
      body: { name: "trpc-token", scope: "resolve" },
      headers: { origin: portal.url },
    });
    expect(trpc.status, trpc.text).toBe(409);
    expect(trpc.json.error.data.apiCode).toBe("reauthentication_required");
    expect((await portal.request("POST", "/api/tokens", { body: { name: "bearer-token", scope: "resolve" } })).status).toBe(201);
    expect(await tokenNames()).toEqual(expect.arrayContaining(["bearer-token"]));
    expect(await tokenNames()).not.toContain("rest-token");
  });
});

describe("two-factor accounts and resetting a second factor", () => {
  it("an account with a second factor confirms with a code of its authenticator", async () => {
    const session = await signIn(GUARDED.email, GUARDED.password);
    const admins = portal.service.service.parts.admins;
    const { secret } = await admins.beginTwoFactorEnrolment(session);
    guardedSecret = secret;
    await admins.confirmTwoFactorEnrolment(session, codeAt(secret, Date.now() - 30_000), null);
    await age(session, 11);
    const asked = await page(session, "/reauthenticate?next=%2Faccount");
    expect(asked.text).toContain('name="code"');
    const confirmed = await formPost(session, "/reauthenticate", { next: "/account", code: codeAt(guardedSecret) });
    expect(confirmed.status, confirmed.text).toBe(303);
    expect(confirmed.headers.get("location")).toBe("/account");
    expect(await auditRows("admin.reauthenticate", GUARDED.email)).toEqual([{ actor: GUARDED.email, details: { with: "totp" } }]);
  });

  it("an owner resets it from the account's page", async () => {
    const session = await signIn(OWNER.email, OWNER.password);
    const path = `/accounts/${encodeURIComponent(GUARDED.email)}`;
    const shown = await page(session, path);
    expect(shown.text).toContain("Reset two-factor");
    const reset = await formPost(session, `${path}?/resetTwoFactor`, {});
    expect(reset.status, reset.text).toBe(303);
    expect(reset.headers.get("location")).toBe(path);
    const accounts = (await portal.request("GET", "/api/accounts")).json.accounts as Array<{ email: string; two_factor_enabled: boolean }>;
    expect(accounts.find((a) => a.email === GUARDED.email)?.two_factor_enabled).toBe(false);
    expect(await auditRows("admin.two_factor_reset", GUARDED.email)).toEqual([
      { actor: expect.stringMatching(/^olga@example\.com \(owner\)/), details: { had_two_factor: true, recovery_codes_removed: 10 } },
    ]);
    expect((await page(session, path)).text).not.toContain("Reset two-factor");
  });

  it("REST: POST /api/accounts/{email}/reset-two-factor, documented", async () => {
    const reset = await portal.request("POST", `/api/accounts/${encodeURIComponent(OWNER.email)}/reset-two-factor`);
    expect(reset.status, reset.text).toBe(200);
    expect(reset.json).toMatchObject({ email: OWNER.email, two_factor_enabled: false });
    const missing = await portal.request("POST", "/api/accounts/nobody@example.com/reset-two-factor");
    expect(missing.status).toBe(404);
    const document = (await portal.request("GET", "/api/openapi.json", { token: null })).json;
    expect(document.paths["/accounts/{email}/reset-two-factor"].post).toBeDefined();
  });
});
