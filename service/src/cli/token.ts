// `npm run token -- create --name NAME --scope resolve|admin|metrics` | `list` | `revoke NAME`
import os from "node:os";
import { parseArgs } from "node:util";
import { TokenStore } from "../auth/token-store.js";
import { ServiceError } from "../errors.js";
import { describeError, exitWith, openForCli } from "./open.js";

const USAGE = `Usage:
  npm run token -- create --name NAME --scope resolve|admin|metrics   create a token and print it (once)
  npm run token -- list                                               list tokens (never the tokens themselves)
  npm run token -- revoke NAME                                        revoke a token

Scopes: "resolve" may call ResolveKey only; "admin" may call every RPC; "metrics" may only scrape METRICS_PORT.`;

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { name: { type: "string" }, scope: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) exitWith(USAGE, values.help ? 0 : 2);
  if (command === "create" && (!values.name || !values.scope)) exitWith(`create needs --name and --scope\n\n${USAGE}`, 2);
  if (command === "revoke" && rest.length !== 1) exitWith(`revoke needs exactly one token name\n\n${USAGE}`, 2);
  if (!["create", "list", "revoke"].includes(command)) exitWith(`unknown command "${command}"\n\n${USAGE}`, 2);

  const cli = await openForCli();
  const store = new TokenStore(cli.orm);
  const actor = `cli:${os.userInfo().username}`;
  try {
    if (command === "create") {
      const { token, info } = await store.create(values.name!, values.scope!, actor);
      console.error(`Created ${info.scope} token "${info.name}". It is shown only this once; store it now:`);
      console.log(token);
    } else if (command === "list") {
      const tokens = await store.list();
      if (tokens.length === 0) console.log("No tokens. Create one with: npm run token -- create --name NAME --scope resolve|admin");
      for (const t of tokens) {
        console.log(
          [t.name.padEnd(24), t.scope.padEnd(8), `created ${t.createdAt.toISOString()}`, `last used ${t.lastUsedAt?.toISOString() ?? "never"}`].join("  "),
        );
      }
    } else {
      await store.revoke(rest[0], actor);
      console.log(`Revoked token "${rest[0]}". Running services stop accepting it within 5 seconds.`);
    }
  } catch (error) {
    await cli.close();
    if (error instanceof ServiceError) exitWith(`Error: ${error.message}`);
    throw error;
  }
  await cli.close();
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`));
