import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decryptFernet, encryptFernet, parseFernetKey } from "../../service/src/keyring/fernet.js";
import {
  BindingError,
  createKeyring,
  type Admitted,
  DecryptError,
  generateMasterKey,
  Keyring,
  keyFingerprint,
  MasterKeyError,
} from "../../service/src/keyring/keyring.js";

const K1 = generateMasterKey();
const K2 = generateMasterKey();
const K3 = generateMasterKey();
const id = (k: string) => keyFingerprint(parseFernetKey(k));

function masterKeyError(masterKey: unknown): MasterKeyError {
  try {
    createKeyring(masterKey as string);
  } catch (err) {
    expect(err).toBeInstanceOf(MasterKeyError);
    return err as MasterKeyError;
  }
  throw new Error("expected a MasterKeyError");
}

describe("keyFingerprint", () => {
  it('is "fk_" + 16 hex chars of sha256("provider-credentials key-id v1\\0" + key)', () => {
    const key = parseFernetKey(K1);
    const expected = createHash("sha256")
      .update(Buffer.concat([Buffer.from("provider-credentials key-id v1\0"), key]))
      .digest("hex")
      .slice(0, 16);
    expect(keyFingerprint(key)).toBe("fk_" + expected);
    expect(keyFingerprint(key)).toMatch(/^fk_[0-9a-f]{16}$/);
  });

  it("does not contain the key in any encoding and differs per key", () => {
    const key = parseFernetKey(K1);
    const fp = keyFingerprint(key);
    expect(key.toString("hex")).not.toContain(fp.slice(3));
    for (const enc of ["hex", "base64", "base64url"] as const) expect(fp).not.toContain(key.toString(enc).slice(0, 8));
    expect(fp).not.toBe(keyFingerprint(parseFernetKey(K2)));
    // not the plain sha256 of the key (domain separated)
    expect(fp.slice(3)).not.toBe(createHash("sha256").update(key).digest("hex").slice(0, 16));
  });
});

describe("Keyring", () => {
  it("exposes key ids in configured order, the first being primary", () => {
    const ring = createKeyring(`${K1},${K2},${K3}`);
    expect(ring).toBeInstanceOf(Keyring);
    expect(ring.keyIds).toEqual([id(K1), id(K2), id(K3)]);
    expect(ring.primaryKeyId).toBe(id(K1));
    expect(Object.isFrozen(ring.keyIds)).toBe(true);
  });

  it("has() knows configured key ids only", () => {
    const ring = createKeyring(`${K1},${K2}`);
    expect(ring.has(id(K1))).toBe(true);
    expect(ring.has(id(K2))).toBe(true);
    expect(ring.has(id(K3))).toBe(false);
    expect(ring.has("")).toBe(false);
    expect(ring.has(K1)).toBe(false);
  });

  it("encrypts with the first key and round-trips", () => {
    const ring = createKeyring(`${K2},${K1}`);
    const { token, keyId } = ring.encrypt("sk-ant-api03-abc");
    expect(keyId).toBe(id(K2));
    expect(decryptFernet(parseFernetKey(K2), token).toString()).toBe("sk-ant-api03-abc");
    expect(() => decryptFernet(parseFernetKey(K1), token)).toThrow();
    expect(ring.decrypt(token, keyId)).toBe("sk-ant-api03-abc");
    expect(ring.decrypt(token)).toBe("sk-ant-api03-abc");
  });

  it("round-trips empty, unicode and long secrets", () => {
    const ring = createKeyring(K1);
    for (const s of ["", "ünïcödé 🔑 日本", "\uFEFFbom-kept", "x".repeat(10_000)]) {
      const { token } = ring.encrypt(s);
      expect(ring.decrypt(token)).toBe(s);
    }
  });

  it("rotation: tokens under the old key still decrypt when it is second", () => {
    const old = createKeyring(K1);
    const { token, keyId } = old.encrypt("old secret");
    const rotated = createKeyring(`${K2},${K1}`);
    expect(rotated.primaryKeyId).toBe(id(K2));
    expect(rotated.has(keyId)).toBe(true);
    expect(rotated.decrypt(token, keyId)).toBe("old secret");
    expect(rotated.decrypt(token)).toBe("old secret");
    // re-encrypting moves it to the new key
    const re = rotated.encrypt(rotated.decrypt(token, keyId));
    expect(re.keyId).toBe(id(K2));
    expect(createKeyring(K2).decrypt(re.token)).toBe("old secret");
  });

  it("throws DecryptError (without secrets) for a token under a key no longer configured", () => {
    const { token, keyId } = createKeyring(K1).encrypt("retired secret");
    const ring = createKeyring(`${K2},${K3}`);
    expect(ring.has(keyId)).toBe(false);
    for (const hint of [keyId, undefined, id(K2)]) {
      let caught: unknown;
      try {
        ring.decrypt(token, hint);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(DecryptError);
      const msg = (caught as Error).message;
      for (const secret of [token, "retired secret", K1, K2, K3]) expect(msg).not.toContain(secret);
    }
  });

  it("throws DecryptError for garbage and for a tampered token", () => {
    const ring = createKeyring(`${K1},${K2}`);
    expect(() => ring.decrypt("not a token")).toThrow(DecryptError);
    expect(() => ring.decrypt("")).toThrow(DecryptError);
    const { token } = ring.encrypt("x");
    const bad = Buffer.from(token, "base64url");
    bad[30] ^= 1;
    expect(() => ring.decrypt(bad.toString("base64url"))).toThrow(DecryptError);
  });

  it("a wrong or unknown keyId hint still decrypts via the other keys", () => {
    const ring = createKeyring(`${K1},${K2},${K3}`);
    const token = encryptFernet(parseFernetKey(K3), "made with the third key");
    expect(ring.decrypt(token, id(K1))).toBe("made with the third key");
    expect(ring.decrypt(token, id(K2))).toBe("made with the third key");
    expect(ring.decrypt(token, "fk_0000000000000000")).toBe("made with the third key");
    expect(ring.decrypt(token, "")).toBe("made with the third key");
  });

  it("stores no TTL: tokens decades old decrypt", () => {
    const ring = createKeyring(K1);
    const token = encryptFernet(parseFernetKey(K1), "ancient", { now: 0 });
    expect(ring.decrypt(token)).toBe("ancient");
  });

  it("rejects a token whose plaintext is not UTF-8", () => {
    const token = encryptFernet(parseFernetKey(K1), Buffer.from([0xff, 0xfe, 0x00]));
    expect(() => createKeyring(K1).decrypt(token)).toThrow(DecryptError);
  });

  it("accepts keys without '=' padding and whitespace around commas", () => {
    const ring = createKeyring(` ${K1.slice(0, -1)} ,\t${K2}\n`);
    expect(ring.keyIds).toEqual([id(K1), id(K2)]);
  });

  it("does not expose key material on the object", () => {
    const ring = createKeyring(`${K1},${K2}`);
    const dump = JSON.stringify(ring) + String(Object.values(ring)) + Object.keys(ring).join();
    for (const k of [K1, K2, K1.slice(0, 20), K2.slice(0, 20)]) expect(dump).not.toContain(k);
    expect(Object.getOwnPropertyNames(ring).sort()).toEqual(["keyIds", "primaryKeyId"]);
  });
});

describe("generateMasterKey", () => {
  it("is a single 44-char Fernet key usable as MASTER_KEY", () => {
    const k = generateMasterKey();
    expect(k).toMatch(/^[A-Za-z0-9_-]{43}=$/);
    expect(createKeyring(k).keyIds).toHaveLength(1);
    expect(generateMasterKey()).not.toBe(k);
  });
});

describe("invalid MASTER_KEY", () => {
  const GUIDANCE = [
    "Fernet key",
    "url-safe base64 of 32 bytes",
    "44 characters ending in '='",
    "comma-separated",
    "first encrypts and all decrypt",
    `node -e "console.log(require('crypto').randomBytes(32).toString('base64url')+'=')"`,
    "Fernet.generate_key()",
  ];

  it.each([
    ["unset", undefined, /not set/],
    ["empty", "", /empty/],
    ["blank", "   ", /empty/],
    ["only commas", ",,,", /only commas/],
    ["too short", "c2VjcmV0LXRoYXQtaXMtdG9vLXNob3J0", /the key .*wrong length/],
    ["standard base64 with +/", Buffer.alloc(32, 0xfb).toString("base64"), /the key .*outside the url-safe base64 alphabet/],
    ["hex", "ab".repeat(32), /the key .*wrong length/],
    ["second entry bad", `${K1},hunter2hunter2hunter2`, /entry 2 of 2 .*wrong length/],
    ["third entry bad", `${K1},${K2},${K3.slice(0, 30)}!${K3.slice(31)}`, /entry 3 of 3 .*alphabet/],
    ["trailing comma", `${K1},`, /entry 2 of 2 is empty/],
    ["empty middle entry", `${K1},,${K2}`, /entry 2 of 3 is empty/],
    ["duplicate", `${K1},${K2},${K1}`, /entry 3 is the same key as entry 1/],
    ["duplicate differing only in padding", `${K1},${K1.slice(0, -1)}`, /entry 2 is the same key as entry 1/],
    ["non-canonical", "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e5=", /not canonical/],
    ["double padding", "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4==", /padding/],
  ])("%s", (_name, value, problem) => {
    const err = masterKeyError(value);
    expect(err.message).toMatch(/^Invalid MASTER_KEY: /);
    expect(err.message).toMatch(problem);
    for (const g of GUIDANCE) expect(err.message).toContain(g);
    if (typeof value === "string") {
      for (const part of value
        .split(",")
        .map((p) => p.trim())
        .filter((p) => p.length >= 8)) {
        expect(err.message).not.toContain(part);
        expect(err.message).not.toContain(part.slice(0, 12));
      }
    }
  });
});

describe("row binding", () => {
  const row = { id: "5b0b6c1e-3d2f-4c36-9a57-0b3c4e5f6a7b", organizationId: "acme", provider: "openai", apiBase: null as string | null };
  const K1 = generateMasterKey();
  const K2 = generateMasterKey();

  it("binds a plain Fernet token to its row and opens it only with that row", () => {
    const ring = createKeyring(K1);
    const { token, keyId, binding } = ring.encryptBound("sk-secret-value", row);
    expect(binding).toMatch(/^rb1\.[A-Za-z0-9_-]{43}$/);
    expect(decryptFernet(parseFernetKey(K1), token).toString()).toBe("sk-secret-value"); // still plain Fernet
    expect(ring.decryptBound(row, token, keyId, binding)).toBe("sk-secret-value");
    for (const changed of [
      { ...row, id: "5b0b6c1e-3d2f-4c36-9a57-0b3c4e5f6a7c" },
      { ...row, organizationId: "acme2" },
      { ...row, provider: "fireworks" },
      { ...row, apiBase: "https://evil.example.com/v1" },
      { ...row, apiBase: "" },
    ]) {
      expect(() => ring.decryptBound(changed, token, keyId, binding)).toThrow(BindingError);
    }
    expect(() => ring.decryptBound(row, token, keyId, null)).toThrow(BindingError);
    expect(() => ring.decryptBound(row, token, keyId, binding.slice(0, -1))).toThrow(BindingError);
    const other = ring.encryptBound("sk-secret-value", row);
    expect(() => ring.decryptBound(row, other.token, keyId, binding)).toThrow(BindingError); // a token swapped under the same binding
  });

  it("binds under the key that encrypted the token: rotation keeps old bindings valid, another master key's binding is refused", () => {
    const old = createKeyring(K1).encryptBound("sk-old", row);
    const rotated = createKeyring(`${K2},${K1}`);
    expect(rotated.decryptBound(row, old.token, old.keyId, old.binding)).toBe("sk-old");
    expect(rotated.rebind(row, old.token)).toBe(old.binding);
    // The same token bound by someone holding a different master key does not pass.
    const stranger = createKeyring(`${K2},${K1}`);
    const forged = stranger.encryptBound("sk-forged", row);
    expect(() => createKeyring(`${K1},${generateMasterKey()}`).decryptBound(row, forged.token, forged.keyId, forged.binding)).toThrow(DecryptError);
  });

  it("admit checks like decryptBound and names the key that opened the token; openAdmitted then opens it", () => {
    const old = createKeyring(K1).encryptBound("sk-old-ünïcode", row);
    const rotated = createKeyring(`${K2},${K1}`);
    // A wrong or stale key id hint: the key that actually opened the token is answered.
    const admitted = rotated.admit(row, old.token, rotated.primaryKeyId, old.binding);
    expect(admitted.keyId).toBe(old.keyId);
    expect(admitted.keyId).not.toBe(rotated.primaryKeyId);
    // The token's bytes, as the ResolveKey cache keeps them, not its text.
    expect(Buffer.from(admitted.sealed, "latin1")).toEqual(Buffer.from(old.token, "base64url"));
    expect(rotated.openAdmitted(admitted)).toBe("sk-old-ünïcode");
    expect(() => rotated.admit({ ...row, organizationId: "other" }, old.token, old.keyId, old.binding)).toThrow(BindingError);
    expect(() => rotated.admit(row, old.token, old.keyId, null)).toThrow(BindingError);
    expect(() => createKeyring(K2).admit(row, old.token, old.keyId, old.binding)).toThrow(DecryptError);
    // A key id that is not configured (MASTER_KEY changed since the check) is a DecryptError, never a guess.
    expect(() => createKeyring(K2).openAdmitted(admitted)).toThrow(DecryptError);
    // Forged past the type (as a defect elsewhere would): under another configured key the padding
    // check fails (or, rarely, the bytes are not UTF-8): refused, never served as a key.
    const wrong = createKeyring(`${K2},${K1}`);
    let refused = 0;
    for (let i = 0; i < 50; i++) {
      const sealed = Buffer.from(createKeyring(K1).encrypt(`sk-${i}`).token, "base64url").toString("latin1");
      try {
        const text = wrong.openAdmitted({ sealed, keyId: wrong.primaryKeyId } as Admitted);
        expect(text).not.toBe(`sk-${i}`);
      } catch (error) {
        expect(error).toBeInstanceOf(DecryptError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(40);
  });

  it("rebind follows a legitimate change of api_base", () => {
    const ring = createKeyring(K1);
    const { token, keyId } = ring.encryptBound("sk-x", row);
    const moved = { ...row, apiBase: "https://gateway.example.com/v1" };
    const binding = ring.rebind(moved, token, keyId);
    expect(ring.decryptBound(moved, token, keyId, binding)).toBe("sk-x");
    expect(() => ring.decryptBound(row, token, keyId, binding)).toThrow(BindingError);
  });
});
