import { pino, type Logger } from "pino";

export type { Logger };

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
