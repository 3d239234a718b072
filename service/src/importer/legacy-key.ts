// The SaaS LiteLLM service's encryption of provider keys, read-only: its
// api_key column holds plain Fernet tokens under a key derived from its
// ENCRYPTION_KEY (its utils/encryption.py):
//   urlsafe_b64encode(PBKDF2HMAC(SHA256, length=32, salt=b"saas-litellm-salt", iterations=100000).derive(ENCRYPTION_KEY.encode()))
// Tokens are opened through a Keyring holding that one key, so that the Fernet
// code is still called from service/src/keyring/ only.
import { pbkdf2Sync } from "node:crypto";
import { DecryptError, Keyring } from "../keyring/index.js";

export const LEGACY_SALT = "saas-litellm-salt";
export const LEGACY_ITERATIONS = 100_000;

/**
 * The key SaaS LiteLLM falls back to when ENCRYPTION_KEY is unset outside production.
 * Only ever tried to explain a failure ("your tokens were made with the development key"), never used silently.
 */
const LEGACY_DEVELOPMENT_KEY = "dev-encryption-key-change-in-production-12345678";

/** The raw 32-byte Fernet key SaaS LiteLLM derives from its ENCRYPTION_KEY. */
export function deriveLegacyKey(encryptionKey: string): Buffer {
  return pbkdf2Sync(Buffer.from(encryptionKey, "utf8"), LEGACY_SALT, LEGACY_ITERATIONS, 32, "sha256");
}

/** The derived key as Python's Fernet takes it: url-safe base64 with padding (44 characters). */
export function legacyFernetKeyText(encryptionKey: string): string {
  return deriveLegacyKey(encryptionKey).toString("base64url") + "=";
}

/** A keyring that opens what SaaS LiteLLM encrypted with this ENCRYPTION_KEY. */
export function legacyKeyring(encryptionKey: string): Keyring {
  return new Keyring([deriveLegacyKey(encryptionKey)]);
}

export type LegacyOpenResult = { ok: true; plaintext: string } | { ok: false; reason: string };

const FERNET_TOKEN = /^gAAAAA[A-Za-z0-9_-]+={0,2}$/;

/** Decrypts one legacy api_key; the reason, when it fails, never repeats the token. */
export function openLegacyToken(ring: Keyring, token: string | null): LegacyOpenResult {
  if (token === null || token.trim() === "") return { ok: false, reason: "api_key is empty" };
  const text = token.trim();
  if (!FERNET_TOKEN.test(text)) return { ok: false, reason: "api_key is not a Fernet token (corrupted, or not written by SaaS LiteLLM)" };
  try {
    return { ok: true, plaintext: ring.decrypt(text) };
  } catch (error) {
    if (!(error instanceof DecryptError)) throw error;
    if (/UTF-8/.test(error.message)) return { ok: false, reason: "api_key decrypts, but not to UTF-8 text (corrupted)" };
    return {
      ok: false,
      reason: "api_key does not decrypt with the key derived from --legacy-encryption-key (encrypted under another ENCRYPTION_KEY, or corrupted)",
    };
  }
}

/**
 * When no token decrypts with the given ENCRYPTION_KEY: a likely explanation,
 * tried on the first tokens only, or undefined. Never names a key.
 */
export function explainWrongKey(encryptionKey: string, tokens: readonly string[]): string | undefined {
  const opens = (ring: Keyring) => tokens.some((token) => openLegacyToken(ring, token).ok);
  // A derived Fernet key (44 characters of url-safe base64) passed instead of ENCRYPTION_KEY itself.
  const asFernet = Buffer.from(encryptionKey.trim().replace(/=+$/, ""), "base64url");
  if (/^[A-Za-z0-9_-]{43}=?$/.test(encryptionKey.trim()) && asFernet.length === 32 && opens(new Keyring([asFernet]))) {
    return "The value given is the derived Fernet key, not ENCRYPTION_KEY: pass the ENCRYPTION_KEY the SaaS LiteLLM service was configured with (the import derives the Fernet key from it as that service does).";
  }
  if (encryptionKey !== LEGACY_DEVELOPMENT_KEY && opens(legacyKeyring(LEGACY_DEVELOPMENT_KEY))) {
    return "They decrypt with SaaS LiteLLM's built-in development key (used when its ENCRYPTION_KEY is unset, see its utils/encryption.py): that service ran without ENCRYPTION_KEY; pass that development key if this is the database you mean.";
  }
  return undefined;
}
