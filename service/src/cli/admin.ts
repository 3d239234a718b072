// `npm run admin -- create --email E` | `reset-password --email E` | `remove --email E` | `list`
import os from "node:os";
import { parseArgs } from "node:util";
import { AdminStore } from "../admins/admin-store.js";
import { ServiceError } from "../errors.js";
import { describeError, exitWith, openForCli } from "./open.js";

const USAGE = `Usage:
  npm run admin -- create --email EMAIL           create an administrator; prints a generated password once
  npm run admin -- reset-password --email EMAIL   set a new generated password (printed once) and sign out every session
  npm run admin -- remove --email EMAIL           remove an administrator and end their sessions (never the last one)
  npm run admin -- list                           list administrators

Set ADMIN_PASSWORD to choose the password instead of generating one: at least 12 characters, not
containing the email address or the part before its @, and not easy to guess (several unrelated words).`;

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { email: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  const [command] = positionals;
  if (values.help || !command) exitWith(USAGE, values.help ? 0 : 2);
  if (!["create", "reset-password", "remove", "list"].includes(command)) exitWith(`unknown command "${command}"\n\n${USAGE}`, 2);
  if (command !== "list" && !values.email) exitWith(`${command} needs --email\n\n${USAGE}`, 2);

  const cli = await openForCli();
  const admins = new AdminStore(cli.orm);
  const by = { actor: `cli:${os.userInfo().username}`, source: null };
  const chosen = process.env.ADMIN_PASSWORD || undefined;
  try {
    if (command === "create") {
      const { admin, password } = await admins.create(values.email!, chosen, by, "ADMIN_PASSWORD");
      console.error(`Created administrator ${admin.email}.`);
      if (!chosen) console.log(`Password (shown only this once): ${password}`);
    } else if (command === "reset-password") {
      const password = await admins.resetPassword(values.email!, chosen, by, "ADMIN_PASSWORD");
      console.error(`New password set for ${values.email!.trim().toLowerCase()}; every session of theirs is signed out.`);
      if (!chosen) console.log(`Password (shown only this once): ${password}`);
    } else if (command === "remove") {
      const { sessionsEnded } = await admins.remove(values.email!, by);
      console.error(`Removed administrator ${values.email!.trim().toLowerCase()}; ${sessionsEnded} session${sessionsEnded === 1 ? "" : "s"} ended.`);
    } else {
      const list = await admins.list();
      if (list.length === 0) console.log("No administrators. Create one with: npm run admin -- create --email EMAIL");
      for (const a of list)
        console.log(`${a.email.padEnd(40)}  created ${a.createdAt.toISOString()}  last sign-in ${a.lastSignInAt?.toISOString() ?? "never"}`);
    }
  } catch (error) {
    await cli.close();
    if (error instanceof ServiceError) exitWith(`Error: ${error.message}`);
    throw error;
  }
  await cli.close();
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`));
