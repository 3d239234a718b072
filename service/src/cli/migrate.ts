// `npm run migrate`: applies pending migrations to DATABASE_URL (or the embedded database).
import { createLogger } from "../logger.js";
import { createOrm, migrate } from "../db/orm.js";
import { exitWith, openExistingDatabase, takeNoArguments } from "./open.js";

const USAGE = `Usage: npm run migrate

Applies the pending migrations to DATABASE_URL, or to the embedded database in DATA_DIR (default .data).
The service also applies them at start-up.`;

async function main(): Promise<void> {
  takeNoArguments(USAGE);
  const logger = createLogger(process.env.LOG_LEVEL ?? "warn");
  const database = await openExistingDatabase(logger);
  const orm = await createOrm({ databaseUrl: database.databaseUrl, poolSize: 2 });
  try {
    const applied = await migrate(orm, database.databaseUrl);
    console.log(applied.length === 0 ? "Database is up to date." : `Applied ${applied.length} migration(s): ${applied.join(", ")}`);
  } finally {
    await orm.close(true);
    await database.stop();
  }
}

main().catch((error) => exitWith(`Migration failed: ${error instanceof Error ? error.message : String(error)}`));
