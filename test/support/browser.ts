import { constants } from "node:fs";
import { access, mkdir, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page, type Response } from "playwright-core";
import { expect } from "vitest";

/**
 * End-to-end tests drive Debian's Chromium through playwright-core (which
 * never downloads a browser). CHROMIUM_PATH overrides the default path.
 */

export const DEFAULT_CHROMIUM_PATH = "/usr/bin/chromium";

/** Launch flags that work on these machines (../shared/STACK.md). */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SCREENSHOT_DIR = path.join(rootDir, "docs", "screenshots");

export function wantedChromiumPath(): string {
  return process.env.CHROMIUM_PATH || DEFAULT_CHROMIUM_PATH;
}

/** The Chromium to use, or null when there is no executable file at the wanted path. */
export async function findChromium(): Promise<string | null> {
  const wanted = wantedChromiumPath();
  try {
    await access(wanted, constants.X_OK);
    return wanted;
  } catch {
    return null;
  }
}

/** Whether the end-to-end tests run: a browser was found, or one is required (E2E_REQUIRED=1) and its absence must fail them. */
export function e2eEnabled(chromiumPath: string): boolean {
  return chromiumPath !== "" || process.env.E2E_REQUIRED === "1";
}

/** Starts the browser; without one (only possible under E2E_REQUIRED=1) fails, saying why. */
export function launchChromium(executablePath: string): Promise<Browser> {
  if (executablePath === "") {
    throw new Error(
      `End-to-end tests required (E2E_REQUIRED=1), but there is no Chromium at ${wantedChromiumPath()}: ` +
        "install Debian's chromium, or set CHROMIUM_PATH to a Chromium executable.",
    );
  }
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 375, height: 740 };

/** A fresh browser context (its own cookies) with sensible defaults. */
export async function newContext(browser: Browser, options: BrowserContextOptions = {}): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: DESKTOP, locale: "en-GB", timezoneId: "UTC", reducedMotion: "reduce", ...options });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(20_000);
  return context;
}

/**
 * Everything a page did that a user or an auditor would object to: console
 * errors (Chromium reports each Content-Security-Policy violation there),
 * uncaught exceptions, and CSP violations reported to the page itself. Also
 * keeps every response body from the portal and every URL the page visited,
 * for the "no key material anywhere" checks.
 */
export interface PageWatch {
  problems: string[];
  cspViolations: string[];
  urls: string[];
  /** Response bodies from the portal (documents, data, action results). */
  bodies(): Promise<string[]>;
}

export async function watchPage(page: Page, portalUrl: string): Promise<PageWatch> {
  const problems: string[] = [];
  const cspViolations: string[] = [];
  const urls: string[] = [];
  const pending: Array<Promise<string | null>> = [];
  page.on("console", (message) => {
    const text = message.text();
    if (/Content Security Policy/i.test(text)) cspViolations.push(text);
    if (message.type() === "error") problems.push(`console error: ${text}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) urls.push(frame.url());
  });
  page.on("request", (request) => urls.push(request.url()));
  page.on("response", (response: Response) => {
    if (!response.url().startsWith(portalUrl)) return;
    if (response.status() >= 300 && response.status() < 400) return;
    pending.push(response.text().catch(() => null));
  });
  // The page reports violations to itself too (e.g. a blocked inline style attribute).
  await page.exposeBinding("__reportCspViolation", (_source, text: string) => {
    cspViolations.push(text);
  });
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      const report = (window as unknown as { __reportCspViolation?: (text: string) => void }).__reportCspViolation;
      report?.(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} (${event.sourceFile}:${event.lineNumber})`);
    });
  });
  return {
    problems,
    cspViolations,
    urls,
    async bodies() {
      const settled = await Promise.all(pending);
      return settled.filter((body): body is string => body !== null);
    },
  };
}

/** Fails if any secret appears in a response body, a URL, the current HTML, web storage or the history state. */
export async function expectNoSecrets(page: Page, watch: PageWatch, secrets: string[]): Promise<void> {
  const bodies = await watch.bodies();
  const html = await page.content();
  const storage = await page.evaluate(() => {
    try {
      return JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage }, history: history.state });
    } catch {
      return ""; // an error page or an opaque origin has no storage
    }
  });
  for (const secret of secrets) {
    expect(secret.length).toBeGreaterThan(8);
    const inBodies = bodies.filter((body) => body.includes(secret));
    expect(inBodies.length, `a response body carried a key: ${inBodies[0]?.slice(0, 200)}`).toBe(0);
    expect(watch.urls.filter((url) => url.includes(secret) || url.includes(encodeURIComponent(secret)))).toEqual([]);
    expect(html.includes(secret), "the page's HTML carries a key").toBe(false);
    expect(storage.includes(secret), "web storage or history state carries a key").toBe(false);
  }
}

/** Waits until SvelteKit has started in the page (the root layout marks <html> when mounted). */
export async function hydrated(page: Page): Promise<void> {
  await page.waitForSelector('html[data-hydrated="true"]', { state: "attached" });
}

/** Goes to a path of the portal and waits for the app to run. */
export async function open(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await hydrated(page);
}

/** Signs in through the form, from wherever the page is (it must show the sign-in form). */
export async function signInOnPage(page: Page, email: string, password: string): Promise<void> {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForURL((url) => url.pathname !== "/login"), page.getByRole("button", { name: "Sign in" }).click()]);
}

// ---------------------------------------------------------------- accessibility

const require = createRequire(import.meta.url);
let axeSource: string | undefined;

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: number;
  targets: string[];
}

/**
 * Runs axe-core in the page. The CSP forbids inline scripts, so axe's source
 * is evaluated through the DevTools protocol (page.evaluate) instead of an
 * injected <script>.
 */
export async function axeScan(page: Page): Promise<AxeViolation[]> {
  axeSource ??= await readFile(require.resolve("axe-core/axe.min.js"), "utf8");
  const loaded = await page.evaluate(() => typeof (window as unknown as { axe?: unknown }).axe !== "undefined");
  if (!loaded) await page.evaluate(axeSource);
  return page.evaluate(async () => {
    const axe = (
      window as unknown as {
        axe: {
          run: (
            context: Document,
            options: object,
          ) => Promise<{ violations: Array<{ id: string; impact: string | null; help: string; nodes: Array<{ target: unknown[] }> }> }>;
        };
      }
    ).axe;
    const results = await axe.run(document, { resultTypes: ["violations"] });
    return results.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.length,
      targets: v.nodes.slice(0, 5).map((n) => n.target.map(String).join(" ")),
    }));
  });
}

/** Serious and critical violations only: the ones that block people. */
export function blocking(violations: AxeViolation[]): AxeViolation[] {
  return violations.filter((v) => v.impact === "serious" || v.impact === "critical");
}

// ---------------------------------------------------------------- screenshots

/**
 * Writes docs/screenshots/<name>-<desktop|phone>.png at both widths: the
 * whole page, or only the screen (`fullPage: false`, for a modal dialog).
 */
export async function screenshotBothWidths(page: Page, name: string, options: { prepare?: () => Promise<void>; fullPage?: boolean } = {}): Promise<string[]> {
  const { prepare, fullPage = true } = options;
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const written: string[] = [];
  const original = page.viewportSize() ?? DESKTOP;
  for (const [label, size] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ] as const) {
    await page.setViewportSize(size);
    if (prepare) await prepare();
    const file = path.join(SCREENSHOT_DIR, `${name}-${label}.png`);
    const png = await page.screenshot({ fullPage, animations: "disabled", caret: "hide" });
    if (await differsVisibly(file, png)) await writeFile(file, png);
    written.push(file);
  }
  await page.setViewportSize(original);
  return written;
}

interface DecodedPng {
  width: number;
  height: number;
  data: Uint8Array;
}
// playwright-core's own PNG codec (pngjs), to compare pictures without another dependency.
const { PNG } = require("playwright-core/lib/utilsBundle") as { PNG: { sync: { read(buffer: Buffer): DecodedPng } } };

/**
 * Whether a new screenshot differs from the one in the file by more than
 * rendering noise (a few anti-aliased pixels change from run to run), so that
 * an unchanged page leaves its committed picture alone.
 */
async function differsVisibly(file: string, png: Buffer): Promise<boolean> {
  let old: Buffer;
  try {
    old = await readFile(file);
  } catch {
    return true;
  }
  if (old.equals(png)) return false;
  const a = PNG.sync.read(old);
  const b = PNG.sync.read(png);
  if (a.width !== b.width || a.height !== b.height) return true;
  let different = 0;
  for (let i = 0; i < a.data.length; i += 4) {
    if (a.data[i] !== b.data[i] || a.data[i + 1] !== b.data[i + 1] || a.data[i + 2] !== b.data[i + 2]) different++;
  }
  return different > (a.width * a.height) / 20_000;
}
