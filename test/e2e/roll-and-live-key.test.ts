import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import { axeScan, blocking, e2eEnabled, expectNoSecrets, launchChromium, newContext, signInOnPage, watchPage, type PageWatch } from "../support/browser.js";

// Issue 23, items 1 and 2 in a real browser: the list marks the key ResolveKey serves (after the issue's exact
// steps), and "Roll key" replaces a key in one step.

const chromiumPath = inject("chromiumPath");
const ADMIN = { email: "roll@example.com", password: "quiet amber lantern meadow" };
const ORG = "org-live";

let portal: TestPortal;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let watch: PageWatch;
const secrets: string[] = [];

function key(): string {
  const value = FAKE_KEYS.openai();
  secrets.push(value);
  return value;
}

async function api(method: string, path: string, body?: unknown) {
  const response = await portal.request(method, path, { body });
  expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  return response.json;
}

function row(name: string): Locator {
  return page.locator("tbody tr").filter({ has: page.getByRole("rowheader", { name, exact: true }) });
}

/** A credential's row with its Actions menu open (its buttons and links live there). */
async function menu(name: string, on: Page = page): Promise<Locator> {
  const found = on.locator("tbody tr").filter({ has: on.getByRole("rowheader", { name, exact: true }) });
  const details = found.locator(".row-menu");
  if (!(await details.evaluate((element) => (element as HTMLDetailsElement).open))) await details.locator("> summary").click();
  return found;
}

async function standing(name: string): Promise<string> {
  return (await row(name).getByTestId("standing").innerText()).trim();
}

const served = async () =>
  (await portal.service.clients().credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI })).credentialId;

describe.skipIf(!e2eEnabled(chromiumPath))("which key is live, and rolling a key, in the browser", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(ADMIN.email, ADMIN.password);
    context = await newContext(browser);
    page = await context.newPage();
    watch = await watchPage(page, portal.url);
    await api("POST", "/api/organizations", { organization_id: ORG, name: "Live Org" });
  });

  afterAll(async () => {
    await browser?.close();
    await portal?.close();
  });

  it("the issue's reproduction: after the steps, the row marked In use is the key ResolveKey returns", async () => {
    const a = await api("POST", "/api/provider-credentials/create", { organization_id: ORG, provider: "openai", credential_name: "Key A", api_key: key() });
    const b = await api("POST", "/api/provider-credentials/create", { organization_id: ORG, provider: "openai", credential_name: "Key B", api_key: key() });
    await api("PUT", `/api/provider-credentials/${a.credential_id}/deactivate`);
    await api("PUT", `/api/provider-credentials/${a.credential_id}/activate`);
    await api("PUT", `/api/provider-credentials/${b.credential_id}`, { api_key: key() });

    await page.goto(`${portal.url}/?organization=${ORG}&provider=openai`);
    await signInOnPage(page, ADMIN.email, ADMIN.password);
    await page.getByRole("heading", { level: 1, name: "Provider Credentials" }).waitFor();
    expect(await served()).toBe(a.credential_id);
    expect(await standing("Key A")).toBe("In use");
    expect(await standing("Key B")).toBe("Standby");
    expect(await row("Key A").getByTestId("weight").innerText()).toBe("1");
    const selection = page.getByTestId("key-selection");
    expect(await selection.getByTestId("strategy").innerText()).toBe("Newest");
    expect(await selection.getByTestId("fallback").innerText()).toBe("no environment fallback");
    expect(blocking(await axeScan(page))).toEqual([]);
  });

  it("Roll key: the new key is in use at once, the old one renamed and still active during the overlap", async () => {
    await (await menu("Key A")).getByRole("link", { name: /Roll key/ }).click();
    await page.waitForURL("**/credentials/*/roll?**");
    await page.getByRole("heading", { name: "Roll the key of “Key A”" }).waitFor();
    expect(blocking(await axeScan(page))).toEqual([]);
    await page.getByLabel("New API Key").fill(key());
    await page.getByLabel("In 1 hour").check();
    await Promise.all([page.waitForURL((url) => url.pathname === "/"), page.getByRole("button", { name: "Roll key" }).click()]);
    await page.getByTestId("feedback-success").locator(".notice").filter({ hasText: "is stored as “Key A” and active now" }).waitFor();
    const replaced = page.locator("tbody tr th", { hasText: /^Key A \(replaced \d{4}-\d{2}-\d{2}\)$/ });
    await replaced.waitFor();
    expect(await standing("Key A")).toBe("In use");
    const replacedName = (await replaced.innerText()).trim();
    expect(await standing(replacedName)).toBe("Standby");
    const servedId = await served();
    expect(await row("Key A").getAttribute("data-credential-id")).toBe(servedId);
    await expectNoSecrets(page, watch, secrets);
  });

  it("without JavaScript, the roll page works as a plain form", async () => {
    const noScript = await newContext(browser, { javaScriptEnabled: false });
    const plain = await noScript.newPage();
    await plain.goto(`${portal.url}/login?redirectTo=${encodeURIComponent(`/?organization=${ORG}&provider=openai`)}`);
    await signInOnPage(plain, ADMIN.email, ADMIN.password);
    await (await menu("Key B", plain)).getByRole("link", { name: /Roll key/ }).click();
    await plain.getByLabel("New API Key").fill(key());
    await Promise.all([plain.waitForURL((url) => url.pathname === "/"), plain.getByRole("button", { name: "Roll key" }).click()]);
    await plain.locator("tbody tr th", { hasText: /^Key B \(replaced / }).waitFor();
    const html = await plain.content();
    expect(html).toMatch(/Key B \(replaced \d{4}-\d{2}-\d{2}\)/);
    await noScript.close();
  });
});
