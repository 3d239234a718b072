import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cookieValue, startTestPortal, type TestPortal } from "../support/portal-harness.js";

// Sign-in rate limiting as an administrator meets it on the /login page.
// In its own file: the failures it makes lock out the test address for 15 minutes.

let portal: TestPortal;
const ADMIN = { email: "carol@example.com", password: "marble otter drifts north" };

beforeAll(async () => {
  portal = await startTestPortal();
  await portal.createAdmin(ADMIN.email, ADMIN.password);
});

afterAll(async () => {
  await portal?.close();
});

describe("sign-in rate limiting", () => {
  it("after 10 failures in 15 minutes: 429 with Retry-After and a message saying how long to wait", async () => {
    for (let i = 0; i < 10; i += 1) {
      const { response } = await portal.signIn(ADMIN.email, `wrong password ${i}`);
      expect(response.status, `attempt ${i + 1}`).toBe(401);
    }
    const { response, session } = await portal.signIn(ADMIN.email, "wrong again");
    expect(response.status).toBe(429);
    expect(session).toBeUndefined();
    const retryAfter = Number(response.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(15 * 60);
    const minutes = Math.ceil(retryAfter / 60);
    expect(response.text).toContain(`Too many failed sign-ins; try again in ${minutes} minute${minutes === 1 ? "" : "s"}.`);

    // Even the right password waits now.
    const right = await portal.signIn(ADMIN.email, ADMIN.password);
    expect(right.response.status).toBe(429);
    expect(right.session).toBeUndefined();
  });

  it("the enhanced (JavaScript) form gets the same 429 as an action result", async () => {
    const response = await portal.request("POST", "/login", {
      token: null,
      rawBody: new URLSearchParams(ADMIN).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", origin: portal.url, accept: "application/json", "x-sveltekit-action": "true" },
    });
    expect(response.status).toBe(200);
    expect(response.json).toMatchObject({ type: "failure", status: 429 });
    expect(response.json.data).toContain("Too many failed sign-ins");
  });
});

// Issue #19, item 4: anyone who knew an administrator's email could keep them locked out from every address.
describe("sign-in limits behind a proxy that names the client (ADDRESS_HEADER)", () => {
  let proxied: TestPortal;
  const OWNER = { email: "heidi@example.com", password: "lighthouse keeper's ninth ledger" };

  beforeAll(async () => {
    proxied = await startTestPortal({ portalEnv: { ADDRESS_HEADER: "x-forwarded-for", XFF_DEPTH: "1" } });
    await proxied.createAdmin(OWNER.email, OWNER.password);
  });
  afterAll(async () => {
    await proxied?.close();
  });

  const signInFrom = (address: string, password: string) =>
    proxied.request("POST", "/login", {
      token: null,
      rawBody: new URLSearchParams({ email: OWNER.email, password }).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", origin: proxied.url, accept: "text/html", "x-forwarded-for": address },
    });

  it("an attacker's address that used up its limit for the account does not stop the owner signing in from theirs", async () => {
    const attacker = "198.51.100.66";
    for (let i = 0; i < 10; i += 1) expect((await signInFrom(attacker, `guess number ${i}`)).status, `attempt ${i + 1}`).toBe(401);
    expect((await signInFrom(attacker, "one more guess")).status).toBe(429);
    expect((await signInFrom(attacker, OWNER.password)).status).toBe(429);

    const owner = await signInFrom("203.0.113.5", OWNER.password);
    expect(owner.status, owner.text.slice(0, 300)).toBe(303);
    const session = cookieValue(owner.headers, "pc_session");
    expect(session).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const home = await proxied.request("GET", "/", { token: null, session, headers: { "x-forwarded-for": "203.0.113.5" } });
    expect(home.status).toBe(200);
    expect(home.text).toContain(OWNER.email);

    // The audit log names both addresses as the portal saw them.
    const failed = await proxied.request("GET", "/api/audit-events?action=admin.sign_in_failed", { headers: { "x-forwarded-for": "127.0.0.1" } });
    expect(failed.json.events.every((e: { source: string }) => e.source === attacker)).toBe(true);
    const ok = await proxied.request("GET", "/api/audit-events?action=admin.sign_in", { headers: { "x-forwarded-for": "127.0.0.1" } });
    expect(ok.json.events[0]).toMatchObject({ actor: OWNER.email, source: "203.0.113.5" });
  });
});
