// `npm run rotate-master-key`: with MASTER_KEY="new,old", re-encrypts every credential
// not under the first key. Safe while the service serves and administrators edit; safe to
// kill and rerun. Then drop the old key from MASTER_KEY.
import os from "node:os";
import { parseArgs } from "node:util";
import { rewrapAll } from "../credentials/rewrap.js";
import { describeError, exitWith, openWithKeyring } from "./open.js";
import { progressBar } from "./progress.js";

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { "batch-size": { type: "string" }, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    exitWith(
      `Usage: MASTER_KEY="<new key>,<old key>" npm run rotate-master-key [-- --batch-size N]\n\n` +
        "Re-encrypts every stored credential under the first key of MASTER_KEY, in batches (default 500),\n" +
        "and seals the portal accounts' two-factor (TOTP) secrets again under it.\n" +
        "Afterwards every service replica can run with the new key alone.",
      0,
    );
  }
  const batchSize = values["batch-size"] === undefined ? 500 : Number(values["batch-size"]);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) exitWith("--batch-size must be an integer from 1 to 10000", 2);

  const { cli, keyring } = await openWithKeyring();
  if (keyring.keyIds.length < 2) {
    console.error(`MASTER_KEY holds one key (${keyring.primaryKeyId}); rows under other keys cannot be read. Set MASTER_KEY="<new>,<old>".`);
  }
  console.error(`Re-encrypting credentials under ${keyring.primaryKeyId} (configured keys: ${keyring.keyIds.join(", ")})`);
  const bar = progressBar("re-encrypting");
  const report = await rewrapAll(cli.orm, keyring, {
    batchSize,
    actor: `cli:${os.userInfo().username}`,
    onProgress: ({ done, total, failed }) => bar.update(done, total, failed > 0 ? `, ${failed} failed` : ""),
  });
  bar.finish();
  await cli.close();

  console.log(`Re-encrypted ${report.rewrapped} credential(s) in ${(report.ms / 1000).toFixed(1)} s (${report.passes} pass(es)).`);
  if (report.stillLocked > 0) console.log(`${report.stillLocked} credential(s) stayed locked by concurrent edits: run the command again.`);
  if (report.failed.length > 0) {
    console.log(`${report.failed.length} credential(s) failed their checks and were left untouched (run npm run verify-keys):`);
    for (const f of report.failed) console.log(`  ${f.id} (key ${f.keyId}): ${f.reason}`);
  }
  const secrets = report.twoFactorSecrets;
  console.log(`Sealed ${secrets.resealed} two-factor secret(s) of portal accounts again under ${keyring.primaryKeyId}.`);
  if (secrets.failed.length > 0) {
    console.log(
      `${secrets.failed.length} two-factor secret(s) open with no configured key and were left untouched (reset them: npm run admin -- reset-2fa --email E):`,
    );
    for (const f of secrets.failed) console.log(`  ${f.email} (${f.column}): ${f.reason}`);
  }
  if (report.failed.length > 0 || report.stillLocked > 0 || secrets.failed.length > 0) process.exit(1);
  console.log(`Every credential is now under ${keyring.primaryKeyId}, and so is every two-factor secret; the other keys can be removed from MASTER_KEY.`);
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`));
