import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // The portal is built once (only when stale) before any test spawns it.
          globalSetup: ["test/integration/global-setup.ts", "test/integration/portal-build-setup.ts"],
          testTimeout: 30_000,
          hookTimeout: 120_000,
          // Files share one database; run them one after another.
          fileParallelism: false,
        },
      },
    ],
  },
});
