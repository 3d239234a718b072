// `npm run migrate`: applies pending migrations to DATABASE_URL (or the embedded database).
import { createLogger } from "../logger.js";
import { createOrm, migrate } from "../db/orm.js";
import { exitWith, openExistingDatabase } from "./open.js";

async function main(): Promise<void> {
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
