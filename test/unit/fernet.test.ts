import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { CheckedFernetDecryptor, decryptFernet, encryptFernet, FernetError, generateFernetKey, parseFernetKey } from "../../service/src/keyring/fernet.js";

interface GenerateVector {
  token: string;
  now: string;
  iv: number[];
  src: string;
  secret: string;
}
interface VerifyVector {
  token: string;
  now: string;
  ttl_sec: number;
  src: string;
  secret: string;
}
interface InvalidVector {
  desc: string;
  token: string;
  now: string;
  ttl_sec: number;
  secret: string;
}

function fixture<T>(name: string): T[] {
  return JSON.parse(readFileSync(new URL(`../fixtures/fernet-spec/${name}`, import.meta.url), "utf8")) as T[];
}
/** RFC 3339 -> Unix seconds. */
const unix = (rfc3339: string): number => {
  const ms = Date.parse(rfc3339);
  if (Number.isNaN(ms)) throw new Error(`bad RFC 3339 time in fixture: ${rfc3339}`);
  return Math.floor(ms / 1000);
};

const generate = fixture<GenerateVector>("generate.json");
const verify = fixture<VerifyVector>("verify.json");
const invalid = fixture<InvalidVector>("invalid.json");

const B64URL_PADDED = /^[A-Za-z0-9_-]*={0,2}$/;
const KEY = parseFernetKey("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=");

function expectFernetError(fn: () => unknown): FernetError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FernetError);
    return err as FernetError;
  }
  throw new Error("expected a FernetError, but nothing was thrown");
}

describe("fernet spec vectors (github.com/fernet/spec)", () => {
  it("has the vectors", () => {
    expect(generate).toHaveLength(1);
    expect(verify).toHaveLength(1);
    expect(invalid).toHaveLength(8);
    expect(unix("1985-10-26T01:20:00-07:00")).toBe(499162800);
  });

  it.each(generate)("generate: $src at $now", (v) => {
    const token = encryptFernet(parseFernetKey(v.secret), v.src, { iv: Buffer.from(v.iv), now: unix(v.now) });
    expect(token).toBe(v.token);
  });

  it.each(verify)("verify: $src at $now with ttl $ttl_sec", (v) => {
    const plain = decryptFernet(parseFernetKey(v.secret), v.token, { ttlSeconds: v.ttl_sec, now: unix(v.now) });
    expect(plain.toString("utf8")).toBe(v.src);
  });

  it.each(invalid)("invalid: $desc", (v) => {
    const err = expectFernetError(() => decryptFernet(parseFernetKey(v.secret), v.token, { ttlSeconds: v.ttl_sec, now: unix(v.now) }));
    expect(err.message).toMatch(/invalid token/);
    expect(err.message).not.toContain(v.token);
    expect(err.message).not.toContain(v.secret);
  });

  it("without ttlSeconds, expired and far-future tokens still decrypt (stored secrets never expire)", () => {
    for (const desc of ["expired TTL", "far-future TS (unacceptable clock skew)"]) {
      const v = invalid.find((x) => x.desc === desc)!;
      // these two vectors carry an empty plaintext (Python's Fernet(secret).decrypt(token) == b"")
      expect(decryptFernet(parseFernetKey(v.secret), v.token)).toHaveLength(0);
    }
    expect(decryptFernet(KEY, verify[0].token, { now: 4_000_000_000 }).toString()).toBe("hello");
  });
});

describe("encryptFernet / decryptFernet", () => {
  it("round-trips strings and buffers of every length around block boundaries", () => {
    for (let n = 0; n <= 48; n++) {
      const plain = Buffer.from("x".repeat(n) + "é", "utf8").subarray(0, n);
      const token = encryptFernet(KEY, plain);
      expect(decryptFernet(KEY, token).equals(plain)).toBe(true);
      // ciphertext = plaintext padded to the next whole block (a full block when already aligned)
      expect(Buffer.from(token, "base64url").length).toBe(57 + (Math.floor(n / 16) + 1) * 16);
    }
    const text = "sk-ant-api03-example ünïcödé 🔑";
    expect(decryptFernet(KEY, encryptFernet(KEY, text)).toString("utf8")).toBe(text);
  });

  it("produces padded url-safe base64 starting with version 0x80 and the current time", () => {
    const before = Math.floor(Date.now() / 1000);
    for (let n = 0; n < 20; n++) {
      const token = encryptFernet(KEY, "p".repeat(n));
      expect(token).toMatch(B64URL_PADDED);
      expect(token.length % 4).toBe(0);
      expect(token.startsWith("gAAAAA")).toBe(true);
      const data = Buffer.from(token, "base64url");
      expect(data[0]).toBe(0x80);
      const ts = Number(data.readBigUInt64BE(1));
      expect(ts).toBeGreaterThanOrEqual(before);
      expect(ts).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    }
  });

  it("uses a fresh random IV per call", () => {
    const tokens = Array.from({ length: 50 }, () => encryptFernet(KEY, "same plaintext", { now: 1 }));
    expect(new Set(tokens).size).toBe(50);
    const ivs = tokens.map((t) => Buffer.from(t, "base64url").subarray(9, 25).toString("hex"));
    expect(new Set(ivs).size).toBe(50);
  });

  it("uses the supplied IV and time", () => {
    const iv = Buffer.alloc(16, 7);
    const token = encryptFernet(KEY, "hi", { iv, now: 1234567890 });
    const data = Buffer.from(token, "base64url");
    expect(data.subarray(9, 25).equals(iv)).toBe(true);
    expect(Number(data.readBigUInt64BE(1))).toBe(1234567890);
    expect(encryptFernet(KEY, "hi", { iv, now: 1234567890 })).toBe(token);
  });

  it("rejects a token with any single decoded byte changed (every byte, every bit)", () => {
    const token = encryptFernet(KEY, "a secret of 60 bytes".padEnd(60, "."));
    const data = Buffer.from(token, "base64url");
    let attempts = 0;
    for (let i = 0; i < data.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Buffer.from(data);
        bad[i] ^= 1 << bit;
        expectFernetError(() => decryptFernet(KEY, bad.toString("base64url") + "="));
        attempts++;
      }
    }
    expect(attempts).toBe(data.length * 8);
  });

  it("rejects a token with any single character changed", () => {
    const token = encryptFernet(KEY, "another secret");
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .%";
    for (let i = 0; i < token.length; i++) {
      for (const c of alphabet) {
        if (c === token[i]) continue;
        const bad = token.slice(0, i) + c + token.slice(i + 1);
        expectFernetError(() => decryptFernet(KEY, bad));
      }
    }
  });

  it("rejects truncated tokens, as strings and as decoded bytes", () => {
    const token = encryptFernet(KEY, "truncate me");
    const unpadded = token.replace(/=+$/, "");
    expect(unpadded.length).toBeLessThan(token.length);
    for (let n = 0; n < unpadded.length; n++) {
      expectFernetError(() => decryptFernet(KEY, token.slice(0, n)));
    }
    const data = Buffer.from(token, "base64url");
    for (let n = 0; n < data.length; n++) {
      expectFernetError(() => decryptFernet(KEY, data.subarray(0, n).toString("base64url")));
    }
  });

  it("accepts a token without its '=' padding but rejects wrong padding and extra characters", () => {
    const token = encryptFernet(KEY, "pad");
    expect(token.endsWith("=")).toBe(true);
    expect(decryptFernet(KEY, token.replace(/=+$/, "")).toString()).toBe("pad");
    for (const bad of [token + "=", token + "==", token + "\n", " " + token, token.replace(/-/g, "+").replace(/_/g, "/")]) {
      if (bad === token) continue;
      expectFernetError(() => decryptFernet(KEY, bad));
    }
  });

  it("rejects the wrong key, without leaking anything in the message", () => {
    const plaintext = "sk-ant-secret-value";
    const token = encryptFernet(KEY, plaintext);
    const other = parseFernetKey(generateFernetKey());
    const err = expectFernetError(() => decryptFernet(other, token));
    expect(err.message).toBe("invalid token: HMAC mismatch");
    for (const secret of [token, plaintext, other.toString("base64url"), KEY.toString("base64url")]) {
      expect(err.message).not.toContain(secret);
    }
  });

  it("rejects an unknown version byte even with a valid HMAC position", () => {
    const data = Buffer.from(encryptFernet(KEY, "v"), "base64url");
    data[0] = 0x81;
    expect(expectFernetError(() => decryptFernet(KEY, data.toString("base64url"))).message).toMatch(/version/);
  });

  it("applies ttlSeconds and a 60 s clock-skew limit only when ttlSeconds is given", () => {
    const token = encryptFernet(KEY, "t", { now: 1000 });
    expect(decryptFernet(KEY, token, { ttlSeconds: 10, now: 1010 }).toString()).toBe("t");
    expectFernetError(() => decryptFernet(KEY, token, { ttlSeconds: 10, now: 1011 }));
    expect(decryptFernet(KEY, token, { ttlSeconds: 10, now: 940 }).toString()).toBe("t");
    expectFernetError(() => decryptFernet(KEY, token, { ttlSeconds: 10, now: 939 }));
    expect(decryptFernet(KEY, token, { now: 1_000_000 }).toString()).toBe("t");
  });

  it("validates key, IV and time arguments", () => {
    expectFernetError(() => encryptFernet(Buffer.alloc(16), "x"));
    expectFernetError(() => decryptFernet(Buffer.alloc(33), encryptFernet(KEY, "x")));
    expectFernetError(() => encryptFernet(KEY, "x", { iv: Buffer.alloc(15) }));
    expectFernetError(() => encryptFernet(KEY, "x", { now: -1 }));
    expectFernetError(() => encryptFernet(KEY, "x", { now: Number.NaN }));
  });
});

describe("CheckedFernetDecryptor (the ResolveKey cache's decryption of already-checked tokens)", () => {
  it("opens the spec vectors and, through one long-lived context, tokens of every length in any order as decryptFernet does", () => {
    for (const v of [...generate, ...verify]) expect(new CheckedFernetDecryptor(parseFernetKey(v.secret)).decrypt(v.token).toString("utf8")).toBe(v.src);
    const decryptor = new CheckedFernetDecryptor(KEY);
    const plains = Array.from({ length: 300 }, (_, i) => randomBytes(i % 70));
    const tokens = plains.map((plain) => encryptFernet(KEY, plain));
    // Shuffled, twice over: nothing carries from one call to the next.
    const order = [...tokens.keys(), ...tokens.keys()].sort(() => Math.random() - 0.5);
    for (const i of order) {
      const opened = decryptor.decrypt(tokens[i]);
      expect(opened.equals(plains[i])).toBe(true);
      expect(opened.equals(decryptFernet(KEY, tokens[i]))).toBe(true);
    }
    // Unpadded tokens (as other implementations may store them) open too.
    expect(decryptor.decrypt(tokens[5].replace(/=+$/, "")).equals(plains[5])).toBe(true);
  });

  it("refuses malformed tokens without leaving anything behind for the next call", () => {
    const decryptor = new CheckedFernetDecryptor(KEY);
    const token = encryptFernet(KEY, "sk-after-the-bad-ones");
    const bytes = Buffer.from(token, "base64url");
    const notWholeBlocks = Buffer.concat([bytes.subarray(0, 25 + 16 + 5), bytes.subarray(bytes.length - 32)]).toString("base64url");
    const noCiphertext = Buffer.concat([bytes.subarray(0, 25), bytes.subarray(bytes.length - 32)]).toString("base64url");
    const otherVersion = Buffer.from([0x81, ...bytes.subarray(1)]).toString("base64url");
    for (const bad of [notWholeBlocks, noCiphertext, otherVersion, "", "gA", token.slice(0, 40)]) {
      const error = expectFernetError(() => decryptor.decrypt(bad));
      expect(error.message).not.toContain(token);
      expect(decryptor.decrypt(token).toString("utf8")).toBe("sk-after-the-bad-ones");
    }
  });

  it("under another key the padding check refuses almost every token, and never yields the plaintext", () => {
    const wrong = new CheckedFernetDecryptor(parseFernetKey(generateFernetKey()));
    let refused = 0;
    for (let i = 0; i < 200; i++) {
      const token = encryptFernet(KEY, `sk-${i}`);
      try {
        expect(wrong.decrypt(token).toString("latin1")).not.toBe(`sk-${i}`);
      } catch (error) {
        expect(error).toBeInstanceOf(FernetError);
        refused++;
      }
    }
    // A wrong key passes the padding check about 1 time in 256 (a last byte of 0x01).
    expect(refused).toBeGreaterThan(180);
  });

  it("validates its key", () => {
    expectFernetError(() => new CheckedFernetDecryptor(Buffer.alloc(16)));
  });

  it("decryptFernet's block decryptor follows its key Buffer: changed in place, the new key decrypts", () => {
    const key = Buffer.from(KEY);
    const first = encryptFernet(key, "sk-first");
    expect(decryptFernet(key, first).toString()).toBe("sk-first");
    // Same Buffer object, other bytes: a stale cached context would decrypt with the old AES key.
    parseFernetKey(generateFernetKey()).copy(key);
    const second = encryptFernet(key, "sk-second");
    expect(decryptFernet(key, second).toString()).toBe("sk-second");
    expectFernetError(() => decryptFernet(key, first));
  });
});

describe("parseFernetKey / generateFernetKey", () => {
  it("accepts url-safe base64 of 32 bytes with or without padding", () => {
    const key = parseFernetKey("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=");
    expect(key).toHaveLength(32);
    expect(parseFernetKey("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4").equals(key)).toBe(true);
  });

  it.each([
    ["empty", ""],
    ["31 bytes", Buffer.alloc(31, 1).toString("base64url")],
    ["33 bytes", Buffer.alloc(33, 1).toString("base64url")],
    ["standard base64 alphabet", Buffer.alloc(32, 0xfb).toString("base64")],
    ["double padding", "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=="],
    ["padding in the middle", "cw_0x689RpI-jtRR7o=E8h_eQsKImvJapLeSbXpwF4e4"],
    ["whitespace", " cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="],
    ["trailing newline", "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\n"],
    ["non-canonical last character", "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e5="],
    ["hex instead of base64", "00".repeat(32)],
    ["non-ASCII", "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4é="],
  ])("rejects %s", (_name, text) => {
    const err = expectFernetError(() => parseFernetKey(text));
    if (text.length > 0) expect(err.message).not.toContain(text.trim());
  });

  it("generates keys in Python's Fernet.generate_key() format", () => {
    const keys = Array.from({ length: 20 }, generateFernetKey);
    expect(new Set(keys).size).toBe(20);
    for (const k of keys) {
      expect(k).toMatch(/^[A-Za-z0-9_-]{43}=$/);
      expect(parseFernetKey(k)).toHaveLength(32);
    }
  });
});
