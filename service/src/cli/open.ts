import path from "node:path";
import { parseArgs } from "node:util";
import { createLogger, serializeError, type Logger } from "../logger.js";
import { maskKeys } from "../errors.js";
import { NoInstallationError, openDatabase, shellWord, type Database } from "../runtime/local.js";
import { createOrm, migrate, type Orm } from "../db/orm.js";
import { createKeyring, MasterKeyError, type Keyring } from "../keyring/index.js";
import { ConfigError } from "../runtime/config.js";
import { applySecretFiles, SERVICE_SECRET_SETTINGS } from "../runtime/secret-files.js";

/** The database the service would use (DATABASE_URL or the embedded one), migrated, for a command-line tool. */
export async function openForCli(): Promise<{ orm: Orm; database: Database; logger: Logger; close(): Promise<void> }> {
  // Command-line tools print their results; logs only on warnings unless LOG_LEVEL says otherwise.
  const logger = createLogger(process.env.LOG_LEVEL ?? "warn");
  const database = await openExistingDatabase(logger);
  const orm = await createOrm({ databaseUrl: database.databaseUrl, poolSize: 2 });
  try {
    await migrate(orm, database.databaseUrl);
  } catch (error) {
    await orm.close(true);
    await database.stop();
    throw error;
  }
  return {
    orm,
    database,
    logger,
    async close() {
      await orm.close(true);
      await database.stop();
    },
  };
}

/** openForCli, and a keyring from its MASTER_KEY; a MASTER_KEY that does not parse closes the database and exits 1 saying why. */
export async function openWithKeyring(): Promise<{ cli: Awaited<ReturnType<typeof openForCli>>; keyring: Keyring }> {
  const cli = await openForCli();
  try {
    return { cli, keyring: createKeyring(cli.database.masterKey) };
  } catch (error) {
    await cli.close();
    if (error instanceof MasterKeyError) exitWith(error.message);
    throw error;
  }
}

/** For a command that takes no arguments: --help prints its usage; anything else exits 2 with it, before anything is opened. */
export function takeNoArguments(usage: string): void {
  let help: boolean | undefined;
  try {
    ({
      values: { help },
    } = parseArgs({ options: { help: { type: "boolean", short: "h" } }, allowPositionals: false }));
  } catch (error) {
    exitWith(`${(error as Error).message}\n\n${usage}`, 2);
  }
  if (help) exitWith(usage, 0);
}

/** How this command was run, for messages that show it again ("npm run admin -- list"). */
export function commandLine(): string {
  const args = process.argv.slice(2).map(shellWord);
  const script = process.env.npm_lifecycle_event;
  if (script) return `npm run ${script}${args.length > 0 ? ` -- ${args.join(" ")}` : ""}`;
  return [path.relative(process.cwd(), process.argv[1] ?? "") || "the command", ...args].join(" ");
}

/**
 * The database of an existing installation (DATABASE_URL, or the embedded one in DATA_DIR). A
 * command-line tool never creates an installation: without one it exits 2, naming the folder it
 * looked in.
 */
export async function openExistingDatabase(logger: Logger): Promise<Database> {
  // The same secrets as the service's, given as NAME_FILE: DATABASE_URL_FILE, MASTER_KEY_FILE, ADMIN_PASSWORD_FILE, ...
  try {
    for (const { message, variable, file, mode } of applySecretFiles(process.env, SERVICE_SECRET_SETTINGS)) logger.warn({ variable, file, mode }, message);
  } catch (error) {
    if (error instanceof ConfigError) exitWith(error.message, 2);
    throw error;
  }
  try {
    return await openDatabase(process.env, logger, { createInstallation: false, command: commandLine() });
  } catch (error) {
    if (error instanceof NoInstallationError) exitWith(error.message, 2);
    throw error;
  }
}

/** Prints a message for a person and exits non-zero; never a stack trace for expected failures. */
export function exitWith(message: string, code = 1): never {
  console.error(message);
  process.exit(code);
}

/**
 * An unexpected error as one line for a person: for database errors only the
 * driver's sentence and SQLSTATE (their messages carry the SQL with its
 * values, ciphertext included), and anything key-shaped masked.
 */
export function describeError(error: unknown): string {
  const { message, code } = serializeError(error) as { message?: string; code?: string };
  const text = maskKeys(String(message ?? "unknown error").slice(0, 1000));
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? `${text} (SQLSTATE ${code})` : text;
}
