// A PostgreSQL of a test's own, for tests that stop and start it (fault
// injection): the shared test PostgreSQL (global-setup.ts) must never go down.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { createDatabase, startEmbeddedCluster, type TestDatabase } from "./kit.js";

export interface DedicatedPostgres {
  /** A URL whose user may create databases. */
  adminUrl: string;
  port: number;
  /** Fast shutdown (SIGINT): open sessions are terminated, new ones refused. Resolves when the server has exited. */
  stop(): Promise<void>;
  /** Starts it again on the same data directory and port. */
  start(): Promise<void>;
  /**
   * SIGSTOP to the server and all its processes: connections stay open and new
   * ones are accepted by the kernel, but nothing answers (a frozen or
   * partitioned database, the case where only timeouts help). thaw() resumes it.
   */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  readonly running: boolean;
  /** Stops it (if running) and removes its data. */
  destroy(): Promise<void>;
}

export async function startDedicatedPostgres(): Promise<DedicatedPostgres> {
  const cluster = await startEmbeddedCluster({ prefix: "pc-fault-pg-" });
  let running = true;
  let frozen: number[] = [];
  const dataDir = cluster.dataDir;
  /** The postmaster (from postmaster.pid) and its children (from /proc). */
  const processes = async (): Promise<number[]> => {
    const postmaster = Number((await readFile(path.join(dataDir, "postmaster.pid"), "utf8")).split("\n")[0]);
    const children: number[] = [];
    for (const entry of await readdir("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
      // "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === postmaster) children.push(Number(entry));
    }
    return [postmaster, ...children];
  };
  const thaw = async () => {
    for (const pid of frozen) {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // gone
      }
    }
    frozen = [];
  };
  return {
    adminUrl: cluster.adminUrl,
    port: cluster.port,
    get running() {
      return running;
    },
    async stop() {
      await cluster.stop();
      running = false;
    },
    async start() {
      await cluster.start();
      running = true;
    },
    async freeze() {
      frozen = await processes();
      for (const pid of frozen) process.kill(pid, "SIGSTOP");
    },
    thaw,
    async destroy() {
      await thaw();
      running = false;
      await cluster.destroy();
    },
  };
}

/** A fresh database on the given server (the kit's createDatabase), whose `query` gives up on a connection after 2 s. */
export function createDatabaseOn(adminUrl: string): Promise<TestDatabase> {
  return createDatabase(adminUrl, { prefix: "pc_fault_", connectionTimeoutMillis: 2_000 });
}
