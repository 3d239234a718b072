// Secrets from files, the Docker and Kubernetes convention (docs/operations/secrets.md): a secret
// setting NAME may instead be given as NAME_FILE, the path of a file that holds it. The portal
// has the same rule in portal/src/lib/server/secret-files.js (a plain JavaScript process that
// cannot load this file); test/unit/secret-files.test.ts runs the same cases against both.
import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";
import { ConfigError } from "./config.js";
import type { ServiceSettings } from "./settings.js";

/**
 * The service's secret settings (settings.ts): each may be given as NAME_FILE. Listed here, not
 * marked in the schema, so that the command-line tools and `npm start` apply the rule without
 * loading the schema and the server it takes its defaults from (seconds under tsx).
 */
export const SERVICE_SECRET_SETTINGS = [
  "DATABASE_URL",
  "DATABASE_LISTEN_URL",
  "MASTER_KEY",
  "SERVICE_ADMIN_TOKEN",
  "ADMIN_PASSWORD",
  "OPENAI_API_KEY",
  "ANTHROPIC_API_KEY",
  "GEMINI_API_KEY",
  "GOOGLE_API_KEY",
  "FIREWORKS_API_KEY",
] as const satisfies ReadonlyArray<keyof ServiceSettings>;

/** A secret file larger than this is refused: no setting is anywhere near it. */
export const MAX_SECRET_FILE_BYTES = 64 * 1024;

/** A secret file that group or others may read: worth a warning, not a refusal (Kubernetes mounts 0644 by default). */
export interface SecretFileWarning {
  variable: string;
  file: string;
  mode: string;
  message: string;
}

const given = (value: string | undefined): value is string => value !== undefined && value !== "";

/** The reason of a file system error without its path or anything else (`ENOENT: no such file or directory`). */
function reason(error: unknown): string {
  const { code, message } = error as NodeJS.ErrnoException;
  const short = /^([A-Z0-9_]+: [^,]+)/.exec(String(message ?? ""));
  return short ? short[1] : (code ?? "unreadable");
}

/** The content of one secret file, as its setting's value: one trailing newline stripped, never in a message. */
function readSecretFile(variable: string, file: string): { value: string; warning?: SecretFileWarning } {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (error) {
    throw new ConfigError(`${variable}: cannot read ${file} (${reason(error)})`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ConfigError(`${variable}: ${file} is not a regular file`);
    if (stat.size > MAX_SECRET_FILE_BYTES) throw new ConfigError(`${variable}: ${file} is larger than ${MAX_SECRET_FILE_BYTES} bytes`);
    let raw: Buffer;
    try {
      raw = readFileSync(fd);
    } catch (error) {
      throw new ConfigError(`${variable}: cannot read ${file} (${reason(error)})`);
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      throw new ConfigError(`${variable}: ${file} is not UTF-8 text`);
    }
    // Docker secrets and `echo value > file` end with one newline; anything else is the value's own.
    const value = text.replace(/\r?\n$/, "");
    if (value === "") throw new ConfigError(`${variable}: ${file} is empty`);
    if (value.includes("\0")) throw new ConfigError(`${variable}: ${file} holds a NUL byte`);
    const permissions = stat.mode & 0o777;
    const mode = `0${permissions.toString(8).padStart(3, "0")}`;
    const warning =
      (permissions & 0o044) === 0
        ? undefined
        : {
            variable,
            file,
            mode,
            message: `${variable}: ${file} is readable by ${permissions & 0o004 ? "others" : "its group"} (mode ${mode}); make it 0400 or 0600, owned by the user that runs this process`,
          };
    return { value, warning };
  } finally {
    closeSync(fd);
  }
}

/**
 * The secrets among `names` that `env` gives as NAME_FILE, read from their files, and a warning for
 * each file readable by group or others. A ConfigError when NAME and NAME_FILE are both set (an empty
 * value counts as unset), or a file cannot be read, is not a regular file, is empty or too large:
 * it names the variables and the file, never the content.
 */
export function readSecretFiles(
  env: Record<string, string | undefined>,
  names: readonly string[],
): { values: Record<string, string>; warnings: SecretFileWarning[] } {
  const values: Record<string, string> = {};
  const warnings: SecretFileWarning[] = [];
  for (const name of names) {
    const variable = `${name}_FILE`;
    const file = env[variable];
    if (!given(file)) continue;
    if (given(env[name])) throw new ConfigError(`${name} and ${variable} are both set: set one of them`);
    const { value, warning } = readSecretFile(variable, file);
    values[name] = value;
    if (warning) warnings.push(warning);
  }
  return { values, warnings };
}

/**
 * readSecretFiles, applied to `env` itself (process.env at a process's start): each NAME_FILE becomes
 * NAME, and NAME_FILE is removed, so that everything reading NAME later sees the value and no file
 * is read (or warned about) twice. Returns the warnings, to be logged once.
 */
export function applySecretFiles(env: Record<string, string | undefined>, names: readonly string[]): SecretFileWarning[] {
  const { values, warnings } = readSecretFiles(env, names);
  for (const [name, value] of Object.entries(values)) {
    env[name] = value;
    delete env[`${name}_FILE`];
  }
  return warnings;
}

/** Without reading anything: a ConfigError when a secret and its NAME_FILE are both set (`npm start`, which hands the files on). */
export function refuseSecretConflicts(env: Record<string, string | undefined>, names: readonly string[]): void {
  for (const name of names) {
    if (given(env[name]) && given(env[`${name}_FILE`])) throw new ConfigError(`${name} and ${name}_FILE are both set: set one of them`);
  }
}
