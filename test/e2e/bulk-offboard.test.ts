import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import { e2eEnabled, expectNoSecrets, hydrated, launchChromium, newContext, open, signInOnPage, watchPage, type PageWatch } from "../support/browser.js";

// Changing several credentials at once (/credentials/bulk), offboarding an organisation, and the portal's
// polish: relative times, the phone's menu, form errors shown once at their field in words.

const chromiumPath = inject("chromiumPath");

const OWNER = { email: "owner@bulk.example", password: "seven lanterns over the bay" };
const VIEWER = { email: "viewer@bulk.example", password: "watching the tide come in" };
const ORG = { id: "org-bulk", name: "Bulk Ltd" };
const GONE = { id: "org-gone", name: "Leaving Co" };
const PHONE_TALL = { width: 375, height: 812 };
/** Raw field names that no text a person reads may carry. */
const RAW_FIELDS = /\b(api_key|api_base|credential_name|organization_id|confirm_organization_id|expected_version)\b/;

let portal: TestPortal;
let browser: Browser;
const contexts: BrowserContext[] = [];
const secrets: string[] = [];
/** Credential ids of ORG by name. */
const ids: Record<string, string> = {};
const hints: Record<string, string> = {};
/** GONE's credential ids, in the order made. */
const goneIds: string[] = [];

async function api(method: string, path: string, body?: unknown) {
  const response = await portal.request(method, path, { body });
  expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  return response.json;
}

async function createCredential(organization: string, name: string) {
  const apiKey = FAKE_KEYS.openai();
  secrets.push(apiKey);
  return api("POST", "/api/provider-credentials/create", { organization_id: organization, provider: "openai", credential_name: name, api_key: apiKey });
}

async function credentialState(id: string): Promise<{ status: number; is_active?: boolean }> {
  const response = await portal.request("GET", `/api/provider-credentials/${id}`);
  return { status: response.status, is_active: response.json?.is_active };
}

async function newPage(options: { javaScriptEnabled?: boolean; viewport?: { width: number; height: number } } = {}): Promise<{ page: Page; watch: PageWatch }> {
  const context = await newContext(browser, options);
  contexts.push(context);
  const page = await context.newPage();
  return { page, watch: await watchPage(page, portal.url) };
}

async function signedIn(who = OWNER, options: Parameters<typeof newPage>[0] = {}): Promise<{ page: Page; watch: PageWatch }> {
  const opened = await newPage(options);
  await opened.page.goto(`${portal.url}/login`);
  if (options.javaScriptEnabled !== false) await hydrated(opened.page);
  await signInOnPage(opened.page, who.email, who.password);
  return opened;
}

async function text(locator: Locator): Promise<string> {
  await locator.first().waitFor();
  return (await locator.first().innerText()).replace(/\s+/g, " ").trim();
}

function bulkUrl(action: string, names: string[], returnTo = `/?organization=${ORG.id}`): string {
  const query = new URLSearchParams({ action });
  for (const name of names) query.append("credential_id", ids[name] ?? name);
  query.set("returnTo", returnTo);
  return `${portal.url}/credentials/bulk?${query}`;
}

/** How many times `needle` occurs in the page's main part, as a person reads it. */
async function occurrences(page: Page, needle: string): Promise<number> {
  const body = await page.locator("main").innerText();
  return body.split(needle).length - 1;
}

describe.skipIf(!e2eEnabled(chromiumPath))("bulk changes, offboarding and the portal's polish", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(OWNER.email, OWNER.password);
    await api("POST", "/api/accounts", { email: VIEWER.email, role: "viewer", password: VIEWER.password });
    await api("POST", "/api/organizations", { organization_id: ORG.id, name: ORG.name });
    for (const name of ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]) {
      const created = await createCredential(ORG.id, name);
      ids[name] = created.credential_id;
      hints[name] = created.key_hint;
    }
    await api("POST", "/api/organizations", { organization_id: GONE.id, name: GONE.name });
    for (let start = 0; start < 65; start += 13) {
      const created = await Promise.all(Array.from({ length: 13 }, (_, i) => createCredential(GONE.id, `Leaving key ${start + i + 1}`)));
      goneIds.push(...created.map((credential) => credential.credential_id as string));
    }
    for (const team of ["gone-a", "gone-b", "gone-c"]) await api("POST", `/api/organizations/${GONE.id}/teams`, { team_id: team, name: `Team ${team}` });
  }, 180_000);

  afterAll(async () => {
    if (process.env.E2E_DEBUG) console.log(portal?.output.join("\n"));
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await portal?.close();
  });

  it("with JavaScript: deactivates, activates and deletes several credentials through the confirmation page", async () => {
    const { page, watch } = await signedIn();
    await open(page, bulkUrl("deactivate", ["Alpha", "Bravo"]));
    expect(await text(page.getByRole("heading", { level: 1 }))).toBe("Deactivate 2 credentials?");
    const rows = page.locator("tbody tr");
    expect(await rows.count()).toBe(2);
    const alpha = await text(rows.filter({ hasText: "Alpha" }));
    expect(alpha).toContain("OpenAI");
    expect(alpha).toContain(hints.Alpha);
    expect(alpha).toContain(ORG.id);
    await page.getByRole("button", { name: "Deactivate 2 credentials", exact: true }).click();
    await page.waitForURL((url) => url.pathname === "/" && url.searchParams.get("organization") === ORG.id);
    expect(await text(page.getByTestId("feedback-success").locator(".notice"))).toBe("2 credentials were deactivated.");
    expect(await credentialState(ids.Alpha)).toMatchObject({ status: 200, is_active: false });
    expect(await credentialState(ids.Bravo)).toMatchObject({ status: 200, is_active: false });
    expect(await credentialState(ids.Charlie)).toMatchObject({ status: 200, is_active: true });

    await open(page, bulkUrl("activate", ["Alpha"]));
    expect(await text(page.getByRole("heading", { level: 1 }))).toBe("Activate 1 credential?");
    await page.getByRole("button", { name: "Activate 1 credential", exact: true }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await text(page.getByTestId("feedback-success").locator(".notice"))).toBe("1 credential was activated.");
    expect(await credentialState(ids.Alpha)).toMatchObject({ is_active: true });

    // Cancel goes back and changes nothing.
    await open(page, bulkUrl("delete", ["Bravo", "Charlie"]));
    await page.getByRole("link", { name: "Cancel" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await credentialState(ids.Bravo)).toMatchObject({ status: 200 });

    await open(page, bulkUrl("delete", ["Bravo", "Charlie"]));
    expect(await text(page.getByRole("heading", { level: 1 }))).toBe("Delete 2 credentials?");
    await page.getByRole("button", { name: "Delete 2 credentials permanently" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await text(page.getByTestId("feedback-success").locator(".notice"))).toBe("2 credentials were deleted.");
    expect((await credentialState(ids.Bravo)).status).toBe(404);
    expect((await credentialState(ids.Charlie)).status).toBe(404);
    const left = await portal.service.db.query("select credential_name from provider_credentials where organization_id = $1 order by credential_name", [
      ORG.id,
    ]);
    expect(left.map((row) => (row as { credential_name: string }).credential_name)).toEqual(["Alpha", "Delta", "Echo"]);
    await expectNoSecrets(page, watch, secrets);
    expect(watch.problems).toEqual([]);
    expect(watch.cspViolations).toEqual([]);
  });

  it("without JavaScript: the same page is a plain form; unknown ids are left out; bad requests are explained, never a 500", async () => {
    const { page } = await signedIn(OWNER, { javaScriptEnabled: false });
    const missing = "00000000-0000-4000-8000-000000000000";
    await page.goto(bulkUrl("deactivate", ["Delta", "Echo", missing]));
    expect(await page.evaluate(() => document.documentElement.dataset.hydrated ?? "no")).toBe("no");
    expect(await text(page.getByTestId("bulk-missing"))).toContain(missing);
    expect(await text(page.getByTestId("bulk-missing"))).toContain("not found");
    await Promise.all([page.waitForEvent("load"), page.getByRole("button", { name: "Deactivate 2 credentials", exact: true }).click()]);
    expect(new URL(page.url()).pathname).toBe("/");
    expect(await text(page.getByTestId("feedback-success").locator(".notice"))).toBe("2 credentials were deactivated.");
    expect(await credentialState(ids.Delta)).toMatchObject({ is_active: false });
    expect(await credentialState(ids.Echo)).toMatchObject({ is_active: false });

    // No ids, an unknown action: said in words, with a way back.
    for (const [url, expected] of [
      [`${portal.url}/credentials/bulk?action=delete`, /No credentials were chosen/],
      [`${portal.url}/credentials/bulk?action=explode&credential_id=${ids.Alpha}`, /choose whether to activate, deactivate or delete/],
      [`${portal.url}/credentials/bulk`, /choose whether to activate, deactivate or delete/],
    ] as const) {
      const response = await page.goto(url);
      expect(response!.status(), url).toBeLessThan(500);
      expect(await text(page.getByTestId("bulk-problem")), url).toMatch(expected);
      expect(
        await page
          .getByRole("button")
          .filter({ hasText: /credential/ })
          .count(),
        url,
      ).toBe(0);
    }

    // All or none: a post naming an unknown id changes nothing, and says why on the page.
    const response = await page.request.post(`${portal.url}/credentials/bulk`, {
      headers: { origin: portal.url, accept: "text/html" },
      form: { action: "activate", credential_id: ids.Delta, returnTo: "/" },
      maxRedirects: 0,
    });
    expect(response.status()).toBe(303);
    expect(await credentialState(ids.Delta)).toMatchObject({ is_active: true });
    const body = new URLSearchParams();
    body.append("action", "delete");
    body.append("credential_id", ids.Alpha);
    body.append("credential_id", missing);
    const refused = await page.request.post(`${portal.url}/credentials/bulk`, {
      headers: { origin: portal.url, accept: "text/html", "content-type": "application/x-www-form-urlencoded" },
      data: body.toString(),
      maxRedirects: 0,
    });
    expect(refused.status()).toBeGreaterThanOrEqual(400);
    expect(refused.status()).toBeLessThan(500);
    expect(await refused.text()).toContain("Nothing was changed");
    expect(await credentialState(ids.Alpha)).toMatchObject({ status: 200, is_active: true });
  });

  it("a viewer gets 403 from the bulk page and its form", async () => {
    const { page } = await signedIn(VIEWER);
    const shown = await page.goto(bulkUrl("delete", ["Alpha"]));
    expect(shown!.status()).toBe(403);
    expect(await page.locator("main").innerText()).toMatch(/viewer/i);
    const posted = await page.request.post(`${portal.url}/credentials/bulk`, {
      headers: { origin: portal.url, accept: "text/html" },
      form: { action: "delete", credential_id: ids.Alpha },
      maxRedirects: 0,
    });
    expect(posted.status()).toBe(403);
    expect((await credentialState(ids.Alpha)).status).toBe(200);
    // Offboarding is for owners too.
    expect((await page.goto(`${portal.url}/organizations/${GONE.id}/offboard`))!.status()).toBe(403);
    await open(page, `${portal.url}/organizations/${GONE.id}`);
    expect(await page.getByRole("link", { name: "Offboard…" }).count()).toBe(0);
  });

  it("the confirmation page lists all 65 credentials chosen, in the order chosen", async () => {
    const { page } = await signedIn(OWNER, { javaScriptEnabled: false });
    const chosen = [...goneIds].reverse();
    const query = new URLSearchParams({ action: "deactivate", returnTo: `/?organization=${GONE.id}` });
    for (const id of chosen) query.append("credential_id", id);
    const response = await page.goto(`${portal.url}/credentials/bulk?${query}`);
    expect(response!.status()).toBe(200);
    expect(await page.locator("tr[data-credential-id]").evaluateAll((rows) => rows.map((row) => row.getAttribute("data-credential-id")))).toEqual(chosen);
    expect(await page.getByRole("button", { name: "Deactivate 65 credentials", exact: true }).count()).toBe(1);
    expect(await page.getByTestId("bulk-missing").count()).toBe(0);
  });

  it("offboards an organisation with 65 credentials and 3 teams once its id is typed; a wrong id is said once, at the field", async () => {
    const { page, watch } = await signedIn();
    await open(page, `${portal.url}/organizations/${GONE.id}`);
    await page.getByRole("link", { name: "Offboard…" }).click();
    await page.waitForURL((url) => url.pathname === `/organizations/${GONE.id}/offboard`);
    await hydrated(page);
    const counts = await text(page.getByTestId("offboard-counts"));
    expect(counts).toContain("65 provider credentials");
    expect(counts).toContain("3 teams");

    const field = page.getByLabel("Organization ID", { exact: true });
    await field.fill("org-gon");
    await page.getByRole("button", { name: "Delete organization and all its keys" }).click();
    const error = page.locator("#confirm_organization_id-error");
    const message = await text(error);
    expect(message).toContain(GONE.id);
    expect(await field.getAttribute("aria-invalid")).toBe("true");
    expect(await occurrences(page, message)).toBe(1);
    // No banner repeats it.
    expect(await page.locator("main .notice.error").count()).toBe(0);
    expect(await page.locator("main").innerText()).not.toMatch(RAW_FIELDS);
    expect((await api("GET", `/api/organizations/${GONE.id}`)).organization_id).toBe(GONE.id);

    await field.fill(GONE.id);
    await page.getByRole("button", { name: "Delete organization and all its keys" }).click();
    await page.waitForURL((url) => url.pathname === "/organizations");
    expect(await text(page.getByTestId("feedback-success").locator(".notice"))).toBe(
      `Organization ${GONE.id} was offboarded: it was deleted with its 65 credentials and 3 teams.`,
    );
    expect((await portal.request("GET", `/api/organizations/${GONE.id}`)).status).toBe(404);
    const [{ n }] = (await portal.service.db.query("select count(*)::int as n from provider_credentials where organization_id = $1", [GONE.id])) as Array<{
      n: number;
    }>;
    expect(n).toBe(0);
    await expectNoSecrets(page, watch, secrets);
  });

  it("without JavaScript, a wrong id is said once at the field too", async () => {
    await api("POST", "/api/organizations", { organization_id: "org-plain-gone", name: "Plain Leaving" });
    const { page } = await signedIn(OWNER, { javaScriptEnabled: false });
    await page.goto(`${portal.url}/organizations/org-plain-gone/offboard`);
    await page.getByLabel("Organization ID", { exact: true }).fill("something else");
    await Promise.all([page.waitForEvent("load"), page.getByRole("button", { name: "Delete organization and all its keys" }).click()]);
    const message = await text(page.locator("#confirm_organization_id-error"));
    expect(await occurrences(page, message)).toBe(1);
    await page.getByLabel("Organization ID", { exact: true }).fill("org-plain-gone");
    await Promise.all([page.waitForEvent("load"), page.getByRole("button", { name: "Delete organization and all its keys" }).click()]);
    expect(new URL(page.url()).pathname).toBe("/organizations");
    expect(await text(page.getByTestId("feedback-success").locator(".notice"))).toContain("org-plain-gone was offboarded");
  });

  it("shows times relative to now, with the exact time on hover, the same with and without JavaScript", async () => {
    const db = portal.service.db;
    await api("POST", `/api/organizations/${ORG.id}/teams`, { team_id: "t-now", name: "Made now" });
    await api("POST", `/api/organizations/${ORG.id}/teams`, { team_id: "t-days", name: "Made days ago" });
    await api("POST", `/api/organizations/${ORG.id}/teams`, { team_id: "t-old", name: "Made long ago" });
    await db.query(`update teams set created_at = now() - interval '3 days 2 hours' where id = 't-days'`);
    await db.query(`update teams set created_at = timestamptz '2025-01-15 08:30:00+00' where id = 't-old'`);
    for (const javaScriptEnabled of [true, false]) {
      const { page } = await signedIn(OWNER, { javaScriptEnabled });
      await page.goto(`${portal.url}/organizations/${ORG.id}`);
      if (javaScriptEnabled) await hydrated(page);
      const created = (name: string) =>
        page
          .locator("tbody tr")
          .filter({ has: page.getByRole("rowheader", { name }) })
          .locator("time");
      expect(await text(created("Made now"))).toMatch(/^(just now|[1-5] min ago)$/);
      expect(await text(created("Made days ago"))).toBe("3 days ago");
      expect(await text(created("Made long ago"))).toBe("2025-01-15");
      expect(await created("Made long ago").getAttribute("title")).toBe("2025-01-15 08:30 UTC");
      expect(await created("Made long ago").getAttribute("datetime")).toMatch(/^2025-01-15T08:30:00/);
      expect(await created("Made days ago").getAttribute("title")).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$/);
      if (javaScriptEnabled) {
        await created("Made days ago").hover();
        expect(await created("Made days ago").evaluate((element) => element.matches(":hover"))).toBe(true);
      }
    }
  });

  it("on a phone the menu is folded away behind a Menu button, with and without JavaScript; on a desktop it is always there", async () => {
    for (const javaScriptEnabled of [true, false]) {
      const { page } = await signedIn(OWNER, { javaScriptEnabled, viewport: PHONE_TALL });
      await page.goto(`${portal.url}/organizations`);
      if (javaScriptEnabled) await hydrated(page);
      const header = await page.locator("aside.sidebar").boundingBox();
      expect(header!.height, `header height (JavaScript ${javaScriptEnabled})`).toBeLessThan(0.25 * PHONE_TALL.height);
      const nav = page.getByRole("navigation", { name: "Main" });
      expect(await nav.getByRole("link", { name: "Audit Log" }).isVisible()).toBe(false);
      await page.getByText("Menu", { exact: true }).click();
      await nav.getByRole("link", { name: "Audit Log" }).waitFor();
      expect(await page.getByRole("button", { name: "Sign out" }).isVisible()).toBe(true);
      if (javaScriptEnabled) {
        await nav.getByRole("link", { name: "Audit Log" }).click();
        await page.waitForURL((url) => url.pathname === "/audit");
        await page.waitForFunction(() => !document.querySelector("details.site-menu")?.hasAttribute("open"));
        expect(await nav.getByRole("link", { name: "Audit Log" }).isVisible()).toBe(false);
      }
      // Desktop: the links are shown, no Menu button.
      await page.setViewportSize({ width: 1280, height: 800 });
      await nav.getByRole("link", { name: "Organizations & Teams" }).waitFor();
      expect(await page.getByText("Menu", { exact: true }).isVisible()).toBe(false);
    }
    // A desktop without JavaScript shows the menu from the start.
    const { page } = await signedIn(OWNER, { javaScriptEnabled: false });
    await page.goto(`${portal.url}/organizations`);
    expect(await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Audit Log" }).isVisible()).toBe(true);
    expect(await page.getByText("Menu", { exact: true }).isVisible()).toBe(false);
  });

  it("a refused credential form shows each error once, at its field, in words", async () => {
    for (const javaScriptEnabled of [true, false]) {
      const { page } = await signedIn(OWNER, { javaScriptEnabled });
      await page.goto(`${portal.url}/credentials/new?organization=${ORG.id}`);
      if (javaScriptEnabled) await hydrated(page);
      await page.getByLabel("Credential Name", { exact: true }).fill(`Wrong format ${javaScriptEnabled}`);
      await page.getByLabel("API Key", { exact: true }).fill("definitely-not-an-openai-key-1234");
      const submit = page.getByRole("button", { name: "Add credential" });
      if (javaScriptEnabled) await submit.click();
      else await Promise.all([page.waitForEvent("load"), submit.click()]);
      const fieldError = await text(page.locator("#api_key-error"));
      expect(fieldError.length).toBeGreaterThan(5);
      expect(await occurrences(page, fieldError)).toBe(1);
      expect(await text(page.locator("#form-error"))).toBe("Check the highlighted field.");
      expect(await page.getByLabel("API Key", { exact: true }).getAttribute("aria-invalid")).toBe("true");
      expect(await page.locator("main").innerText()).not.toMatch(RAW_FIELDS);

      // The edit form: a new API base without the key again.
      await page.goto(`${portal.url}/credentials/${ids.Alpha}/edit`);
      if (javaScriptEnabled) await hydrated(page);
      await page.locator("#api_base").fill("https://proxy.example.com/v1");
      const save = page.getByRole("button", { name: "Save changes" });
      if (javaScriptEnabled) await save.click();
      else await Promise.all([page.waitForEvent("load"), save.click()]);
      const editError = await text(page.locator("#api_key-error"));
      expect(await occurrences(page, editError)).toBe(1);
      expect(editError).toContain("API base URL");
      expect(await text(page.locator("#form-error"))).toBe("Check the highlighted field.");
      expect(await page.locator("main").innerText()).not.toMatch(RAW_FIELDS);
    }
  });

  it("copies a credential's id and key hint from its edit page", async () => {
    const { page } = await signedIn();
    await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: portal.url });
    await open(page, `${portal.url}/credentials/${ids.Alpha}/edit`);
    await page.getByRole("button", { name: "Copy ID" }).click();
    await page.getByText("Copied to the clipboard.").first().waitFor();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(ids.Alpha);
    await page.getByRole("button", { name: "Copy hint" }).click();
    await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(hints.Alpha);
  });
});
