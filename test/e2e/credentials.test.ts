import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import { e2eEnabled, expectNoSecrets, hydrated, launchChromium, newContext, open, signInOnPage, watchPage, type PageWatch } from "../support/browser.js";

// What an administrator does every day, in a real browser with JavaScript on:
// the service and the built portal on a real PostgreSQL, driven through Chromium.

const chromiumPath = inject("chromiumPath");

const ADMIN = { email: "ada@example.com", password: "quiet engine of numbers" };
const ORG = { id: "org-e2e", name: "E2E Corp" };

let portal: TestPortal;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let watch: PageWatch;
/** Every key typed or stored in this file: none may ever come back from the portal. */
const secrets: string[] = [];

const GREEN_BADGE = "rgb(209, 231, 221)";
const GREY_BADGE = "rgb(226, 228, 232)";

function key(provider: keyof typeof FAKE_KEYS): string {
  const value = FAKE_KEYS[provider]();
  secrets.push(value);
  return value;
}

/** The masked hint the service shows for a key: its prefix and last 4 characters. */
function hintOf(apiKey: string, prefix: string): string {
  return `${prefix}…${apiKey.slice(-4)}`;
}

/** The table row of a credential, by its name. */
function row(name: string): Locator {
  return page.locator("tbody tr").filter({ has: page.getByRole("rowheader", { name, exact: true }) });
}

/** A credential's row with its Actions menu open (Edit, Roll key, Test, Activate/Deactivate, Delete and its details live there). */
async function menu(name: string, on: Page = page): Promise<Locator> {
  const found = on.locator("tbody tr").filter({ has: on.getByRole("rowheader", { name, exact: true }) });
  const details = found.locator(".row-menu");
  if (!(await details.evaluate((element) => (element as HTMLDetailsElement).open))) await details.locator("> summary").click();
  return found;
}

/** A link of the sidebar. */
function sidebar(name: string): Locator {
  return page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true });
}

async function text(locator: Locator): Promise<string> {
  await locator.first().waitFor();
  return (await locator.first().innerText()).replace(/\s+/g, " ").trim();
}

async function backgroundOf(locator: Locator): Promise<string> {
  return locator.evaluate((element) => getComputedStyle(element).backgroundColor);
}

/** The success message at the top of the page, once it says `expected`. */
async function success(expected: string | RegExp): Promise<string> {
  const locator = page.getByTestId("feedback-success").locator(".notice");
  await locator.filter({ hasText: expected }).waitFor();
  return text(locator);
}

async function failure(expected: string | RegExp): Promise<string> {
  const locator = page.getByTestId("feedback-error").locator(".notice");
  await locator.filter({ hasText: expected }).waitFor();
  return text(locator);
}

async function api(method: string, path: string, body?: unknown) {
  const response = await portal.request(method, path, { body });
  expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  return response.json;
}

async function createCredential(organization: string, provider: keyof typeof FAKE_KEYS, name: string) {
  return api("POST", "/api/provider-credentials/create", { organization_id: organization, provider, credential_name: name, api_key: key(provider) });
}

const path = () => {
  const url = new URL(page.url());
  return `${url.pathname}${url.search}`;
};

describe.skipIf(!e2eEnabled(chromiumPath))("Provider Credentials in the browser", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(ADMIN.email, ADMIN.password);
    context = await newContext(browser);
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: portal.url });
    page = await context.newPage();
    watch = await watchPage(page, portal.url);
  });

  afterAll(async () => {
    if (process.env.E2E_DEBUG) console.log(portal?.output.join("\n"));
    await browser?.close();
    await portal?.close();
  });

  it("an unauthenticated visit goes to /login and comes back after signing in", async () => {
    await page.goto(`${portal.url}/?organization=${ORG.id}&provider=openai`);
    const login = new URL(page.url());
    expect(login.pathname).toBe("/login");
    expect(login.searchParams.get("redirectTo")).toBe(`/?organization=${ORG.id}&provider=openai`);
    await hydrated(page);
    await signInOnPage(page, ADMIN.email, ADMIN.password);
    expect(path()).toBe(`/?organization=${ORG.id}&provider=openai`);
    await page.getByRole("heading", { level: 1, name: "Provider Credentials" }).waitFor();
    // The sidebar: Provider Credentials first, the current page marked.
    const links = await page.getByRole("navigation", { name: "Main" }).getByRole("link").allInnerTexts();
    expect(links).toEqual(["Provider Credentials", "Organizations & Teams", "Audit Log", "API Tokens", "Accounts"]);
    expect(await sidebar("Provider Credentials").getAttribute("aria-current")).toBe("page");
    // There is no organisation yet: said plainly, with the way out.
    expect(await text(page.getByRole("heading", { name: "No organizations yet" }))).toBe("No organizations yet");
  });

  it("creates an organisation", async () => {
    await sidebar("Organizations & Teams").click();
    await page.waitForURL("**/organizations");
    expect(await text(page.getByTestId("empty-state"))).toContain("No organizations yet");
    await page.getByLabel("Organization ID", { exact: true }).fill(ORG.id);
    await page.getByLabel("Name", { exact: true }).fill(ORG.name);
    await page.getByRole("button", { name: "Create organization" }).click();
    expect(await success("was created")).toContain(`Organization “${ORG.name}” (${ORG.id}) was created`);
    expect(await text(page.getByRole("rowheader", { name: ORG.name }))).toBe(ORG.name);
    // A duplicate id is refused at the field, with the service's words.
    await page.getByLabel("Organization ID", { exact: true }).fill(ORG.id);
    await page.getByLabel("Name", { exact: true }).fill("Again");
    await page.getByRole("button", { name: "Create organization" }).click();
    expect(await text(page.locator("#organization_id-error"))).toContain(`an organization with id "${ORG.id}" already exists`);
    expect(await page.getByLabel("Organization ID", { exact: true }).getAttribute("aria-invalid")).toBe("true");
  });

  it("asks to choose an organisation, then shows how to add the first credential", async () => {
    await sidebar("Provider Credentials").click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await text(page.getByRole("heading", { name: "Choose an organization" }))).toBe("Choose an organization");
    await page.getByLabel("Organization", { exact: true }).fill(ORG.id);
    await page.getByRole("button", { name: "Show credentials" }).click();
    await page.waitForURL((url) => url.searchParams.get("organization") === ORG.id);
    expect(await text(page.getByTestId("empty-state"))).toContain("This organization has no provider credentials yet");
    expect(await page.getByTestId("empty-state").getByRole("link", { name: "Add the first credential" }).getAttribute("href")).toBe(
      `/credentials/new?organization=${ORG.id}`,
    );
  });

  let primaryKey = "";

  it("adds a credential and sees it Active with its hint, never its key", async () => {
    await page.getByRole("link", { name: "Add Provider Credential" }).click();
    await page.waitForURL("**/credentials/new?**");
    await page.getByRole("heading", { name: "Add Provider Credential" }).waitFor();
    expect(await page.getByLabel("Organization (required)", { exact: true }).inputValue()).toBe(ORG.id);
    const keyField = page.getByLabel("API Key", { exact: true });
    expect(await keyField.getAttribute("type")).toBe("password");
    expect(await keyField.getAttribute("autocomplete")).toBe("off");
    expect(await page.getByLabel("API Base URL (optional)", { exact: true }).getAttribute("required")).toBeNull();
    // The expected format follows the chosen provider.
    const hint = page.getByTestId("key-format");
    for (const [provider, format] of [
      ["anthropic", "sk-ant-..."],
      ["gemini", "AI..."],
      ["fireworks", "fw..."],
      ["openai", "sk-..."],
    ]) {
      await page.getByLabel("Provider", { exact: true }).selectOption(provider);
      expect(await text(hint)).toContain(format);
    }
    expect(await keyField.getAttribute("aria-describedby")).toContain("api_key-hint");

    primaryKey = key("openai");
    await page.getByLabel("Credential Name", { exact: true }).fill("Production OpenAI Key");
    await keyField.fill(primaryKey);
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await success("was added")).toContain("“Production OpenAI Key” was added and is active");
    expect(new URL(page.url()).searchParams.get("organization")).toBe(ORG.id);

    const created = row("Production OpenAI Key");
    const badge = created.locator('[data-label="Status"] .badge').first();
    expect(await text(badge)).toBe("Active");
    expect(await backgroundOf(badge)).toBe(GREEN_BADGE);
    expect(await text(created.locator(".key-hint"))).toBe(hintOf(primaryKey, "sk-"));
    expect(await text(created.locator('[data-label="Provider"]'))).toBe("OpenAI");
    await menu("Production OpenAI Key");
    expect(await text(created.locator('[data-label="API base"]'))).toBe("Default");
    expect(await text(created.locator('[data-label="Usage"]'))).toBe("Never used");
    expect(await text(created.locator('[data-label="Last check"]'))).toBe("Never checked");
    expect(await text(created.getByTestId("created-by"))).toBe(`by ${ADMIN.email}`);
    await created.locator(".row-menu > summary").click();
    await expectNoSecrets(page, watch, secrets);
  });

  it("a bad key format shows the service's message at the key field", async () => {
    await page.getByRole("link", { name: "Add Provider Credential" }).click();
    await page.waitForURL("**/credentials/new?**");
    await page.getByRole("heading", { name: "Add Provider Credential" }).waitFor();
    await page.getByLabel("Provider", { exact: true }).selectOption("anthropic");
    await page.getByLabel("Credential Name", { exact: true }).fill("Wrong format");
    await page.getByLabel("API Key", { exact: true }).fill(key("openai"));
    await page.getByRole("button", { name: "Add credential" }).click();
    const error = page.locator("#api_key-error");
    expect(await text(error)).toBe(
      'Anthropic keys start with "sk-ant-"; it looks like an OpenAI key (with an API base URL for a proxy, any format is accepted)',
    );
    const keyField = page.getByLabel("API Key", { exact: true });
    expect(await keyField.getAttribute("aria-invalid")).toBe("true");
    expect(await keyField.getAttribute("aria-describedby")).toContain("api_key-error");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("api_key");
    // Nothing else lost, and nothing saved.
    expect(new URL(page.url()).pathname).toBe("/credentials/new");
    expect(await page.getByLabel("Provider", { exact: true }).inputValue()).toBe("anthropic");
    expect(await page.getByLabel("Credential Name", { exact: true }).inputValue()).toBe("Wrong format");
    expect(await text(page.getByTestId("key-format"))).toContain("sk-ant-...");
    const list = await api("GET", `/api/provider-credentials/organization/${ORG.id}`);
    expect(list.credentials.map((c: { credential_name: string }) => c.credential_name)).toEqual(["Production OpenAI Key"]);
    await expectNoSecrets(page, watch, secrets);
    await page.getByRole("link", { name: "Cancel" }).click();
    await page.waitForURL((url) => url.pathname === "/");
  });

  it("edits the name", async () => {
    await (await menu("Production OpenAI Key")).getByRole("link", { name: "Edit Production OpenAI Key" }).click();
    await page.waitForURL("**/credentials/*/edit**");
    await page.getByRole("heading", { name: "Edit “Production OpenAI Key”" }).waitFor();
    const keyField = page.getByLabel("New API Key (optional)", { exact: true });
    expect(await keyField.inputValue()).toBe("");
    expect(await keyField.getAttribute("type")).toBe("password");
    expect(await keyField.getAttribute("autocomplete")).toBe("off");
    expect(await text(page.getByTestId("key-format"))).toContain("Leave empty to keep the current key");
    await page.getByLabel("Credential Name", { exact: true }).fill("Primary OpenAI Key");
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await success("was updated")).toBe("The OpenAI credential “Primary OpenAI Key” was updated.");
    expect(await text(row("Primary OpenAI Key").locator(".key-hint"))).toBe(hintOf(primaryKey, "sk-"));
    expect(await row("Production OpenAI Key").count()).toBe(0);
  });

  it("rotates the key", async () => {
    await (await menu("Primary OpenAI Key")).getByRole("link", { name: "Edit Primary OpenAI Key" }).click();
    await page.getByRole("heading", { name: "Edit “Primary OpenAI Key”" }).waitFor();
    const rotated = key("openai");
    await page.getByLabel("New API Key (optional)", { exact: true }).fill(rotated);
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await success("was updated")).toContain(`Its new key (${hintOf(rotated, "sk-")}) is stored encrypted and will not be shown again.`);
    expect(await text(row("Primary OpenAI Key").locator(".key-hint"))).toBe(hintOf(rotated, "sk-"));
    await expectNoSecrets(page, watch, secrets);
  });

  it("asks for the key again to change the API base, and changes nothing without it", async () => {
    await (await menu("Primary OpenAI Key")).getByRole("link", { name: "Edit Primary OpenAI Key" }).click();
    await page.getByRole("heading", { name: "Edit “Primary OpenAI Key”" }).waitFor();
    expect(await text(page.locator("#api_base-hint"))).toContain("To change it, enter the key again in New API Key");
    const id = new URL(page.url()).pathname.split("/")[2];
    await page.getByLabel("API Base URL (optional)", { exact: true }).fill("https://proxy.example.com/v1");
    await page.getByRole("button", { name: "Save changes" }).click();
    expect(await text(page.locator("#api_key-error"))).toContain("enter the key again to change API base URL");
    expect((await api("GET", `/api/provider-credentials/${id}`)).api_base ?? null).toBeNull();
    // With the key entered again, the change is saved; then moved back the same way.
    const again = key("openai");
    await page.getByLabel("New API Key (optional)", { exact: true }).fill(again);
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect((await api("GET", `/api/provider-credentials/${id}`)).api_base).toBe("https://proxy.example.com/v1");
    expect((await api("PUT", `/api/provider-credentials/${id}`, { api_base: null, api_key: again })).api_base ?? null).toBeNull();
    await expectNoSecrets(page, watch, secrets);
  });

  it("explains a stale edit: someone else changed the credential meanwhile", async () => {
    await (await menu("Primary OpenAI Key")).getByRole("link", { name: "Edit Primary OpenAI Key" }).click();
    await page.getByRole("heading", { name: "Edit “Primary OpenAI Key”" }).waitFor();
    const id = new URL(page.url()).pathname.split("/")[2];
    await api("PUT", `/api/provider-credentials/${id}`, { credential_name: "Renamed elsewhere" });
    await page.getByLabel("Credential Name", { exact: true }).fill("My late change");
    await page.getByRole("button", { name: "Save changes" }).click();
    const message = await text(page.getByTestId("form-error"));
    expect(message).toContain("This credential was changed by someone else after you opened it, so your change was not saved.");
    expect(message).toContain("Reload");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("form-error");
    await page.getByRole("link", { name: "Reload the current values" }).click();
    await page.getByRole("heading", { name: "Edit “Renamed elsewhere”" }).waitFor();
    expect(await page.getByLabel("Credential Name", { exact: true }).inputValue()).toBe("Renamed elsewhere");
    await hydrated(page);
    await page.getByRole("link", { name: "Cancel" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await row("Renamed elsewhere").count()).toBe(1);
  });

  it("deactivates (grey badge) and activates (green badge)", async () => {
    const credential = row("Renamed elsewhere");
    await (await menu("Renamed elsewhere")).getByRole("button", { name: "Deactivate Renamed elsewhere" }).click();
    expect(await success("is inactive")).toContain("“Renamed elsewhere” is inactive");
    expect(await text(credential.locator('[data-label="Status"] .badge').first())).toBe("Inactive");
    expect(await backgroundOf(credential.locator('[data-label="Status"] .badge').first())).toBe(GREY_BADGE);
    await (await menu("Renamed elsewhere")).getByRole("button", { name: "Activate Renamed elsewhere" }).click();
    expect(await success("is active")).toContain("“Renamed elsewhere” is active");
    expect(await text(credential.locator('[data-label="Status"] .badge').first())).toBe("Active");
    expect(await backgroundOf(credential.locator('[data-label="Status"] .badge').first())).toBe(GREEN_BADGE);
    // The audit log names the person, their role, and the portal's token that acted for them.
    const events = await api("GET", `/api/audit-events?organization_id=${ORG.id}&action=credential.deactivate`);
    expect(events.events[0].actor).toBe(`${ADMIN.email} (owner) via token:service-admin-token`);
  });

  it("deletes through a confirmation dialog that moves focus in and back", async () => {
    await createCredential(ORG.id, "anthropic", "Temporary key");
    await page.reload();
    await hydrated(page);
    const trigger = (await menu("Temporary key")).getByRole("button", { name: "Delete Temporary key" });
    await trigger.click();
    const dialog = page.getByRole("dialog", { name: "Delete “Temporary key”?" });
    await dialog.waitFor();
    const said = await text(dialog);
    expect(said).toContain("“Temporary key”");
    expect(said).toContain("Deletion is permanent");
    expect(said).toContain("Teams using this credential will fail");
    expect(said).toContain("deactivate it instead");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Cancel");
    expect(await page.evaluate(() => document.activeElement?.closest("dialog") !== null)).toBe(true);
    // Escape closes it and gives focus back to the button that opened it.
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    expect(await trigger.evaluate((element) => element === document.activeElement)).toBe(true);
    expect(await row("Temporary key").count()).toBe(1);
    // The dialog offers to deactivate instead.
    await page.keyboard.press("Enter");
    await dialog.waitFor();
    await dialog.getByRole("button", { name: "Deactivate instead" }).click();
    expect(await success("is inactive")).toContain("“Temporary key” is inactive");
    expect(await text(row("Temporary key").locator('[data-label="Status"] .badge').first())).toBe("Inactive");
    // Then delete it for good.
    await (await menu("Temporary key")).getByRole("button", { name: "Delete Temporary key" }).click();
    await dialog.waitFor();
    await dialog.getByRole("button", { name: "Delete permanently" }).click();
    expect(await success("was deleted")).toBe("The Anthropic credential “Temporary key” was deleted.");
    await row("Temporary key").waitFor({ state: "detached" });
    const list = await api("GET", `/api/provider-credentials/organization/${ORG.id}`);
    expect(list.credentials.map((c: { credential_name: string }) => c.credential_name)).toEqual(["Renamed elsewhere"]);
  });

  it("the filters live in the URL and survive a reload and a shared link", async () => {
    await createCredential(ORG.id, "gemini", "Gemini key");
    await open(page, `${portal.url}/?organization=${ORG.id}`);
    expect(await row("Gemini key").count()).toBe(1);
    await page.getByLabel("Provider", { exact: true }).selectOption("openai");
    await page.getByRole("button", { name: "Show credentials" }).click();
    await page.waitForURL((url) => url.searchParams.get("provider") === "openai");
    expect(new URL(page.url()).searchParams.get("organization")).toBe(ORG.id);
    await row("Gemini key").waitFor({ state: "detached" });
    expect(await row("Renamed elsewhere").count()).toBe(1);
    await page.reload();
    await hydrated(page);
    expect(await page.getByLabel("Organization", { exact: true }).inputValue()).toBe(ORG.id);
    expect(await page.getByLabel("Provider", { exact: true }).inputValue()).toBe("openai");
    expect(await row("Renamed elsewhere").count()).toBe(1);
    expect(await row("Gemini key").count()).toBe(0);
    expect(await text(page.getByRole("heading", { level: 2 }).first())).toBe(`OpenAI credentials of ${ORG.name}`);
    // The same link in another tab shows the same.
    const other = await context.newPage();
    await open(other, page.url());
    expect(await other.getByLabel("Provider", { exact: true }).inputValue()).toBe("openai");
    expect(await other.locator("tbody tr").count()).toBe(1);
    await other.close();
    // /credentials is the same page.
    await page.goto(`${portal.url}/credentials?organization=${ORG.id}&provider=gemini`);
    expect(path()).toBe(`/?organization=${ORG.id}&provider=gemini`);
    await hydrated(page);
    expect(await row("Gemini key").count()).toBe(1);
  });

  it("pages a large organisation, newest first", async () => {
    await api("POST", "/api/organizations", { organization_id: "org-big", name: "Big Org" });
    const ids: string[] = [];
    for (let i = 1; i <= 27; i++) ids.push((await createCredential("org-big", "fireworks", `Key ${String(i).padStart(2, "0")}`)).credential_id);
    await open(page, `${portal.url}/?organization=org-big`);
    const names = () => page.locator("tbody tr th").allInnerTexts();
    expect((await names()).length).toBe(25);
    expect((await names())[0]).toBe("Key 27");
    expect((await names())[24]).toBe("Key 03");
    await page.getByRole("link", { name: "Next page" }).click();
    await page.waitForURL((url) => url.searchParams.get("page") === "2");
    await page.getByText("Page 2").waitFor();
    expect(await names()).toEqual(["Key 02", "Key 01"]);
    expect(await page.getByRole("link", { name: "Next page" }).count()).toBe(0);
    await page.getByRole("link", { name: "First page" }).click();
    await page.getByText("Page 1").waitFor();
    expect((await names())[0]).toBe("Key 27");
    // Enough events for two pages of the audit log.
    for (const id of ids) await api("PUT", `/api/provider-credentials/${id}/deactivate`);
  });

  it("Organizations & Teams: teams, and the service's refusal to delete an organisation in use", async () => {
    await sidebar("Organizations & Teams").click();
    await page.waitForURL("**/organizations");
    await page.getByRole("link", { name: `Teams of ${ORG.name}` }).click();
    await page.getByRole("heading", { level: 1, name: new RegExp(ORG.name) }).waitFor();
    expect(await text(page.getByTestId("empty-state"))).toContain("no teams yet");
    await page.getByLabel("Team ID", { exact: true }).fill("team-search");
    await page.getByLabel("Name", { exact: true }).fill("Search");
    await page.getByRole("button", { name: "Create team" }).click();
    expect(await success("was created")).toBe("Team “Search” (team-search) was created.");
    expect(await text(page.getByRole("rowheader", { name: "Search" }))).toBe("Search");

    await sidebar("Organizations & Teams").click();
    await page.waitForURL("**/organizations");
    await page.getByRole("button", { name: `Delete ${ORG.name}` }).click();
    const dialog = page.getByRole("dialog", { name: `Delete organization “${ORG.name}”?` });
    await dialog.waitFor();
    await dialog.getByRole("button", { name: "Delete organization" }).click();
    expect(await failure("was not deleted")).toBe(
      `Organization ${ORG.id} was not deleted: organization "${ORG.id}" still has 2 credentials and 1 team; delete them first, so that nothing is lost by accident`,
    );
    expect(await page.getByRole("rowheader", { name: ORG.name }).count()).toBe(1);

    // A team goes after a confirmation.
    await page.getByRole("link", { name: `Teams of ${ORG.name}` }).click();
    await page.getByRole("button", { name: "Delete Search" }).click();
    await page.getByRole("dialog", { name: "Delete team “Search”?" }).getByRole("button", { name: "Delete team" }).click();
    expect(await success("was deleted")).toBe("Team team-search was deleted.");
    expect(await text(page.getByTestId("empty-state"))).toContain("no teams yet");

    // An empty organisation can be deleted.
    await api("POST", "/api/organizations", { organization_id: "org-empty", name: "Empty Org" });
    await open(page, `${portal.url}/organizations`);
    await page.getByRole("button", { name: "Delete Empty Org" }).click();
    await page.getByRole("dialog", { name: "Delete organization “Empty Org”?" }).getByRole("button", { name: "Delete organization" }).click();
    expect(await success("was deleted")).toBe("Organization org-empty was deleted.");
    expect(await page.getByRole("rowheader", { name: "Empty Org" }).count()).toBe(0);
  });

  it("Audit Log: who did what to which credential and when, filtered and paged", async () => {
    await sidebar("Audit Log").click();
    await page.waitForURL("**/audit");
    await page.getByLabel("Organization", { exact: true }).fill(ORG.id);
    await page.getByLabel("Action", { exact: true }).selectOption("credential.create");
    await page.getByRole("button", { name: "Show events" }).click();
    await page.waitForURL((url) => url.searchParams.get("action") === "credential.create");
    expect(new URL(page.url()).searchParams.get("organization")).toBe(ORG.id);
    const rows = page.locator("tbody tr");
    await rows.first().waitFor();
    const lines = await rows.allInnerTexts();
    // Newest first: Gemini key, Temporary key (both by the admin token's API calls), then the one made in the page.
    expect(lines.length).toBe(3);
    const mine = lines.find((line) => line.includes("Production OpenAI Key"))!;
    expect(mine).toContain(ADMIN.email);
    expect(mine).toContain("credential.create");
    expect(mine).toContain(ORG.id);
    expect(mine).toContain("OpenAI");
    expect(mine).toMatch(/\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/);
    expect(lines.every((line) => line.includes("credential.create"))).toBe(true);
    await page.reload();
    await hydrated(page);
    expect(await page.getByLabel("Action", { exact: true }).inputValue()).toBe("credential.create");

    // Paged: org-big has 27 creations, 27 deactivations and its own creation.
    await open(page, `${portal.url}/audit?organization=org-big`);
    expect(await rows.count()).toBe(50);
    await page.getByRole("link", { name: "Next page" }).click();
    await page.getByText("Page 2").waitFor();
    expect(await rows.count()).toBe(5);
    expect(await text(rows.last())).toContain("organization.create");
  });

  it("API Tokens: the new token is shown once with a copy button, and revoked after a confirmation", async () => {
    await sidebar("API Tokens").click();
    await page.waitForURL("**/tokens");
    await page.getByLabel("Name", { exact: true }).fill("llm-gateway");
    await page.getByLabel("resolve: may only resolve keys", { exact: true }).check();
    await page.getByRole("button", { name: "Create token" }).click();
    const panel = page.getByTestId("created-token");
    await panel.waitFor();
    expect(await panel.evaluate((element) => element === document.activeElement)).toBe(true);
    expect(await text(panel)).toContain("it will not be shown again");
    const token = await page.getByLabel("New resolve token", { exact: true }).inputValue();
    expect(token).toMatch(/^[A-Za-z0-9_-]{32,}$/);
    await panel.getByRole("button", { name: "Copy token" }).click();
    await panel.getByText("Copied to the clipboard.").waitFor();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(token);
    // The token works, with its scope: a resolve token may not list tokens.
    expect((await portal.request("GET", "/api/tokens", { token })).status).toBe(403);
    const tokenRow = page.locator("tbody tr").filter({ has: page.getByRole("rowheader", { name: "llm-gateway" }) });
    expect(await text(tokenRow)).toContain("resolve");
    expect(await text(tokenRow.locator('[data-label="Last used"]'))).not.toBe("");
    // Once stored, it is gone from the page for good.
    await panel.getByRole("link", { name: "Done: I have stored it" }).click();
    await panel.waitFor({ state: "detached" });
    expect(await page.content()).not.toContain(token);
    await page.reload();
    expect(await page.content()).not.toContain(token);
    await hydrated(page);

    await tokenRow.getByRole("button", { name: "Revoke llm-gateway" }).click();
    const dialog = page.getByRole("dialog", { name: "Revoke token “llm-gateway”?" });
    await dialog.waitFor();
    expect(await text(dialog)).toContain("refused within 5 seconds");
    await dialog.getByRole("button", { name: "Revoke token" }).click();
    expect(await success("was revoked")).toContain("Token llm-gateway was revoked");
    await tokenRow.waitFor({ state: "detached" });
  });

  it("signs out and is sent to the sign-in page", async () => {
    // A second tab, left open on the list.
    const stale = await context.newPage();
    await open(stale, `${portal.url}/?organization=${ORG.id}`);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL("**/login");
    // Its next action finds the session gone and goes to the sign-in page too; nothing changed.
    await (await menu("Renamed elsewhere", stale)).getByRole("button", { name: "Deactivate Renamed elsewhere" }).click();
    await stale.waitForURL((url) => url.pathname === "/login");
    await stale.close();
    const list = await api("GET", `/api/provider-credentials/organization/${ORG.id}`);
    expect(list.credentials.find((c: { credential_name: string }) => c.credential_name === "Renamed elsewhere").is_active).toBe(true);
    await page.goto(`${portal.url}/tokens`);
    expect(path()).toBe(`/login?redirectTo=${encodeURIComponent("/tokens")}`);
    const events = await api("GET", "/api/audit-events?action=admin.sign_out");
    expect(events.events[0].actor).toBe(ADMIN.email);
  });

  it("no key material ever left the portal, and no page broke its Content-Security-Policy", async () => {
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
    // Refused form posts (400, 409) are reported by Chromium as failed loads; nothing else may be logged.
    const unexpected = watch.problems.filter((problem) => !/Failed to load resource: the server responded with a status of (400|409)/.test(problem));
    expect(unexpected).toEqual([]);
  });
});
