import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_KEYS } from "../support/harness.js";
import { cookieValue, setCookieLine, startTestPortal, type TestPortal } from "../support/portal-harness.js";

// Administrators' sign-in, sessions and sign-out through the portal, and that what
// they do through the portal is recorded under their own name.

let portal: TestPortal;
const ALICE = { email: "alice@example.com", password: "tin lantern over quiet fields" };
const BOB = { email: "bob@example.com", password: "copper kettle, seven ravens!" };

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);
/** A same-origin call with a session cookie, as the portal's own pages make it. */
const asAdmin = (session: string, method: string, path: string, body?: unknown) =>
  api(method, path, { token: null, session, body, headers: { origin: portal.url } });

beforeAll(async () => {
  portal = await startTestPortal();
  await portal.createAdmin(ALICE.email, ALICE.password);
  await portal.createAdmin(BOB.email, BOB.password);
  await api("POST", "/api/organizations", { body: { organization_id: "org-people", name: "People" } });
});

afterAll(async () => {
  await portal?.close();
});

describe("sign-in page", () => {
  it("renders a form with labelled email and password fields that posts without JavaScript", async () => {
    const page = await api("GET", "/login", { token: null });
    expect(page.status).toBe(200);
    expect(page.text).toMatch(/<form[^>]*method="POST"/i);
    expect(page.text).toMatch(/<label for="email">Email<\/label>/);
    expect(page.text).toMatch(/<input[^>]*id="email"[^>]*name="email"/);
    expect(page.text).toMatch(/<label for="password">Password<\/label>/);
    expect(page.text).toMatch(/<input[^>]*id="password"[^>]*name="password"[^>]*type="password"/);
  });

  it("sends visitors without a session to /login, remembering where they were going", async () => {
    const home = await api("GET", "/", { token: null });
    expect(home.status).toBe(303);
    expect(home.headers.get("location")).toBe("/login?redirectTo=%2F");
    const deep = await api("GET", "/organizations/org-people?tab=keys", { token: null });
    expect(deep.status).toBe(303);
    expect(deep.headers.get("location")).toBe(`/login?redirectTo=${encodeURIComponent("/organizations/org-people?tab=keys")}`);
    const withBadCookie = await api("GET", "/", { token: null, session: "x".repeat(43) });
    expect(withBadCookie.status).toBe(303);
  });

  it("a wrong password shows an error, sets no cookie and answers 401", async () => {
    const { session, response } = await portal.signIn(ALICE.email, "not the password");
    expect(response.status).toBe(401);
    expect(session).toBeUndefined();
    expect(response.text).toContain("Invalid email or password.");
    expect(response.text).toMatch(/role="alert"/);
    expect(response.text).toContain(`value="${ALICE.email}"`);
    const unknown = await portal.signIn("nobody@example.com", "whatever password");
    expect(unknown.response.status).toBe(401);
    expect(unknown.response.text).toContain("Invalid email or password.");
    const empty = await portal.signIn(ALICE.email, "");
    expect(empty.response.status).toBe(400);
    expect(empty.response.text).toContain("Enter your password.");
  });

  it("the right password sets an HttpOnly, SameSite=Lax session cookie for 12 hours and goes to /", async () => {
    const { session, response } = await portal.signIn(ALICE.email, ALICE.password);
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe("/");
    expect(session).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const cookie = setCookieLine(response.headers, "pc_session")!;
    expect(cookie).toMatch(/; HttpOnly/i);
    expect(cookie).toMatch(/; SameSite=Lax/i);
    expect(cookie).toMatch(/; Path=\//i);
    expect(cookie).toMatch(/; Max-Age=43200/i);
    expect(cookie).not.toMatch(/; Secure/i); // plain http here
    const home = await api("GET", "/", { token: null, session });
    expect(home.status).toBe(200);
    expect(home.text).toContain(ALICE.email);
    expect(home.text).toMatch(/<form[^>]*method="POST"[^>]*action="\/logout"/);
    // Using the session renews the cookie (sliding expiry).
    expect(setCookieLine(home.headers, "pc_session")).toMatch(/Max-Age=43200/);
    // Signed in already: /login goes straight on.
    const login = await api("GET", "/login?redirectTo=%2Fapi%2Fdocs", { token: null, session });
    expect(login.status).toBe(303);
    expect(login.headers.get("location")).toBe("/api/docs");
  });

  it("goes back to redirectTo after signing in, but only to a path on this site", async () => {
    const cases: Array<[string, string]> = [
      ["/organizations/org-people?tab=keys", "/organizations/org-people?tab=keys"],
      ["//evil.example/x", "/"],
      ["https://evil.example/", "/"],
      ["/\\evil.example", "/"],
      ["javascript:alert(1)", "/"],
      ["/login", "/"],
      // Dot segments and encodings that a URL parser turns into "//evil.example/x" (issue #19, item 2).
      ["/..//evil.example/x", "/"],
      ["/.//evil.example/x", "/"],
      ["/%2e%2e//evil.example/x", "/"],
      ["/%2E%2E//evil.example/x", "/"],
      ["/%2f%2fevil.example/x", "/"],
      ["/%5cevil.example/x", "/"],
      ["/%252e%252e//evil.example/x", "/"],
      ["/\t/evil.example", "/"],
      ["https:", "/"],
    ];
    for (const [redirectTo, expected] of cases) {
      const { response } = await portal.signIn(BOB.email, BOB.password, { redirectTo });
      expect(response.status, redirectTo).toBe(303);
      expect(response.headers.get("location"), redirectTo).toBe(expected);
      // As a browser follows it: still this portal.
      expect(new URL(response.headers.get("location")!, portal.url).origin, redirectTo).toBe(portal.url);
    }
    // Signed in already, /login sends the visitor on at once: the same rule.
    const { session } = await portal.signIn(BOB.email, BOB.password);
    for (const redirectTo of ["/..//evil.example/x", "/%2e%2e//evil.example/x", "/.//evil.example/x"]) {
      const login = await api("GET", `/login?redirectTo=${encodeURIComponent(redirectTo)}`, { token: null, session });
      expect(login.status, redirectTo).toBe(303);
      expect(login.headers.get("location"), redirectTo).toBe("/");
    }
  });

  it("a form's Cancel link and its redirect after saving go back only to a path on this site", async () => {
    const { session } = await portal.signIn(ALICE.email, ALICE.password);
    const created = await asAdmin(session!, "POST", "/api/provider-credentials/create", {
      organization_id: "org-people",
      provider: "openai",
      credential_name: "Cancel-link key",
      api_key: FAKE_KEYS.openai(),
    });
    expect(created.status, created.text).toBe(201);
    const id = created.json.credential_id as string;
    const cancelHref = (html: string) => /<a\b[^>]*\bhref="([^"]*)"[^>]*>\s*Cancel\s*<\/a>/.exec(html)?.[1];
    for (const page of [`/credentials/${id}/edit`, `/credentials/${id}/delete`]) {
      const honest = await api("GET", `${page}?returnTo=${encodeURIComponent("/?organization=org-people")}`, { token: null, session });
      expect(honest.status, honest.text.slice(0, 300)).toBe(200);
      expect(cancelHref(honest.text)).toBe("/?organization=org-people");
      for (const attack of ["/..//evil.example/x", "/.//evil.example/x", "/%2e%2e//evil.example/x", "//evil.example/x"]) {
        const opened = await api("GET", `${page}?returnTo=${encodeURIComponent(attack)}`, { token: null, session });
        expect(opened.status, attack).toBe(200);
        expect(cancelHref(opened.text), `${page}: ${attack}`).toBe("/");
        expect(opened.text, attack).not.toContain("evil.example");
      }
    }
    // The form posts its returnTo back; the redirect after saving follows the same rule.
    const saved = await api("POST", `/credentials/${id}/edit`, {
      token: null,
      session,
      rawBody: new URLSearchParams({
        returnTo: "/..//evil.example/x",
        credential_name: "Cancel-link key",
        expected_version: String(created.json.version),
      }).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", origin: portal.url, accept: "text/html" },
    });
    expect(saved.status, saved.text.slice(0, 300)).toBe(303);
    expect(new URL(saved.headers.get("location")!, portal.url).origin).toBe(portal.url);
    expect(saved.headers.get("location")).not.toContain("evil.example");
  });

  it("without ORIGIN the portal takes its origin from the Host header, over plain http", async () => {
    const plain = await startTestPortal({ portalEnv: { ORIGIN: "" } });
    try {
      await plain.createAdmin(ALICE.email, ALICE.password);
      // What a browser sends when it opened the portal as http://127.0.0.1:<port>.
      const { session, response } = await plain.signIn(ALICE.email, ALICE.password);
      expect(response.status, response.text).toBe(303);
      expect(setCookieLine(response.headers, "pc_session")).not.toMatch(/; Secure/i);
      const created = await plain.request("POST", "/api/organizations", {
        token: null,
        session,
        body: { organization_id: "org-host", name: "Host" },
        headers: { origin: plain.url },
      });
      expect(created.status, created.text).toBe(201);
      // A client cannot claim https through the header the portal uses for itself.
      const spoofed = await plain.request("POST", "/login", {
        token: null,
        rawBody: new URLSearchParams(ALICE).toString(),
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          origin: plain.url,
          accept: "text/html",
          "x-provider-credentials-portal-protocol": "https",
        },
      });
      expect(spoofed.status).toBe(303);
      expect(setCookieLine(spoofed.headers, "pc_session")).not.toMatch(/; Secure/i);
    } finally {
      await plain.close();
    }
  });

  it("the Secure flag is set when the portal is reached over https", async () => {
    const https = await startTestPortal({ portalEnv: { ORIGIN: "https://portal.example" } });
    try {
      await https.createAdmin(ALICE.email, ALICE.password);
      const response = await https.request("POST", "/login", {
        token: null,
        rawBody: new URLSearchParams(ALICE).toString(),
        headers: { "content-type": "application/x-www-form-urlencoded", origin: "https://portal.example", accept: "text/html" },
      });
      expect(response.status).toBe(303);
      expect(setCookieLine(response.headers, "pc_session")).toMatch(/; Secure/i);
    } finally {
      await https.close();
    }
  });
});

describe("what a signed-in administrator does is recorded under their name", () => {
  it("created_by and updated_by name the administrator, over REST and over tRPC", async () => {
    const { session } = await portal.signIn(ALICE.email, ALICE.password);
    const created = await asAdmin(session!, "POST", "/api/provider-credentials/create", {
      organization_id: "org-people",
      provider: "openai",
      credential_name: "Alice's key",
      api_key: FAKE_KEYS.openai(),
    });
    expect(created.status, created.text).toBe(201);
    expect(created.json.created_by).toBe(ALICE.email);
    expect(created.json.updated_by).toBe(ALICE.email);

    const { session: bobSession } = await portal.signIn(BOB.email, BOB.password);
    const updated = await asAdmin(bobSession!, "PUT", `/api/provider-credentials/${created.json.credential_id}`, { credential_name: "Renamed by Bob" });
    expect(updated.status, updated.text).toBe(200);
    expect(updated.json).toMatchObject({ created_by: ALICE.email, updated_by: BOB.email });

    const viaTrpc = await asAdmin(bobSession!, "POST", "/api/trpc/credentials.deactivate", { credential_id: created.json.credential_id });
    expect(viaTrpc.status, viaTrpc.text).toBe(200);
    expect(viaTrpc.json.result.data).toMatchObject({ is_active: false, updated_by: BOB.email });

    const events = await api("GET", `/api/audit-events?credential_id=${created.json.credential_id}`);
    expect(events.json.events.map((e: { action: string; actor: string }) => [e.action, e.actor])).toEqual([
      // The portal acts with its own token for the signed-in administrator: the audit log names both, and the account's role.
      ["credential.deactivate", `${BOB.email} (owner) via token:service-admin-token`],
      ["credential.update", `${BOB.email} (owner) via token:service-admin-token`],
      ["credential.create", `${ALICE.email} (owner) via token:service-admin-token`],
    ]);
  });

  it("tRPC queries work with the session cookie", async () => {
    const { session } = await portal.signIn(ALICE.email, ALICE.password);
    const input = encodeURIComponent(JSON.stringify({ organization_id: "org-people" }));
    const response = await api("GET", `/api/trpc/credentials.list?input=${input}`, { token: null, session });
    expect(response.status, response.text).toBe(200);
    expect(response.json.result.data.organization_id).toBe("org-people");
  });

  it("the audit log records sign-in successes and failures", async () => {
    const ok = await api("GET", "/api/audit-events?action=admin.sign_in");
    expect(ok.json.events.some((e: { actor: string }) => e.actor === ALICE.email)).toBe(true);
    const failed = await api("GET", "/api/audit-events?action=admin.sign_in_failed");
    expect(failed.json.events.some((e: { target: string | null }) => e.target === ALICE.email)).toBe(true);
  });
});

describe("session end", () => {
  it("sign-out revokes the session at the service and clears the cookie", async () => {
    const { session } = await portal.signIn(ALICE.email, ALICE.password);
    expect((await api("GET", "/api/organizations", { token: null, session })).status).toBe(200);

    const out = await api("POST", "/logout", {
      token: null,
      session,
      rawBody: "",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: portal.url, accept: "text/html" },
    });
    expect(out.status).toBe(303);
    expect(out.headers.get("location")).toBe("/login");
    expect(setCookieLine(out.headers, "pc_session")).toMatch(/Max-Age=0|Expires=Thu, 01 Jan 1970/i);
    expect(cookieValue(out.headers, "pc_session")).toBe("");

    // The old cookie no longer works anywhere: revoked, not just forgotten by the browser.
    const api401 = await api("GET", "/api/organizations", { token: null, session });
    expect(api401.status).toBe(401);
    const page = await api("GET", "/", { token: null, session });
    expect(page.status).toBe(303);
    expect(page.headers.get("location")).toMatch(/^\/login/);
    const events = await api("GET", "/api/audit-events?action=admin.sign_out");
    expect(events.json.events[0].actor).toBe(ALICE.email);
  });

  it("a session idle for more than 12 hours has expired", async () => {
    const { session } = await portal.signIn(BOB.email, BOB.password);
    expect((await api("GET", "/", { token: null, session })).status).toBe(200);
    await portal.service.db.query("update admin_sessions set last_seen_at = now() - interval '12 hours 1 minute'");
    const page = await api("GET", "/", { token: null, session });
    expect(page.status).toBe(303);
    expect(page.headers.get("location")).toBe("/login?redirectTo=%2F");
    expect(cookieValue(page.headers, "pc_session")).toBe("");
    const response = await api("GET", "/api/organizations", { token: null, session });
    expect(response.status).toBe(401);
    expect(response.json.code).toBe("unauthorized");
  });

  it("a session signed in more than 7 days ago has ended, however recently it was used", async () => {
    const { session } = await portal.signIn(BOB.email, BOB.password);
    expect((await api("GET", "/", { token: null, session })).status).toBe(200);
    await portal.service.db.query("update admin_sessions set created_at = now() - interval '400 days', last_seen_at = now() where revoked_at is null");
    const page = await api("GET", "/", { token: null, session });
    expect(page.status).toBe(303);
    expect(page.headers.get("location")).toBe("/login?redirectTo=%2F");
    expect(cookieValue(page.headers, "pc_session")).toBe("");
    expect((await api("GET", "/api/organizations", { token: null, session })).status).toBe(401);
    // Signing in again opens a new session.
    const again = await portal.signIn(BOB.email, BOB.password);
    expect((await api("GET", "/", { token: null, session: again.session })).status).toBe(200);
  });

  it("a session in use within 12 hours stays alive (sliding expiry)", async () => {
    const { session } = await portal.signIn(BOB.email, BOB.password);
    await portal.service.db.query("update admin_sessions set last_seen_at = now() - interval '11 hours 59 minutes' where revoked_at is null");
    expect((await api("GET", "/", { token: null, session })).status).toBe(200);
    expect((await api("GET", "/api/organizations", { token: null, session })).status).toBe(200);
  });
});
