import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Secret, TOTP } from "otpauth";
import { cookieValue, setCookieLine, startTestPortal, type PortalResponse, type TestPortal } from "../support/portal-harness.js";

// Two-factor sign-in as an administrator meets it in the portal, over HTTP: enrolment on /account (QR code,
// key, confirmation, recovery codes shown once), the code step of /login, owners' switch on /accounts, and
// the redirect to /account while the policy requires a second factor the account lacks.

let portal: TestPortal;
const OWNER = { email: "olive@example.com", password: "marble otter drifts north" };
const VIEWER = { email: "victor@example.com", password: "seven quiet herons fold maps" };
let secret = "";
let recoveryCodes: string[] = [];

const codeAt = (timestamp: number) => new TOTP({ algorithm: "SHA1", digits: 6, period: 30, secret: Secret.fromBase32(secret) }).generate({ timestamp });
const HTML = { "content-type": "application/x-www-form-urlencoded", accept: "text/html" };
const formPost = (path: string, fields: Record<string, string>, cookies: { session?: string; secondFactor?: string }): Promise<PortalResponse> =>
  portal.request("POST", path, {
    token: null,
    session: cookies.session,
    rawBody: new URLSearchParams(fields).toString(),
    headers: { ...HTML, origin: portal.url, ...(cookies.secondFactor ? { cookie: `pc_second_factor=${cookies.secondFactor}` } : {}) },
  });
const page = (path: string, session: string) => portal.request("GET", path, { token: null, session, headers: { accept: "text/html" } });

beforeAll(async () => {
  portal = await startTestPortal();
  await portal.createAdmin(OWNER.email, OWNER.password);
  await portal.service.service.parts.admins.create(VIEWER.email, VIEWER.password, { actor: "test", source: null }, "password", { role: "viewer" });
});

afterAll(async () => {
  await portal?.close();
});

describe("two-factor sign-in in the portal", () => {
  let owner = "";

  it("an owner without it is asked to set it up; /account enrols with a QR code and the key, then shows ten recovery codes once", async () => {
    owner = (await portal.signIn(OWNER.email, OWNER.password)).session!;
    expect((await page("/", owner)).text).toContain('data-testid="two-factor-prompt"');
    const account = await page("/account", owner);
    expect(account.text).toContain("Set up two-factor sign-in");

    const begun = await formPost("/account", { intent: "begin_two_factor" }, { session: owner });
    expect(begun.status, begun.text).toBe(200);
    expect(begun.text).toMatch(/<img src="data:image\/svg\+xml;base64,[A-Za-z0-9+/=]+"/);
    secret = /data-testid="two-factor-secret">([A-Z2-7]{32})</.exec(begun.text)![1];
    const uri = /name="otpauth_uri" value="([^"]+)"/.exec(begun.text)![1].replace(/&amp;/g, "&");
    expect(uri).toContain(`secret=${secret}`);

    const wrong = String((Number(codeAt(Date.now())) + 500_000) % 1_000_000).padStart(6, "0");
    const refused = await formPost("/account", { intent: "confirm_two_factor", otpauth_uri: uri, code: wrong }, { session: owner });
    expect(refused.status).toBe(400);
    expect(refused.text).toContain("That code is not right");
    expect(refused.text).toContain('data-testid="two-factor-qr"');

    const confirmed = await formPost("/account", { intent: "confirm_two_factor", otpauth_uri: uri, code: codeAt(Date.now()) }, { session: owner });
    expect(confirmed.status, confirmed.text).toBe(200);
    recoveryCodes = [...confirmed.text.matchAll(/<li><code>([a-z0-9-]+)<\/code><\/li>/g)].map((m) => m[1]);
    expect(recoveryCodes).toHaveLength(10);
    const after = await page("/account", owner);
    expect(after.text).toContain("Turn off two-factor sign-in");
    for (const code of recoveryCodes) expect(after.text).not.toContain(code);
    expect(after.text).not.toContain(secret);
    expect((await page("/", owner)).text).not.toContain('data-testid="two-factor-prompt"');
  });

  it("/login asks for a code after the password, keeping only the service's token in an HttpOnly cookie for /login", async () => {
    const { session, response } = await portal.signIn(OWNER.email, OWNER.password, { redirectTo: "/accounts" });
    expect(session).toBeUndefined();
    expect(response.status).toBe(200);
    expect(response.text).toContain('name="code"');
    expect(response.text).not.toContain(OWNER.password);
    const line = setCookieLine(response.headers, "pc_second_factor")!;
    expect(line).toMatch(/HttpOnly/i);
    expect(line).toMatch(/Path=\/login/);
    expect(line).toMatch(/Max-Age=300/);
    const token = cookieValue(response.headers, "pc_second_factor")!;
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const wrong = await formPost("/login", { code: "000000", redirectTo: "/accounts" }, { secondFactor: token });
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain("Invalid or expired code");
    expect(cookieValue(wrong.headers, "pc_session")).toBeUndefined();

    const done = await formPost("/login", { code: codeAt(Date.now() + 30_000), redirectTo: "/accounts" }, { secondFactor: token });
    expect(done.status, done.text).toBe(303);
    expect(done.headers.get("location")).toBe("/accounts");
    const signedIn = cookieValue(done.headers, "pc_session")!;
    expect(signedIn).toBeTruthy();
    expect(setCookieLine(done.headers, "pc_second_factor")).toMatch(/Max-Age=0|Expires=Thu, 01 Jan 1970/);
    expect((await page("/accounts", signedIn)).status).toBe(200);
    // The spent token is refused, even with a recovery code.
    expect((await formPost("/login", { code: recoveryCodes[0] }, { secondFactor: token })).status).toBe(401);
    owner = signedIn;
  });

  it("a recovery code signs in", async () => {
    const { response } = await portal.signIn(OWNER.email, OWNER.password);
    const token = cookieValue(response.headers, "pc_second_factor")!;
    const done = await formPost("/login", { code: recoveryCodes[1] }, { secondFactor: token });
    expect(done.status).toBe(303);
    expect(cookieValue(done.headers, "pc_session")).toBeTruthy();
  });

  it("owners require it for everyone: an account without it is sent to /account and its API calls refused until it enrols", async () => {
    const viewer = (await portal.signIn(VIEWER.email, VIEWER.password)).session!;
    expect((await page("/accounts", viewer)).text).not.toContain('data-testid="security-policy"');
    expect((await page("/accounts", owner)).text).toContain('data-testid="security-policy"');
    // A viewer posting the switch anyway is refused by the service.
    expect((await formPost("/accounts?/security_policy", { require_two_factor: "on" }, { session: viewer })).status).toBe(403);

    const set = await formPost("/accounts?/security_policy", { require_two_factor: "on" }, { session: owner });
    expect(set.status, set.text).toBe(303);
    expect((await page("/accounts", owner)).text).toMatch(/name="require_two_factor" checked/);

    const home = await page("/", viewer);
    expect(home.status).toBe(303);
    expect(home.headers.get("location")).toBe("/account");
    const credentials = await page("/credentials", viewer);
    expect(credentials.headers.get("location")).toBe("/account");
    const account = await page("/account", viewer);
    expect(account.status).toBe(200);
    expect(account.text).toContain("Owners require two-factor sign-in");
    const api = await portal.request("GET", "/api/organizations", { token: null, session: viewer });
    expect(api.status).toBe(403);
    // The owner, enrolled, is not held back; nor can they turn it off while it is required.
    expect((await page("/", owner)).status).toBe(200);
    expect((await page("/account", owner)).text).not.toContain("Turn off two-factor sign-in");

    const off = await formPost("/accounts?/security_policy", {}, { session: owner });
    expect(off.status).toBe(303);
    expect((await page("/", viewer)).status).toBe(200);
  });

  it("turning it off needs a code; then the password alone signs in", async () => {
    const wrong = await formPost("/account", { intent: "disable_two_factor", code: "000000" }, { session: owner });
    expect(wrong.status).toBe(400);
    const off = await formPost("/account", { intent: "disable_two_factor", code: recoveryCodes[2] }, { session: owner });
    expect(off.status, off.text).toBe(303);
    expect(off.headers.get("location")).toBe("/account");
    expect((await portal.signIn(OWNER.email, OWNER.password)).session).toBeTruthy();
  });

  it("no secret or recovery code in the portal's output", () => {
    const output = portal.output.join("\n");
    for (const value of [secret, ...recoveryCodes]) expect(output).not.toContain(value);
  });
});
