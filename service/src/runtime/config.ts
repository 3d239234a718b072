/** A configuration problem that stops start-up; the message says how to fix it. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export function portFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`${name} must be a port number between 0 and 65535`);
  }
  return port;
}
