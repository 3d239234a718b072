// The portal's structured logs: pino, JSON lines on stdout with numeric levels, as the
// service's (service/src/logger.ts). Plain JavaScript: portal/server.js logs through it too.
// Callers pass facts, never request bodies, headers or tokens; the redaction list is a second
// line of defence for anything that slips into a log object.
import { pino } from "pino";
import { portalSettings } from "./settings.js";

/** @typedef {import("pino").Logger} Logger */
/** @typedef {"info" | "warn" | "error"} Level */

const REDACTED_KEYS = [
  "token",
  "password",
  "cookie",
  "authorization",
  "api_key",
  "apiKey",
  "session",
  "SERVICE_ADMIN_TOKEN",
  "encryptedApiKey",
  "encrypted_api_key",
];

/**
 * Errors by type, code, message and stack.
 * @param {unknown} error
 * @returns {Record<string, unknown>}
 */
export function describeError(error) {
  if (error instanceof Error) {
    const code = /** @type {{ code?: unknown }} */ (error).code;
    return { type: error.name, message: error.message, ...(code !== undefined ? { code } : {}), stack: error.stack };
  }
  return { type: typeof error };
}

/**
 * A portal logger at `level` (default: LOG_LEVEL), to `destination` (default: stdout, written
 * synchronously: lines stay in order and none is lost when the process exits).
 * @param {string} [level]
 * @param {import("pino").DestinationStream} [destination]
 * @returns {Logger}
 */
export function createPortalLogger(level, destination) {
  return pino(
    {
      level: level ?? portalSettings().LOG_LEVEL,
      base: { service: "provider-credentials-portal" },
      redact: {
        // Top level and one level down (`*.cookie` covers `headers.cookie`).
        paths: [...REDACTED_KEYS, ...REDACTED_KEYS.map((key) => `*.${key}`)],
        censor: "[redacted]",
      },
      serializers: { err: describeError },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/** @type {Logger | undefined} */
let shared;

/**
 * Logs one line: `fields` are facts (an `err` is serialised by describeError).
 * @param {Level} level
 * @param {string} msg
 * @param {Record<string, unknown>} [fields]
 */
export function log(level, msg, fields = {}) {
  (shared ??= createPortalLogger())[level](fields, msg);
}
