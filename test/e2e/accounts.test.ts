import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import { e2eEnabled, expectNoSecrets, hydrated, launchChromium, newContext, open, signInOnPage, watchPage, type PageWatch } from "../support/browser.js";

// Issue #20 in a real browser: an owner creates an editor limited to one organisation on the
// Accounts page; the editor signs in with the one-time password, sees only that organisation and
// is refused another's pages opened by URL; a viewer sees no button that changes anything and is
// refused when it posts anyway. The service decides; the pages only hide what a role cannot use.

const chromiumPath = inject("chromiumPath");

const OWNER = { email: "octavia@example.com", password: "owner keeps the lighthouse lit" };
const EDITOR_EMAIL = "edgar@example.com";
const VIEWER = { email: "violet@example.com", password: "she watches the slow river" };
const ORG_A = { id: "acme", name: "Acme Corp" };
const ORG_B = { id: "globex", name: "Globex Inc" };

let portal: TestPortal;
let browser: Browser;
const contexts: BrowserContext[] = [];
/** Keys and one-time passwords: never in a page after they were first shown. */
const secrets: string[] = [];

async function api(method: string, path: string, body?: unknown) {
  const response = await portal.request(method, path, { body });
  expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  return response.json;
}

async function text(locator: Locator): Promise<string> {
  await locator.first().waitFor();
  return (await locator.first().innerText()).replace(/\s+/g, " ").trim();
}

function sidebarLinks(page: Page): Promise<string[]> {
  return page.getByRole("navigation", { name: "Main" }).getByRole("link").allInnerTexts();
}

async function signedInPage(email: string, password: string): Promise<{ page: Page; watch: PageWatch }> {
  const context = await newContext(browser);
  contexts.push(context);
  const page = await context.newPage();
  const watch = await watchPage(page, portal.url);
  await open(page, `${portal.url}/login`);
  await signInOnPage(page, email, password);
  await hydrated(page);
  return { page, watch };
}

describe.skipIf(!e2eEnabled(chromiumPath))("accounts and roles in the browser", () => {
  let editorPassword = "";

  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(OWNER.email, OWNER.password);
    for (const org of [ORG_A, ORG_B]) {
      await api("POST", "/api/organizations", { organization_id: org.id, name: org.name });
      const apiKey = FAKE_KEYS.openai();
      secrets.push(apiKey);
      await api("POST", "/api/provider-credentials/create", {
        organization_id: org.id,
        provider: "openai",
        credential_name: `${org.name} key`,
        api_key: apiKey,
      });
    }
    await api("POST", "/api/accounts", { email: VIEWER.email, role: "viewer", password: VIEWER.password });
  });

  afterAll(async () => {
    if (process.env.E2E_DEBUG) console.log(portal?.output.join("\n"));
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await portal?.close();
  });

  it("an owner creates an editor limited to one organisation; the password is shown once", async () => {
    const { page, watch } = await signedInPage(OWNER.email, OWNER.password);
    expect(await sidebarLinks(page)).toEqual(["Provider Credentials", "Organizations & Teams", "Audit Log", "API Tokens", "Accounts"]);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Accounts", exact: true }).click();
    await page.waitForURL("**/accounts");
    await page.getByRole("heading", { level: 1, name: "Accounts" }).waitFor();

    await page.getByLabel("Email", { exact: true }).fill(EDITOR_EMAIL);
    await page.getByRole("radio", { name: /^Editor:/ }).check();
    await page.getByLabel(/^Organizations/).fill(ORG_A.id);
    await page.getByRole("button", { name: "Create account" }).click();
    const panel = page.getByTestId("created-account");
    await panel.waitFor();
    expect(await text(panel)).toContain("it will not be shown again");
    editorPassword = await page.getByLabel("One-time password", { exact: true }).inputValue();
    expect(editorPassword.length).toBeGreaterThanOrEqual(12);

    const row = page.locator("tbody tr").filter({ has: page.getByRole("rowheader", { name: EDITOR_EMAIL, exact: true }) });
    expect(await text(row.getByTestId("account-role"))).toBe("Editor");
    expect(await text(row.getByTestId("account-organizations"))).toBe(ORG_A.id);

    // Once passed on, it is gone from the page for good.
    await panel.getByRole("link", { name: "Done: I have passed it on" }).click();
    await panel.waitFor({ state: "detached" });
    await page.reload();
    expect(await page.content()).not.toContain(editorPassword);
    const accounts = await api("GET", "/api/accounts");
    expect(accounts.accounts.find((a: { email: string }) => a.email === EDITOR_EMAIL)).toMatchObject({ role: "editor", organization_ids: [ORG_A.id] });
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
  });

  it("the editor signs in with it, sees only its organisation, and is refused another's pages by URL", async () => {
    const { page, watch } = await signedInPage(EDITOR_EMAIL, editorPassword);
    const links = await sidebarLinks(page);
    expect(links).not.toContain("Accounts");

    await open(page, `${portal.url}/organizations`);
    const names = await page.locator("tbody th[scope=row]").allInnerTexts();
    expect(names).toEqual([ORG_A.name]);
    // An editor limited to organisations creates none.
    expect(await page.getByRole("button", { name: "Create organization" }).count()).toBe(0);

    await open(page, `${portal.url}/`);
    // The organisation picker suggests its own organisation and never another's, for text both names hold ("c").
    const suggested = page.waitForResponse((response) => response.url().includes("/api/trpc/organizations.list"));
    await page.getByLabel("Organization", { exact: true }).fill("c");
    expect((await suggested).status()).toBe(200);
    const suggestions = page.getByTestId("organization-suggestions").locator("option");
    await expect.poll(() => suggestions.count()).toBeGreaterThan(0);
    const options = await suggestions.evaluateAll((all) => all.map((o) => `${(o as HTMLOptionElement).value} ${o.textContent}`));
    expect(options.filter((o) => o.includes(ORG_B.name) || o.includes(ORG_B.id))).toEqual([]);
    expect(options.some((o) => o.includes(ORG_A.name) || o.includes(ORG_A.id))).toBe(true);

    // Its own organisation: its credentials, with the buttons an editor may use.
    await open(page, `${portal.url}/?organization=${ORG_A.id}`);
    await page.getByRole("rowheader", { name: `${ORG_A.name} key` }).waitFor();
    expect(await page.getByRole("link", { name: "Add Provider Credential" }).count()).toBe(1);

    // Another organisation's pages, by URL: refused, and nothing of it shown.
    const teamsPage = await page.goto(`${portal.url}/organizations/${ORG_B.id}`);
    expect(teamsPage!.status()).toBeGreaterThanOrEqual(400);
    expect(teamsPage!.status()).toBeLessThan(500);
    expect(await page.content()).not.toContain(ORG_B.name);
    await open(page, `${portal.url}/?organization=${ORG_B.id}`);
    await page.getByRole("alert").first().waitFor();
    expect(await page.getByRole("rowheader", { name: `${ORG_B.name} key` }).count()).toBe(0);
    expect(await page.content()).not.toContain(`${ORG_B.name} key`);
    // Nor the Accounts page's buttons, should it open it by URL.
    const accounts = await page.goto(`${portal.url}/accounts`);
    expect(accounts!.status() === 200 || accounts!.status() === 403).toBe(true);
    expect(await page.getByRole("button", { name: "Create account" }).count()).toBe(0);

    secrets.push(editorPassword);
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
  });

  it("a viewer sees no button that changes anything, and is refused if it posts anyway", async () => {
    const { page, watch } = await signedInPage(VIEWER.email, VIEWER.password);
    expect(await sidebarLinks(page)).not.toContain("Accounts");
    const changeButtons = /^(Add|Edit|Test|Activate|Deactivate|Delete|Create|Save|Rotate|Revoke|Remove|Disable|Enable)\b/;

    for (const path of [`/?organization=${ORG_B.id}`, "/organizations", `/organizations/${ORG_B.id}`, "/tokens", "/audit"]) {
      await open(page, `${portal.url}${path}`);
      await page.getByRole("heading", { level: 1 }).first().waitFor();
      const buttons = [...(await page.locator("main").getByRole("button").allInnerTexts()), ...(await page.locator("main a.button").allInnerTexts())];
      const changing = buttons.map((b) => b.replace(/\s+/g, " ").trim()).filter((b) => changeButtons.test(b));
      expect(changing, path).toEqual([]);
    }
    // It still reads: the credential is listed.
    await open(page, `${portal.url}/?organization=${ORG_B.id}`);
    await page.getByRole("rowheader", { name: `${ORG_B.name} key` }).waitFor();

    // Posting anyway, with its own session, from this origin: the service refuses, nothing changes.
    const [credential] = (await api("GET", `/api/provider-credentials/organization/${ORG_B.id}`)).credentials;
    const viaApi = await page.request.post(`${portal.url}/api/organizations/${ORG_B.id}/teams`, {
      headers: { origin: portal.url, "content-type": "application/json" },
      data: { team_id: "viewer-team", name: "Viewer team" },
    });
    expect(viaApi.status()).toBe(403);
    expect((await viaApi.json()).code).toBe("forbidden");
    const viaForm = await page.request.post(`${portal.url}/?/deactivate`, {
      headers: { origin: portal.url, accept: "text/html" },
      form: { credential_id: credential.credential_id, returnTo: `/?organization=${ORG_B.id}` },
    });
    // The action goes back to the list, saying it was refused.
    expect(viaForm.status()).toBeLessThan(500);
    await open(page, `${portal.url}/?organization=${ORG_B.id}`);
    const after = (await api("GET", `/api/provider-credentials/${credential.credential_id}`)) as { is_active: boolean };
    expect(after.is_active).toBe(true);
    expect((await api("GET", `/api/organizations/${ORG_B.id}/teams`)).teams).toEqual([]);
    const tokenForm = await page.request.post(`${portal.url}/tokens?/create`, {
      headers: { origin: portal.url, accept: "text/html" },
      form: { name: "viewer-token", scope: "admin", organization_ids: "", expires_in: "" },
    });
    expect(tokenForm.status()).toBe(403);
    expect((await api("GET", "/api/tokens")).tokens).toEqual([]);

    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
  });
});
