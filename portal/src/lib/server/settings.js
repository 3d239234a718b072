// The portal process's configuration: every environment variable it reads (portal/server.js, the
// app, and `npm run start:portal`), its default and meaning, and the rule its value must follow, in
// one schema. portal/server.js checks the environment against it before anything else starts;
// docs/configuration.md is generated from it (`npm run docs:config`; a test fails when the
// document is stale). Plain JavaScript: portal/server.js runs under plain node, without a build.
/* global process, URL */
import { z } from "zod";
import { readSecretFiles, SecretFileError } from "./secret-files.js";

/** A configuration problem that stops the portal at start-up; the message names the variable. */
export class PortalConfigError extends Error {
  name = "PortalConfigError";
}

/**
 * One environment variable: its schema over the raw text (undefined when unset), and how the docs describe it.
 * @template T
 * A secret (`secret: true`) may be given as NAME_FILE instead, a file that holds it (secret-files.js).
 * @typedef {{ schema: z.ZodType<T, string | undefined>, shown: string, meaning: string, partOf?: string, secret?: true }} Setting
 */

/** @param {string | undefined} raw */
const unset = (raw) => raw === undefined || raw === "";

/**
 * @template {number | undefined} F
 * @param {string} name
 * @param {number} min
 * @param {number} max
 * @param {F} fallback
 * @param {string} rule
 * @returns {z.ZodType<number | F, string | undefined>}
 */
function integer(name, min, max, fallback, rule) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined || unset(raw)) return fallback;
      const value = Number(raw);
      if (!/^\s*\d+\s*$/.test(raw) || !Number.isInteger(value) || value < min || value > max) {
        ctx.addIssue({ code: "custom", message: `${name} ${rule}` });
        return z.NEVER;
      }
      return value;
    });
}

/** @returns {z.ZodType<string | undefined, string | undefined>} */
const text = () =>
  z
    .string()
    .optional()
    .transform((raw) => (unset(raw) ? undefined : raw));

/**
 * An absolute http(s) URL; `what` says what it is for in the message.
 * @param {string} name
 * @param {string} example
 * @returns {z.ZodType<string | undefined, string | undefined>}
 */
const httpUrl = (name, example) =>
  text().refine((raw) => raw === undefined || (URL.canParse(raw) && /^https?:$/.test(new URL(raw).protocol)), {
    message: `${name} must be an http:// or https:// URL, e.g. ${example}`,
  });

/**
 * @template T
 * @param {z.ZodType<T, string | undefined>} schema
 * @param {string} shown
 * @param {string} meaning
 * @returns {Setting<T>}
 */
const setting = (schema, shown, meaning) => ({ schema, shown, meaning });

/**
 * A variable documented in the row of `row`.
 * @template T
 * @param {string} row
 * @param {z.ZodType<T, string | undefined>} schema
 * @returns {Setting<T>}
 */
const partOf = (row, schema) => ({ schema, shown: "", meaning: "", partOf: row });

/**
 * A secret setting: NAME_FILE may give it instead (docs/operations/secrets.md).
 * @template T
 * @param {Setting<T>} s
 * @returns {Setting<T>}
 */
const secret = (s) => ({ ...s, secret: true });

export const DEFAULT_SERVICE_URL = "http://127.0.0.1:50051";

export const PORTAL_SETTINGS = {
  PORTAL_PORT: setting(integer("PORTAL_PORT", 0, 65535, 3000, "must be a port number between 0 and 65535"), "`3000`", "Port of the portal."),
  HOST: setting(text(), "`127.0.0.1`", "Address the portal listens on (`npm start` and `npm run start:prod` set it from `PORTAL_HOST`)."),
  CREDENTIALS_SERVICE_URL: setting(
    httpUrl("CREDENTIALS_SERVICE_URL", DEFAULT_SERVICE_URL),
    `\`${DEFAULT_SERVICE_URL}\``,
    "Where the service is (its gRPC port; `https://` for TLS).",
  ),
  SERVICE_ADMIN_TOKEN: secret(
    setting(
      text(),
      "from `.data/secrets.env` with `npm run start:portal`",
      "The portal's admin-scope token for the service. Unset, sign-in and the API answer that the service is unavailable.",
    ),
  ),
  DATA_DIR: setting(
    text(),
    "`.data`",
    "With `npm run start:portal` and neither `SERVICE_ADMIN_TOKEN` nor `DATABASE_URL` set: the local service's data directory, whose `secrets.env` holds the token.",
  ),
  DATABASE_URL: secret(partOf("DATA_DIR", text())),
  CREDENTIALS_SERVICE_CA_FILE: setting(
    text(),
    "unset",
    "For an `https://` service URL: the CA to trust, and the portal's client certificate and key when the service requires mutual TLS.",
  ),
  CREDENTIALS_SERVICE_CERT_FILE: partOf("CREDENTIALS_SERVICE_CA_FILE", text()),
  CREDENTIALS_SERVICE_KEY_FILE: partOf("CREDENTIALS_SERVICE_CA_FILE", text()),
  ORIGIN: setting(
    httpUrl("ORIGIN", "https://credentials.example.com"),
    "from the `Host` header, over http",
    "The portal's public origin, e.g. `https://credentials.example.com`. Set it behind a TLS proxy: sign-in forms and cookie-authenticated API changes must come from this origin.",
  ),
  PROTOCOL_HEADER: setting(
    text(),
    "unset",
    "Without `ORIGIN`, behind a proxy: the headers that carry the original protocol and host (e.g. `X-Forwarded-Proto`, `X-Forwarded-Host`).",
  ),
  HOST_HEADER: partOf("PROTOCOL_HEADER", text()),
  ADDRESS_HEADER: setting(
    text(),
    "unset",
    "Behind a proxy, where the client address is (e.g. `X-Forwarded-For`), so that the per-address sign-in limit and the audit log see the real client.",
  ),
  XFF_DEPTH: partOf("ADDRESS_HEADER", integer("XFF_DEPTH", 1, 1000, undefined, "must be a positive integer")),
  SHUTDOWN_TIMEOUT_MS: setting(
    integer("SHUTDOWN_TIMEOUT_MS", 1, Number.MAX_SAFE_INTEGER, 10_000, "must be a positive integer"),
    "`10000`",
    "How long SIGTERM waits for requests in flight before closing connections.",
  ),
  LOG_LEVEL: setting(
    z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"], {
        error: "LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent",
      })
      .optional()
      .default("info"),
    "`info`",
    "pino level, as for the service. Logs are JSON lines on stdout.",
  ),
};

/** @typedef {typeof PORTAL_SETTINGS} Settings */
/** @typedef {{ [K in keyof Settings]: z.output<Settings[K]["schema"]> }} PortalSettings */

const schema = z.object(Object.fromEntries(Object.entries(PORTAL_SETTINGS).map(([name, s]) => [name, s.schema])));

/** The secret settings: each may be given as NAME_FILE instead, the path of a file that holds it. */
export const PORTAL_SECRET_SETTINGS = Object.entries(PORTAL_SETTINGS)
  .filter(([, s]) => /** @type {Setting<unknown>} */ (s).secret)
  .map(([name]) => name);

/**
 * The portal's settings from the environment, secrets given as NAME_FILE read from their files; a
 * PortalConfigError naming the first variable that breaks its rule. (portal/server.js applies the
 * files to process.env first, applySecretFiles, and logs their warnings once.)
 * @param {Record<string, string | undefined>} env
 * @returns {PortalSettings}
 */
export function loadPortalSettings(env) {
  /** @type {Record<string, string>} */
  let fromFiles;
  try {
    fromFiles = readSecretFiles(env, PORTAL_SECRET_SETTINGS).values;
  } catch (error) {
    if (error instanceof SecretFileError) throw new PortalConfigError(error.message);
    throw error;
  }
  const picked = Object.fromEntries(Object.keys(PORTAL_SETTINGS).map((name) => [name, fromFiles[name] ?? env[name]]));
  const result = schema.safeParse(picked);
  if (!result.success) throw new PortalConfigError(result.error.issues[0].message);
  return /** @type {PortalSettings} */ (result.data);
}

/** @type {PortalSettings | undefined} */
let fromEnvironment;

/** The settings of this process (process.env, read once). */
export function portalSettings() {
  return (fromEnvironment ??= loadPortalSettings(process.env));
}

/**
 * The note of a row with secrets: which NAME_FILE variables may give them instead.
 * @param {Array<[string, Setting<unknown>]>} group
 */
function fromFileNote(group) {
  const files = group.filter(([, s]) => s.secret).map(([n]) => `\`${n}_FILE\``);
  if (files.length === 0) return "";
  return ` From ${files.length === 1 ? "a file" : "files"}: ${files.join(", ")} ([secrets from files](operations/secrets.md)).`;
}

/** The settings as the table of docs/configuration.md: one row per variable, or per group of variables documented together. */
export function portalSettingsTable() {
  /** @type {Array<[string, Setting<unknown>]>} */
  const all = Object.entries(PORTAL_SETTINGS);
  const rows = ["| variable | default | meaning |", "| --- | --- | --- |"];
  for (const [name, s] of all) {
    if (s.partOf !== undefined) continue;
    const group = [/** @type {[string, Setting<unknown>]} */ ([name, s]), ...all.filter(([, other]) => other.partOf === name)];
    const names = group.map(([n]) => n);
    rows.push(`| ${names.map((n) => `\`${n}\``).join(", ")} | ${s.shown} | ${s.meaning}${fromFileNote(group)} |`);
  }
  return rows.join("\n");
}
