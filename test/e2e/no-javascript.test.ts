import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, Locator, Page } from "playwright-core";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import { e2eEnabled, expectNoSecrets, launchChromium, newContext, signInOnPage, watchPage, type PageWatch } from "../support/browser.js";

// The same pages with JavaScript turned off: every form is a plain HTML form
// posting to a SvelteKit action, every confirmation a page of its own.

const chromiumPath = inject("chromiumPath");

const ADMIN = { email: "grace@example.com", password: "compiler moths at midnight" };

let portal: TestPortal;
let browser: Browser;
let page: Page;
let watch: PageWatch;
const secrets: string[] = [];

function row(name: string): Locator {
  return page.locator("tbody tr").filter({ has: page.getByRole("rowheader", { name, exact: true }) });
}

/** A credential's row with its Actions menu open (its buttons and links live there). */
async function menu(name: string): Promise<Locator> {
  const found = page.locator("tbody tr").filter({ has: page.getByRole("rowheader", { name, exact: true }) });
  const details = found.locator(".row-menu");
  if (!(await details.evaluate((element) => (element as HTMLDetailsElement).open))) await details.locator("> summary").click();
  return found;
}

async function text(locator: Locator): Promise<string> {
  await locator.first().waitFor();
  return (await locator.first().innerText()).replace(/\s+/g, " ").trim();
}

async function feedback(kind: "success" | "error"): Promise<string> {
  return text(page.getByTestId(`feedback-${kind}`).locator(".notice"));
}

/** Clicks a submit button or link and waits for the page that comes back (a full page load, no scripts). */
async function submit(locator: Locator): Promise<void> {
  await Promise.all([page.waitForEvent("load"), locator.click()]);
}

const path = () => {
  const url = new URL(page.url());
  return `${url.pathname}${url.search}`;
};

describe.skipIf(!e2eEnabled(chromiumPath))("the portal without JavaScript", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(ADMIN.email, ADMIN.password);
    const context = await newContext(browser, { javaScriptEnabled: false });
    page = await context.newPage();
    watch = await watchPage(page, portal.url);
  });

  afterAll(async () => {
    await browser?.close();
    await portal?.close();
  });

  it("signs in through the plain form and comes back to the page asked for", async () => {
    await page.goto(`${portal.url}/organizations`);
    expect(path()).toBe(`/login?redirectTo=${encodeURIComponent("/organizations")}`);
    await signInOnPage(page, ADMIN.email, ADMIN.password);
    expect(path()).toBe("/organizations");
    expect(await page.evaluate(() => document.documentElement.dataset.hydrated ?? "no")).toBe("no");
  });

  it("creates an organisation with a form post", async () => {
    await page.getByLabel("Organization ID", { exact: true }).fill("org-plain");
    await page.getByLabel("Name", { exact: true }).fill("Plain HTML Ltd");
    await submit(page.getByRole("button", { name: "Create organization" }));
    expect(path()).toBe("/organizations");
    expect(await feedback("success")).toContain("Organization “Plain HTML Ltd” (org-plain) was created");
    // The message is shown once: it is gone on the next page.
    await page.reload();
    expect(await page.getByTestId("feedback-success").locator(".notice").count()).toBe(0);
  });

  it("filters with a GET form: the choice is in the URL", async () => {
    await page.goto(`${portal.url}/`);
    await page.getByLabel("Organization", { exact: true }).fill("org-plain");
    await page.getByLabel("Provider", { exact: true }).selectOption("fireworks");
    await submit(page.getByRole("button", { name: "Show credentials" }));
    const url = new URL(page.url());
    expect(url.searchParams.get("organization")).toBe("org-plain");
    expect(url.searchParams.get("provider")).toBe("fireworks");
    expect(await text(page.getByTestId("empty-state"))).toContain("no Fireworks AI credential yet");
  });

  it("adds a credential; a refused key is explained at the field, and the key is never sent back", async () => {
    await submit(page.getByRole("link", { name: "Add Provider Credential" }));
    expect(path()).toBe("/credentials/new?organization=org-plain&provider=fireworks");
    expect(await page.getByLabel("Provider", { exact: true }).inputValue()).toBe("fireworks");
    expect(await text(page.getByTestId("key-format"))).toContain("fw...");
    // Without scripts the hint cannot follow the select, so every format is listed.
    expect(await text(page.locator("noscript p.hint"))).toContain("Anthropic sk-ant-...");

    const wrong = FAKE_KEYS.gemini();
    secrets.push(wrong);
    await page.getByLabel("Credential Name", { exact: true }).fill("Fireworks prod");
    await page.getByLabel("API Key", { exact: true }).fill(wrong);
    await submit(page.getByRole("button", { name: "Add credential" }));
    expect(await text(page.locator("#api_key-error"))).toBe(
      'Fireworks AI keys start with "fw"; it looks like a Google Gemini key (with an API base URL for a proxy, any format is accepted)',
    );
    expect(await page.getByLabel("API Key", { exact: true }).getAttribute("aria-invalid")).toBe("true");
    expect(await page.getByLabel("API Key", { exact: true }).inputValue()).toBe("");
    expect(await page.getByLabel("Credential Name", { exact: true }).inputValue()).toBe("Fireworks prod");

    const right = FAKE_KEYS.fireworks();
    secrets.push(right);
    await page.getByLabel("API Key", { exact: true }).fill(right);
    await submit(page.getByRole("button", { name: "Add credential" }));
    expect(path()).toBe("/?organization=org-plain&provider=fireworks");
    expect(await feedback("success")).toContain("“Fireworks prod” was added and is active");
    expect(await text(row("Fireworks prod").locator('[data-label="Status"] .badge').first())).toBe("Active");
    expect(await text(row("Fireworks prod").locator(".key-hint"))).toBe(`fw…${right.slice(-4)}`);
    await expectNoSecrets(page, watch, secrets);
  });

  it("edits, deactivates and activates with plain forms", async () => {
    await submit((await menu("Fireworks prod")).getByRole("link", { name: "Edit Fireworks prod" }));
    await page.getByLabel("Credential Name", { exact: true }).fill("Fireworks main");
    await submit(page.getByRole("button", { name: "Save changes" }));
    expect(path()).toBe("/?organization=org-plain&provider=fireworks");
    expect(await feedback("success")).toBe("The Fireworks AI credential “Fireworks main” was updated.");

    await submit((await menu("Fireworks main")).getByRole("button", { name: "Deactivate Fireworks main" }));
    expect(path()).toBe("/?organization=org-plain&provider=fireworks");
    expect(await text(row("Fireworks main").locator('[data-label="Status"] .badge').first())).toBe("Inactive");
    expect(await feedback("success")).toContain("is inactive");
    await submit((await menu("Fireworks main")).getByRole("button", { name: "Activate Fireworks main" }));
    expect(await text(row("Fireworks main").locator('[data-label="Status"] .badge').first())).toBe("Active");
  });

  it("deletes after a confirmation page", async () => {
    await submit((await menu("Fireworks main")).getByRole("link", { name: "Delete Fireworks main" }));
    expect(new URL(page.url()).pathname).toMatch(/^\/credentials\/[0-9a-f-]{36}\/delete$/);
    const question = await text(page.locator("section"));
    expect(question).toContain("Delete “Fireworks main”?");
    expect(question).toContain("Deletion is permanent");
    expect(question).toContain("Teams using this credential will fail");
    expect(question).toContain("deactivate it instead");
    await submit(page.getByRole("button", { name: "Delete permanently" }));
    expect(path()).toBe("/?organization=org-plain&provider=fireworks");
    expect(await feedback("success")).toBe("The Fireworks AI credential “Fireworks main” was deleted.");
    expect(await row("Fireworks main").count()).toBe(0);
  });

  it("creates an API token (shown once) and revokes it after a confirmation page", async () => {
    await page.goto(`${portal.url}/tokens`);
    await page.getByLabel("Name", { exact: true }).fill("worker");
    await submit(page.getByRole("button", { name: "Create token" }));
    const token = await page.getByLabel("New resolve token", { exact: true }).inputValue();
    expect(token).toMatch(/^[A-Za-z0-9_-]{32,}$/);
    // The copy button needs scripts, so it is not offered.
    expect(await page.getByRole("button", { name: "Copy token" }).count()).toBe(0);
    await submit(page.getByRole("link", { name: "Done: I have stored it" }));
    expect(await page.content()).not.toContain(token);

    await submit(page.getByRole("link", { name: "Revoke worker" }));
    expect(path()).toBe("/tokens/worker/revoke");
    await submit(page.getByRole("button", { name: "Revoke token" }));
    expect(path()).toBe("/tokens");
    expect(await feedback("success")).toContain("Token worker was revoked");
  });

  it("signs out", async () => {
    await submit(page.getByRole("button", { name: "Sign out" }));
    expect(path()).toBe("/login");
    await page.goto(`${portal.url}/`);
    expect(path()).toBe("/login?redirectTo=%2F");
    await expectNoSecrets(page, watch, secrets);
    expect(watch.cspViolations).toEqual([]);
  });
});
