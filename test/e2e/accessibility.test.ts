import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { FailureKind } from "@provider-credentials/wire/gen/credentials_pb";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import {
  axeScan,
  blocking,
  DESKTOP,
  hydrated,
  e2eEnabled,
  launchChromium,
  rootDir,
  SCREENSHOT_DIR,
  newContext,
  open,
  PHONE,
  screenshotBothWidths,
  signInOnPage,
  watchPage,
  type AxeViolation,
  type PageWatch,
} from "../support/browser.js";

// Every page, scanned by axe-core in light and dark mode (no serious or critical violation allowed),
// checked for a horizontal scrollbar at 375 px, and photographed at desktop and
// phone widths into docs/screenshots/ for docs/portal.md. The data is fixed (names,
// example keys, timestamps) so that the pictures only change when the pages do.

const chromiumPath = inject("chromiumPath");

const ADMIN = { email: "admin@example.com", password: "harbour lights and paper boats" };

/** Example keys in each provider's format: only their hints appear anywhere. */
const EXAMPLE_KEYS = {
  openai: "sk-proj-EXAMPLEONLYnotARealKey000000Ab12",
  anthropic: "sk-ant-api03-EXAMPLEONLYnotARealKey0000Cd34",
  gemini: "AIzaEXAMPLEONLYnotARealKey00000000Ef56",
  fireworks: "fw_EXAMPLEONLYnotARealKey000000Gh78",
  openaiStaging: "sk-proj-EXAMPLEONLYnotARealKey000000Ij90",
};

let portal: TestPortal;
let browser: Browser;
let page: Page;
let watch: PageWatch;
let session: string;
let credentialId: string;
const results: Array<{ page: string; violations: AxeViolation[] }> = [];

/** A change made as the signed-in administrator (so the audit log names them), through the REST API. */
async function asAdmin(method: string, path: string, body?: unknown) {
  const response = await portal.request(method, path, { token: null, session, body, headers: { origin: portal.url } });
  expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  return response.json;
}

/** Fixed timestamps, in creation order, so that screenshots are the same on every run. */
async function freezeTimestamps(): Promise<void> {
  const db = portal.service.db;
  await db.query(`with o as (select id, row_number() over (order by created_at, id) as n from organizations)
    update organizations set created_at = timestamptz '2026-03-02 09:00:00+00' + o.n * interval '17 minutes', updated_at = timestamptz '2026-03-02 09:00:00+00' + o.n * interval '17 minutes'
    from o where organizations.id = o.id`);
  await db.query(`with t as (select id, row_number() over (order by created_at, id) as n from teams)
    update teams set created_at = timestamptz '2026-03-03 10:30:00+00' + t.n * interval '41 minutes', updated_at = timestamptz '2026-03-03 10:30:00+00' + t.n * interval '41 minutes'
    from t where teams.id = t.id`);
  await db.query(`with c as (select id, is_active, row_number() over (order by created_at, id) as n from provider_credentials)
    update provider_credentials set
      created_at = timestamptz '2026-03-04 08:00:00+00' + c.n * interval '1 day 2 hours 13 minutes',
      updated_at = timestamptz '2026-03-04 08:00:00+00' + c.n * interval '1 day 2 hours 13 minutes' + (c.n % 3) * interval '5 days 4 hours',
      activated_at = timestamptz '2026-03-04 08:00:00+00' + c.n * interval '1 day 2 hours 13 minutes',
      last_used_at = case when c.is_active then timestamptz '2026-05-18 16:20:00+00' - c.n * interval '47 minutes' end
    from c where provider_credentials.id = c.id`);
  await db.query(`with t as (select name, row_number() over (order by created_at, name) as n from api_tokens)
    update api_tokens set created_at = timestamptz '2026-03-05 14:00:00+00' + t.n * interval '2 hours', last_used_at = case when t.n = 1 then timestamptz '2026-05-18 16:19:00+00' end
    from t where api_tokens.name = t.name`);
  await db.query(`update audit_events set occurred_at = timestamptz '2026-05-18 09:00:00+00' + id * interval '3 minutes', source = '203.0.113.24'`);
  await db.query(`update selection_strategies set updated_at = timestamptz '2026-05-12 11:05:00+00'`);
}

/**
 * Key health as the list shows it, at fixed times: the last checks as the
 * Test button stores them (their latencies vary run to run, so they are set
 * here; test/e2e/key-health.test.ts runs real checks against a fake
 * provider), use counts, a key marked failing by callers' reports, and one
 * set long ago (rotation due).
 */
async function keyHealthExamples(fireworksId: string): Promise<void> {
  const { credentials } = portal.service.clients();
  for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId: fireworksId, kind: FailureKind.QUOTA });
  const db = portal.service.db;
  const check = (name: string, outcome: string, status: number, latency: number, message: string, at: string, uses: number) =>
    db.query(
      `update provider_credentials set check_outcome = $2, check_http_status = $3, check_latency_ms = $4, check_message = $5,
         checked_at = $6::timestamptz, use_count = $7 where organization_id = 'acme' and credential_name = $1`,
      [name, outcome, status, latency, message, at, uses],
    );
  await check("Production OpenAI Key", "valid", 200, 212, "OpenAI accepted the key (HTTP 200).", "2026-05-18 16:02:00+00", 18342);
  await check("Claude for support", "rate_limited", 429, 641, "Anthropic rate limited the key (HTTP 429).", "2026-05-18 15:47:00+00", 2210);
  await check(
    "Fireworks via proxy",
    "invalid_key",
    401,
    187,
    "Fireworks AI rejected the key as invalid (HTTP 401, UNAUTHENTICATED).",
    "2026-05-18 15:31:00+00",
    977,
  );
  await db.query(`update provider_credentials set use_count = 35 where organization_id = 'acme' and credential_name = 'Gemini experiments'`);
  // Created, and its key set, long before the others: due for rotation whenever the tests run.
  await db.query(
    `update provider_credentials set created_at = timestamptz '2025-08-14 10:20:00+00', activated_at = timestamptz '2025-08-14 10:20:00+00',
       key_set_at = timestamptz '2025-08-14 10:20:00+00' where organization_id = 'acme' and credential_name = 'Gemini experiments'`,
  );
}

async function seed(): Promise<void> {
  await asAdmin("POST", "/api/organizations", { organization_id: "acme", name: "Acme Corp" });
  await asAdmin("POST", "/api/organizations", { organization_id: "globex", name: "Globex" });
  await asAdmin("POST", "/api/organizations", { organization_id: "initech", name: "Initech" });
  await asAdmin("POST", "/api/organizations/acme/teams", { team_id: "acme-search", name: "Search" });
  await asAdmin("POST", "/api/organizations/acme/teams", { team_id: "acme-support", name: "Support" });
  await asAdmin("POST", "/api/organizations/acme/teams", { team_id: "acme-research", name: "Research" });
  const create = (provider: string, credential_name: string, api_key: string, api_base: string | null = null) =>
    asAdmin("POST", "/api/provider-credentials/create", { organization_id: "acme", provider, credential_name, api_key, api_base });
  const staging = await create("openai", "Staging OpenAI Key", EXAMPLE_KEYS.openaiStaging);
  await create("gemini", "Gemini experiments", EXAMPLE_KEYS.gemini);
  const fireworks = await create("fireworks", "Fireworks via proxy", EXAMPLE_KEYS.fireworks, "https://llm-proxy.acme.example/fireworks/v1");
  await create("anthropic", "Claude for support", EXAMPLE_KEYS.anthropic);
  const production = await create("openai", "Production OpenAI Key", EXAMPLE_KEYS.openai);
  credentialId = production.credential_id;
  await asAdmin("PUT", `/api/provider-credentials/${staging.credential_id}/deactivate`);
  await asAdmin("POST", "/api/tokens", { name: "llm-gateway", scope: "resolve" });
  await asAdmin("POST", "/api/tokens", { name: "ops-automation", scope: "admin" });
  await asAdmin("PUT", "/api/provider-credentials/organization/acme/selection-strategies/openai", { strategy: "round_robin" });
  await asAdmin("POST", "/api/accounts", { email: "erin@acme.example", role: "editor", organization_ids: ["acme"] });
  await asAdmin("POST", "/api/accounts", { email: "victor@example.com", role: "viewer" });
  await freezeTimestamps();
  await keyHealthExamples(fireworks.credential_id);
}

/** Scans the page as it is now, records the result, and fails on anything serious or critical. */
async function scan(name: string): Promise<void> {
  const violations = await axeScan(page);
  results.push({ page: name, violations });
  expect(blocking(violations), `${name}: ${JSON.stringify(blocking(violations), null, 2)}`).toEqual([]);
}

/** Nothing wider than the screen: no sideways scrolling of the page at 1280 px or at 375 px. */
async function expectNoSidewaysScroll(name: string): Promise<void> {
  for (const size of [DESKTOP, PHONE]) {
    await page.setViewportSize(size);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow, `${name} scrolls sideways at ${size.width} px`).toBeLessThanOrEqual(0);
  }
  await page.setViewportSize(DESKTOP);
}

/** Scans at both widths, light and dark (prefers-color-scheme), checks the phone layout and writes the screenshots (light). */
async function checkPage(name: string, options: { screenshot?: boolean; prepare?: () => Promise<void> } = {}): Promise<void> {
  for (const colorScheme of ["light", "dark"] as const) {
    await page.emulateMedia({ colorScheme });
    const mode = colorScheme === "dark" ? "dark, " : "";
    await scan(`${name} (${mode}desktop)`);
    await page.setViewportSize(PHONE);
    await scan(`${name} (${mode}phone)`);
    await page.setViewportSize(DESKTOP);
  }
  await page.emulateMedia({ colorScheme: "light" });
  await expectNoSidewaysScroll(name);
  if (options.screenshot !== false) await screenshotBothWidths(page, name, { prepare: options.prepare });
}

describe.skipIf(!e2eEnabled(chromiumPath))("accessibility and screenshots of every page", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    portal = await startTestPortal();
    await portal.createAdmin(ADMIN.email, ADMIN.password);
    session = (await portal.signIn(ADMIN.email, ADMIN.password)).session!;
    await seed();
    const context = await newContext(browser);
    page = await context.newPage();
    watch = await watchPage(page, portal.url);
  });

  afterAll(async () => {
    if (results.length > 0) {
      const lines = results.map(({ page: name, violations }) => {
        const found = violations.map((v) => `${v.id} (${v.impact}, ${v.nodes})`).join(", ");
        return `  ${name}: ${violations.length === 0 ? "no violations" : found}`;
      });
      console.log(`axe-core results:\n${lines.join("\n")}`);
    }
    await browser?.close();
    await portal?.close();
  });

  it("the scan finds problems when there are some (a check of the checker)", async () => {
    await open(page, `${portal.url}/login`);
    await page.evaluate(() => {
      const input = document.createElement("input");
      input.type = "text";
      document.querySelector("main")!.append(input);
    });
    const violations = await axeScan(page);
    expect(blocking(violations).map((v) => v.id)).toContain("label");
  });

  it("sign-in page", async () => {
    await open(page, `${portal.url}/login`);
    await checkPage("login");
    await signInOnPage(page, ADMIN.email, ADMIN.password);
    await hydrated(page);
  });

  it("Provider Credentials: prompt to choose an organisation", async () => {
    await open(page, `${portal.url}/`);
    await checkPage("credentials-choose-organization", { screenshot: false });
  });

  it("Provider Credentials: the table", async () => {
    await open(page, `${portal.url}/?organization=acme`);
    expect(await page.locator("tbody tr").count()).toBe(5);
    // Every column, the actions included, fits a 1280 px screen: the table does not scroll sideways.
    const hidden = await page.locator(".table-wrap").evaluate((element) => element.scrollWidth - element.clientWidth);
    expect(hidden, "the credentials table scrolls sideways at 1280 px").toBeLessThanOrEqual(0);
    await checkPage("credentials");
  });

  it("Provider Credentials: only the failing credentials (a filter in the URL)", async () => {
    await open(page, `${portal.url}/?organization=acme&failing=true`);
    expect(await page.locator("tbody tr").count()).toBe(1);
    await checkPage("credentials-failing");
  });

  it("Provider Credentials: a row's Actions menu, open", async () => {
    await open(page, `${portal.url}/?organization=acme`);
    await page.locator("tbody tr").first().locator(".row-menu > summary").click();
    await page
      .locator("tbody tr")
      .first()
      .getByRole("link", { name: /^Edit / })
      .waitFor();
    await scan("credentials, Actions menu open (desktop)");
  });

  it("Provider Credentials: search results across organizations (in the URL)", async () => {
    await open(page, `${portal.url}/?q=acme`);
    await page.getByTestId("page-range").waitFor();
    expect(await page.locator("tbody tr").count()).toBeGreaterThan(0);
    await checkPage("credentials-search");
  });

  it("Provider Credentials: the fleet views (failing; no key and no fallback)", async () => {
    await open(page, `${portal.url}/?view=failing`);
    expect(await page.locator("tbody tr").count()).toBe(1);
    await checkPage("credentials-fleet-failing", { screenshot: false });
    await open(page, `${portal.url}/?view=uncovered`);
    await page.getByRole("heading", { name: /^Organizations with no key and no fallback/ }).waitFor();
    await checkPage("credentials-fleet-uncovered");
  });

  it("Provider Credentials: the empty state", async () => {
    await open(page, `${portal.url}/?organization=globex`);
    await page.getByTestId("empty-state").waitFor();
    await checkPage("credentials-empty", { screenshot: false });
  });

  it("the delete confirmation dialog", async () => {
    await open(page, `${portal.url}/?organization=acme`);
    const prepare = async () => {
      if (!(await page.getByRole("dialog").isVisible())) {
        // The Delete button is in the row's Actions menu.
        const menu = page.locator("tbody tr").filter({ hasText: "Production OpenAI Key" }).locator(".row-menu");
        if (!(await menu.evaluate((element) => (element as HTMLDetailsElement).open))) await menu.locator("> summary").click();
        await page.getByRole("button", { name: "Delete Production OpenAI Key" }).click();
      }
      await page.getByRole("dialog", { name: "Delete “Production OpenAI Key”?" }).waitFor();
    };
    await prepare();
    await scan("delete dialog (desktop)");
    await screenshotBothWidths(page, "delete-dialog", { prepare, fullPage: false });
    await page.keyboard.press("Escape");
  });

  it("the delete confirmation page (without JavaScript)", async () => {
    await open(page, `${portal.url}/credentials/${credentialId}/delete`);
    await checkPage("delete-confirmation", { screenshot: false });
  });

  it("Add Provider Credential, and the server's message at the field", async () => {
    await open(page, `${portal.url}/credentials/new?organization=acme`);
    await checkPage("add-credential");
    await page.getByLabel("Provider", { exact: true }).selectOption("anthropic");
    await page.getByLabel("Credential Name", { exact: true }).fill("Claude production");
    await page.getByLabel("API Key", { exact: true }).fill(EXAMPLE_KEYS.openai);
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.locator("#api_key-error").waitFor();
    await checkPage("add-credential-error");
  });

  it("Edit a credential", async () => {
    await open(page, `${portal.url}/credentials/${credentialId}/edit?returnTo=${encodeURIComponent("/?organization=acme")}`);
    await checkPage("edit-credential");
  });

  it("Organizations & Teams", async () => {
    await open(page, `${portal.url}/organizations`);
    await checkPage("organizations");
    await open(page, `${portal.url}/organizations/acme`);
    await checkPage("organization-teams");
    await open(page, `${portal.url}/organizations/globex/delete`);
    await checkPage("organization-delete-confirmation", { screenshot: false });
    await open(page, `${portal.url}/organizations/acme/teams/acme-research/delete`);
    await checkPage("team-delete-confirmation", { screenshot: false });
  });

  it("bulk change and offboarding confirmations, the phone menu", async () => {
    await open(page, `${portal.url}/credentials/bulk?action=delete&credential_id=${credentialId}&returnTo=${encodeURIComponent("/?organization=acme")}`);
    await checkPage("bulk-delete-confirmation");
    await open(page, `${portal.url}/credentials/bulk?action=explode`);
    await checkPage("bulk-unknown-action", { screenshot: false });
    await open(page, `${portal.url}/organizations/acme/offboard`);
    await checkPage("organization-offboard");
    await page.getByLabel("Organization ID", { exact: true }).fill("not-acme");
    await page.getByRole("button", { name: "Delete organization and all its keys" }).click();
    await page.locator("#confirm_organization_id-error").waitFor();
    await checkPage("organization-offboard-error", { screenshot: false });
    // The phone's menu, opened.
    await page.setViewportSize(PHONE);
    await page.getByText("Menu", { exact: true }).click();
    await page.getByRole("navigation", { name: "Main" }).waitFor();
    for (const colorScheme of ["light", "dark"] as const) {
      await page.emulateMedia({ colorScheme });
      await scan(`phone menu open (${colorScheme})`);
    }
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize(DESKTOP);
  });

  it("Audit Log", async () => {
    await open(page, `${portal.url}/audit?organization=acme`);
    await checkPage("audit-log");
  });

  it("API Tokens, and a new token shown once", async () => {
    await open(page, `${portal.url}/tokens`);
    await checkPage("api-tokens");
    await open(page, `${portal.url}/tokens/llm-gateway/revoke`);
    await checkPage("token-revoke-confirmation", { screenshot: false });
    await open(page, `${portal.url}/tokens`);
    await page.getByLabel("Name", { exact: true }).fill("nightly-batch");
    await page.getByRole("button", { name: "Create token" }).click();
    await page.getByTestId("created-token").waitFor();
    // The token differs on every run: scanned, not photographed.
    await checkPage("api-tokens-created", { screenshot: false });
  });

  it("Accounts, one account, and your own account", async () => {
    // Fixed sign-in and creation times (the administrator signed in again above).
    await portal.service.db.query(`with a as (select id, row_number() over (order by created_at, id) as n from admin_users)
      update admin_users set created_at = timestamptz '2026-03-01 08:00:00+00' + a.n * interval '1 day',
        last_sign_in_at = case when last_sign_in_at is not null then timestamptz '2026-05-18 08:55:00+00' end
      from a where admin_users.id = a.id`);
    await open(page, `${portal.url}/accounts`);
    await checkPage("accounts");
    await open(page, `${portal.url}/accounts/${encodeURIComponent("erin@acme.example")}`);
    await checkPage("account-detail");
    await open(page, `${portal.url}/account`);
    await checkPage("your-account");
  });

  it("sign-out page and the error page", async () => {
    await open(page, `${portal.url}/logout`);
    await checkPage("logout", { screenshot: false });
    await open(page, `${portal.url}/no-such-page`);
    await checkPage("not-found", { screenshot: false });
  });

  it("the portal's documentation shows every screenshot, at both widths", async () => {
    const doc = await readFile(path.join(rootDir, "docs/portal.md"), "utf8");
    const files = (await readdir(SCREENSHOT_DIR)).filter((file) => file.endsWith(".png"));
    expect(files.length).toBeGreaterThanOrEqual(20);
    for (const file of files) expect(doc, `docs/portal.md does not show ${file}`).toContain(`src="screenshots/${file}"`);
  });

  it("no page broke its Content-Security-Policy", async () => {
    expect(watch.cspViolations).toEqual([]);
    const unexpected = watch.problems.filter((problem) => !/Failed to load resource: the server responded with a status of (400|404)/.test(problem));
    expect(unexpected).toEqual([]);
  });
});
