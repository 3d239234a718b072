import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";
import { ZxcvbnFactory } from "@zxcvbn-ts/core";
import * as zxcvbnCommon from "@zxcvbn-ts/language-common";

// scrypt with N = 2^15, r = 8, p = 1 (32 MiB, tens of milliseconds): deliberately slow.
const COST_LOG2 = 15;
const BLOCK_SIZE = 8;
const PARALLELISM = 1;
const KEY_LENGTH = 32;

function derive(password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password.normalize("NFC"), salt, KEY_LENGTH, { ...options, maxmem: 128 * 1024 * 1024 }, (error, key) => (error ? reject(error) : resolve(key))),
  );
}

/** `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>`, base64url; the parameters travel with the hash so they can be raised later. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, { N: 2 ** COST_LOG2, r: BLOCK_SIZE, p: PARALLELISM });
  return ["scrypt", COST_LOG2, BLOCK_SIZE, PARALLELISM, salt.toString("base64url"), key.toString("base64url")].join("$");
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, logN, r, p, salt, hash] = stored.split("$");
  if (scheme !== "scrypt" || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64url");
  const key = await derive(password, Buffer.from(salt, "base64url"), { N: 2 ** Number(logN), r: Number(r), p: Number(p) });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

// Compared against when the email is unknown, so that a miss costs as much time as a wrong password.
let dummyHash: Promise<string> | undefined;
export function dummyPasswordHash(): Promise<string> {
  return (dummyHash ??= hashPassword(randomBytes(16).toString("hex")));
}

/** A generated password: 20 characters from an unambiguous alphabet (about 115 bits). */
export function generatePassword(): string {
  const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const bytes = randomBytes(40);
  let out = "";
  for (const b of bytes) {
    if (b < 232) out += alphabet[b % alphabet.length]; // 232 = 4 * 58: no modulo bias
    if (out.length === 20) break;
  }
  return out.length === 20 ? out : generatePassword();
}

export const PASSWORD_MIN_LENGTH = 12;
export const PASSWORD_MAX_LENGTH = 1024;
/** zxcvbn's score (0-4) a chosen password must reach: 3 is "safely unguessable" (about 10^8 guesses or more). */
export const PASSWORD_MIN_SCORE = 3;
/** An email's local part this long or longer may not appear in the password (shorter ones are too common to refuse). */
const LOCAL_PART_MIN_LENGTH = 3;

// Built on first use: the dictionaries take tens of milliseconds to load.
let estimator: ZxcvbnFactory | undefined;
const strength = (password: string, userInputs: string[]) =>
  (estimator ??= new ZxcvbnFactory({ graphs: zxcvbnCommon.adjacencyGraphs, dictionary: { ...zxcvbnCommon.dictionary } })).check(password, userInputs).score;

/**
 * Why `password` may not be the password of the account `email`, or undefined when it may: too
 * short or long, the email or its local part in it (any case), or too easy to guess by zxcvbn's
 * estimate. The reason never repeats the password.
 */
export function passwordProblem(password: string, email: string): string | undefined {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH) return `must be at least ${PASSWORD_MIN_LENGTH} characters`;
  if (password.length > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters`;
  const folded = password.normalize("NFC").toLowerCase();
  const account = email.toLowerCase();
  const at = account.lastIndexOf("@");
  const localPart = at > 0 ? account.slice(0, at) : "";
  const names = [account, localPart.length >= LOCAL_PART_MIN_LENGTH ? localPart : ""].filter((n) => n !== "");
  if (names.some((n) => folded.includes(n))) return "must not contain the administrator's email address or the part of it before the @";
  if (strength(password, [account, localPart]) < PASSWORD_MIN_SCORE) {
    return "is too easy to guess (a common word, name, date, keyboard pattern or repetition); use four or more unrelated words, or a generated password";
  }
  return undefined;
}
