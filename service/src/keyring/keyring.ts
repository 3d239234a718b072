// The only module of the app that sees MASTER_KEY. Everything else gets a
// Keyring and key ids (fingerprints), never key material.
import { createCipheriv, createDecipheriv, createHash, createHmac, createSecretKey, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from "node:crypto";
import { decryptCheckedFernet, decryptFernet, encryptFernet, FernetError, generateFernetKey, parseFernetKey } from "./fernet.js";

const VALID_MASTER_KEY =
  "A valid MASTER_KEY is a Fernet key (url-safe base64 of 32 bytes: 44 characters ending in '='), " +
  "or a comma-separated list of them where the first encrypts and all decrypt. " +
  "Generate one with: node -e \"console.log(require('crypto').randomBytes(32).toString('base64url')+'=')\" " +
  "or in Python with cryptography's Fernet.generate_key().";

/** MASTER_KEY is missing or malformed. The message never contains the configured value. */
export class MasterKeyError extends Error {
  override name = "MasterKeyError";
  constructor(problem: string) {
    super(`Invalid MASTER_KEY: ${problem}. ${VALID_MASTER_KEY}`);
  }
}

/** A stored token could not be decrypted with any configured key. */
export class DecryptError extends Error {
  override name = "DecryptError";
}

/**
 * A stored key decrypts but its row binding does not match: the ciphertext was
 * moved, copied or edited in the database (or the row's organisation,
 * provider or api_base was). Never served.
 */
export class BindingError extends Error {
  override name = "BindingError";
}

/** The columns a stored key is bound to: moving its ciphertext to another row, or editing any of them outside the service, breaks the binding. */
export interface BoundRow {
  id: string;
  organizationId: string;
  provider: string;
  apiBase: string | null;
}

const BINDING_INFO = "provider-credentials row-binding v1";
const BINDING_PREFIX = "rb1.";

const FINGERPRINT_PREFIX = Buffer.from("provider-credentials key-id v1\0", "utf8");

const PAGE_TOKEN_INFO = "provider-credentials page-token v1";
const SECRET_INFO = "provider-credentials account-secret v1";
const SECRET_PREFIX = "as1.";

/** Bytes of a page token's MAC (truncated HMAC-SHA256). */
export const PAGE_TOKEN_MAC_BYTES = 16;

/** Public identifier of a key: "fk_" + 16 hex chars of a domain-separated SHA-256. */
export function keyFingerprint(key: Buffer): string {
  return "fk_" + createHash("sha256").update(FINGERPRINT_PREFIX).update(key).digest("hex").slice(0, 16);
}

/** A fresh MASTER_KEY value (a single Fernet key). */
export function generateMasterKey(): string {
  return generateFernetKey();
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

declare const ADMITTED: unique symbol;

/**
 * A stored token that Keyring.admit checked in this process (its HMAC under a
 * configured master key and its row binding): the token's bytes, one
 * character per byte, and the id of the key that opened it. Only admit makes
 * one; the ResolveKey cache keeps them; openAdmitted accepts nothing else.
 */
export interface Admitted {
  readonly sealed: string;
  readonly keyId: string;
  readonly [ADMITTED]: true;
}

export class Keyring {
  readonly primaryKeyId: string;
  readonly keyIds: readonly string[];
  readonly #keys: ReadonlyMap<string, Buffer>; // insertion order = configured order
  /** Per master key, the HMAC key that binds ciphertext to its row (HKDF-SHA256 of the Fernet key, domain-separated). */
  readonly #bindingKeys = new Map<Buffer, KeyObject>();
  /** Per master key, in configured order, the HMAC key of page tokens (HKDF-SHA256 of the Fernet key, domain-separated). */
  readonly #pageTokenKeys: readonly KeyObject[];

  /** Per master key id, in configured order, the AES-256-GCM key of small account secrets (HKDF-SHA256 of the Fernet key, domain-separated). */
  readonly #secretKeys: ReadonlyMap<string, KeyObject>;

  /** Use createKeyring(); keys must be distinct 32-byte Fernet keys, first = primary. */
  constructor(keys: readonly Buffer[]) {
    const map = new Map<string, Buffer>();
    for (const key of keys) map.set(keyFingerprint(key), key);
    if (map.size === 0 || map.size !== keys.length) throw new MasterKeyError("no keys, or duplicate keys");
    this.#keys = map;
    this.keyIds = Object.freeze([...map.keys()]);
    this.primaryKeyId = this.keyIds[0];
    for (const key of map.values()) {
      this.#bindingKeys.set(key, createSecretKey(Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), BINDING_INFO, 32))));
    }
    this.#pageTokenKeys = [...map.values()].map((key) => createSecretKey(Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), PAGE_TOKEN_INFO, 32))));
    this.#secretKeys = new Map([...map].map(([id, key]) => [id, createSecretKey(Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), SECRET_INFO, 32)))]));
  }

  /**
   * Seals a small secret that is not a provider key (an account's TOTP secret) for storage: AES-256-GCM under a
   * key derived from the primary master key, bound to `context` (say "admin_users.totp_secret:<id>") as
   * associated data, so a sealed value copied to another row or column does not open. The result names the key:
   * "as1.<key id>.<base64url(iv | ciphertext | tag)>".
   */
  sealSecret(plaintext: string, context: string): string {
    if (LONE_SURROGATE.test(plaintext)) throw new TypeError("cannot seal a string with a lone UTF-16 surrogate: it has no UTF-8 form");
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#secretKeys.get(this.primaryKeyId)!, iv);
    cipher.setAAD(Buffer.from(context, "utf8"));
    const body = Buffer.concat([iv, cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()]);
    return `${SECRET_PREFIX}${this.primaryKeyId}.${body.toString("base64url")}`;
  }

  /**
   * Opens what sealSecret made for the same `context`, and the id of the key that opened it (when not the
   * primary one, the caller should seal it again). DecryptError when it is malformed, was sealed for another
   * context, or no configured key opens it.
   */
  openSecret(sealed: string, context: string): { plaintext: string; keyId: string } {
    const match = /^as1\.(fk_[0-9a-f]{16})\.([A-Za-z0-9_-]+)$/.exec(sealed);
    const body = match ? Buffer.from(match[2], "base64url") : undefined;
    if (!match || !body || body.length < 12 + 16) throw new DecryptError("not a sealed secret");
    const keyId = match[1];
    const key = this.#secretKeys.get(keyId);
    if (key === undefined) throw new DecryptError("the key that sealed this secret is not configured");
    try {
      const decipher = createDecipheriv("aes-256-gcm", key, body.subarray(0, 12));
      decipher.setAAD(Buffer.from(context, "utf8"));
      decipher.setAuthTag(body.subarray(body.length - 16));
      const plaintext = Buffer.concat([decipher.update(body.subarray(12, body.length - 16)), decipher.final()]);
      return { plaintext: utf8.decode(plaintext), keyId };
    } catch {
      throw new DecryptError("the sealed secret does not open under its key for this context");
    }
  }

  /**
   * The MAC that authenticates a page token's content, under the primary key. Derived from MASTER_KEY, so
   * every replica, before and after a restart, makes and accepts the same tokens.
   */
  pageTokenMac(content: Buffer): Buffer {
    return createHmac("sha256", this.#pageTokenKeys[0]).update(content).digest().subarray(0, PAGE_TOKEN_MAC_BYTES);
  }

  /** Whether `mac` authenticates `content` under any configured key (a token made before a primary-key rotation still pages). */
  checkPageTokenMac(content: Buffer, mac: Buffer): boolean {
    if (mac.length !== PAGE_TOKEN_MAC_BYTES) return false;
    let ok = false;
    for (const key of this.#pageTokenKeys) {
      const expected = createHmac("sha256", key).update(content).digest().subarray(0, PAGE_TOKEN_MAC_BYTES);
      ok = timingSafeEqual(expected, mac) || ok;
    }
    return ok;
  }

  has(keyId: string): boolean {
    return this.#keys.has(keyId);
  }

  /** Encrypts with the primary (first) key. A string with a lone UTF-16 surrogate (which UTF-8 cannot carry) is refused. */
  encrypt(plaintext: string): { token: string; keyId: string } {
    if (LONE_SURROGATE.test(plaintext)) throw new TypeError("cannot encrypt a string with a lone UTF-16 surrogate: it has no UTF-8 form");
    return { token: encryptFernet(this.#keys.get(this.primaryKeyId)!, plaintext), keyId: this.primaryKeyId };
  }

  /**
   * Encrypts with the primary key and binds the token to its row: the token
   * stays plain Fernet (any Fernet implementation holding the key opens it);
   * the binding is a separate MAC stored next to it.
   */
  encryptBound(plaintext: string, row: BoundRow): { token: string; keyId: string; binding: string } {
    const { token, keyId } = this.encrypt(plaintext);
    return { token, keyId, binding: this.#mac(this.#keys.get(keyId)!, row, token) };
  }

  /**
   * The binding of an existing token to a (possibly changed) row, under the
   * key that encrypted it. Callers must have checked the old binding first
   * (`decryptBound` or `admit`), or they would bless a swapped token.
   */
  rebind(row: BoundRow, token: string, keyId?: string): string {
    const [key] = this.#open(token, keyId);
    return this.#mac(key, row, token);
  }

  /** Tries the hinted key first, then every other key in configured order. No TTL. */
  decrypt(token: string, keyId?: string): string {
    return this.#open(token, keyId)[1];
  }

  /**
   * Decrypts a stored token after checking that it belongs to this row;
   * BindingError when the binding is missing or does not match,
   * DecryptError when no configured key opens the token.
   */
  decryptBound(row: BoundRow, token: string, keyId: string | undefined, binding: string | null): string {
    return this.#openBound(row, token, keyId, binding)[1];
  }

  /**
   * Checks a stored token as decryptBound does (it opens under a configured
   * key, is UTF-8, and is bound to this row) and admits it: its bytes and the
   * id of the key that opened it, for openAdmitted. The plaintext is not kept.
   */
  admit(row: BoundRow, token: string, keyId: string | undefined, binding: string | null): Admitted {
    const [, , openedKeyId] = this.#openBound(row, token, keyId, binding);
    return { sealed: Buffer.from(token, "base64url").toString("latin1"), keyId: openedKeyId } as Admitted;
  }

  /**
   * Opens a token that admit accepted in this process, without checking its
   * HMAC and binding again (the ResolveKey cache's hit). By type it takes only
   * what admit made; a key id that is no longer configured, or bytes that do
   * not open under it, are a DecryptError, never a guess.
   */
  openAdmitted(admitted: Admitted): string {
    const key = this.#keys.get(admitted.keyId);
    if (key === undefined) throw new DecryptError("the key that opened this token is no longer configured");
    let plaintext: Buffer;
    try {
      plaintext = decryptCheckedFernet(key, Buffer.from(admitted.sealed, "latin1"));
    } catch {
      throw new DecryptError("token could not be decrypted with the key that opened it");
    }
    try {
      return utf8.decode(plaintext);
    } catch {
      throw new DecryptError("decrypted secret is not valid UTF-8");
    }
  }

  #openBound(row: BoundRow, token: string, keyId: string | undefined, binding: string | null): [Buffer, string, string] {
    const opened = this.#open(token, keyId);
    if (binding === null) throw new BindingError("the stored key has no row binding");
    const expected = Buffer.from(this.#mac(opened[0], row, token), "latin1");
    const actual = Buffer.from(binding, "latin1");
    if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
      throw new BindingError("the stored key is not bound to this row");
    }
    return opened;
  }

  #mac(key: Buffer, row: BoundRow, token: string): string {
    // JSON keeps the fields unambiguous (no value can run into the next).
    const message = JSON.stringify([row.id, row.organizationId, row.provider, row.apiBase, token]);
    return BINDING_PREFIX + createHmac("sha256", this.#bindingKeys.get(key)!).update(message).digest("base64url");
  }

  /** The key that opens the token (the hinted one first, then the others in configured order), the plaintext, and that key's id. */
  #open(token: string, keyId?: string): [Buffer, string, string] {
    const hinted = keyId === undefined || !this.#keys.has(keyId) ? undefined : keyId;
    const order = hinted === undefined ? this.#keys.keys() : [hinted, ...this.keyIds.filter((id) => id !== hinted)];
    for (const id of order) {
      const key = this.#keys.get(id)!;
      let plaintext: Buffer;
      try {
        plaintext = decryptFernet(key, token);
      } catch (err) {
        if (err instanceof FernetError) continue;
        throw err;
      }
      try {
        return [key, utf8.decode(plaintext), id];
      } catch {
        throw new DecryptError("decrypted secret is not valid UTF-8");
      }
    }
    throw new DecryptError(`token could not be decrypted with any of the ${this.#keys.size} configured key(s)`);
  }
}

/** Parses MASTER_KEY ("key" or "key1,key2,..."; whitespace around entries is ignored). */
export function createKeyring(masterKey: string): Keyring {
  if (typeof masterKey !== "string") throw new MasterKeyError("it is not set");
  if (masterKey.trim() === "") throw new MasterKeyError("it is empty");
  const entries = masterKey.split(",").map((e) => e.trim());
  if (entries.every((e) => e === "")) throw new MasterKeyError("it contains only commas");
  const keys: Buffer[] = [];
  entries.forEach((entry, i) => {
    const where = entries.length === 1 ? "the key" : `entry ${i + 1} of ${entries.length}`;
    if (entry === "") throw new MasterKeyError(`${where} is empty (stray comma?)`);
    let key: Buffer;
    try {
      key = parseFernetKey(entry);
    } catch {
      throw new MasterKeyError(`${where} is not a Fernet key: it ${describeBadKey(entry)}`);
    }
    const dup = keys.findIndex((k) => k.equals(key));
    if (dup !== -1) throw new MasterKeyError(`entry ${i + 1} is the same key as entry ${dup + 1}`);
    keys.push(key);
  });
  return new Keyring(keys);
}

/** Why an entry is not a Fernet key, without repeating any of it. */
function describeBadKey(entry: string): string {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(entry)) {
    return "contains characters outside the url-safe base64 alphabet (A-Z a-z 0-9 - _, with '=' only as final padding)";
  }
  const body = entry.replace(/=+$/, "");
  if (body.length !== 43) return `has the wrong length (${entry.length} character${entry.length === 1 ? "" : "s"}, expected 44)`;
  if (body.length !== entry.length && entry.length !== 44) return "has wrong '=' padding (expected exactly one)";
  return "is not canonical base64 (its last character encodes non-zero spare bits)";
}
