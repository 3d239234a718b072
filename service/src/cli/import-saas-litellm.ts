// `npm run import:saas-litellm -- --from <postgres url> --legacy-encryption-key <ENCRYPTION_KEY> [--dry-run] [--batch-size N]`:
// moves organisations, teams and provider keys from a SaaS LiteLLM database into
// this service's (DATABASE_URL and MASTER_KEY, or the embedded default). Safe to
// rerun; the legacy database is only read. Never prints a key or a token.
import { parseArgs } from "node:util";
import { createLogger } from "../logger.js";
import type { Database } from "../runtime/local.js";
import { createOrm, migrate, type Orm } from "../db/orm.js";
import { migrationsList } from "../../../migrations/index.js";
import { createKeyring, MasterKeyError, type Keyring } from "../keyring/index.js";
import { exitCodeOf, importSaasLitellm } from "../importer/import-saas-litellm.js";
import { explainWrongKey, legacyKeyring, openLegacyToken } from "../importer/legacy-key.js";
import { LegacySource, LegacySourceError, parseLegacyUrl } from "../importer/legacy-source.js";
import { formatReport } from "../importer/report.js";
import { maskKeys } from "../errors.js";
import { ConfigError } from "../runtime/config.js";
import { applySecretFiles } from "../runtime/secret-files.js";
import { exitWith, openExistingDatabase } from "./open.js";
import { progressBar } from "./progress.js";

const USAGE = `Usage: npm run import:saas-litellm -- --from <postgres url> --legacy-encryption-key <ENCRYPTION_KEY> [--dry-run] [--batch-size N]

Imports the organizations, teams and provider credentials of a SaaS LiteLLM database into this
service's database (DATABASE_URL and MASTER_KEY, or the embedded default). Every key is decrypted
with the legacy ENCRYPTION_KEY and re-encrypted under MASTER_KEY. Rows already imported are left
alone, so the import can be run again. The SaaS LiteLLM database is only read.

  --from URL                    the SaaS LiteLLM PostgreSQL database (or set LEGACY_DATABASE_URL,
                                or LEGACY_DATABASE_URL_FILE to a file holding it)
  --legacy-encryption-key KEY   its ENCRYPTION_KEY (or set LEGACY_ENCRYPTION_KEY or
                                LEGACY_ENCRYPTION_KEY_FILE, which keep it out of the process list
                                and the shell history)
  --dry-run                     read and decrypt everything, report what would happen, write nothing
  --batch-size N                credentials per transaction, 1-10000 (default 500)

Exit status: 0 every row imported or already present; 1 error; 2 bad arguments;
3 finished, but some rows were skipped or could not be decrypted (listed by id);
4 no stored key decrypts: --legacy-encryption-key is wrong, nothing was imported.`;

/** The legacy secrets read from the environment, each also as NAME_FILE. */
const LEGACY_SECRETS = ["LEGACY_DATABASE_URL", "LEGACY_ENCRYPTION_KEY"] as const;

const EXIT_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_WRONG_KEY = 4;

interface Target {
  orm: Orm;
  database: Database;
  keyring: Keyring;
  close(): Promise<void>;
}

function parse(): { from: URL; encryptionKey: string; dryRun: boolean; batchSize: number } {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        from: { type: "string" },
        "legacy-encryption-key": { type: "string" },
        "dry-run": { type: "boolean" },
        "batch-size": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    exitWith(`${(error as Error).message}\n\n${USAGE}`, EXIT_USAGE);
  }
  if (values.help) exitWith(USAGE, 0);
  // Given as NAME_FILE (a mounted secret), as the service's own secrets may be.
  try {
    for (const { message } of applySecretFiles(process.env, LEGACY_SECRETS)) console.error(`Warning: ${message}`);
  } catch (error) {
    if (error instanceof ConfigError) exitWith(error.message, EXIT_USAGE);
    throw error;
  }
  const from = values.from ?? process.env.LEGACY_DATABASE_URL;
  if (!from) exitWith(`--from <postgres url> is required: the SaaS LiteLLM database.\n\n${USAGE}`, EXIT_USAGE);
  const encryptionKey = values["legacy-encryption-key"] ?? process.env.LEGACY_ENCRYPTION_KEY;
  if (!encryptionKey) exitWith(`--legacy-encryption-key is required: the ENCRYPTION_KEY the SaaS LiteLLM service ran with.\n\n${USAGE}`, EXIT_USAGE);
  const batchSize = values["batch-size"] === undefined ? 500 : Number(values["batch-size"]);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) exitWith("--batch-size must be an integer from 1 to 10000", EXIT_USAGE);
  let url: URL;
  try {
    url = parseLegacyUrl(from);
  } catch (error) {
    if (error instanceof LegacySourceError) exitWith(error.message, EXIT_USAGE);
    throw error;
  }
  return { from: url, encryptionKey, dryRun: values["dry-run"] === true, batchSize };
}

/** Whether any stored token opens with the legacy key; the first few tokens, to explain a failure. */
async function checkLegacyKey(source: LegacySource, ring: Keyring): Promise<{ tokens: number; opens: boolean; sample: string[] }> {
  let tokens = 0;
  const sample: string[] = [];
  for await (const page of source.tokens()) {
    for (const token of page) {
      tokens++;
      if (sample.length < 20) sample.push(token);
      if (openLegacyToken(ring, token).ok) return { tokens, opens: true, sample };
    }
  }
  return { tokens, opens: false, sample };
}

/** This service's database, as the service opens it; migrated, except on a dry run (which writes nothing and refuses a database that needs migrating). */
async function openTarget(dryRun: boolean): Promise<Target> {
  const logger = createLogger(process.env.LOG_LEVEL ?? "warn");
  const database = await openExistingDatabase(logger);
  let orm: Orm;
  try {
    orm = await createOrm({ databaseUrl: database.databaseUrl, poolSize: 2 });
  } catch (error) {
    await database.stop().catch(() => undefined);
    throw error;
  }
  const close = async () => {
    await orm.close(true);
    await database.stop();
  };
  try {
    let keyring: Keyring;
    try {
      keyring = createKeyring(database.masterKey);
    } catch (error) {
      if (error instanceof MasterKeyError) throw new TargetError(error.message);
      throw error;
    }
    const conn = orm.em.getConnection();
    if (dryRun) {
      const [{ present }] = await conn.execute<Array<{ present: boolean }>>("select to_regclass('mikro_orm_migrations') is not null as present");
      const applied = new Set(
        present ? (await conn.execute<Array<{ name: string }>>("select name from mikro_orm_migrations")).map((r) => r.name.replace(/\.[jt]s$/, "")) : [],
      );
      const pending = migrationsList.filter((m) => !applied.has(m.name));
      if (pending.length > 0) {
        throw new TargetError(
          `this service's database is not migrated (${pending.length} migration(s) pending). A dry run writes nothing, so it does not apply them: ` +
            "run npm run migrate first, or the import without --dry-run (which applies them).",
        );
      }
    } else {
      await migrate(orm, database.databaseUrl);
    }
    // Keys already stored under keys MASTER_KEY does not hold: it is not the service's MASTER_KEY, and what we add would be unreadable to the service.
    const byKey = await conn.execute<Array<{ key_id: string; n: string }>>("select key_id, count(*) as n from provider_credentials group by key_id");
    const foreign = byKey.filter((r) => !keyring.has(r.key_id));
    if (foreign.length > 0) {
      throw new TargetError(
        `MASTER_KEY does not hold the key(s) that encrypted credentials already in this service's database (${foreign.map((r) => `${r.key_id}: ${r.n}`).join(", ")}): ` +
          "it is probably not the MASTER_KEY the service runs with. Nothing was imported.",
      );
    }
    return { orm, database, keyring, close };
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }
}

class TargetError extends Error {}

/**
 * An unexpected error, for people: knex prefixes a failed statement's SQL,
 * values inlined (ciphertext included), to the driver's message, so only the
 * driver's part is shown, and anything shaped like a key is masked.
 */
function describeError(error: unknown): string {
  const e = error as { message?: unknown; code?: unknown };
  let message = typeof e?.message === "string" ? e.message : String(error);
  if (/\b(insert into|select |update |delete from)/i.test(message)) {
    const cut = message.lastIndexOf(" - ");
    message = cut >= 0 ? message.slice(cut + 3) : "a database statement failed";
  }
  const code = typeof e?.code === "string" && /^[0-9A-Z]{5}$/.test(e.code) ? ` (SQLSTATE ${e.code})` : "";
  return maskKeys(message.slice(0, 1000)) + code;
}

async function main(): Promise<void> {
  const args = parse();
  let source: LegacySource;
  try {
    source = await LegacySource.open(args.from);
  } catch (error) {
    if (error instanceof LegacySourceError) exitWith(`Error: ${error.message}`, EXIT_ERROR);
    throw error;
  }
  let target: Target | undefined;
  let importing = false;
  try {
    const legacyRing = legacyKeyring(args.encryptionKey);
    const key = await checkLegacyKey(source, legacyRing);
    if (key.tokens > 0 && !key.opens) {
      const hint = explainWrongKey(args.encryptionKey, key.sample);
      await source.close();
      exitWith(
        `Error: none of the ${key.tokens} stored api_key token(s) in ${source.where} decrypts with the key derived from --legacy-encryption-key: ` +
          `it is probably not the ENCRYPTION_KEY that SaaS LiteLLM ran with. Nothing was imported.${hint ? `\n${hint}` : ""}`,
        EXIT_WRONG_KEY,
      );
    }
    try {
      target = await openTarget(args.dryRun);
    } catch (error) {
      if (error instanceof TargetError) exitWith(`Error: ${error.message}`, EXIT_ERROR);
      throw error;
    }
    const bar = progressBar(args.dryRun ? "checking (dry run)" : "importing");
    importing = true;
    const report = await importSaasLitellm({
      orm: target.orm,
      keyring: target.keyring,
      legacyKeyring: legacyRing,
      source,
      dryRun: args.dryRun,
      batchSize: args.batchSize,
      onProgress: (done, total) => bar.update(done, total),
    });
    bar.finish();
    importing = false;
    console.log(formatReport(report, source.where));
    await source.close();
    await target.close();
    process.exit(exitCodeOf(report));
  } catch (error) {
    await source.close();
    await target?.close().catch(() => undefined);
    const message = describeError(error);
    exitWith(
      `Error: ${message}${importing && !args.dryRun ? "\nWhat was imported before the error stays imported; run the command again to import the rest." : ""}`,
      EXIT_ERROR,
    );
  }
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`, EXIT_ERROR));
