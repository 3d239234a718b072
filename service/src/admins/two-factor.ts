import { createHash, randomBytes, randomInt } from "node:crypto";
import { Secret, TOTP } from "otpauth";

/** RFC 6238 as every authenticator app reads it: SHA-1, 6 digits, 30-second steps. */
export const TOTP_PERIOD_SECONDS = 30;
const TOTP_DIGITS = 6;
/** Codes of the step before and after the current one are accepted too (clock drift). */
const TOTP_WINDOW = 1;
const ISSUER = "Provider Credentials";

/** How long SignIn's second_factor_token lasts. */
export const SECOND_FACTOR_TOKEN_MS = 5 * 60 * 1000;
/** Wrong codes one second_factor_token takes before it is spent (each also counts against the sign-in limits). */
export const SECOND_FACTOR_TOKEN_MAX_FAILURES = 5;
/** How long an enrolment begun and not confirmed can still be confirmed. */
export const PENDING_ENROLMENT_MS = 60 * 60 * 1000;
export const RECOVERY_CODE_COUNT = 10;

/** A fresh TOTP secret: 160 random bits (RFC 4226's recommendation), in base32. */
export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

function totp(secret: string, label = ""): TOTP {
  return new TOTP({ issuer: ISSUER, label, algorithm: "SHA1", digits: TOTP_DIGITS, period: TOTP_PERIOD_SECONDS, secret: Secret.fromBase32(secret) });
}

/** The `otpauth://totp/...` URI an authenticator app reads from a QR code. */
export function otpauthUri(secret: string, email: string): string {
  return totp(secret, email).toString();
}

/** Whether `code` looks like a TOTP code (6 digits, spaces allowed) rather than a recovery code. */
export function isTotpCode(code: string): boolean {
  return /^\d{6}$/.test(code.replace(/\s/g, ""));
}

/** The time step (seconds since the epoch / 30) whose code `code` is, within the window around `now`; undefined when none. */
export function totpStep(secret: string, code: string, now = Date.now()): number | undefined {
  const token = code.replace(/\s/g, "");
  if (!/^\d{6}$/.test(token)) return undefined;
  const delta = totp(secret).validate({ token, timestamp: now, window: TOTP_WINDOW });
  return delta === null ? undefined : Math.floor(now / 1000 / TOTP_PERIOD_SECONDS) + delta;
}

// Crockford-like alphabet without look-alikes (0/o, 1/l/i): 32 letters, 5 bits each.
const RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789";

/** Ten fresh recovery codes, 80 bits each, like "k7dm-q2xa-9pwe-hv3n". */
export function newRecoveryCodes(): string[] {
  return Array.from({ length: RECOVERY_CODE_COUNT }, () => {
    const chars = Array.from({ length: 16 }, () => RECOVERY_ALPHABET[randomInt(RECOVERY_ALPHABET.length)]).join("");
    return chars.match(/.{4}/g)!.join("-");
  });
}

/** A recovery code as typed, without case, spaces or dashes; undefined when it cannot be one. */
export function normalizeRecoveryCode(code: string): string | undefined {
  const plain = code.toLowerCase().replace(/[\s-]/g, "");
  return /^[a-z2-9]{16}$/.test(plain) ? plain : undefined;
}

/** What is stored of a recovery code: a SHA-256 salted with the account's id (the codes are random, 80 bits). */
export function hashRecoveryCode(adminId: string, normalized: string): string {
  return createHash("sha256").update(`recovery-code v1\0${adminId}\0${normalized}`, "utf8").digest("hex");
}

/** A second_factor_token: 256 random bits; only its SHA-256 is stored. */
export function newSecondFactorToken(): string {
  return randomBytes(32).toString("base64url");
}

export const hashSecondFactorToken = (token: string) => createHash("sha256").update(`second-factor v1\0${token}`, "utf8").digest("hex");

/** What a sealed TOTP secret is bound to: its account and column (a value moved elsewhere does not open). */
export const secretContext = (column: "totp_secret" | "totp_pending_secret", adminId: string) => `admin_users.${column}:${adminId}`;
