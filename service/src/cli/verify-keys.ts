// `npm run verify-keys`: decrypts every stored credential and reports the ones that fail
// (never a key); exits non-zero when any does.
import { verifyAll } from "../credentials/rewrap.js";
import { describeError, exitWith, openWithKeyring, takeNoArguments } from "./open.js";
import { progressBar } from "./progress.js";

const USAGE = `Usage: npm run verify-keys

Decrypts every stored credential with MASTER_KEY, checks its row binding, and reports the ones that fail
(never a key). Exits non-zero when any does.`;

async function main(): Promise<void> {
  takeNoArguments(USAGE);
  const { cli, keyring } = await openWithKeyring();
  const bar = progressBar("verifying");
  const report = await verifyAll(cli.orm, keyring, (checked, total) => bar.update(checked, total));
  bar.finish();
  await cli.close();
  console.log(`Checked ${report.checked} credential(s).`);
  for (const [keyId, count] of Object.entries(report.byKeyId)) {
    console.log(
      `  ${keyId}: ${count}${keyring.has(keyId) ? (keyId === keyring.primaryKeyId ? " (primary key)" : " (older key: run rotate-master-key)") : " (NOT in MASTER_KEY)"}`,
    );
  }
  if (report.unbound > 0) {
    console.log(
      `  ${report.unbound} written before row binding existed: refused until you bind them to their rows (npm run bind-legacy-keys lists them and asks).`,
    );
  }
  if (report.failures.length === 0 && report.unbound > 0) process.exitCode = 1;
  if (report.failures.length === 0) {
    if (report.unbound === 0) console.log("Every credential decrypts with the configured MASTER_KEY and is bound to its row.");
    return;
  }
  console.log(`${report.failures.length} credential(s) FAILED:`);
  for (const f of report.failures) console.log(`  ${f.id}  organization ${f.organizationId}  ${f.provider}: ${f.reason}`);
  process.exit(1);
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`));
