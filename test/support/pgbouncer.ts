// PgBouncer in transaction pooling mode in front of a test PostgreSQL (docs/operations/pgbouncer.md):
// Debian's `pgbouncer` package, a process of its own with its configuration in a temporary folder,
// listening on a free loopback port. Any database name is passed through to the server, so a test
// creates its database directly and reaches it through PgBouncer with the same URL on PgBouncer's port.
import { spawn, type ChildProcess } from "node:child_process";
import { chownSync, existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { freePort } from "./kit.js";

/** Where Debian puts it (/usr/sbin is not on every PATH), then PATH. */
export function findPgbouncer(): string | undefined {
  if (process.env.PGBOUNCER && existsSync(process.env.PGBOUNCER)) return process.env.PGBOUNCER;
  for (const dir of ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", ...(process.env.PATH ?? "").split(":")]) {
    const file = path.join(dir, "pgbouncer");
    if (dir && existsSync(file)) return file;
  }
  return undefined;
}

export interface Pgbouncer {
  port: number;
  /** `url` (a database on the server PgBouncer fronts) through PgBouncer: the same URL on PgBouncer's port. */
  rewrite(url: string): string;
  /** Runs a command on PgBouncer's admin console (`SHOW POOLS`, ...). */
  admin<R extends pg.QueryResultRow = Record<string, unknown>>(command: string): Promise<R[]>;
  /** PgBouncer's log so far. */
  log(): Promise<string>;
  stop(): Promise<void>;
}

const quote = (value: string) => `"${value.replaceAll('"', '""')}"`;

/**
 * Starts PgBouncer (pool_mode = transaction) in front of the server of `serverUrl`, whose user and
 * password it logs in with. Clients authenticate as that user with that password (auth_type md5,
 * the password in the auth file), as a real deployment would.
 */
export async function startPgbouncer(serverUrl: string, binary = findPgbouncer()): Promise<Pgbouncer> {
  if (!binary) throw new Error("pgbouncer is not installed (Debian: apt-get install -y pgbouncer)");
  const server = new URL(serverUrl);
  const user = decodeURIComponent(server.username);
  const password = decodeURIComponent(server.password);
  const dir = await mkdtemp(path.join(tmpdir(), "pc-test-pgbouncer-"));
  const port = await freePort();
  const ini = path.join(dir, "pgbouncer.ini");
  const logFile = path.join(dir, "pgbouncer.log");
  await writeFile(path.join(dir, "userlist.txt"), `${quote(user)} ${quote(password)}\n`, { mode: 0o600 });
  await writeFile(
    ini,
    [
      "[databases]",
      // Every database name passes through to the server fronted.
      `* = host=${server.hostname} port=${server.port || 5432}`,
      "",
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      `auth_type = ${password === "" ? "trust" : "md5"}`,
      `auth_file = ${path.join(dir, "userlist.txt")}`,
      `admin_users = ${user}`,
      "pool_mode = transaction",
      "max_client_conn = 500",
      "default_pool_size = 20",
      `logfile = ${logFile}`,
      `pidfile = ${path.join(dir, "pgbouncer.pid")}`,
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  // PgBouncer refuses to run as root: as root, it runs as "postgres" (-u), which must read its folder.
  const asRoot = process.getuid?.() === 0;
  const args = asRoot ? ["-u", "postgres", ini] : [ini];
  if (asRoot) {
    const { uid, gid } = await postgresIds();
    for (const f of [dir, ini, path.join(dir, "userlist.txt")]) chownSync(f, uid, gid);
    await chmod(dir, 0o700);
  }
  const child: ChildProcess = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += String(d)));
  child.stderr?.on("data", (d: Buffer) => (output += String(d)));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const readLog = () => readFile(logFile, "utf8").catch(() => "");

  const via = (url: string) => {
    const u = new URL(url);
    u.hostname = "127.0.0.1";
    u.port = String(port);
    return u.toString();
  };
  const adminUrl = via(Object.assign(new URL(serverUrl), { pathname: "/pgbouncer" }).toString());
  const admin = async <R extends pg.QueryResultRow>(command: string): Promise<R[]> => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      // The admin console speaks the simple query protocol only: pg uses it for a query without parameters.
      return (await client.query<R>(command)).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  };

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM"); // immediate shutdown
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };

  // Ready when the admin console answers.
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) {
      const log = await readLog();
      await stop();
      throw new Error(`pgbouncer exited with ${child.exitCode} at start-up:\n${output}\n${log}`);
    }
    try {
      await admin("SHOW VERSION");
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        const log = await readLog();
        await stop();
        throw new Error(`pgbouncer did not answer on 127.0.0.1:${port}: ${(error as Error).message}\n${output}\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { port, rewrite: via, admin, log: readLog, stop };
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const passwd = await readFile("/etc/passwd", "utf8");
  const line = passwd.split("\n").find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error('running as root, pgbouncer needs the user "postgres" (it refuses to run as root)');
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}
