// `npm run bind-legacy-keys`: binds the stored keys written before row binding existed to their
// rows, after listing them and asking. The service never binds a row by itself: anyone who can
// write the database could otherwise make it accept a row it would refuse.
import os from "node:os";
import { createInterface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { bindLegacyRows, listLegacyRows, type LegacyRow } from "../credentials/rewrap.js";
import { describeError, exitWith, openWithKeyring } from "./open.js";

const USAGE = `Usage: npm run bind-legacy-keys [-- --yes]

Lists the stored keys written before row binding existed (the upgrade that introduced binding listed
them) and, once you confirm, binds each one to its row (organisation, provider, api_base). Until then
the service refuses them with DATA_LOSS. Bind only rows you recognise: anyone who can write the
database can add a row to that list.

  --yes   bind what is listed without asking (for scripts, after checking the list)`;

function describe(row: LegacyRow): string {
  const where = row.apiBase === null ? "" : `  api_base ${row.apiBase}`;
  const state = row.decrypts ? "" : "  (does not decrypt with MASTER_KEY: will be left unbound)";
  return `  ${row.id}  organization ${row.organizationId}  ${row.provider}  "${row.credentialName}"  key ${row.keyHint}  created ${row.createdAt.toISOString()}${where}${state}`;
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^(y|yes)$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

async function main(): Promise<void> {
  let values: { yes?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ options: { yes: { type: "boolean", short: "y" }, help: { type: "boolean", short: "h" } }, allowPositionals: false }));
  } catch (error) {
    exitWith(`${(error as Error).message}\n\n${USAGE}`, 2);
  }
  if (values.help) exitWith(USAGE, 0);
  if (!values.yes && !process.stdin.isTTY) {
    exitWith("bind-legacy-keys asks before binding and there is no terminal to ask on: run it in one, or pass --yes after checking the list.", 2);
  }

  const { cli, keyring } = await openWithKeyring();
  try {
    const rows = await listLegacyRows(cli.orm, keyring);
    if (rows.length === 0) {
      console.log("No stored key is waiting to be bound.");
      return;
    }
    console.log(`${rows.length} stored key(s) written before row binding existed:`);
    for (const row of rows) console.log(describe(row));
    const bindable = rows.filter((r) => r.decrypts);
    if (bindable.length === 0) {
      console.log("None of them decrypts with MASTER_KEY; nothing to bind (npm run verify-keys says more).");
      process.exitCode = 1;
      return;
    }
    if (!values.yes && !(await confirm(`Bind these ${bindable.length} key(s) to their rows? [y/N] `))) {
      console.log("Nothing was bound.");
      process.exitCode = 1;
      return;
    }
    const report = await bindLegacyRows(cli.orm, keyring, bindable, `cli:${os.userInfo().username}`);
    console.log(`Bound ${report.bound.length} key(s) to their rows.`);
    if (report.skipped.length > 0) {
      console.log(`${report.skipped.length} row(s) changed since they were listed and were left unbound (run the command again):`);
      for (const id of report.skipped) console.log(`  ${id}`);
      process.exitCode = 1;
    }
    if (bindable.length < rows.length) process.exitCode = 1;
  } finally {
    await cli.close();
  }
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`));
