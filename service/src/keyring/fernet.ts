// Fernet tokens (https://github.com/fernet/spec) over node:crypto only.
// Token = base64url( 0x80 | ts:u64be | iv:16 | AES-128-CBC/PKCS#7 ciphertext | HMAC-SHA256:32 ).
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual, type Decipher } from "node:crypto";

/** Any Fernet failure. Messages never contain the token, the key or the plaintext. */
export class FernetError extends Error {
  override name = "FernetError";
}

const VERSION = 0x80;
const MAX_CLOCK_SKEW = 60; // seconds, as Python `cryptography` and fernet.js
const OVERHEAD = 1 + 8 + 16 + 32; // version, timestamp, IV, HMAC

/** Strict url-safe base64: canonical, `=` padding optional but correct if present. */
function decodeBase64Url(text: string): Buffer | undefined {
  const body = text.replace(/={1,2}$/, "");
  if (body.length !== text.length && text.length % 4 !== 0) return undefined;
  const bytes = Buffer.from(body, "base64url");
  // Node's decoder silently skips bad characters; a non-identical re-encoding
  // rejects them, stray `=`, whitespace, `+`/`/` and non-zero trailing bits.
  return bytes.toString("base64url") === body ? bytes : undefined;
}

/** Parses a Fernet key (url-safe base64 of 32 bytes, with or without `=` padding). */
export function parseFernetKey(text: string): Buffer {
  const key = typeof text === "string" ? decodeBase64Url(text) : undefined;
  if (key === undefined) throw new FernetError("invalid Fernet key: not url-safe base64");
  if (key.length !== 32) throw new FernetError("invalid Fernet key: must decode to exactly 32 bytes");
  return key;
}

/** A fresh key, formatted like Python's `Fernet.generate_key()` (44 chars ending in `=`). */
export function generateFernetKey(): string {
  return randomBytes(32).toString("base64url") + "=";
}

function checkKey(key: Buffer): void {
  if (!Buffer.isBuffer(key) || key.length !== 32) throw new FernetError("invalid Fernet key: must be 32 bytes");
}

export function encryptFernet(key: Buffer, plaintext: Buffer | string, options: { iv?: Buffer; now?: number } = {}): string {
  checkKey(key);
  const iv = options.iv ?? randomBytes(16);
  if (iv.length !== 16) throw new FernetError("invalid IV: must be 16 bytes");
  const now = Math.floor(options.now ?? Date.now() / 1000);
  if (!Number.isSafeInteger(now) || now < 0) throw new FernetError("invalid timestamp");
  const header = Buffer.allocUnsafe(25);
  header[0] = VERSION;
  header.writeBigUInt64BE(BigInt(now), 1);
  iv.copy(header, 9);
  const cipher = createCipheriv("aes-128-cbc", key.subarray(16), iv);
  const body = Buffer.concat([header, cipher.update(plaintext), cipher.final()]);
  const mac = createHmac("sha256", key.subarray(0, 16)).update(body).digest();
  const token = Buffer.concat([body, mac]);
  return token.toString("base64url") + "==".slice(0, (3 - (token.length % 3)) % 3); // padded, like Python
}

/**
 * AES decryption of tokens whose HMAC this process has already checked with
 * decryptFernet under the same key, and kept in its own memory since (the
 * ResolveKey cache: tokens are checked once when read from the database, not
 * on every hit). Never for a token from outside the process: it skips the
 * authentication Fernet requires before decrypting.
 *
 * One long-lived AES-128-ECB context per key, without padding, does the block
 * decryptions and CBC's chaining is done here (each plaintext block is the
 * decrypted ciphertext block XOR the previous ciphertext block, the IV for the
 * first), instead of a cipher context and key schedule made per call
 * (createDecipheriv; see docs/performance.md). The context keeps no state between calls
 * because it only ever gets whole blocks.
 */
export class CheckedFernetDecryptor {
  readonly #blocks: Decipher;

  constructor(key: Buffer) {
    checkKey(key);
    this.#blocks = createDecipheriv("aes-128-ecb", key.subarray(16), null);
    this.#blocks.setAutoPadding(false);
  }

  /**
   * The plaintext of a token (its text, or its bytes already decoded);
   * FernetError for a token that is not well-formed or whose padding is wrong
   * (not one of this key's).
   */
  decrypt(token: string | Uint8Array): Buffer {
    const data = typeof token === "string" ? Buffer.from(token, "base64url") : token;
    const macAt = data.length - 32;
    const length = macAt - 25;
    // Whole blocks only: a partial block would stay buffered in the shared context and corrupt the next call.
    if (data[0] !== VERSION || length < 16 || length % 16 !== 0) throw new FernetError("invalid token");
    const plain = this.#blocks.update(data.subarray(25, macAt));
    if (plain.length !== length) throw new FernetError("invalid token");
    for (let i = 0; i < length; i++) plain[i] ^= data[9 + i]; // IV (bytes 9-24), then each ciphertext block
    const pad = plain[length - 1];
    let bad = pad === 0 || pad > 16 ? 1 : 0;
    for (let i = length - pad; i < length && bad === 0; i++) bad |= plain[i] ^ pad;
    if (bad !== 0) throw new FernetError("invalid token: bad padding");
    return plain.subarray(0, length - pad);
  }
}

/**
 * Each key's block decryptor, by key Buffer: the keyring passes the same
 * Buffer for a key every time. Checked against a copy of the key's bytes, so
 * that a Buffer changed in place is not decrypted with its old key. (Not keyed
 * by the bytes as a string: that would put key material in the JS heap.)
 */
const blockDecryptors = new WeakMap<Buffer, { key: Buffer; decryptor: CheckedFernetDecryptor }>();

function blockDecryptorOf(key: Buffer): CheckedFernetDecryptor {
  const known = blockDecryptors.get(key);
  if (known !== undefined && known.key.equals(key)) return known.decryptor;
  const decryptor = new CheckedFernetDecryptor(key);
  blockDecryptors.set(key, { key: Buffer.from(key), decryptor });
  return decryptor;
}

/**
 * CheckedFernetDecryptor's decryption on the key's long-lived decryptor: for
 * tokens (their text or their decoded bytes) this process already checked
 * with decryptFernet under this key, never for one from outside.
 */
export function decryptCheckedFernet(key: Buffer, token: string | Uint8Array): Buffer {
  return blockDecryptorOf(key).decrypt(token);
}

/**
 * Fernet decryption: the HMAC is checked (in constant time) before anything is
 * decrypted; the AES-CBC decryption then runs on the key's long-lived block
 * decryptor (see CheckedFernetDecryptor).
 */
export function decryptFernet(key: Buffer, token: string, options: { ttlSeconds?: number; now?: number } = {}): Buffer {
  checkKey(key);
  const data = typeof token === "string" ? decodeBase64Url(token) : undefined;
  if (data === undefined) throw new FernetError("invalid token: not url-safe base64");
  if (data.length < OVERHEAD + 16) throw new FernetError("invalid token: too short");
  if (data[0] !== VERSION) throw new FernetError("invalid token: unknown version");
  if ((data.length - OVERHEAD) % 16 !== 0) throw new FernetError("invalid token: ciphertext is not a whole number of blocks");
  const macAt = data.length - 32;
  const mac = createHmac("sha256", key.subarray(0, 16)).update(data.subarray(0, macAt)).digest();
  if (!timingSafeEqual(mac, data.subarray(macAt))) throw new FernetError("invalid token: HMAC mismatch");
  if (options.ttlSeconds !== undefined) {
    const now = options.now ?? Math.floor(Date.now() / 1000);
    const issued = Number(data.readBigUInt64BE(1));
    if (issued + options.ttlSeconds < now) throw new FernetError("invalid token: expired");
    if (now + MAX_CLOCK_SKEW < issued) throw new FernetError("invalid token: timestamp too far in the future");
  }
  try {
    return blockDecryptorOf(key).decrypt(data);
  } catch {
    throw new FernetError("invalid token: bad padding");
  }
}
