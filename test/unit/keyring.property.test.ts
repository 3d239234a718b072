// Property-based tests (fast-check) of the keyring and of the Fernet layer under it:
// decrypt(encrypt(x)) = x, tokens are canonical Fernet, any change to a token is refused,
// keys never cross, MASTER_KEY errors never repeat the configured value.
// On a failure fast-check prints the seed and the shrunk counterexample; replay with
// fc.assert(..., { seed, path }).
import fc from "fast-check";
import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decryptFernet, encryptFernet, FernetError, parseFernetKey } from "../../service/src/keyring/fernet.js";
import { createKeyring, DecryptError, keyFingerprint, MasterKeyError } from "../../service/src/keyring/keyring.js";

// ---------------------------------------------------------------- helpers

/** Fernet tokens are 57 bytes of overhead (version, time, IV, HMAC) plus PKCS#7-padded ciphertext. */
const tokenLength = (plaintextBytes: number) => 57 + 16 * (Math.floor(plaintextBytes / 16) + 1);

const masterKeyOf = (key: Uint8Array) => Buffer.from(key).toString("base64url") + "=";
const idOf = (key: Uint8Array) => keyFingerprint(Buffer.from(key));

/** The only two DecryptError messages: neither carries the token, a key or the plaintext. */
const DECRYPT_MESSAGE = /^(token could not be decrypted with any of the [1-9]\d* configured key\(s\)|decrypted secret is not valid UTF-8)$/;

function decryptError(fn: () => unknown): DecryptError {
  let result: unknown;
  try {
    result = fn();
  } catch (err) {
    if (!(err instanceof DecryptError)) throw err; // a TypeError or a FernetError leaking out is a failure too
    expect(err.message).toMatch(DECRYPT_MESSAGE);
    return err;
  }
  throw new Error(`expected a DecryptError, but decrypt returned ${JSON.stringify(result)}`);
}

/** Valid 32-byte keys. noBias: fast-check's bias would otherwise favour all-zero and near-identical arrays. */
const keyBytes = fc.noBias(fc.uint8Array({ minLength: 32, maxLength: 32 }));
/**
 * Distinct keys. Distinct signing halves (Fernet authenticates with the first 16 bytes only), so
 * that "another key" means another MAC key: keys sharing a signing half are not independent.
 */
const distinctKeys = (minLength: number, maxLength: number) =>
  fc.uniqueArray(keyBytes, { minLength, maxLength, selector: (k) => Buffer.from(k.subarray(0, 16)).toString("hex") });

/** Well-formed Unicode strings (no lone surrogates): empty, NULs, emoji, combining marks, long. */
const plaintexts: fc.Arbitrary<string> = fc.oneof(
  fc.constant(""),
  fc.string({ unit: "grapheme", maxLength: 64 }),
  fc.string({ unit: "grapheme-composite", maxLength: 64 }),
  fc.string({ unit: "binary", maxLength: 64 }), // any code point, NUL and astral included
  fc.string({ unit: "binary-ascii", maxLength: 64 }),
  fc.string({ unit: fc.constantFrom("\u0000", "🔑", "👩‍👩‍👧", "\uFEFF", "e\u0301", "\r\n", "日本", "=", "sk-"), maxLength: 40 }),
  // Long: not shrunk, since shrinking thousands of characters takes O(n^2) runs; failures print as found.
  fc.noShrink(fc.string({ unit: "binary", minLength: 1000, maxLength: 5000, size: "max" })),
);

/** One url-safe base64 character, or something that is not one. */
const tokenCharacter = fc.oneof(
  fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
  fc.constantFrom("=", "+", "/", " ", "\n", "\t", ".", "\u0000", "é", "🔑"),
  fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
);

// ---------------------------------------------------------------- round trip

describe("keyring round trip", () => {
  it("decrypt(encrypt(x)) === x for arbitrary well-formed Unicode, with and without the key id hint", () => {
    fc.assert(
      fc.property(keyBytes, plaintexts, (key, x) => {
        const ring = createKeyring(masterKeyOf(key));
        const { token, keyId } = ring.encrypt(x);
        expect(ring.decrypt(token)).toBe(x);
        expect(ring.decrypt(token, keyId)).toBe(x);
        // Python's MultiFernet strips nothing either: the plaintext is the UTF-8 of x, byte for byte.
        expect(decryptFernet(Buffer.from(key), token).equals(Buffer.from(x, "utf8"))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it("tokens are canonical Fernet (0x80, padded url-safe base64, current time) and never contain the plaintext", () => {
    fc.assert(
      fc.property(keyBytes, plaintexts, (key, x) => {
        const ring = createKeyring(masterKeyOf(key));
        const before = Math.floor(Date.now() / 1000);
        const { token, keyId } = ring.encrypt(x);
        const after = Math.floor(Date.now() / 1000);
        expect(keyId).toBe(idOf(key));

        expect(token).toMatch(/^[A-Za-z0-9_-]+={0,2}$/);
        expect(token.length % 4).toBe(0); // padded, like Python's Fernet
        const bytes = Buffer.from(token, "base64url");
        const body = token.replace(/=+$/, "");
        expect(bytes.toString("base64url")).toBe(body); // canonical: re-encodes to itself
        expect(bytes[0]).toBe(0x80);
        const plain = Buffer.from(x, "utf8");
        expect(bytes.length).toBe(tokenLength(plain.length));
        const issued = Number(bytes.readBigUInt64BE(1));
        expect(issued).toBeGreaterThanOrEqual(before);
        expect(issued).toBeLessThanOrEqual(after);

        // From 8 bytes/characters on, a chance occurrence in ~100 random bytes is below 2^-50.
        if (plain.length >= 8) expect(bytes.includes(plain)).toBe(false);
        if (x.length >= 8) {
          expect(token.includes(x)).toBe(false);
          expect(token.includes(plain.toString("base64url").slice(0, 11))).toBe(false);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("encrypting the same plaintext twice gives different tokens and IVs (fresh random IV)", () => {
    fc.assert(
      fc.property(keyBytes, plaintexts, (key, x) => {
        const ring = createKeyring(masterKeyOf(key));
        const a = Buffer.from(ring.encrypt(x).token, "base64url");
        const b = Buffer.from(ring.encrypt(x).token, "base64url");
        expect(a.subarray(9, 25).equals(b.subarray(9, 25))).toBe(false);
        expect(a.subarray(25).equals(b.subarray(25))).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  // BUG (found by this property): Keyring.encrypt() silently replaces a lone UTF-16 surrogate
  // with U+FFFD (Node's UTF-8 encoder), so the secret read back is not the secret stored:
  //   input "\ud800" -> decrypt(encrypt(x)) === "\ufffd" (expected "\ud800", or encrypt refusing
  //   the ill-formed string). Not reachable through the API today (api_key is printable ASCII),
  //   but the keyring's contract is decrypt(encrypt(x)) === x. Remove .fails once encrypt()
  //   refuses ill-formed strings (e.g. `!x.isWellFormed()` -> throw) or round-trips them.
  it("a string with a lone surrogate is refused by encrypt() (it has no UTF-8 form)", () => {
    const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
    const withSurrogates = fc.string({ unit: fc.oneof(loneSurrogate, fc.constantFrom("a", "🔑", "\u0000")), minLength: 1, maxLength: 20 });
    fc.assert(
      fc.property(keyBytes, withSurrogates, (key, x) => {
        const ring = createKeyring(masterKeyOf(key));
        let token: string;
        try {
          token = ring.encrypt(x).token;
        } catch {
          return; // refusing the ill-formed string is acceptable
        }
        expect(ring.decrypt(token)).toBe(x);
      }),
      { numRuns: 200, examples: [[new Uint8Array(32), "\ud800"]] },
    );
  });
});

// ---------------------------------------------------------------- tampering

describe("keyring tamper resistance", () => {
  it("any single-byte change anywhere in the decoded token makes decrypt throw DecryptError", () => {
    fc.assert(
      fc.property(keyBytes, plaintexts, fc.nat(), fc.integer({ min: 1, max: 255 }), (key, x, at, flip) => {
        const ring = createKeyring(masterKeyOf(key));
        const { token, keyId } = ring.encrypt(x);
        const bytes = Buffer.from(token, "base64url");
        const i = at % bytes.length;
        bytes[i] ^= flip; // flip != 0: the byte always changes
        const tampered = bytes.toString("base64url"); // well-formed base64: the MAC, not the decoder, must catch it
        decryptError(() => ring.decrypt(tampered));
        decryptError(() => ring.decrypt(tampered, keyId));
        decryptError(() => ring.decrypt(tampered + "==".slice(0, (3 - (bytes.length % 3)) % 3)));
      }),
      { numRuns: 1000 },
    );
  });

  it("exhaustively: every position x every other byte value of one token is refused", () => {
    const key = new Uint8Array(32).map((_, i) => i * 7 + 1);
    const ring = createKeyring(masterKeyOf(key));
    const original = Buffer.from(ring.encrypt("sk-ant-api03-exhaustive").token, "base64url");
    let refused = 0;
    for (let i = 0; i < original.length; i++) {
      for (let flip = 1; flip < 256; flip++) {
        const bytes = Buffer.from(original);
        bytes[i] ^= flip;
        decryptError(() => ring.decrypt(bytes.toString("base64url")));
        refused++;
      }
    }
    expect(refused).toBe(original.length * 255);
  });

  it("any single-character change in the base64url text is refused (no alternative spelling of the same bytes)", () => {
    fc.assert(
      fc.property(keyBytes, plaintexts, fc.nat(), tokenCharacter, (key, x, at, c) => {
        const ring = createKeyring(masterKeyOf(key));
        const { token } = ring.encrypt(x);
        const i = at % token.length;
        fc.pre(token[i] !== c);
        const changed = token.slice(0, i) + c + token.slice(i + 1);
        decryptError(() => ring.decrypt(changed));
      }),
      { numRuns: 1000 },
    );
  });

  it("byte truncation and byte extension are refused", () => {
    fc.assert(
      fc.property(keyBytes, plaintexts, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 48 }), (key, x, cut, extra) => {
        const ring = createKeyring(masterKeyOf(key));
        const bytes = Buffer.from(ring.encrypt(x).token, "base64url");
        const keep = cut % bytes.length; // 0 .. length-1 bytes kept
        decryptError(() => ring.decrypt(bytes.subarray(0, keep).toString("base64url")));
        decryptError(() => ring.decrypt(Buffer.concat([bytes, extra]).toString("base64url")));
        decryptError(() => ring.decrypt(Buffer.concat([extra, bytes]).toString("base64url")));
      }),
      { numRuns: 500 },
    );
  });

  it("text truncation is refused unless it removes exactly all '=' padding (optional, but correct if present); text extension is refused", () => {
    fc.assert(
      fc.property(keyBytes, plaintexts, fc.nat(), fc.string({ unit: "binary", minLength: 1, maxLength: 8 }), (key, x, cut, suffix) => {
        const ring = createKeyring(masterKeyOf(key));
        const { token } = ring.encrypt(x);
        const drop = 1 + (cut % token.length); // 1 .. length characters removed
        const truncated = token.slice(0, token.length - drop);
        if (truncated === token.replace(/=+$/, "")) {
          expect(ring.decrypt(truncated)).toBe(x); // the same bytes with all of the padding omitted
        } else {
          // less data, or padding cut short ("==" -> "="): padding is optional, but correct if present
          decryptError(() => ring.decrypt(truncated));
        }
        decryptError(() => ring.decrypt(token + suffix));
        decryptError(() => ring.decrypt(suffix + token));
      }),
      { numRuns: 500 },
    );
  });

  it("garbage and structurally plausible forgeries never decrypt, and only DecryptError is thrown", () => {
    const forgery = fc.tuple(fc.nat({ max: 6 }), fc.uint8Array({ minLength: 0, maxLength: 200 })).map(([blocks, random]) => {
      const bytes = Buffer.alloc(57 + 16 * blocks);
      Buffer.from(random).copy(bytes);
      bytes[0] = 0x80;
      return bytes.toString("base64url");
    });
    fc.assert(
      fc.property(keyBytes, fc.oneof(fc.string(), fc.string({ unit: "binary" }), forgery), fc.option(fc.string()), (key, token, hint) => {
        const ring = createKeyring(masterKeyOf(key));
        decryptError(() => ring.decrypt(token, hint ?? undefined));
      }),
      { numRuns: 500 },
    );
  });
});

// ---------------------------------------------------------------- several keys

describe("keyring with several keys", () => {
  it("a token made under one key never decrypts under a keyring of other keys, whatever the hint", () => {
    fc.assert(
      fc.property(distinctKeys(2, 4), plaintexts, fc.nat(), (keys, x, where) => {
        const [own, ...others] = keys;
        const { token, keyId } = createKeyring(masterKeyOf(own)).encrypt(x);
        const ring = createKeyring(others.map(masterKeyOf).join(","));
        expect(ring.has(keyId)).toBe(false);
        for (const hint of [undefined, keyId, ring.primaryKeyId, "fk_0000000000000000"]) {
          const err = decryptError(() => ring.decrypt(token, hint));
          expect(err.message).not.toContain(token);
          if (x.length >= 8) expect(err.message).not.toContain(x);
        }
        // Control: the same keyring plus the own key (anywhere in the list) does decrypt it.
        const withOwn = [...others];
        withOwn.splice(where % (others.length + 1), 0, own);
        expect(createKeyring(withOwn.map(masterKeyOf).join(",")).decrypt(token)).toBe(x);
      }),
      { numRuns: 300 },
    );
  });

  it('MultiFernet order: "new,old" decrypts tokens of either key and encrypts under new', () => {
    fc.assert(
      fc.property(distinctKeys(2, 2), plaintexts, plaintexts, fc.boolean(), ([newKey, oldKey], a, b, unpadded) => {
        const spell = (k: Uint8Array) => (unpadded ? masterKeyOf(k).slice(0, -1) : masterKeyOf(k));
        const ring = createKeyring(` ${spell(newKey)} ,\t${spell(oldKey)}\n`);
        expect(ring.primaryKeyId).toBe(idOf(newKey));
        expect(ring.keyIds).toEqual([idOf(newKey), idOf(oldKey)]);

        const oldToken = encryptFernet(Buffer.from(oldKey), a);
        const newToken = encryptFernet(Buffer.from(newKey), b);
        for (const hint of [undefined, idOf(oldKey), idOf(newKey), "fk_0000000000000000"]) {
          expect(ring.decrypt(oldToken, hint)).toBe(a);
          expect(ring.decrypt(newToken, hint)).toBe(b);
        }

        const fresh = ring.encrypt(a);
        expect(fresh.keyId).toBe(idOf(newKey));
        expect(decryptFernet(Buffer.from(newKey), fresh.token).equals(Buffer.from(a, "utf8"))).toBe(true);
        expect(() => decryptFernet(Buffer.from(oldKey), fresh.token)).toThrow(FernetError);
        decryptError(() => createKeyring(masterKeyOf(oldKey)).decrypt(fresh.token));

        // The order is what decides: "old,new" encrypts under old.
        expect(createKeyring(`${masterKeyOf(oldKey)},${masterKeyOf(newKey)}`).encrypt(b).keyId).toBe(idOf(oldKey));
      }),
      { numRuns: 300 },
    );
  });

  it("UTF-8 is checked exactly: bytes decrypt to the string iff they are valid UTF-8, else DecryptError", () => {
    const utf8ish = fc.oneof(
      fc.uint8Array({ maxLength: 40 }),
      plaintexts.map((s) => new Uint8Array(Buffer.from(s, "utf8"))),
      // valid UTF-8 with one byte replaced: often invalid, sometimes still valid
      fc.tuple(fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([s, at, byte]) => {
        const bytes = Buffer.from(s, "utf8");
        bytes[at % bytes.length] = byte;
        return new Uint8Array(bytes);
      }),
    );
    fc.assert(
      fc.property(keyBytes, utf8ish, (key, raw) => {
        const bytes = Buffer.from(raw);
        // Oracle: Node's lenient decoder replaces every invalid sequence with U+FFFD, so a
        // decode/encode round trip is the identity exactly for valid UTF-8.
        const valid = Buffer.from(bytes.toString("utf8"), "utf8").equals(bytes);
        const ring = createKeyring(masterKeyOf(key));
        const token = encryptFernet(Buffer.from(key), bytes);
        if (valid) {
          expect(Buffer.from(ring.decrypt(token), "utf8").equals(bytes)).toBe(true);
        } else {
          expect(decryptError(() => ring.decrypt(token)).message).toBe("decrypted secret is not valid UTF-8");
        }
      }),
      { numRuns: 500 },
    );
  });
});

// ---------------------------------------------------------------- MASTER_KEY errors

describe("MASTER_KEY errors never repeat the configured value", () => {
  const GUIDANCE = (() => {
    try {
      createKeyring("");
    } catch (err) {
      return (err as Error).message.slice("Invalid MASTER_KEY: it is empty".length);
    }
    throw new Error("createKeyring('') did not throw");
  })();
  const WHERE = String.raw`(?:the key|entry \d+ of \d+)`;
  /**
   * Every problem createKeyring can report. The only variable parts are numbers (entry
   * position, entry count, entry length): nothing of the value itself.
   */
  const PROBLEM = new RegExp(
    "^(?:" +
      [
        "it is not set",
        "it is empty",
        "it contains only commas",
        String.raw`${WHERE} is empty \(stray comma\?\)`,
        String.raw`${WHERE} is not a Fernet key: it contains characters outside the url-safe base64 alphabet \(A-Z a-z 0-9 - _, with '=' only as final padding\)`,
        String.raw`${WHERE} is not a Fernet key: it has the wrong length \(\d+ characters?, expected 44\)`,
        String.raw`${WHERE} is not a Fernet key: it has wrong '=' padding \(expected exactly one\)`,
        String.raw`${WHERE} is not a Fernet key: it is not canonical base64 \(its last character encodes non-zero spare bits\)`,
        String.raw`entry \d+ is the same key as entry \d+`,
      ].join("|") +
      ")$",
  );

  function check(value: unknown): void {
    let caught: unknown;
    try {
      createKeyring(value as string);
    } catch (err) {
      caught = err;
    }
    // Valid values are not what this property is about; fast-check fails the run if most are skipped.
    fc.pre(caught !== undefined);
    expect(caught).toBeInstanceOf(MasterKeyError);
    const message = (caught as Error).message;
    expect(message.startsWith("Invalid MASTER_KEY: ")).toBe(true);
    expect(message.endsWith(GUIDANCE)).toBe(true);
    const problem = message.slice("Invalid MASTER_KEY: ".length, message.length - GUIDANCE.length);
    expect(problem, "not one of the fixed problems").toMatch(PROBLEM);
    if (typeof value !== "string") return;
    // The numbers are the entry's position, the entry count and the entry's length: metadata only.
    const entries = value.split(",").map((e) => e.trim());
    const where = /^entry (\d+) of (\d+) /.exec(problem);
    if (where) expect(Number(where[2])).toBe(entries.length);
    if (problem.startsWith("the key ")) expect(entries.length).toBe(1);
    const index = where ? Number(where[1]) - 1 : 0;
    const length = /has the wrong length \((\d+) character/.exec(problem);
    if (length) expect(Number(length[1])).toBe(entries[index].length);
    if (/ is empty \(stray comma\?\)$/.test(problem)) expect(entries[index]).toBe("");
    const duplicate = /^entry (\d+) is the same key as entry (\d+)$/.exec(problem);
    if (duplicate) {
      const [later, earlier] = [Number(duplicate[1]) - 1, Number(duplicate[2]) - 1];
      expect(earlier).toBeLessThan(later);
      expect(parseFernetKey(entries[later]).equals(parseFernetKey(entries[earlier]))).toBe(true);
    }
    // And, spelled out: no entry and no 12-character slice of one appears in the message.
    for (const entry of entries.filter((e) => e.length >= 12)) {
      for (let i = 0; i + 12 <= entry.length; i++) expect(message).not.toContain(entry.slice(i, i + 12));
    }
  }

  /** A valid key text with one edit: a changed, inserted or deleted character, or changed padding. */
  const nearKey = fc
    .tuple(keyBytes, fc.nat(), fc.constantFrom("replace", "insert", "delete", "pad", "unpad", "standard"), tokenCharacter)
    .map(([key, at, edit, c]) => {
      const text = masterKeyOf(key);
      const i = at % text.length;
      switch (edit) {
        case "replace":
          return text.slice(0, i) + c + text.slice(i + 1);
        case "insert":
          return text.slice(0, i) + c + text.slice(i);
        case "delete":
          return text.slice(0, i) + text.slice(i + 1);
        case "pad":
          return text + "=".repeat(1 + (at % 3));
        case "unpad":
          return text.slice(0, -1);
        default:
          return Buffer.from(key).toString("base64");
      }
    });
  const validKey = keyBytes.map(masterKeyOf);
  const entry = fc.oneof(validKey, nearKey, fc.string(), fc.string({ unit: "binary", maxLength: 60 }), fc.constant(""));

  it("arbitrary strings: the message is one of the fixed problems, with numbers only", () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: "grapheme", maxLength: 100 })), check), {
      numRuns: 1000,
    });
  });

  it("near-valid keys and comma-separated lists mixing valid, broken, empty and duplicate entries", () => {
    const list = fc
      .tuple(
        fc.array(entry, { minLength: 1, maxLength: 5 }),
        fc.array(fc.constantFrom("", " ", "\t", "\n"), { minLength: 10, maxLength: 10 }),
        fc.option(fc.nat()),
      )
      .map(([entries, spaces, duplicate]) => {
        // No push: a map must not mutate the generated value, or shrinking goes wrong.
        const all = duplicate === null ? entries : [...entries, entries[duplicate % entries.length]];
        return all.map((e, i) => spaces[(2 * i) % 10] + e + spaces[(2 * i + 1) % 10]).join(",");
      });
    fc.assert(fc.property(fc.oneof(nearKey, list), check), { numRuns: 1000 });
  });

  it("values that are not strings say only that it is not set", () => {
    fc.assert(
      fc.property(fc.oneof(fc.constant(undefined), fc.constant(null), fc.integer(), fc.boolean(), fc.object(), fc.array(validKey)), (value) => {
        check(value);
        expect(() => createKeyring(value as unknown as string)).toThrow(/^Invalid MASTER_KEY: it is not set\. /);
      }),
      { numRuns: 200 },
    );
  });
});

// ---------------------------------------------------------------- Fernet at the byte level

describe("fernet.ts at the byte level", () => {
  it("decryptFernet(encryptFernet(bytes)) returns the bytes; header = 0x80, time, IV; same inputs -> same token", () => {
    fc.assert(
      fc.property(
        keyBytes,
        fc.uint8Array({ maxLength: 300 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        (key, plain, iv, now) => {
          const k = Buffer.from(key);
          const token = encryptFernet(k, Buffer.from(plain), { iv: Buffer.from(iv), now });
          expect(decryptFernet(k, token).equals(Buffer.from(plain))).toBe(true);
          const bytes = Buffer.from(token, "base64url");
          expect(bytes.length).toBe(tokenLength(plain.length));
          expect(bytes[0]).toBe(0x80);
          expect(Number(bytes.readBigUInt64BE(1))).toBe(now);
          expect(bytes.subarray(9, 25).equals(Buffer.from(iv))).toBe(true);
          expect(encryptFernet(k, Buffer.from(plain), { iv: Buffer.from(iv), now })).toBe(token);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("only version 0x80 is accepted, even under a valid HMAC (tokens re-signed with the key)", () => {
    fc.assert(
      fc.property(keyBytes, fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 40 }), (key, version, plain) => {
        const k = Buffer.from(key);
        const token = Buffer.from(encryptFernet(k, Buffer.from(plain)), "base64url");
        const body = Buffer.from(token.subarray(0, token.length - 32));
        body[0] = version;
        const resigned = Buffer.concat([body, createHmac("sha256", k.subarray(0, 16)).update(body).digest()]).toString("base64url");
        if (version === 0x80) {
          expect(decryptFernet(k, resigned).equals(Buffer.from(plain))).toBe(true);
        } else {
          expect(() => decryptFernet(k, resigned)).toThrow(/unknown version/);
          decryptError(() => createKeyring(masterKeyOf(key)).decrypt(resigned));
        }
      }),
      { numRuns: 300, examples: [[new Uint8Array(32), 0x80, new Uint8Array(0)]] },
    );
  });

  it("validly signed random ciphertext either decrypts or fails as FernetError (bad padding), never anything else", () => {
    fc.assert(
      fc.property(keyBytes, fc.nat({ max: 4 }), fc.uint8Array({ minLength: 96, maxLength: 96 }), (key, blocks, random) => {
        const k = Buffer.from(key);
        const body = Buffer.concat([Buffer.from([0x80]), Buffer.alloc(8), Buffer.from(random.subarray(0, 16 * (blocks + 2)))]);
        const token = Buffer.concat([body, createHmac("sha256", k.subarray(0, 16)).update(body).digest()]).toString("base64url");
        try {
          const plain = decryptFernet(k, token);
          expect(plain.length).toBeLessThan(16 * (blocks + 1)); // at least one byte of PKCS#7 padding came off
        } catch (err) {
          expect(err).toBeInstanceOf(FernetError);
          expect((err as Error).message).toBe("invalid token: bad padding");
        }
      }),
      { numRuns: 300 },
    );
  });

  it("TTL: a token issued at t decrypts at time c with ttl iff t + ttl >= c and c + 60 >= t", () => {
    fc.assert(
      fc.property(
        keyBytes,
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.integer({ min: 0, max: 10 ** 9 }),
        fc.oneof(fc.integer({ min: -200, max: 200 }), fc.integer({ min: -(10 ** 9), max: 2 * 10 ** 9 })),
        fc.boolean(),
        (key, t, ttl, offset, nearExpiry) => {
          const k = Buffer.from(key);
          const c = Math.max(0, nearExpiry ? t + ttl + (offset % 3) : t + offset);
          const token = encryptFernet(k, "ttl", { now: t });
          const ok = t + ttl >= c && c + 60 >= t;
          if (ok) expect(decryptFernet(k, token, { ttlSeconds: ttl, now: c }).toString()).toBe("ttl");
          else expect(() => decryptFernet(k, token, { ttlSeconds: ttl, now: c })).toThrow(t > c ? /future/ : /expired/);
          // Without a TTL (how the keyring decrypts) time never matters.
          expect(decryptFernet(k, token, { now: c }).toString()).toBe("ttl");
        },
      ),
      { numRuns: 500 },
    );
  });

  it("parseFernetKey reads any 32 bytes back with or without '=' and refuses every other length", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), fc.boolean(), (raw, padded) => {
        const unpadded = Buffer.from(raw).toString("base64url");
        const text = padded ? unpadded + "==".slice(0, (3 - (raw.length % 3)) % 3) : unpadded;
        if (raw.length === 32) {
          expect(parseFernetKey(text).equals(Buffer.from(raw))).toBe(true);
        } else {
          expect(() => parseFernetKey(text)).toThrow(FernetError);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("the key text has exactly one spelling: any single-character change gives another key or an error", () => {
    fc.assert(
      fc.property(keyBytes, fc.nat(), tokenCharacter, (key, at, c) => {
        const text = masterKeyOf(key);
        const i = at % text.length;
        fc.pre(text[i] !== c);
        const changed = text.slice(0, i) + c + text.slice(i + 1);
        let parsed: Buffer | undefined;
        try {
          parsed = parseFernetKey(changed);
        } catch (err) {
          expect(err).toBeInstanceOf(FernetError);
          expect((err as Error).message).not.toContain(changed.slice(0, 12));
        }
        if (parsed) expect(parsed.equals(Buffer.from(key))).toBe(false);
      }),
      { numRuns: 500 },
    );
  });
});
