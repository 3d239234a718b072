import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { FailureKind } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS } from "../support/harness.js";
import { refusedUrl, startFakeProvider, type FakeBehaviour, type FakeProvider } from "../support/fake-provider.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import {
  axeScan,
  DESKTOP,
  e2eEnabled,
  expectNoSecrets,
  hydrated,
  launchChromium,
  newContext,
  open,
  PHONE,
  signInOnPage,
  watchPage,
  type AxeViolation,
  type PageWatch,
} from "../support/browser.js";

// Key health in a real browser: the Test button and its outcome, the Failing
// and Rotation due badges and filters, the weight and verify-before-saving
// fields, and an organisation's key selection strategies. Every provider call
// goes to a fake provider on loopback.

const chromiumPath = inject("chromiumPath");

const ADMIN = { email: "kim@example.com", password: "seven green umbrellas sway" };
const ORG = { id: "org-health", name: "Health Check Ltd" };

const GREEN_BADGE = "rgb(209, 231, 221)";
const RED_BADGE = "rgb(251, 217, 214)";
const AMBER_BADGE = "rgb(253, 233, 184)";

let portal: TestPortal;
let fake: FakeProvider;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let watch: PageWatch;
/** Every key typed or stored in this file: none may ever come back from the portal. */
const secrets: string[] = [];
const scans: Array<{ name: string; violations: AxeViolation[] }> = [];

function key(provider: keyof typeof FAKE_KEYS, behaviour: FakeBehaviour = "valid"): string {
  const value = FAKE_KEYS[provider]();
  secrets.push(value);
  fake.setKey(value, behaviour);
  return value;
}

function row(name: string, on: Page = page): Locator {
  return on.locator("tbody tr").filter({ has: on.getByRole("rowheader", { name, exact: true }) });
}

/** A credential's row with its Actions menu open (its buttons and links live there). */
async function menu(name: string, on: Page = page): Promise<Locator> {
  const found = on.locator("tbody tr").filter({ has: on.getByRole("rowheader", { name, exact: true }) });
  const details = found.locator(".row-menu");
  if (!(await details.evaluate((element) => (element as HTMLDetailsElement).open))) await details.locator("> summary").click();
  return found;
}

async function text(locator: Locator): Promise<string> {
  await locator.first().waitFor();
  return (await locator.first().innerText()).replace(/\s+/g, " ").trim();
}

async function backgroundOf(locator: Locator): Promise<string> {
  return locator.evaluate((element) => getComputedStyle(element).backgroundColor);
}

async function success(expected: string | RegExp, on: Page = page): Promise<string> {
  const locator = on.getByTestId("feedback-success").locator(".notice");
  await locator.filter({ hasText: expected }).waitFor();
  return text(locator);
}

async function failure(expected: string | RegExp, on: Page = page): Promise<string> {
  const locator = on.getByTestId("feedback-error").locator(".notice");
  await locator.filter({ hasText: expected }).waitFor();
  return text(locator);
}

async function api(method: string, path: string, body?: unknown) {
  const response = await portal.request(method, path, { body });
  expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  return response.json;
}

async function createCredential(provider: keyof typeof FAKE_KEYS, name: string, behaviour: FakeBehaviour = "valid", apiBase?: string) {
  return api("POST", "/api/provider-credentials/create", {
    organization_id: ORG.id,
    provider,
    credential_name: name,
    api_key: key(provider, behaviour),
    api_base: apiBase ?? fake.baseUrl(provider),
  });
}

/** axe-core at both widths: not one violation, whatever its impact. */
async function scanBothWidths(name: string): Promise<void> {
  for (const [label, size] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ] as const) {
    await page.setViewportSize(size);
    const violations = await axeScan(page);
    scans.push({ name: `${name} (${label})`, violations });
    expect(violations, `${name} at ${label} width: ${JSON.stringify(violations, null, 2)}`).toEqual([]);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow, `${name} scrolls sideways at ${size.width} px`).toBeLessThanOrEqual(0);
  }
  await page.setViewportSize(DESKTOP);
}

const listUrl = (query = "") => `${portal.url}/?organization=${ORG.id}${query}`;

describe.skipIf(!e2eEnabled(chromiumPath))("key health in the browser", () => {
  beforeAll(async () => {
    browser = await launchChromium(chromiumPath);
    fake = await startFakeProvider();
    portal = await startTestPortal();
    await portal.createAdmin(ADMIN.email, ADMIN.password);
    await api("POST", "/api/organizations", { organization_id: ORG.id, name: ORG.name });
    await createCredential("gemini", "Old key");
    await createCredential("anthropic", "Revoked key", "invalid");
    await createCredential("openai", "Good key");
    context = await newContext(browser);
    page = await context.newPage();
    watch = await watchPage(page, portal.url);
    await open(page, `${portal.url}/login`);
    await signInOnPage(page, ADMIN.email, ADMIN.password);
  });

  afterAll(async () => {
    if (scans.length > 0) {
      console.log(
        `axe-core results (key health):\n${scans.map((s) => `  ${s.name}: ${s.violations.length === 0 ? "no violations" : s.violations.map((v) => v.id).join(", ")}`).join("\n")}`,
      );
    }
    if (process.env.E2E_DEBUG) console.log(portal?.output.join("\n"));
    await browser?.close();
    await portal?.close();
    await fake?.close();
  });

  it("before any check or use, the list says so", async () => {
    await open(page, listUrl());
    const good = row("Good key");
    expect(await text(good.locator('[data-label="Last check"]'))).toBe("Never checked");
    expect(await text(good.locator('[data-label="Usage"]'))).toBe("Never used");
    expect(await good.getByTestId("failing-badge").count()).toBe(0);
    expect(await good.getByTestId("rotation-due-badge").count()).toBe(0);
    // Active, and (the only OpenAI key) in use: the status cell carries the selection too.
    expect(await text(good.locator('[data-label="Status"] .badge').first())).toBe("Active");
    expect(await text(good.getByTestId("standing"))).toBe("In use");
  });

  it("Test checks the key with its provider and shows the outcome: Valid, with the time and latency", async () => {
    const good = row("Good key");
    await (await menu("Good key")).getByRole("button", { name: "Test Good key" }).click();
    const said = await success("Test of “Good key”");
    expect(said).toMatch(/^Test of “Good key”: Valid\. OpenAI accepted the key \(HTTP 200\)\. Took \d+ ms\.$/);
    const badge = good.getByTestId("check-outcome");
    await badge.filter({ hasText: "Valid" }).waitFor();
    expect(await backgroundOf(badge)).toBe(GREEN_BADGE);
    // Relative, with the exact time on hover.
    expect(await text(good.locator('[data-label="Last check"] time'))).toMatch(/^(just now|\d+ min ago)$/);
    expect(await good.locator('[data-label="Last check"] time').getAttribute("title")).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$/);
    // The provider's explanation is one click away.
    await good.getByText("Details").click();
    expect(await text(good.locator(".check-details p"))).toBe("OpenAI accepted the key (HTTP 200).");
    expect(await text(good.getByTestId("check-facts"))).toMatch(/^HTTP 200, \d+ ms$/);
    // The key went in a header, never in a URL.
    const request = fake.requests.at(-1)!;
    expect(request).toMatchObject({ path: "/openai/v1/models", answered: "valid" });
    expect(request.headers.authorization).toMatch(/^Bearer sk-/);
  });

  it("a refused key is an alert and a red badge; other outcomes get their own readable badges", async () => {
    const revoked = row("Revoked key");
    await (await menu("Revoked key")).getByRole("button", { name: "Test Revoked key" }).click();
    expect(await failure("Test of “Revoked key”")).toMatch(/^Test of “Revoked key”: Invalid key\. Anthropic rejected the key as invalid/);
    const badge = revoked.getByTestId("check-outcome");
    await badge.filter({ hasText: "Invalid key" }).waitFor();
    expect(await backgroundOf(badge)).toBe(RED_BADGE);
    await revoked.locator(".check-details summary").click();
    expect(await text(revoked.getByTestId("check-facts"))).toMatch(/^HTTP 401, \d+ ms$/);

    // The provider throttles, then refuses access, then the address answers nothing at all.
    const throttled = await createCredential("fireworks", "Throttled key", "rate_limited");
    const blocked = await createCredential("openai", "Blocked key", "forbidden");
    await createCredential("openai", "Unreachable key", "valid", await refusedUrl());
    await open(page, listUrl());
    for (const [name, label, colour, facts] of [
      ["Throttled key", "Rate limited", AMBER_BADGE, /^HTTP 429, \d+ ms$/],
      ["Blocked key", "No permission", RED_BADGE, /^HTTP 403, \d+ ms$/],
      ["Unreachable key", "Unreachable", AMBER_BADGE, /^no answer, \d+ ms$/],
    ] as const) {
      await (await menu(name)).getByRole("button", { name: `Test ${name}` }).click();
      expect(await failure(`Test of “${name}”`)).toContain(`Test of “${name}”: ${label}.`);
      const outcome = row(name).getByTestId("check-outcome");
      await outcome.filter({ hasText: label }).waitFor();
      expect(await backgroundOf(outcome)).toBe(colour);
      await row(name).locator(".check-details summary").click();
      expect(await text(row(name).getByTestId("check-facts"))).toMatch(facts);
    }
    for (const { credential_id } of [throttled, blocked]) await api("DELETE", `/api/provider-credentials/${credential_id}`);
  });

  it("without JavaScript: Test, the check before saving and the strategy form are plain form posts", async () => {
    const plain = await newContext(browser, { javaScriptEnabled: false });
    const noScript = await plain.newPage();
    const plainWatch = await watchPage(noScript, portal.url);
    const submit = (locator: Locator) => Promise.all([noScript.waitForEvent("load"), locator.click()]);
    await noScript.goto(`${portal.url}/login`);
    await signInOnPage(noScript, ADMIN.email, ADMIN.password);

    await noScript.goto(listUrl());
    await submit((await menu("Good key", noScript)).getByRole("button", { name: "Test Good key" }));
    expect(new URL(noScript.url()).search).toBe(`?organization=${ORG.id}`);
    expect(await success("Test of “Good key”", noScript)).toMatch(/: Valid\./);
    expect(await text(row("Good key", noScript).getByTestId("check-outcome"))).toBe("Valid");

    // A key the provider refuses, checked before saving: the message at the field, the key never sent back.
    await submit(noScript.getByRole("link", { name: "Add Provider Credential" }));
    await noScript.getByLabel("Provider", { exact: true }).selectOption("fireworks");
    await noScript.getByLabel("Credential Name", { exact: true }).fill("No-script key");
    await noScript.getByLabel("API Key", { exact: true }).fill(key("fireworks", "invalid"));
    await noScript.getByLabel("API Base URL (optional)", { exact: true }).fill(fake.baseUrl("fireworks"));
    await noScript.getByLabel("Weight", { exact: true }).fill("12");
    await noScript.getByLabel("Check the key with the provider before saving", { exact: true }).check();
    await submit(noScript.getByRole("button", { name: "Add credential" }));
    expect(await text(noScript.locator("#api_key-error"))).toMatch(/^the provider check did not pass \(invalid key\): Fireworks AI rejected the key/);
    expect(await noScript.getByLabel("API Key", { exact: true }).inputValue()).toBe("");
    expect(await noScript.getByLabel("Weight", { exact: true }).inputValue()).toBe("12");
    expect(await noScript.getByLabel("Check the key with the provider before saving", { exact: true }).isChecked()).toBe(true);

    // The strategy of one provider.
    await noScript.goto(`${portal.url}/organizations/${ORG.id}`);
    await noScript.getByLabel("Strategy for Google Gemini", { exact: true }).selectOption("weighted");
    await submit(noScript.getByRole("button", { name: "Save the Google Gemini strategy" }));
    expect(new URL(noScript.url()).pathname).toBe(`/organizations/${ORG.id}`);
    expect(await success("now pick their key", noScript)).toContain("Google Gemini calls of this organization now pick their key by “Weighted”");
    expect(await noScript.getByLabel("Strategy for Google Gemini", { exact: true }).inputValue()).toBe("weighted");
    await expectNoSecrets(noScript, plainWatch, secrets);
    await plain.close();
  });

  it("a failing credential shows a Failing badge with its streak, and the Failing filter keeps to it (in the URL)", async () => {
    const list = await api("GET", `/api/provider-credentials/organization/${ORG.id}`);
    const revokedId = list.credentials.find((c: { credential_name: string }) => c.credential_name === "Revoked key").credential_id;
    const { credentials } = portal.service.clients();
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId: revokedId, kind: FailureKind.AUTHENTICATION });

    await open(page, listUrl());
    const revoked = row("Revoked key");
    const badge = revoked.getByTestId("failing-badge");
    expect(await text(badge)).toBe("Failing");
    expect(await backgroundOf(badge)).toBe(RED_BADGE);
    expect(await text(revoked.getByTestId("failure-streak"))).toBe("3 failures in a row");
    expect(await row("Good key").getByTestId("failing-badge").count()).toBe(0);

    await page.getByLabel("Failing", { exact: true }).check();
    await page.getByRole("button", { name: "Show credentials" }).click();
    await page.waitForURL((url) => url.searchParams.get("failing") === "true");
    await row("Good key").waitFor({ state: "detached" });
    expect(await page.locator("tbody tr").count()).toBe(1);
    expect(await text(page.getByRole("heading", { level: 2 }))).toBe(`Failing credentials of ${ORG.name}`);
    await page.reload();
    await hydrated(page);
    expect(await page.getByLabel("Failing", { exact: true }).isChecked()).toBe(true);
    expect(await page.locator("tbody tr").count()).toBe(1);
    await scanBothWidths("credentials, Failing filter");
  });

  it("a key older than ROTATION_DAYS shows Rotation due, and the Rotation due filter keeps to it", async () => {
    await portal.service.db.query(
      "update provider_credentials set key_set_at = now() - interval '100 days' where organization_id = $1 and credential_name = 'Old key'",
      [ORG.id],
    );
    await open(page, listUrl());
    const old = row("Old key");
    const badge = old.getByTestId("rotation-due-badge");
    expect(await text(badge)).toBe("Rotation due");
    expect(await backgroundOf(badge)).toBe(AMBER_BADGE);
    // Then the selection: the only Gemini key, in use.
    expect(await text(old.locator('[data-label="Status"]'))).toMatch(/^Active In use Rotation due key set \d{4}-\d{2}-\d{2}$/);
    expect(await row("Good key").getByTestId("rotation-due-badge").count()).toBe(0);
    await scanBothWidths("credentials with check, failing and rotation badges");

    await page.getByLabel("Rotation due", { exact: true }).check();
    await page.getByRole("button", { name: "Show credentials" }).click();
    await page.waitForURL((url) => url.searchParams.get("rotation_due") === "true");
    await row("Good key").waitFor({ state: "detached" });
    expect(await page.locator("tbody tr th").allInnerTexts()).toEqual(["Old key"]);
    expect(await text(page.getByRole("heading", { level: 2 }))).toBe(`Credentials of ${ORG.name} due for rotation`);

    // Both at once: nothing here is both, said plainly, with the way back.
    await page.getByLabel("Failing", { exact: true }).check();
    await page.getByRole("button", { name: "Show credentials" }).click();
    await page.waitForURL((url) => url.searchParams.get("failing") === "true" && url.searchParams.get("rotation_due") === "true");
    expect(await text(page.getByTestId("empty-state"))).toContain("No credential of this organization is marked failing and due for rotation.");
    await scanBothWidths("credentials, both filters, empty");
    await page.getByRole("link", { name: "Show all its credentials" }).click();
    await page.waitForURL((url) => url.searchParams.get("rotation_due") === null && url.searchParams.get("failing") === null);
    await row("Good key").waitFor();
  });

  it("the Add form takes a weight and can check the key first; a refused key is explained at the key field", async () => {
    await page.getByRole("link", { name: "Add Provider Credential" }).click();
    await page.getByRole("heading", { name: "Add Provider Credential" }).waitFor();
    await hydrated(page);
    const weight = page.getByLabel("Weight", { exact: true });
    expect(await weight.inputValue()).toBe("1");
    expect(await weight.getAttribute("type")).toBe("number");
    expect([await weight.getAttribute("min"), await weight.getAttribute("max")]).toEqual(["0", "1000"]);
    const verify = page.getByLabel("Check the key with the provider before saving", { exact: true });
    expect(await verify.isChecked()).toBe(false);

    await page.getByLabel("Provider", { exact: true }).selectOption("openai");
    await page.getByLabel("Credential Name", { exact: true }).fill("Checked key");
    await page.getByLabel("API Key", { exact: true }).fill(key("openai", "invalid"));
    await page.getByLabel("API Base URL (optional)", { exact: true }).fill(fake.baseUrl("openai"));
    await weight.fill("5");
    await verify.check();
    await page.getByRole("button", { name: "Add credential" }).click();
    const error = page.locator("#api_key-error");
    expect(await text(error)).toMatch(/^the provider check did not pass \(invalid key\): OpenAI rejected the key as invalid .*; nothing was saved$/);
    const keyField = page.getByLabel("API Key", { exact: true });
    expect(await keyField.getAttribute("aria-invalid")).toBe("true");
    expect(await keyField.getAttribute("aria-describedby")).toContain("api_key-error");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("api_key");
    // The form is kept as typed (the server never sends the key back); nothing was saved.
    expect(await weight.inputValue()).toBe("5");
    expect(await verify.isChecked()).toBe(true);
    const before = await api("GET", `/api/provider-credentials/organization/${ORG.id}`);
    expect(before.credentials.map((c: { credential_name: string }) => c.credential_name)).not.toContain("Checked key");
    await scanBothWidths("add credential, refused by the provider check");

    await keyField.fill(key("openai", "valid"));
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await success("was added")).toContain("“Checked key” was added and is active. OpenAI accepted its key.");
    const after = await api("GET", `/api/provider-credentials/organization/${ORG.id}`);
    expect(after.credentials.find((c: { credential_name: string }) => c.credential_name === "Checked key").weight).toBe(5);
  });

  it("the Edit form changes the weight, and with the check refuses a new key the provider does not accept", async () => {
    await (await menu("Checked key")).getByRole("link", { name: "Edit Checked key" }).click();
    await page.getByRole("heading", { name: "Edit “Checked key”" }).waitFor();
    await hydrated(page);
    const weight = page.getByLabel("Weight", { exact: true });
    expect(await weight.inputValue()).toBe("5");
    const verify = page.getByLabel("Check the key with the provider before saving", { exact: true });
    expect(await verify.isChecked()).toBe(false);
    await weight.fill("0");
    await page.getByLabel("New API Key (optional)", { exact: true }).fill(key("openai", "rate_limited"));
    await verify.check();
    await page.getByRole("button", { name: "Save changes" }).click();
    expect(await text(page.locator("#api_key-error"))).toMatch(/^the provider check did not pass \(rate limited\): /);
    expect(await page.getByLabel("New API Key (optional)", { exact: true }).getAttribute("aria-invalid")).toBe("true");
    expect(await weight.inputValue()).toBe("0");
    await scanBothWidths("edit credential, refused by the provider check");

    // Keep the current key (which the provider accepts), and check it again before saving.
    await page.getByLabel("New API Key (optional)", { exact: true }).fill("");
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    expect(await success("was updated")).toBe("The OpenAI credential “Checked key” was updated. OpenAI accepted its key.");
    const list = await api("GET", `/api/provider-credentials/organization/${ORG.id}`);
    expect(list.credentials.find((c: { credential_name: string }) => c.credential_name === "Checked key").weight).toBe(0);
  });

  it("the organisation page shows each provider's key selection and changes it", async () => {
    await open(page, `${portal.url}/organizations/${ORG.id}`);
    const section = page.getByRole("region", { name: "Key selection" });
    const openai = section.locator("tbody tr").filter({ has: page.getByRole("rowheader", { name: "OpenAI", exact: true }) });
    expect(await text(openai.getByTestId("strategy"))).toBe("Newest The most recently activated healthy key (the default).");
    expect(await text(openai.getByTestId("strategy-changed"))).toBe("Never (the default)");
    expect(await section.locator("tbody tr").count()).toBe(4);

    await page.getByLabel("Strategy for OpenAI", { exact: true }).selectOption("round_robin");
    await page.getByRole("button", { name: "Save the OpenAI strategy" }).click();
    expect(await success("now pick their key")).toBe("OpenAI calls of this organization now pick their key by “Round robin”: the healthy active keys in turn.");
    await openai.getByTestId("strategy").filter({ hasText: "Round robin" }).waitFor();
    expect(await text(openai.getByTestId("strategy-changed"))).toMatch(new RegExp(`^(just now|\\d+ min ago) by ${ADMIN.email}$`));
    expect(await page.getByLabel("Strategy for OpenAI", { exact: true }).inputValue()).toBe("round_robin");
    await scanBothWidths("organization with key selection");

    await page.getByLabel("Strategy for Anthropic", { exact: true }).selectOption("weighted");
    await page.getByRole("button", { name: "Save the Anthropic strategy" }).click();
    expect(await success("“Weighted”")).toContain("Anthropic calls of this organization now pick their key by “Weighted”");

    const policies = await api("GET", `/api/provider-credentials/organization/${ORG.id}/selection-strategies`);
    // Google Gemini was set without JavaScript, above.
    expect(policies.policies.map((p: { strategy: string }) => p.strategy)).toEqual(["round_robin", "weighted", "weighted", "newest"]);
    expect(policies.policies[0].updated_by).toBe(ADMIN.email);
    // The audit log names the person, and the portal's token that acted for them.
    const events = await api("GET", `/api/audit-events?organization_id=${ORG.id}&action=selection_strategy.set`);
    expect(events.events[0].actor).toBe(`${ADMIN.email} (owner) via token:service-admin-token`);
  });

  it("no key material ever left the portal, and no page broke its Content-Security-Policy", async () => {
    await expectNoSecrets(page, watch, secrets);
    for (const secret of secrets) expect(fake.urlsContaining(secret)).toEqual([]);
    expect(watch.cspViolations).toEqual([]);
    // Refused form posts (400, 409) are reported by Chromium as failed loads; nothing else may be logged.
    const unexpected = watch.problems.filter((problem) => !/Failed to load resource: the server responded with a status of (400|409)/.test(problem));
    expect(unexpected).toEqual([]);
  });
});
