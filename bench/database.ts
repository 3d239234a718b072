// The benchmark's PostgreSQL: BENCH_DATABASE_URL (a user that may create
// databases) or an embedded PostgreSQL in a temporary folder; either way a
// fresh database, migrated, and removed at the end.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createOrm, migrate } from "../service/src/db/orm.js";
import { startEmbeddedCluster } from "../test/support/kit.js";
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

  const name = `pc_bench_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  let version: string;
  try {
    await admin.query(`create database ${name}`);
    const { rows } = await admin.query<{ server_version: string }>("show server_version");
    version = `PostgreSQL ${rows[0].server_version}`;
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  if (!embedded) {
    // Another server outlives us: drop what we created (the embedded one goes away with its folder).
    onCleanup(async () => {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    });
  }

  const orm = await createOrm({ databaseUrl: url.toString(), poolSize: 2 });
  try {
    const applied = await migrate(orm, url.toString());
    log(`database ${name}: applied ${applied.length} migration(s)`);
  } finally {
    await orm.close(true);
  }
  return { url: url.toString(), embedded, version, postmasterPid };
}
