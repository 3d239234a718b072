// `npm run token -- create --name NAME --scope resolve|admin|metrics [--organizations A,B] [--expires-in 90d]`
// | `list` | `revoke NAME` | `rotate NAME [--overlap 10m]`
import os from "node:os";
import { parseArgs } from "node:util";
import { MAX_ROTATION_OVERLAP_SECONDS, TokenStore, type TokenInfo } from "../auth/token-store.js";
import { parseDuration } from "../auth/tokens.js";
import { ServiceError } from "../errors.js";
import { describeError, exitWith, openForCli } from "./open.js";

const USAGE = `Usage:
  npm run token -- create --name NAME --scope resolve|admin|metrics [--organizations ID,ID] [--expires-in DURATION]
                                              create a token and print it (once)
  npm run token -- list                       list tokens: prefix, scope, organisations, expiry, last use (never the tokens)
  npm run token -- revoke NAME                revoke a token
  npm run token -- rotate NAME [--overlap DURATION]
                                              give a token a new secret and print it (once); the old one stops
                                              at once, or after the overlap (at most 24h)

Scopes: "resolve" may call ResolveKey, ReportKeyFailure and ReportKeySuccess; "admin" may call every RPC;
"metrics" may only scrape METRICS_PORT. --organizations limits the token to those organisations (default: all).
Durations: a whole number and a unit, m (minutes), h (hours) or d (days): 30m, 12h, 90d.
Running services stop accepting a revoked or rotated secret within 5 seconds; an expired one at once.`;

/** A duration option in milliseconds, or exit 2 naming the option. */
function duration(option: string, text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) exitWith(`${option}: "${text}" is not a duration; use a whole number and m, h or d, such as 30m, 12h or 90d\n\n${USAGE}`, 2);
  return ms;
}

function describe(t: TokenInfo, now: number): string {
  const expiry = t.expiresAt === null ? "never expires" : `${t.expiresAt.getTime() <= now ? "expired" : "expires"} ${t.expiresAt.toISOString()}`;
  const fields = [
    t.name.padEnd(24),
    (t.prefix ? `${t.prefix}…` : "(no prefix)").padEnd(12),
    t.scope.padEnd(8),
    `organisations ${t.organizationIds === null ? "all" : t.organizationIds.join(",")}`,
    expiry,
    `last used ${t.lastUsedAt?.toISOString() ?? "never"}`,
  ];
  if (t.previousValidUntil !== null) fields.push(`previous secret works until ${t.previousValidUntil.toISOString()}`);
  return fields.join("  ");
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        name: { type: "string" },
        scope: { type: "string" },
        organizations: { type: "string" },
        "expires-in": { type: "string" },
        overlap: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    exitWith(`${(error as Error).message}\n\n${USAGE}`, 2);
  }
  const { positionals, values } = parsed;
  const [command, ...rest] = positionals;
  if (values.help || !command) exitWith(USAGE, values.help ? 0 : 2);
  if (!["create", "list", "revoke", "rotate"].includes(command)) exitWith(`unknown command "${command}"\n\n${USAGE}`, 2);
  if (command === "create" && (!values.name || !values.scope)) exitWith(`create needs --name and --scope\n\n${USAGE}`, 2);
  if (command === "create" && rest.length > 0) exitWith(`create takes no arguments besides its options (got "${rest[0]}")\n\n${USAGE}`, 2);
  if ((command === "revoke" || command === "rotate") && rest.length !== 1) exitWith(`${command} needs exactly one token name\n\n${USAGE}`, 2);
  if (command === "list" && rest.length > 0) exitWith(`list takes no arguments\n\n${USAGE}`, 2);
  const allowed: Record<string, string[]> = { create: ["name", "scope", "organizations", "expires-in"], rotate: ["overlap"], revoke: [], list: [] };
  for (const option of Object.keys(values)) {
    if (option !== "help" && !allowed[command].includes(option)) exitWith(`${command} does not take --${option}\n\n${USAGE}`, 2);
  }
  // Checked before the database is opened.
  const organizationIds = values.organizations === undefined ? null : values.organizations.split(",").map((id) => id.trim());
  const expiresInMs = values["expires-in"] === undefined ? undefined : duration("--expires-in", values["expires-in"]);
  let overlapSeconds = 0;
  if (values.overlap !== undefined) {
    overlapSeconds = /^0[mhd]?$/.test(values.overlap.trim()) ? 0 : duration("--overlap", values.overlap) / 1_000;
    if (overlapSeconds > MAX_ROTATION_OVERLAP_SECONDS) exitWith(`--overlap: at most 24h (got ${values.overlap})\n\n${USAGE}`, 2);
  }

  const cli = await openForCli();
  const store = new TokenStore(cli.orm);
  const actor = `cli:${os.userInfo().username}`;
  try {
    if (command === "create") {
      const expiresAt = expiresInMs === undefined ? null : new Date(Date.now() + expiresInMs);
      const { token, info } = await store.create(values.name!, values.scope!, actor, { organizationIds, expiresAt });
      const limits = [
        info.organizationIds === null ? "every organisation" : `organisations ${info.organizationIds.join(", ")}`,
        info.expiresAt === null ? "never expires" : `expires ${info.expiresAt.toISOString()}`,
      ];
      console.error(`Created ${info.scope} token "${info.name}" (${limits.join("; ")}). It is shown only this once; store it now:`);
      console.log(token);
    } else if (command === "list") {
      const tokens = await store.list();
      if (tokens.length === 0) console.log("No tokens. Create one with: npm run token -- create --name NAME --scope resolve|admin|metrics");
      const now = Date.now();
      for (const t of tokens) console.log(describe(t, now));
    } else if (command === "revoke") {
      await store.revoke(rest[0], actor);
      console.log(`Revoked token "${rest[0]}". Running services stop accepting it within 5 seconds.`);
    } else {
      const { token, info } = await store.rotate(rest[0], overlapSeconds, actor);
      const previous =
        info.previousValidUntil === null
          ? "The previous secret no longer works (running services stop accepting it within 5 seconds)."
          : `The previous secret keeps working until ${info.previousValidUntil.toISOString()}.`;
      console.error(`Rotated token "${info.name}". ${previous} The new secret is shown only this once; store it now:`);
      console.log(token);
    }
  } catch (error) {
    await cli.close();
    if (error instanceof ServiceError) exitWith(`Error: ${error.message}`);
    throw error;
  }
  await cli.close();
}

main().catch((error) => exitWith(`Error: ${describeError(error)}`));
