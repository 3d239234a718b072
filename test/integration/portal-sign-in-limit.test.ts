import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";

// Sign-in rate limiting as an administrator meets it on the /login page.
// In its own file: the failures it makes lock out the test address for 15 minutes.

let portal: TestPortal;
const ADMIN = { email: "carol@example.com", password: "carol's long passphrase" };

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
