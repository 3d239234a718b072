import { pino, type Logger } from "pino";
import * as grpc from "@grpc/grpc-js";
import { maskKeys } from "@provider-credentials/wire/masking";

export type { Logger };

/** The longest a logged string (a message or a string field) may be, in characters; past it, cut with a marker. */
export const LOG_STRING_MAX_CHARS = 2048;

const BEARER_TEXT = /\b(bearer)\s+[^\s,;"']+/gi;
const API_TOKEN_TEXT = /\bpct_[A-Za-z0-9_-]+/g;

/**
 * Text fit for a log line: bearer credentials and API tokens redacted, anything shaped
 * like a provider key cut to its hint, and at most LOG_STRING_MAX_CHARS characters
 * (the redaction runs before the cut, so a cut never leaves part of a token).
 */
export function logSafeText(text: string): string {
  let safe = text;
  if (/bearer|pct_|sk-|AI|fw/i.test(safe)) safe = maskKeys(safe.replace(BEARER_TEXT, "$1 [redacted]").replace(API_TOKEN_TEXT, "pct_[redacted]"));
  if (safe.length > LOG_STRING_MAX_CHARS) safe = `${safe.slice(0, LOG_STRING_MAX_CHARS)}…[cut: ${safe.length - LOG_STRING_MAX_CHARS} more characters]`;
  return safe;
}

/** The log object with its top-level string fields made log-safe (nested objects are left to the redaction paths). */
function logSafeFields(object: Record<string, unknown>): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const key in object) {
    const value = object[key];
    if (typeof value !== "string") continue;
    const safe = logSafeText(value);
    if (safe !== value) (copy ??= { ...object })[key] = safe;
  }
  return copy ?? object;
}

/**
 * Structured JSON logs. Nothing logs request bodies or keys; the redaction
 * list is a second line of defence for anything that slips into a log object.
 */
export function createLogger(level = process.env.LOG_LEVEL ?? "info", destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "provider-credentials" },
      redact: {
        paths: [
          "api_key",
          "apiKey",
          "*.api_key",
          "*.apiKey",
          "token",
          "*.token",
          "authorization",
          "*.authorization",
          "headers.authorization",
          "masterKey",
          "MASTER_KEY",
          "*.MASTER_KEY",
          "SERVICE_ADMIN_TOKEN",
          "*.SERVICE_ADMIN_TOKEN",
          "encryptedApiKey",
          "*.encryptedApiKey",
          "encrypted_api_key",
          "*.encrypted_api_key",
        ],
        censor: "[redacted]",
      },
      serializers: { err: serializeError },
      formatters: { log: logSafeFields },
      hooks: {
        // Every message (the string argument of a log call) is log-safe.
        logMethod(args, method) {
          for (let i = 0; i < args.length; i++) if (typeof args[i] === "string") (args as unknown[])[i] = logSafeText(args[i] as string);
          return method.apply(this, args);
        },
      },
    },
    destination,
  );
}

/**
 * Errors are logged by type, code and message only. Database errors carry the
 * SQL with its parameters in their message (knex prefixes "<sql> - ") and the
 * offending values in `detail`: only the driver's own sentence and SQLSTATE
 * are kept, so a ciphertext or password hash never reaches a log.
 */
export function serializeError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: typeof error === "string" ? error : "non-error thrown" };
  const code = (error as { code?: unknown }).code;
  const fromDatabase = error.name === "DatabaseError" || error.name.endsWith("Exception") || (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code));
  if (fromDatabase) {
    const separator = error.message.lastIndexOf(" - ");
    return {
      type: error.name,
      code: typeof code === "string" ? code : undefined,
      message: separator >= 0 ? error.message.slice(separator + 3) : error.message,
    };
  }
  return { type: error.name, code: typeof code === "string" ? code : undefined, message: error.message, stack: error.stack };
}

/**
 * grpc-js logs through a process-wide logger of its own (to stderr by default), and some of its
 * lines quote request headers whole (an invalid metadata value, authorization included) before
 * any authentication. Its lines go to `logger` instead, log-safe like every other line.
 */
export function routeGrpcJsLogs(logger: Logger): void {
  const line =
    (level: "error" | "info" | "debug") =>
    (message?: unknown, ...rest: unknown[]) => {
      const text = [message, ...rest].map((part) => (typeof part === "string" ? part : String(part))).join(" ");
      logger[level]({ component: "grpc-js" }, text);
    };
  grpc.setLogger({ error: line("error"), info: line("info"), debug: line("debug") });
}
