// `npm run admin -- create --email E [--role R] [--organizations a,b]` | `set-role --email E --role R [--organizations a,b | --all-organizations]`
// | `reset-password --email E` | `reset-2fa --email E` | `remove --email E` | `list`
import os from "node:os";
import { parseArgs } from "node:util";
import { AdminStore, type AdminView } from "../admins/admin-store.js";
import { ServiceError } from "../errors.js";
import { describeError, exitWith, openForCli } from "./open.js";

const USAGE = `Usage:
  npm run admin -- create --email EMAIL [--role ROLE] [--organizations ORG1,ORG2]
        create an account (an owner unless --role says otherwise); prints a generated password once
  npm run admin -- set-role --email EMAIL --role ROLE [--organizations ORG1,ORG2 | --all-organizations]
        change an account's role and, when given, its organisations; taking rights away signs it out everywhere
  npm run admin -- reset-password --email EMAIL
        set a new generated password (printed once) and sign out every session
  npm run admin -- reset-2fa --email EMAIL
        remove an account's second factor (a lost authenticator, no recovery codes left): it signs in
        with its password and sets up two-factor sign-in again
  npm run admin -- remove --email EMAIL
        remove an account and end its sessions (never the last administrator or the last enabled owner)
  npm run admin -- list
        list accounts: email, role, organisations, disabled, last sign-in

Roles: owner (everything, including accounts and tokens), editor (organisations' credentials, teams
and selection strategies), viewer (read only). --organizations limits an editor or viewer to those
organisations (they must exist); an owner is never limited. Without --organizations an account sees
every organisation.

Set ADMIN_PASSWORD to choose the password instead of generating one: at least 12 characters, not
containing the email address or the part before its @, and not easy to guess (several unrelated words).`;

const COMMANDS = ["create", "set-role", "reset-password", "reset-2fa", "remove", "list"];
/** The flags the store's errors name (`--organizations` is reported as `organizations[1]`). */
const FIELDS = { role: "role", organizations: "organizations" };

const organizationList = (value: string) => value.split(",").map((id) => id.trim());

function describe(a: AdminView): string {
  const organizations = a.organizations === null ? "all organisations" : a.organizations.join(",");
  return [
    a.email.padEnd(40),
    a.role.padEnd(6),
    organizations.padEnd(24),
    a.disabled ? "disabled" : "enabled ",
    `last sign-in ${a.lastSignInAt?.toISOString() ?? "never"}`,
    `created ${a.createdAt.toISOString()}`,
  ].join("  ");
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      email: { type: "string" },
      role: { type: "string" },
      organizations: { type: "string" },
      "all-organizations": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command] = positionals;
  if (values.help || !command) exitWith(USAGE, values.help ? 0 : 2);
  if (!COMMANDS.includes(command)) exitWith(`unknown command "${command}"\n\n${USAGE}`, 2);
  if (command !== "list" && !values.email) exitWith(`${command} needs --email\n\n${USAGE}`, 2);
  if (command === "set-role" && !values.role) exitWith(`set-role needs --role (owner, editor or viewer)\n\n${USAGE}`, 2);
  if (values.organizations !== undefined && values["all-organizations"]) exitWith(`give --organizations or --all-organizations, not both\n\n${USAGE}`, 2);
  if (!["create", "set-role"].includes(command) && (values.role !== undefined || values.organizations !== undefined || values["all-organizations"])) {
    exitWith(`${command} takes no --role or --organizations\n\n${USAGE}`, 2);
  }
  if (command === "create" && values["all-organizations"])
    exitWith(`create gives every organisation unless --organizations is given; drop --all-organizations\n\n${USAGE}`, 2);

  const cli = await openForCli();
  const admins = new AdminStore(cli.orm);
  const by = { actor: `cli:${os.userInfo().username}`, source: null };
  const chosen = process.env.ADMIN_PASSWORD || undefined;
  const email = values.email?.trim().toLowerCase() ?? "";
  try {
    if (command === "create") {
      const { admin, password } = await admins.create(values.email!, chosen, by, "ADMIN_PASSWORD", {
        role: values.role,
        organizations: values.organizations === undefined ? null : organizationList(values.organizations),
        fields: FIELDS,
      });
      const where = admin.organizations === null ? "every organisation" : admin.organizations.join(", ");
      console.error(`Created ${admin.role} ${admin.email} (${where}).`);
      if (!chosen) console.log(`Password (shown only this once): ${password}`);
    } else if (command === "set-role") {
      // An owner is never limited: --role owner alone means every organisation.
      const organizations =
        values.organizations !== undefined ? organizationList(values.organizations) : values["all-organizations"] || values.role === "owner" ? null : undefined;
      const { admin, sessionsEnded } = await admins.update(values.email!, { role: values.role, organizations }, by, FIELDS);
      const where = admin.organizations === null ? "every organisation" : admin.organizations.join(", ");
      console.error(`${admin.email} is now ${admin.role} (${where}); ${sessionsEnded} session${sessionsEnded === 1 ? "" : "s"} ended.`);
    } else if (command === "reset-password") {
      const password = await admins.resetPassword(values.email!, chosen, by, "ADMIN_PASSWORD");
      console.error(`New password set for ${email}; every session of theirs is signed out.`);
      if (!chosen) console.log(`Password (shown only this once): ${password}`);
    } else if (command === "reset-2fa") {
      const admin = await admins.resetTwoFactor(values.email!, by);
      console.error(`Two-factor sign-in is reset for ${admin.email}: it signs in with its password and sets up a second factor again.`);
    } else if (command === "remove") {
      const { sessionsEnded } = await admins.remove(values.email!, by);
      console.error(`Removed administrator ${email}; ${sessionsEnded} session${sessionsEnded === 1 ? "" : "s"} ended.`);
    } else {
      const list = await admins.list();
      if (list.length === 0) console.log("No administrators. Create one with: npm run admin -- create --email EMAIL");
      for (const a of list) console.log(describe(a));
    }
  } catch (error) {
    await cli.close();
    if (error instanceof ServiceError) exitWith(`Error: ${error.message}`);
    throw error;
  }
  await cli.close();
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`));
