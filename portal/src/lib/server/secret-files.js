// Secrets from files, the Docker and Kubernetes convention (docs/operations/secrets.md): a secret
// setting NAME may instead be given as NAME_FILE, the path of a file that holds it. The same rule as
// the service's service/src/runtime/secret-files.ts (this one is plain JavaScript: portal/server.js
// runs under plain node); test/unit/secret-files.test.ts runs the same cases against both.
/* global TextDecoder */
import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";

/** A secret file larger than this is refused: no setting is anywhere near it. */
export const MAX_SECRET_FILE_BYTES = 64 * 1024;

/** A configuration problem in a secret file; the message names the variables and the file, never the content. */
export class SecretFileError extends Error {
  name = "SecretFileError";
}

/**
 * A secret file that group or others may read: worth a warning, not a refusal (Kubernetes mounts 0644 by default).
 * @typedef {{ variable: string, file: string, mode: string, message: string }} SecretFileWarning
 */

/** @param {string | undefined} value @returns {value is string} */
const given = (value) => value !== undefined && value !== "";

/**
 * The reason of a file system error without its path or anything else (`ENOENT: no such file or directory`).
 * @param {unknown} error
 */
function reason(error) {
  const { code, message } = /** @type {NodeJS.ErrnoException} */ (error);
  const short = /^([A-Z0-9_]+: [^,]+)/.exec(String(message ?? ""));
  return short ? short[1] : (code ?? "unreadable");
}

/**
 * The content of one secret file, as its setting's value: one trailing newline stripped, never in a message.
 * @param {string} variable
 * @param {string} file
 * @returns {{ value: string, warning?: SecretFileWarning }}
 */
function readSecretFile(variable, file) {
  let fd;
  try {
    fd = openSync(file, "r");
  } catch (error) {
    throw new SecretFileError(`${variable}: cannot read ${file} (${reason(error)})`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new SecretFileError(`${variable}: ${file} is not a regular file`);
    if (stat.size > MAX_SECRET_FILE_BYTES) throw new SecretFileError(`${variable}: ${file} is larger than ${MAX_SECRET_FILE_BYTES} bytes`);
    let raw;
    try {
      raw = readFileSync(fd);
    } catch (error) {
      throw new SecretFileError(`${variable}: cannot read ${file} (${reason(error)})`);
    }
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      throw new SecretFileError(`${variable}: ${file} is not UTF-8 text`);
    }
    // Docker secrets and `echo value > file` end with one newline; anything else is the value's own.
    const value = text.replace(/\r?\n$/, "");
    if (value === "") throw new SecretFileError(`${variable}: ${file} is empty`);
    if (value.includes("\0")) throw new SecretFileError(`${variable}: ${file} holds a NUL byte`);
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
 * each file readable by group or others. A SecretFileError when NAME and NAME_FILE are both set (an
 * empty value counts as unset), or a file cannot be read, is not a regular file, is empty or too
 * large: it names the variables and the file, never the content.
 * @param {Record<string, string | undefined>} env
 * @param {readonly string[]} names
 * @returns {{ values: Record<string, string>, warnings: SecretFileWarning[] }}
 */
export function readSecretFiles(env, names) {
  /** @type {Record<string, string>} */
  const values = {};
  /** @type {SecretFileWarning[]} */
  const warnings = [];
  for (const name of names) {
    const variable = `${name}_FILE`;
    const file = env[variable];
    if (!given(file)) continue;
    if (given(env[name])) throw new SecretFileError(`${name} and ${variable} are both set: set one of them`);
    const { value, warning } = readSecretFile(variable, file);
    values[name] = value;
    if (warning) warnings.push(warning);
  }
  return { values, warnings };
}

/**
 * readSecretFiles, applied to `env` itself (process.env at the process's start): each NAME_FILE
 * becomes NAME, and NAME_FILE is removed, so that everything reading NAME later (the built app
 * included) sees the value and no file is read (or warned about) twice. Returns the warnings, to be
 * logged once.
 * @param {Record<string, string | undefined>} env
 * @param {readonly string[]} names
 * @returns {SecretFileWarning[]}
 */
export function applySecretFiles(env, names) {
  const { values, warnings } = readSecretFiles(env, names);
  for (const [name, value] of Object.entries(values)) {
    env[name] = value;
    delete env[`${name}_FILE`];
  }
  return warnings;
}
