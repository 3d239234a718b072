import { createLogger, serializeError, type Logger } from "../logger.js";
import { maskKeys } from "../errors.js";
import { openDatabase, type Database } from "../runtime/local.js";
import { createOrm, migrate, type Orm } from "../db/orm.js";

/** The database the service would use (DATABASE_URL or the embedded one), migrated, for a command-line tool. */
export async function openForCli(): Promise<{ orm: Orm; database: Database; logger: Logger; close(): Promise<void> }> {
  // Command-line tools print their results; logs only on warnings unless LOG_LEVEL says otherwise.
  const logger = createLogger(process.env.LOG_LEVEL ?? "warn");
  const database = await openDatabase(process.env, logger);
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
