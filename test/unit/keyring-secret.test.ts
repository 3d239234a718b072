import { describe, expect, it } from "vitest";
import { createKeyring, DecryptError, generateMasterKey } from "../../service/src/keyring/index.js";

describe("Keyring.sealSecret / openSecret", () => {
  const a = generateMasterKey();
  const b = generateMasterKey();

  it("round-trips, never shows the plaintext, and differs each time", () => {
    const keyring = createKeyring(a);
    const one = keyring.sealSecret("JBSWY3DPEHPK3PXP", "admin_users.totp_secret:1");
    const two = keyring.sealSecret("JBSWY3DPEHPK3PXP", "admin_users.totp_secret:1");
    expect(one).not.toBe(two);
    expect(one).not.toContain("JBSWY3DPEHPK3PXP");
    expect(one.startsWith(`as1.${keyring.primaryKeyId}.`)).toBe(true);
    expect(keyring.openSecret(one, "admin_users.totp_secret:1")).toEqual({ plaintext: "JBSWY3DPEHPK3PXP", keyId: keyring.primaryKeyId });
  });

  it("refuses another context (a value moved to another row)", () => {
    const keyring = createKeyring(a);
    const sealed = keyring.sealSecret("secret", "admin_users.totp_secret:1");
    expect(() => keyring.openSecret(sealed, "admin_users.totp_secret:2")).toThrow(DecryptError);
  });

  it("refuses a tampered value, a malformed one, and one whose key is not configured", () => {
    const keyring = createKeyring(a);
    const sealed = keyring.sealSecret("secret", "c");
    const last = sealed.at(-2) === "A" ? "B" : "A";
    expect(() => keyring.openSecret(sealed.slice(0, -2) + last + sealed.at(-1), "c")).toThrow(DecryptError);
    expect(() => keyring.openSecret("secret", "c")).toThrow(DecryptError);
    expect(() => keyring.openSecret("as1.fk_0000000000000000.AAAA", "c")).toThrow(DecryptError);
    expect(() => createKeyring(b).openSecret(sealed, "c")).toThrow(DecryptError);
  });

  it("opens under a secondary key after rotation and says which key opened it", () => {
    const old = createKeyring(a);
    const sealed = old.sealSecret("secret", "c");
    const rotated = createKeyring(`${b},${a}`);
    expect(rotated.openSecret(sealed, "c")).toEqual({ plaintext: "secret", keyId: old.primaryKeyId });
    expect(rotated.openSecret(rotated.sealSecret("secret", "c"), "c").keyId).toBe(rotated.primaryKeyId);
  });
});
