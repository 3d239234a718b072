import type { TestProject } from "vitest/node";
import { findChromium, wantedChromiumPath } from "../support/browser.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The Chromium the end-to-end tests drive; "" when there is none. */
    chromiumPath: string;
  }
}

/**
 * Finds the browser once for the end-to-end tier. Without one the tests are
 * skipped, and this says so; with E2E_REQUIRED=1 (CI) they run anyway and fail,
 * saying why (an error thrown here would not fail the run: vitest 4 exits 0).
 */
export default async function setup(project: TestProject): Promise<void> {
  const found = await findChromium();
  if (!found && process.env.E2E_REQUIRED !== "1") {
    console.log(
      `\nSkipping the end-to-end browser tests: no Chromium at ${wantedChromiumPath()} ` +
        "(install Debian's chromium, or set CHROMIUM_PATH to a Chromium executable).\n",
    );
  }
  project.provide("chromiumPath", found ?? "");
}
