// The benchmark's PostgreSQL: BENCH_DATABASE_URL (a user that may create
// databases) or an embedded PostgreSQL in a temporary folder; either way a
// fresh database, migrated, and removed at the end.
import { createOrm, migrate } from "../service/src/db/orm.js";
import { createDatabase, startEmbeddedCluster } from "../test/support/kit.js";
import { onCleanup } from "./processes.js";

export interface BenchDatabase {
  url: string;
  embedded: boolean;
  /** "PostgreSQL 18.4" */
  version: string;
  /** The embedded postmaster's pid (its CPU time counts as the benchmark's own). */
  postmasterPid?: number;
}

export async function openBenchDatabase(log: (line: string) => void): Promise<BenchDatabase> {
  let adminUrl = process.env.BENCH_DATABASE_URL;
  const embedded = !adminUrl;
  let postmasterPid: number | undefined;
  if (!adminUrl) {
    const started = Date.now();
    log("starting an embedded PostgreSQL (set BENCH_DATABASE_URL to use another server)");
    // A benchmark database: durability buys nothing here. The benchmark stops it itself on a signal.
    const cluster = await startEmbeddedCluster({ prefix: "pc-bench-pg-", extraFlags: ["-c", "full_page_writes=off"], signals: "caller" });
    onCleanup(() => cluster.destroy());
    postmasterPid = await cluster.postmasterPid();
    log(`embedded PostgreSQL on 127.0.0.1:${cluster.port} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    adminUrl = cluster.adminUrl;
  }

  const db = await createDatabase(adminUrl, { prefix: "pc_bench_" });
  // Another server outlives us: drop what we created (the embedded one goes away with its folder).
  onCleanup(() => (embedded ? Promise.resolve() : db.drop()));
  const [{ server_version }] = await db.query<{ server_version: string }>("show server_version");
  const version = `PostgreSQL ${server_version}`;
  const { name, url } = db;

  const orm = await createOrm({ databaseUrl: url, poolSize: 2 });
  try {
    const applied = await migrate(orm, url);
    log(`database ${name}: applied ${applied.length} migration(s)`);
  } finally {
    await orm.close(true);
  }
  return { url, embedded, version, postmasterPid };
}
