import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import {
  axeScan,
  blocking,
  e2eEnabled,
  expectNoSecrets,
  hydrated,
  launchChromium,
  newContext,
  open,
  signInOnPage,
  watchPage,
  type PageWatch,
} from "../support/browser.js";

// The organisation typeahead in the forms that used to load every organisation into a <select>: Add
// credential (a field of a larger form, checked by the service) and the audit log's organisation filter.
// Thousands of organisations, the service and the built portal on a real PostgreSQL, driven through Chromium,
// with JavaScript (suggestions as you type) and without (an exact id).

const chromiumPath = inject("chromiumPath");

const ADMIN = { email: "picker@example.com", password: "one among thousands" };
/** Organisations: the pages must never load them all. */
const BULK_ORGS = Number(process.env.PICKER_BULK_ORGS ?? 2000);
const bulkId = (i: number) => `pick-${String(i).padStart(4, "0")}`;
const bulkName = (i: number) => `Picker Org ${String(i).padStart(4, "0")}`;
/** The organisations looked for: past the first 1,000 that the old select held. */
const PICK = Math.min(1734, BULK_ORGS - 1);
const PLAIN = Math.min(1500, BULK_ORGS - 2);
/** Suggestions shown at a time (OrganizationPicker). */
const SUGGESTIONS = 20;

let portal: TestPortal;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let watch: PageWatch;
/** The most suggestions any page of the context held at once (reported by the page as its datalists change). */
let mostSuggestions = 0;
const secrets: string[] = [];

function key(): string {
  const value = FAKE_KEYS.openai();
  secrets.push(value);
  return value;
}

async function text(locator: Locator): Promise<string> {
  await locator.first().waitFor();
  return (await locator.first().innerText()).replace(/\s+/g, " ").trim();
}

/** Runs `work` on `items`, `width` at a time. */
async function inParallel<T>(items: T[], width: number, work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await work(items[next++]);
    }),
  );
}

const search = (on: Page) => new URL(on.url()).searchParams;

async function credentialsOf(organizationId: string): Promise<string[]> {
  const rows = await portal.service.db.query<{ credential_name: string }>(
    "select credential_name from provider_credentials where organization_id = $1 order by credential_name",
    [organizationId],
  );
  return rows.map((r) => r.credential_name);
}

/** Types `typed` into `picker` and waits for the suggestion of `organizationId` (asked of organizations.list through tRPC). */
async function suggestionFor(on: Page, picker: Locator, typed: string, organizationId: string): Promise<void> {
  const answered = on.waitForResponse(
    (response) => response.url().includes("/api/trpc/organizations.list") && decodeURIComponent(response.url()).includes(typed),
  );
  await picker.pressSequentially(typed, { delay: 20 });
  expect((await answered).status()).toBe(200);
  await on.locator(`datalist option[value="${organizationId}"]`).waitFor({ state: "attached" });
}

/**
 * Picks the one suggestion: the field takes the option's value, as the browser's own list under the field
 * gives it (headless Chromium draws no such list to click, so the value is taken from the option itself).
 */
async function pickSuggestion(on: Page, picker: Locator, organizationId: string): Promise<void> {
  const option = on.getByTestId("organization-suggestions").locator("option");
  expect(await option.count()).toBe(1);
  await picker.fill((await option.getAttribute("value"))!);
  expect(await picker.inputValue()).toBe(organizationId);
}

/** A page's HTML names no more organisations than `most` (those it shows), and its suggestions are empty until something is typed. */
function expectFewOrganizations(html: string, most = 1): void {
  const named = new Set(html.match(/pick-\d{4}/g) ?? []);
  expect(named.size).toBeLessThanOrEqual(most);
  const lists = html.match(/<datalist[^>]*>[\s\S]*?<\/datalist>/g) ?? [];
  expect(lists).toHaveLength(1);
  expect(lists[0]).not.toContain("<option");
}

describe.skipIf(!e2eEnabled(chromiumPath))("the organisation typeahead in Add credential and the audit log", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(ADMIN.email, ADMIN.password);
    const { organizations } = portal.service.clients();
    await inParallel(
      Array.from({ length: BULK_ORGS }, (_, i) => i),
      8,
      (i) => organizations.createOrganization({ organizationId: bulkId(i), name: bulkName(i) }),
    );

    context = await newContext(browser);
    // Every datalist of every page, as it changes: the most options it ever held.
    await context.exposeBinding("__suggestionsSeen", (_source, count: number) => {
      mostSuggestions = Math.max(mostSuggestions, count);
    });
    await context.addInitScript(() => {
      const report = () => {
        const seen = (window as unknown as { __suggestionsSeen?: (count: number) => void }).__suggestionsSeen;
        for (const list of document.querySelectorAll("datalist")) seen?.(list.options.length);
      };
      new MutationObserver(report).observe(document, { childList: true, subtree: true });
    });
    page = await context.newPage();
    watch = await watchPage(page, portal.url);
    await page.goto(`${portal.url}/login`);
    await signInOnPage(page, ADMIN.email, ADMIN.password);
  }, 180_000);

  afterAll(async () => {
    if (process.env.E2E_DEBUG) console.log(portal?.output.join("\n"));
    await browser?.close();
    await portal?.close();
  });

  it("Add credential: type part of a name, pick the suggestion, and the credential is created in that organisation", async () => {
    const loaded = await page.goto(`${portal.url}/credentials/new`);
    await hydrated(page);
    expectFewOrganizations(await loaded!.text());
    const picker = page.getByLabel("Organization (required)", { exact: true });
    expect(await picker.inputValue()).toBe("");
    expect(await picker.getAttribute("required")).not.toBeNull();
    expect(await page.getByTestId("organization-suggestions").locator("option").count()).toBe(0);

    // A broad text: a page of suggestions, never the whole list.
    await suggestionFor(page, picker, "Picker Org", bulkId(0));
    expect(await page.getByTestId("organization-suggestions").locator("option").count()).toBe(SUGGESTIONS);
    await picker.fill("");

    await suggestionFor(page, picker, `Org ${String(PICK).padStart(4, "0")}`, bulkId(PICK));
    const options = await page
      .getByTestId("organization-suggestions")
      .locator("option")
      .evaluateAll((all) => all.map((o) => ({ value: (o as HTMLOptionElement).value, label: o.textContent })));
    expect(options).toEqual([{ value: bulkId(PICK), label: bulkName(PICK) }]);
    await pickSuggestion(page, picker, bulkId(PICK));
    // The field names the organisation chosen.
    await page
      .locator("#organization_id-hint")
      .filter({ hasText: bulkName(PICK) })
      .waitFor();

    await page.getByLabel("Provider", { exact: true }).selectOption("openai");
    await page.getByLabel("Credential Name", { exact: true }).fill("Picked by name");
    await page.getByLabel("API Key", { exact: true }).fill(key());
    await Promise.all([page.waitForURL((url) => url.pathname === "/"), page.getByRole("button", { name: "Add credential" }).click()]);
    expect(search(page).get("organization")).toBe(bulkId(PICK));
    await page.getByTestId("feedback-success").filter({ hasText: "“Picked by name” was added" }).waitFor();
    expect(await credentialsOf(bulkId(PICK))).toEqual(["Picked by name"]);
  });

  it("Add credential: a link with ?organization= fills the field in, with the organisation's name", async () => {
    // The organisation's page (the credentials list) links to Add credential for it.
    await open(page, `${portal.url}/?organization=${bulkId(42)}`);
    await Promise.all([
      page.waitForURL((url) => url.pathname === "/credentials/new"),
      page.getByTestId("empty-state").getByRole("link", { name: "Add the first credential" }).click(),
    ]);
    expect(search(page).get("organization")).toBe(bulkId(42));
    await hydrated(page);
    expect(await page.getByLabel("Organization (required)", { exact: true }).inputValue()).toBe(bulkId(42));
    expect(await text(page.locator("#organization_id-hint"))).toBe(bulkName(42));
  });

  it("Add credential: an unknown organisation is one error, at the field, and the form keeps what was typed", async () => {
    await open(page, `${portal.url}/credentials/new?organization=${bulkId(7)}`);
    const picker = page.getByLabel("Organization (required)", { exact: true });
    await picker.fill("no-such-org");
    await page.getByLabel("Credential Name", { exact: true }).fill("Nowhere key");
    await page.getByLabel("API Key", { exact: true }).fill(key());
    await page.getByRole("button", { name: "Add credential" }).click();
    const error = page.locator("#organization_id-error");
    expect(await text(error)).toBe(
      "There is no organization with the ID “no-such-org”. Type an organization's ID, or part of its name and choose a suggestion.",
    );
    expect(await page.locator(".field-error").count()).toBe(1);
    expect(await text(page.locator("#form-error"))).toBe("Check the highlighted field.");
    expect(await picker.getAttribute("aria-invalid")).toBe("true");
    expect((await picker.getAttribute("aria-describedby"))?.split(" ")[0]).toBe("organization_id-error");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("organization_id");
    // What was typed stays, and nothing was saved.
    expect(new URL(page.url()).pathname).toBe("/credentials/new");
    expect(await picker.inputValue()).toBe("no-such-org");
    expect(await page.getByLabel("Credential Name", { exact: true }).inputValue()).toBe("Nowhere key");
    expect(await credentialsOf("no-such-org")).toEqual([]);
    expect(await credentialsOf(bulkId(7))).toEqual([]);
    expect(blocking(await axeScan(page))).toEqual([]);
    await expectNoSecrets(page, watch, secrets);
  });

  it("the audit log: filtered by an organisation picked through the picker, kept in the URL", async () => {
    const loaded = await page.goto(`${portal.url}/audit`);
    await hydrated(page);
    // The organisations of the events shown (a page of 50), and no other.
    expectFewOrganizations(await loaded!.text(), 50);
    const picker = page.getByLabel("Organization", { exact: true });
    await suggestionFor(page, picker, bulkName(PICK), bulkId(PICK));
    await pickSuggestion(page, picker, bulkId(PICK));
    await Promise.all([
      page.waitForURL((url) => url.searchParams.get("organization") === bulkId(PICK)),
      page.getByRole("button", { name: "Show events" }).click(),
    ]);
    const rows = page.locator("tbody tr");
    await rows.first().waitFor();
    const lines = (await rows.allInnerTexts()).map((line) => line.replace(/\s+/g, " "));
    // Its creation and the credential added above, newest first; no other organisation's events.
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain("credential.create");
    expect(lines[0]).toContain("Picked by name");
    expect(lines[1]).toContain("organization.create");
    expect(lines.every((line) => line.includes(`${bulkName(PICK)} (${bulkId(PICK)})`))).toBe(true);
    // A reload, or the link shared, shows the same.
    await page.reload();
    await hydrated(page);
    expect(await picker.inputValue()).toBe(bulkId(PICK));
    expect(await text(page.locator("#filter-organization-hint"))).toBe(bulkName(PICK));
    expect(await rows.count()).toBe(2);
    expect(await page.getByRole("link", { name: "CSV" }).getAttribute("href")).toContain(`organization=${bulkId(PICK)}`);
    // Emptied, the filter shows every organisation's events again.
    await picker.fill("");
    await Promise.all([page.waitForURL((url) => !url.searchParams.get("organization")), page.getByRole("button", { name: "Show events" }).click()]);
    await page.getByRole("link", { name: "Next page" }).waitFor();
    // A name in the link (no id): said at the field, with the organisations it matches.
    await open(page, `${portal.url}/audit?organization=${encodeURIComponent(bulkName(PICK))}`);
    expect(await text(page.locator("#filter-organization-error"))).toBe(
      `There is no organization with the ID “${bulkName(PICK)}”. Did you mean one of those below?`,
    );
    expect(await page.getByTestId("organization-matches").getByRole("link").allInnerTexts()).toEqual([bulkName(PICK)]);
    expect(await picker.getAttribute("aria-invalid")).toBe("true");
    expect(blocking(await axeScan(page))).toEqual([]);
  });

  it("no page held more than a page of suggestions", () => {
    expect(mostSuggestions).toBeGreaterThan(0);
    expect(mostSuggestions).toBeLessThanOrEqual(SUGGESTIONS);
  });

  it("without JavaScript: an exact id adds the credential and filters the audit log; a name is answered with the matches", async () => {
    const plain = await newContext(browser, { javaScriptEnabled: false });
    const noScript = await plain.newPage();
    const plainWatch = await watchPage(noScript, portal.url);
    await noScript.goto(`${portal.url}/login`);
    await signInOnPage(noScript, ADMIN.email, ADMIN.password);
    const submit = (button: Locator) => Promise.all([noScript.waitForEvent("load"), button.click()]);

    const form = await noScript.goto(`${portal.url}/credentials/new`);
    expectFewOrganizations(await form!.text());
    expect(await noScript.getByTestId("organization-suggestions").locator("option").count()).toBe(0);
    const picker = noScript.getByLabel("Organization (required)", { exact: true });

    // A name is no id: one error at the field, naming the organisations that match, and the form as typed.
    await picker.fill(bulkName(PLAIN));
    await noScript.getByLabel("Credential Name", { exact: true }).fill("Typed by id");
    await noScript.getByLabel("API Key", { exact: true }).fill(key());
    await submit(noScript.getByRole("button", { name: "Add credential" }));
    expect(await text(noScript.locator("#organization_id-error"))).toBe(
      `There is no organization with the ID “${bulkName(PLAIN)}”. Type its ID: ${bulkName(PLAIN)} (${bulkId(PLAIN)}).`,
    );
    expect(await noScript.locator(".field-error").count()).toBe(1);
    expect(await picker.inputValue()).toBe(bulkName(PLAIN));
    expect(await noScript.getByLabel("Credential Name", { exact: true }).inputValue()).toBe("Typed by id");
    // The key is never sent back: it is typed again.
    expect(await noScript.getByLabel("API Key", { exact: true }).inputValue()).toBe("");

    // The exact id: created in that organisation.
    await picker.fill(bulkId(PLAIN));
    await noScript.getByLabel("API Key", { exact: true }).fill(key());
    await submit(noScript.getByRole("button", { name: "Add credential" }));
    expect(new URL(noScript.url()).pathname).toBe("/");
    expect(search(noScript).get("organization")).toBe(bulkId(PLAIN));
    expect(await credentialsOf(bulkId(PLAIN))).toEqual(["Typed by id"]);

    // The audit log's filter: the exact id, in the URL.
    await noScript.goto(`${portal.url}/audit`);
    await noScript.getByLabel("Organization", { exact: true }).fill(bulkId(PLAIN));
    await submit(noScript.getByRole("button", { name: "Show events" }));
    expect(search(noScript).get("organization")).toBe(bulkId(PLAIN));
    const lines = await noScript.locator("tbody tr").allInnerTexts();
    expect(lines).toHaveLength(2);
    expect(lines.every((line) => line.includes(bulkId(PLAIN)))).toBe(true);
    expect(await noScript.getByLabel("Organization", { exact: true }).inputValue()).toBe(bulkId(PLAIN));

    // A name: said at the field, with the organisations it matches as links that filter by them.
    await noScript.getByLabel("Organization", { exact: true }).fill(`Org ${String(PLAIN).padStart(4, "0")}`);
    await submit(noScript.getByRole("button", { name: "Show events" }));
    expect(await text(noScript.locator("#filter-organization-error"))).toContain("There is no organization with the ID");
    const matches = noScript.getByTestId("organization-matches");
    await submit(matches.getByRole("link", { name: bulkName(PLAIN) }));
    expect(search(noScript).get("organization")).toBe(bulkId(PLAIN));
    expect(await noScript.locator("tbody tr").count()).toBe(2);

    await expectNoSecrets(noScript, plainWatch, secrets);
    expect(plainWatch.problems.filter((p) => !/status of 40\d/.test(p))).toEqual([]);
    await plain.close();
  });

  it("the audit log does not show a key pasted into its organisation filter by mistake", async () => {
    const pasted = FAKE_KEYS.openai(); // short enough to pass for an id
    const response = await page.goto(`${portal.url}/audit?organization=${encodeURIComponent(pasted)}`);
    expect(response!.status()).toBe(200);
    const picker = page.locator("#filter-organization");
    expect(await picker.inputValue()).not.toContain(pasted);
    expect(await picker.inputValue()).toBe(`sk-…${pasted.slice(-4)}`); // the masked hint, as everywhere
    // Shown nowhere on the page (the links that keep the filters repeat the page's own address).
    expect(await page.locator("main").innerText()).not.toContain(pasted);
  });

  it("no key material ever left the portal, and no page broke its Content-Security-Policy", async () => {
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
    expect(watch.problems.filter((p) => !/Failed to load resource: the server responded with a status of 40\d/.test(p))).toEqual([]);
  });
});
