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
          "api_key", "apiKey", "*.api_key", "*.apiKey",
          "token", "*.token", "authorization", "*.authorization", "headers.authorization",
          "masterKey", "MASTER_KEY", "*.MASTER_KEY", "SERVICE_ADMIN_TOKEN", "*.SERVICE_ADMIN_TOKEN",
          "encryptedApiKey", "*.encryptedApiKey", "encrypted_api_key", "*.encrypted_api_key",
        ],
        censor: "[redacted]",
      },
      serializers: { err: serializeError },
    },
    destination,
  );
}

/** Errors are logged by type, code and message only: never a driver's detail text, parameters or stack of values. */
function serializeError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const code = (error as { code?: unknown }).code;
  return { type: error.name, code: typeof code === "string" ? code : undefined, message: error.message, stack: error.stack };
}
