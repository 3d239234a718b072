/**
 * Structured log lines (one JSON object per line on stdout). Callers pass facts,
 * never request bodies, headers or tokens.
 */
type Level = "info" | "warn" | "error";

function describe(error: unknown): Record<string, unknown> {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { type: error.name, message: error.message, ...(code !== undefined ? { code } : {}), stack: error.stack };
  }
  return { type: typeof error };
}

export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  const { err, ...rest } = fields;
  const line = { level, time: new Date().toISOString(), name: "portal", msg, ...rest, ...(err !== undefined ? { err: describe(err) } : {}) };
  (level === "error" ? process.stderr : process.stdout).write(`${JSON.stringify(line)}\n`);
}
