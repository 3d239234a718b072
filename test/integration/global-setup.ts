import type { TestProject } from "vitest/node";
import { startEmbeddedCluster } from "../support/kit.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** A PostgreSQL URL whose user may create databases; each test file makes its own. */
    adminDatabaseUrl: string;
  }
}

/**
 * The integration tier runs against a real PostgreSQL: TEST_DATABASE_URL when
 * set (CI also runs it against the machine's PostgreSQL 15), else an embedded
 * PostgreSQL started here in a temporary folder and removed afterwards.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.TEST_DATABASE_URL) {
    project.provide("adminDatabaseUrl", process.env.TEST_DATABASE_URL);
    return async () => {};
  }
  const cluster = await startEmbeddedCluster({ prefix: "pc-test-pg-" });
  project.provide("adminDatabaseUrl", cluster.adminUrl);
  return () => cluster.destroy();
}
