import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { FailureKind, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import { e2eEnabled, expectNoSecrets, hydrated, launchChromium, newContext, open, PHONE, signInOnPage, watchPage, type PageWatch } from "../support/browser.js";

// The credentials page across a fleet: search as you type (and without JavaScript), the fleet views,
// the organisation typeahead among thousands, the remembered organisation, numbered paging, one line
// per credential on a desktop, and bulk selection. The service and the built portal on a real PostgreSQL.

const chromiumPath = inject("chromiumPath");

const ADMIN = { email: "fleet@example.com", password: "many keys in many locks" };
const ALPHA = { id: "org-alpha", name: "Alpha Labs" };
const BETA = { id: "org-beta", name: "Beta Works" };
const MANY = { id: "org-many", name: "Many Keys Inc" };
/** Organisations for the typeahead: the page must never load them all. */
const BULK_ORGS = Number(process.env.FLEET_BULK_ORGS ?? 2000);
const bulkId = (i: number) => `bulk-${String(i).padStart(4, "0")}`;
/** The organisation the typeahead looks for. */
const PICK = Math.min(1234, BULK_ORGS - 1);
const PICK_NAME = `Bulk Org ${String(PICK).padStart(4, "0")}`;

let portal: TestPortal;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let watch: PageWatch;
const secrets: string[] = [];
const ids: Record<string, string> = {};

function row(name: string, on: Page = page): Locator {
  return on.locator("tbody tr").filter({ has: on.getByRole("rowheader", { name, exact: true }) });
}

async function text(locator: Locator): Promise<string> {
  await locator.first().waitFor();
  return (await locator.first().innerText()).replace(/\s+/g, " ").trim();
}

async function rowNames(on: Page = page): Promise<string[]> {
  return (await on.locator("tbody tr th[scope=row]").allInnerTexts()).map((t) => t.trim());
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

const search = (on: Page = page) => new URL(on.url()).searchParams;

describe.skipIf(!e2eEnabled(chromiumPath))("the credentials page across the fleet", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(ADMIN.email, ADMIN.password);
    const { organizations, credentials } = portal.service.clients();
    for (const org of [ALPHA, BETA, MANY]) await organizations.createOrganization({ organizationId: org.id, name: org.name });
    await inParallel(
      Array.from({ length: BULK_ORGS }, (_, i) => i),
      8,
      (i) => organizations.createOrganization({ organizationId: bulkId(i), name: `Bulk Org ${String(i).padStart(4, "0")}` }),
    );
    const create = async (organizationId: string, provider: keyof typeof FAKE_KEYS, name: string) => {
      const apiKey = FAKE_KEYS[provider]();
      secrets.push(apiKey);
      const providerEnum = { openai: Provider.OPENAI, anthropic: Provider.ANTHROPIC, gemini: Provider.GEMINI, fireworks: Provider.FIREWORKS }[provider];
      const { credential } = await credentials.createCredential({ organizationId, provider: providerEnum, credentialName: name, apiKey });
      ids[name] = credential!.credentialId;
      return credential!;
    };
    await create(ALPHA.id, "openai", "Alpha OpenAI prod");
    await create(ALPHA.id, "anthropic", "Alpha Anthropic");
    await create(BETA.id, "openai", "Beta OpenAI prod");
    await create(BETA.id, "gemini", "Beta Gemini");
    await inParallel(
      Array.from({ length: 30 }, (_, i) => i + 1),
      8,
      (i) => create(MANY.id, "fireworks", `Key ${String(i).padStart(2, "0")}`),
    );
    // Failing, rotation due and inactive: one each.
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId: ids["Beta OpenAI prod"], kind: FailureKind.AUTHENTICATION });
    await portal.service.db.query("update provider_credentials set key_set_at = now() - interval '400 days' where id = $1", [ids["Alpha Anthropic"]]);
    await credentials.deactivateCredential({ credentialId: ids["Beta Gemini"] });

    context = await newContext(browser);
    page = await context.newPage();
    watch = await watchPage(page, portal.url);
  }, 180_000);

  afterAll(async () => {
    if (process.env.E2E_DEBUG) console.log(portal?.output.join("\n"));
    await browser?.close();
    await portal?.close();
  });

  it("signs in; with no organisation remembered yet, asks to choose one, and never loads every organisation", async () => {
    await page.goto(`${portal.url}/`);
    await hydrated(page);
    await signInOnPage(page, ADMIN.email, ADMIN.password);
    await hydrated(page);
    await page.getByRole("heading", { name: "Choose an organization" }).waitFor();
    const html = await page.content();
    expect(html).not.toContain(bulkId(1999));
    expect(html).not.toContain(bulkId(1000));
  });

  it("searches as you type, through the tRPC client, across organisations; the query lives in the URL", async () => {
    const asked: string[] = [];
    page.on("request", (request) => {
      if (new URL(request.url()).pathname.startsWith("/api/trpc/")) asked.push(request.url());
    });
    let loads = 0;
    page.on("load", () => loads++);
    const answered = page.waitForResponse((response) => response.url().includes("/api/trpc/credentials.search") && response.url().includes("prod"));
    await page.getByLabel("Search credentials", { exact: true }).pressSequentially("prod", { delay: 30 });
    expect((await answered).status()).toBe(200);
    await row("Beta OpenAI prod").waitFor();
    expect((await rowNames()).sort()).toEqual(["Alpha OpenAI prod", "Beta OpenAI prod"]);
    expect(asked.some((url) => url.includes("credentials.search"))).toBe(true);
    // Each result names its organisation, linking to its list.
    expect(await text(row("Beta OpenAI prod").locator('[data-label="Organization"]'))).toBe(BETA.name);
    expect(await row("Beta OpenAI prod").locator('[data-label="Organization"] a').getAttribute("href")).toBe(`/?organization=${BETA.id}`);
    await page.waitForURL((url) => url.searchParams.get("q") === "prod");
    expect(await text(page.getByTestId("search-status"))).toBe("2 credentials found");
    expect(await text(page.getByTestId("page-range"))).toBe("1–2 of 2");
    // No page load: the results came through /api/trpc only.
    expect(loads).toBe(0);

    // By organisation name, by credential id, and by key hint.
    await page.getByLabel("Search credentials", { exact: true }).fill(BETA.name);
    await row("Beta Gemini").waitFor();
    expect((await rowNames()).sort()).toEqual(["Beta Gemini", "Beta OpenAI prod"]);
    await page.getByLabel("Search credentials", { exact: true }).fill(ids["Key 07"]);
    await row("Key 07").waitFor();
    expect(await rowNames()).toEqual(["Key 07"]);
    const { credentials } = portal.service.clients();
    const hint = (await credentials.getCredential({ credentialId: ids["Alpha Anthropic"] })).credential!.keyHint;
    await page.getByLabel("Search credentials", { exact: true }).fill(hint.slice(-4));
    await row("Alpha Anthropic").waitFor();
    expect(await rowNames()).toContain("Alpha Anthropic");
    // Nothing found is said plainly.
    await page.getByLabel("Search credentials", { exact: true }).fill("no-such-credential-anywhere");
    await page.getByTestId("empty-state").filter({ hasText: "No credential matches “no-such-credential-anywhere”" }).waitFor();
    // A reload renders the same search on the server.
    await page.waitForURL((url) => url.searchParams.get("q") === "no-such-credential-anywhere");
    await page.getByLabel("Search credentials", { exact: true }).fill("prod");
    await page.waitForURL((url) => url.searchParams.get("q") === "prod");
    await page.reload();
    await hydrated(page);
    expect((await rowNames()).sort()).toEqual(["Alpha OpenAI prod", "Beta OpenAI prod"]);
    expect(await page.getByLabel("Search credentials", { exact: true }).inputValue()).toBe("prod");
  });

  it("the fleet views: failing, rotation due and inactive across organisations, and organisations with no key and no fallback", async () => {
    await open(page, `${portal.url}/?view=failing`);
    expect(await rowNames()).toEqual(["Beta OpenAI prod"]);
    expect(await page.getByRole("link", { name: "Failing", exact: true }).getAttribute("aria-current")).toBe("page");
    expect(await text(page.getByRole("heading", { level: 2 }))).toBe("Failing credentials in all organizations");

    await page.getByRole("link", { name: "Rotation due", exact: true }).click();
    await page.waitForURL((url) => url.searchParams.get("view") === "rotation_due");
    await row("Beta OpenAI prod").waitFor({ state: "detached" });
    expect(await rowNames()).toEqual(["Alpha Anthropic"]);
    expect(await row("Alpha Anthropic").getByTestId("rotation-due-badge").count()).toBe(1);

    await page.getByRole("link", { name: "Inactive", exact: true }).click();
    await page.waitForURL((url) => url.searchParams.get("view") === "inactive");
    await row("Alpha Anthropic").waitFor({ state: "detached" });
    expect(await rowNames()).toEqual(["Beta Gemini"]);
    expect(await text(row("Beta Gemini").locator('[data-label="Status"] .badge').first())).toBe("Inactive");

    // Typing within a view searches within it.
    const answered = page.waitForResponse((response) => response.url().includes("/api/trpc/credentials.search"));
    await page.getByLabel("Search credentials", { exact: true }).fill("Alpha");
    await answered;
    await page.getByTestId("empty-state").filter({ hasText: "No credential matches “Alpha” in the Inactive view" }).waitFor();
    await page.waitForURL((url) => url.searchParams.get("view") === "inactive" && url.searchParams.get("q") === "Alpha");

    await page.getByRole("link", { name: "No key and no fallback", exact: true }).click();
    await page.waitForURL((url) => url.searchParams.get("view") === "uncovered" && !url.searchParams.has("q"));
    await page.getByRole("heading", { name: "Organizations with no key and no fallback" }).waitFor();
    const first = page.locator(`tr[data-organization-id="${bulkId(0)}"]`);
    expect(await text(first.locator("th"))).toBe(`Bulk Org 0000 ${bulkId(0)}`);
    const add = first.getByRole("link", { name: `Add OpenAI credential to Bulk Org 0000` });
    expect(await add.getAttribute("href")).toBe(`/credentials/new?organization=${bulkId(0)}&provider=openai`);
    // Every organisation lacks some provider (no environment fallback in this service): all are listed, 25 a page.
    expect(await text(page.getByTestId("page-range"))).toBe(`1–25 of ${BULK_ORGS + 3}`);

    // For one provider: Alpha and Beta have an active OpenAI key, so they are not listed.
    await open(page, `${portal.url}/?view=uncovered&provider=openai&page=${Math.ceil((BULK_ORGS + 1) / 25)}`);
    expect(await text(page.getByTestId("page-range"))).toBe(`${BULK_ORGS + 1}–${BULK_ORGS + 1} of ${BULK_ORGS + 1}`);
    expect(await page.locator("tbody tr").getAttribute("data-organization-id")).toBe(MANY.id);
    expect(await text(page.locator("tbody tr td"))).toBe("Add OpenAI credential to Many Keys Inc");
    await open(page, `${portal.url}/?view=uncovered&provider=openai`);
    await page.getByRole("link", { name: "Add OpenAI credential to Bulk Org 0000" }).click();
    await page.waitForURL((url) => url.pathname === "/credentials/new");
    expect(search().get("organization")).toBe(bulkId(0));
    expect(search().get("provider")).toBe("openai");
  });

  it("the organisation picker suggests as you type among thousands, opens an exact id, and is remembered", async () => {
    await open(page, `${portal.url}/?organization=`);
    await page.getByRole("heading", { name: "Choose an organization" }).waitFor();
    const picker = page.getByLabel("Organization", { exact: true });
    const answered = page.waitForResponse(
      (response) => response.url().includes("/api/trpc/organizations.list") && decodeURIComponent(response.url()).includes(PICK_NAME),
    );
    const started = Date.now();
    await picker.pressSequentially(PICK_NAME, { delay: 20 });
    const response = await answered;
    expect(response.status()).toBe(200);
    await page.locator(`datalist option[value="${bulkId(PICK)}"]`).waitFor({ state: "attached" });
    expect(Date.now() - started).toBeLessThan(5_000);
    const options = await page
      .getByTestId("organization-suggestions")
      .locator("option")
      .evaluateAll((all) => all.map((o) => ({ value: (o as HTMLOptionElement).value, label: o.textContent })));
    expect(options).toEqual([{ value: bulkId(PICK), label: PICK_NAME }]);
    // A broader text gives a page of suggestions, never the whole list.
    await picker.fill("");
    await picker.pressSequentially("Bulk", { delay: 20 });
    await page.waitForFunction(() => document.querySelectorAll("datalist option").length > 1);
    expect(await page.getByTestId("organization-suggestions").locator("option").count()).toBeLessThanOrEqual(20);

    // An exact id opens that organisation.
    await picker.fill(BETA.id);
    await Promise.all([page.waitForURL((url) => url.searchParams.get("organization") === BETA.id), picker.press("Enter")]);
    await page.getByRole("heading", { name: `Credentials of ${BETA.name}` }).waitFor();
    expect((await rowNames()).sort()).toEqual(["Beta Gemini", "Beta OpenAI prod"]);

    // `/` with no parameters opens it again (a cookie), in this browser only.
    await open(page, `${portal.url}/`);
    await page.getByRole("heading", { name: `Credentials of ${BETA.name}` }).waitFor();
    expect(await picker.inputValue()).toBe(BETA.id);
    const cookie = (await context.cookies(portal.url)).find((c) => c.name === "last_organization");
    expect(cookie?.value).toBe(BETA.id);
    expect(cookie?.httpOnly).toBe(true);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Provider Credentials", exact: true }).click();
    await page.getByRole("heading", { name: `Credentials of ${BETA.name}` }).waitFor();
  });

  it("pages by number: the range, First / Previous / Next / Last, and the page size, all in the URL", async () => {
    await open(page, `${portal.url}/?organization=${MANY.id}`);
    expect(await text(page.getByTestId("page-range"))).toBe("1–25 of 30");
    expect(await page.locator("tbody tr").count()).toBe(25);
    expect(await page.getByRole("link", { name: "First page" }).count()).toBe(0);
    await page.getByRole("link", { name: "Last page" }).click();
    await page.waitForURL((url) => url.searchParams.get("page") === "2");
    await page.getByTestId("page-range").filter({ hasText: "26–30 of 30" }).waitFor();
    expect(await page.locator("tbody tr").count()).toBe(5);
    expect(await page.getByRole("link", { name: "Next page" }).count()).toBe(0);
    await page.getByRole("link", { name: "Previous page" }).click();
    await page.waitForURL((url) => !url.searchParams.has("page"));
    await page.getByTestId("page-range").filter({ hasText: "1–25 of 30" }).waitFor();
    await page.getByRole("link", { name: "Next page" }).click();
    await page.waitForURL((url) => url.searchParams.get("page") === "2");
    await page.getByRole("link", { name: "First page" }).click();
    await page.waitForURL((url) => !url.searchParams.has("page"));
    await page.getByRole("link", { name: "50 credentials per page" }).click();
    await page.waitForURL((url) => url.searchParams.get("size") === "50");
    await page.getByTestId("page-range").filter({ hasText: "1–30 of 30" }).waitFor();
    expect(await page.locator("tbody tr").count()).toBe(30);
    expect(await page.getByRole("link", { name: "Last page" }).count()).toBe(0);
    await page.reload();
    await hydrated(page);
    expect(await page.locator("tbody tr").count()).toBe(30);
    // The search pages the same way.
    await open(page, `${portal.url}/?q=Key&size=25&page=2`);
    expect(await text(page.getByTestId("page-range"))).toBe("26–30 of 30");
  });

  it("one line per credential on a desktop, a readable card per credential on a phone", async () => {
    await open(page, `${portal.url}/?organization=${MANY.id}`);
    const heights = await page.locator("tbody tr").evaluateAll((rows) => rows.map((r) => r.getBoundingClientRect().height));
    expect(heights.length).toBe(25);
    for (const height of heights) expect(height).toBeLessThan(60);
    // The actions are in the row's menu.
    const [name] = await rowNames();
    await row(name).locator(".row-menu > summary").click();
    await row(name)
      .getByRole("link", { name: `Edit ${name}` })
      .waitFor();
    await row(name)
      .getByRole("button", { name: `Deactivate ${name}` })
      .waitFor();
    await page.keyboard.press("Escape");
    await row(name)
      .getByRole("link", { name: `Edit ${name}` })
      .waitFor({ state: "hidden" });

    const phone = await context.newPage();
    await phone.setViewportSize(PHONE);
    await open(phone, `${portal.url}/?organization=${MANY.id}`);
    // (A stacked table is no longer a table to the accessibility tree: the row is found by its credential.)
    const card = phone.locator(`tbody tr[data-credential-id="${ids[name]}"]`);
    const box = (await card.boundingBox())!;
    expect(box.width).toBeLessThanOrEqual(PHONE.width);
    expect(box.height).toBeGreaterThan(100);
    expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
    expect(await text(card.locator('[data-label="Provider"]'))).toBe("Fireworks AI");
    await phone.close();
  });

  it("bulk selection sends the chosen credentials to /credentials/bulk", async () => {
    await open(page, `${portal.url}/?organization=${MANY.id}`);
    const names = await rowNames();
    const [first, second] = [names[1], names[4]];
    await page.getByLabel(`Select ${first}`, { exact: true }).check();
    await page.getByLabel(`Select ${second}`, { exact: true }).check();
    expect(await text(page.locator(".bulk-count"))).toBe("2 selected");
    // Select all: every row of the page, and back.
    await page.getByLabel("Select all credentials on this page").check();
    expect(await page.locator('tbody input[name="credential_id"]:checked').count()).toBe(25);
    await page.getByLabel("Select all credentials on this page").uncheck();
    expect(await page.locator('tbody input[name="credential_id"]:checked').count()).toBe(0);
    await page.getByLabel(`Select ${first}`, { exact: true }).check();
    await page.getByLabel(`Select ${second}`, { exact: true }).check();
    await page.getByRole("form", { name: "Selected credentials" }).getByRole("button", { name: "Deactivate", exact: true }).click();
    await page.waitForURL((url) => url.pathname === "/credentials/bulk");
    const params = search();
    expect(params.get("action")).toBe("deactivate");
    expect(params.getAll("credential_id").sort()).toEqual([ids[first], ids[second]].sort());
    expect(params.get("returnTo")).toBe(`/?organization=${MANY.id}`);
  });

  it("without JavaScript: the search, the fleet views and the organisation picker are GET forms the server renders", async () => {
    const plain = await newContext(browser, { javaScriptEnabled: false });
    const noScript = await plain.newPage();
    const plainWatch = await watchPage(noScript, portal.url);
    await noScript.goto(`${portal.url}/login`);
    await signInOnPage(noScript, ADMIN.email, ADMIN.password);
    await noScript.goto(`${portal.url}/`);
    await noScript.getByRole("heading", { name: "Choose an organization" }).waitFor();

    await noScript.getByLabel("Search credentials", { exact: true }).fill("beta");
    await Promise.all([noScript.waitForEvent("load"), noScript.getByRole("button", { name: "Search", exact: true }).click()]);
    expect(search(noScript).get("q")).toBe("beta");
    expect((await rowNames(noScript)).sort()).toEqual(["Beta Gemini", "Beta OpenAI prod"]);
    expect(await text(noScript.getByTestId("page-range"))).toBe("1–2 of 2");

    await Promise.all([noScript.waitForEvent("load"), noScript.getByRole("link", { name: "Failing", exact: true }).click()]);
    expect(search(noScript).get("view")).toBe("failing");
    expect(await rowNames(noScript)).toEqual(["Beta OpenAI prod"]);

    // The picker: a name that is no id lists the organisations that match; one opens.
    await noScript.getByLabel("Organization", { exact: true }).fill("alpha");
    await Promise.all([noScript.waitForEvent("load"), noScript.getByRole("button", { name: "Show credentials" }).click()]);
    const matches = noScript.getByTestId("organization-matches");
    expect(await text(matches.getByRole("heading"))).toBe("Organizations matching “alpha”");
    await Promise.all([noScript.waitForEvent("load"), matches.getByRole("link", { name: ALPHA.name }).click()]);
    expect(search(noScript).get("organization")).toBe(ALPHA.id);
    expect((await rowNames(noScript)).sort()).toEqual(["Alpha Anthropic", "Alpha OpenAI prod"]);

    // The row menu opens without scripts; bulk selection posts nothing until confirmed.
    await noScript.getByLabel("Select Alpha Anthropic", { exact: true }).check();
    await Promise.all([
      noScript.waitForEvent("load"),
      noScript.getByRole("form", { name: "Selected credentials" }).getByRole("button", { name: "Activate", exact: true }).click(),
    ]);
    expect(new URL(noScript.url()).pathname).toBe("/credentials/bulk");
    expect(search(noScript).getAll("credential_id")).toEqual([ids["Alpha Anthropic"]]);
    await expectNoSecrets(noScript, plainWatch, secrets);
    await plain.close();
  });

  it("no key material ever left the portal, and no page broke its Content-Security-Policy", async () => {
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
    expect(watch.problems.filter((p) => !/Failed to load resource: the server responded with a status of 404/.test(p))).toEqual([]);
  });
});
