import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { Secret, TOTP } from "otpauth";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import { e2eEnabled, expectNoSecrets, hydrated, launchChromium, newContext, open, signInOnPage, watchPage, type PageWatch } from "../support/browser.js";

// Issue #20's browser journeys, end to end in Chromium: an owner creates an editor limited to one
// organisation; the editor signs in with the one-time password, enrols TOTP (codes computed from the
// key the enrolment page shows), signs in again with a code, sees only its organisation, and is
// refused another organisation's pages and credentials opened by URL. A viewer sees no button or
// form that changes anything on any page it can reach, is told it is read only, and is refused
// (403, never a 500) when it posts the forms anyway, with nothing changed.

const chromiumPath = inject("chromiumPath");

const OWNER = { email: "orla@example.com", password: "owner rows the long canal home" };
const EDITOR_EMAIL = "eamon@example.com";
const VIEWER = { email: "vera@example.com", password: "she reads the tide tables twice" };
const ORG_A = { id: "initech", name: "Initech Ltd" };
const ORG_B = { id: "umbrella", name: "Umbrella Co" };
const TEAM_B = "umbrella-research";
const TOKEN_B = "umbrella-gateway";

let portal: TestPortal;
let browser: Browser;
const contexts: BrowserContext[] = [];
/** Keys and one-time passwords: never in a page after they were first shown. */
const secrets: string[] = [];
const credentialOf: Record<string, { credential_id: string; credential_name: string }> = {};

async function api(method: string, path: string, body?: unknown) {
  const response = await portal.request(method, path, { body });
  expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  return response.json;
}

async function newPage(): Promise<{ page: Page; watch: PageWatch }> {
  const context = await newContext(browser);
  contexts.push(context);
  const page = await context.newPage();
  return { page, watch: await watchPage(page, portal.url) };
}

const totpFor = (secret: string) => new TOTP({ algorithm: "SHA1", digits: 6, period: 30, secret: Secret.fromBase32(secret) });

/** Buttons and button-looking links in the page's main part whose words change something. */
const CHANGING = /^(Add|Edit|Test|Activate|Deactivate|Delete|Create|Save|Rotate|Revoke|Remove|Disable|Enable|Sign out everywhere|Change|Set|Roll|Turn)\b/;

async function changingControls(page: Page): Promise<string[]> {
  const main = page.locator("main");
  const labels = [...(await main.getByRole("button").allInnerTexts()), ...(await main.locator("a.button").allInnerTexts())];
  const posting = await main.locator('form[method="POST" i], form[method="post"]').count();
  return [...labels.map((b) => b.replace(/\s+/g, " ").trim()).filter((b) => CHANGING.test(b)), ...(posting > 0 ? [`${posting} POST form(s)`] : [])];
}

describe.skipIf(!e2eEnabled(chromiumPath))("tenancy journeys in the browser", () => {
  let editorPassword = "";
  let editorSecret = "";

  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(OWNER.email, OWNER.password);
    for (const org of [ORG_A, ORG_B]) {
      await api("POST", "/api/organizations", { organization_id: org.id, name: org.name });
      const apiKey = FAKE_KEYS.openai();
      secrets.push(apiKey);
      credentialOf[org.id] = await api("POST", "/api/provider-credentials/create", {
        organization_id: org.id,
        provider: "openai",
        credential_name: `${org.name} key`,
        api_key: apiKey,
      });
    }
    await api("POST", `/api/organizations/${ORG_B.id}/teams`, { team_id: TEAM_B, name: "Umbrella research" });
    await api("POST", "/api/tokens", { name: TOKEN_B, scope: "resolve", organization_ids: [ORG_B.id] });
    await api("POST", "/api/accounts", { email: VIEWER.email, role: "viewer", password: VIEWER.password });
  });

  afterAll(async () => {
    if (process.env.E2E_DEBUG) console.log(portal?.output.join("\n"));
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await portal?.close();
  });

  it("an owner creates an editor limited to one organisation on the Accounts page", async () => {
    const { page, watch } = await newPage();
    await open(page, `${portal.url}/login`);
    await signInOnPage(page, OWNER.email, OWNER.password);
    await open(page, `${portal.url}/accounts`);
    await page.getByLabel("Email", { exact: true }).fill(EDITOR_EMAIL);
    await page.getByRole("radio", { name: /^Editor:/ }).check();
    await page.getByLabel(/^Organizations/).fill(ORG_A.id);
    await page.getByRole("button", { name: "Create account" }).click();
    await page.getByTestId("created-account").waitFor();
    editorPassword = await page.getByLabel("One-time password", { exact: true }).inputValue();
    expect(editorPassword.length).toBeGreaterThanOrEqual(12);
    const accounts = await api("GET", "/api/accounts");
    expect(accounts.accounts.find((a: { email: string }) => a.email === EDITOR_EMAIL)).toMatchObject({ role: "editor", organization_ids: [ORG_A.id] });
    await expectNoSecrets(page, watch, secrets);
  });

  it("the editor signs in, enrols TOTP from the key on the enrolment page, and signs in again with a code", async () => {
    const { page, watch } = await newPage();
    await open(page, `${portal.url}/login`);
    await signInOnPage(page, EDITOR_EMAIL, editorPassword);
    await open(page, `${portal.url}/account`);
    await page.getByRole("button", { name: "Set up two-factor sign-in" }).click();
    const secretCell = page.getByTestId("two-factor-secret");
    await secretCell.waitFor();
    editorSecret = (await secretCell.innerText()).replace(/\s+/g, "");
    expect(editorSecret).toMatch(/^[A-Z2-7]{16,}$/);
    expect(await page.getByTestId("two-factor-qr").count()).toBe(1);
    await page.getByLabel("Code", { exact: true }).fill(totpFor(editorSecret).generate());
    await page.getByRole("button", { name: "Turn on two-factor sign-in" }).click();
    await page.getByTestId("recovery-codes").waitFor();
    expect(await page.getByTestId("recovery-codes").locator("li").count()).toBe(10);

    // Signed out, then in again: the password is not enough any more.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL((url) => url.pathname === "/login" || url.pathname === "/logout");
    await open(page, `${portal.url}/login`);
    await page.getByLabel("Email").fill(EDITOR_EMAIL);
    await page.getByLabel("Password").fill(editorPassword);
    await page.getByRole("button", { name: "Sign in" }).click();
    const code = page.getByLabel("Code", { exact: true });
    await code.waitFor();
    expect(new URL(page.url()).pathname).toBe("/login");
    // The next time step's code (the enrolment used this one; a code is accepted once, within a step either side).
    await code.fill(totpFor(editorSecret).generate({ timestamp: Date.now() + 30_000 }));
    await Promise.all([page.waitForURL((url) => url.pathname !== "/login"), page.getByRole("button", { name: "Sign in" }).click()]);
    await hydrated(page);
    expect(await page.getByTestId("who-role").innerText()).toContain(ORG_A.id);
    secrets.push(editorPassword);
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);

    // Only its organisation; another's pages and credential, opened by URL, are refused and show nothing of it.
    const nav = await page.getByRole("navigation", { name: "Main" }).getByRole("link").allInnerTexts();
    expect(nav).not.toContain("Accounts");
    await open(page, `${portal.url}/organizations`);
    expect(await page.locator("tbody th[scope=row]").allInnerTexts()).toEqual([ORG_A.name]);
    await open(page, `${portal.url}/`);
    // The organisation picker suggests only its own organisations, even for another's name typed in full.
    const suggested = page.waitForResponse(
      (response) => response.url().includes("/api/trpc/organizations.list") && decodeURIComponent(response.url()).includes(ORG_B.name),
    );
    await page.getByLabel("Organization", { exact: true }).fill(ORG_B.name);
    expect((await suggested).status()).toBe(200);
    const options = await page
      .getByTestId("organization-suggestions")
      .locator("option")
      .evaluateAll((all) => all.map((o) => `${(o as HTMLOptionElement).value} ${o.textContent}`));
    expect(options.filter((o) => o.includes(ORG_B.id) || o.includes(ORG_B.name))).toEqual([]);

    const credentialB = credentialOf[ORG_B.id];
    for (const path of [
      `/organizations/${ORG_B.id}`,
      `/organizations/${ORG_B.id}/delete`,
      `/organizations/${ORG_B.id}/teams/${TEAM_B}/delete`,
      `/credentials/${credentialB.credential_id}/edit`,
      `/credentials/${credentialB.credential_id}/delete`,
    ]) {
      const response = await page.goto(`${portal.url}${path}`);
      expect(response!.status(), path).toBe(403);
      const html = await page.content();
      for (const foreign of [ORG_B.name, credentialB.credential_name, "Umbrella research"]) expect(html, path).not.toContain(foreign);
      expect(await page.locator("main form").count(), path).toBe(0);
    }
    await open(page, `${portal.url}/?organization=${ORG_B.id}`);
    await page.getByRole("alert").first().waitFor();
    expect(await page.content()).not.toContain(credentialB.credential_name);
    // Its own organisation's credential opens for editing.
    const own = await page.goto(`${portal.url}/credentials/${credentialOf[ORG_A.id].credential_id}/edit`);
    expect(own!.status()).toBe(200);
    expect(await page.getByRole("button", { name: "Save changes", exact: true }).count()).toBe(1);
  }, 180_000);

  it("a viewer sees no control that changes anything on any page it reaches, and is told it is read only", async () => {
    const { page, watch } = await newPage();
    await open(page, `${portal.url}/login`);
    await signInOnPage(page, VIEWER.email, VIEWER.password);
    const credentialB = credentialOf[ORG_B.id];
    const pages = [
      `/?organization=${ORG_B.id}`,
      `/credentials/new?organization=${ORG_B.id}`,
      `/credentials/${credentialB.credential_id}/edit`,
      `/credentials/${credentialB.credential_id}/delete`,
      "/organizations",
      `/organizations/${ORG_B.id}`,
      `/organizations/${ORG_B.id}/delete`,
      `/organizations/${ORG_B.id}/teams/${TEAM_B}/delete`,
      "/tokens",
      `/tokens/${TOKEN_B}/revoke`,
      `/tokens/${TOKEN_B}/rotate`,
      "/accounts",
      `/accounts/${encodeURIComponent(OWNER.email)}`,
      `/accounts/${encodeURIComponent(OWNER.email)}/remove`,
      "/audit",
    ];
    for (const path of pages) {
      const response = await page.goto(`${portal.url}${path}`);
      await hydrated(page);
      expect(response!.status(), path).toBe(200);
      expect(await changingControls(page), path).toEqual([]);
      expect(await page.getByTestId("read-only-account").innerText(), path).toMatch(/read only/i);
    }
    // It still reads: the credential is listed, its facts shown.
    await open(page, `${portal.url}/?organization=${ORG_B.id}`);
    await page.getByRole("rowheader", { name: credentialB.credential_name }).waitFor();
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
  }, 240_000);

  it("a viewer that posts the forms anyway is refused by the service: a 403 with its reason, never a 500, and nothing changes", async () => {
    const { page } = await newPage();
    await open(page, `${portal.url}/login`);
    await signInOnPage(page, VIEWER.email, VIEWER.password);
    const credentialB = credentialOf[ORG_B.id];
    const before = await api("GET", `/api/provider-credentials/${credentialB.credential_id}`);
    const post = (path: string, form: Record<string, string>) =>
      page.request.post(`${portal.url}${path}`, { headers: { origin: portal.url, accept: "text/html" }, form, maxRedirects: 0 });

    // Forms whose refusal is shown on the form's page: 403, the service's reason on it.
    const refusedInPlace: Array<[string, Record<string, string>]> = [
      ["/credentials/new", { organization_id: ORG_B.id, provider: "openai", credential_name: "viewer's", api_key: FAKE_KEYS.openai() }],
      [`/credentials/${credentialB.credential_id}/edit`, { credential_name: "renamed by a viewer", expected_version: String(before.version) }],
      ["/organizations?/create", { organization_id: "viewer-org", name: "Viewer org" }],
      [`/organizations/${ORG_B.id}?/createTeam`, { team_id: "viewer-team", name: "Viewer team" }],
      ["/tokens?/create", { name: "viewer-token", scope: "admin", organization_ids: "", expires_in: "" }],
    ];
    for (const [path, form] of refusedInPlace) {
      const response = await post(path, form);
      const body = await response.text();
      expect(response.status(), `${path}: ${body.slice(0, 200)}`).toBeLessThan(500);
      if (response.status() !== 303) {
        expect(response.status(), path).toBe(403);
        expect(body, path).toMatch(/role viewer|has role|not allowed|may not/i);
      }
    }
    // Confirmations go back to a page with the refusal as its message.
    for (const [path, form] of [
      [`/credentials/${credentialB.credential_id}/delete`, { returnTo: `/?organization=${ORG_B.id}` }],
      [`/organizations/${ORG_B.id}/teams/${TEAM_B}/delete`, {}],
      [`/organizations/${ORG_B.id}/delete`, { returnTo: "/organizations" }],
      [`/tokens/${TOKEN_B}/revoke`, {}],
      [`/?/deactivate`, { credential_id: credentialB.credential_id, returnTo: `/?organization=${ORG_B.id}` }],
    ] as Array<[string, Record<string, string>]>) {
      const response = await post(path, form);
      expect(response.status(), path).toBeLessThan(500);
      if (response.status() === 303) {
        await open(page, `${portal.url}${response.headers().location}`);
        expect(await page.getByRole("alert").first().innerText(), path).toMatch(/role viewer|has role|not allowed|may not/i);
      } else {
        expect(response.status(), path).toBe(403);
      }
    }

    // Nothing changed.
    expect(await api("GET", `/api/provider-credentials/${credentialB.credential_id}`)).toMatchObject({
      version: before.version,
      is_active: true,
      credential_name: credentialB.credential_name,
    });
    expect((await api("GET", `/api/organizations/${ORG_B.id}/teams`)).teams.map((t: { team_id: string }) => t.team_id)).toEqual([TEAM_B]);
    expect((await api("GET", `/api/provider-credentials/organization/${ORG_B.id}`)).credentials).toHaveLength(1);
    expect((await api("GET", "/api/organizations")).organizations.map((o: { organization_id: string }) => o.organization_id).sort()).toEqual(
      [ORG_A.id, ORG_B.id].sort(),
    );
    expect((await api("GET", "/api/tokens")).tokens.map((t: { name: string }) => t.name)).toEqual([TOKEN_B]);
  });
});
