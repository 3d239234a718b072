// Interop with Python's `cryptography` Fernet, both directions.
// (a) tokens made by test/fixtures/python-fernet/make-fixture.py decrypt here;
// (b) tokens made here decrypt in python3 (skipped where python3 lacks `cryptography`).
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { decryptFernet, encryptFernet, generateFernetKey, parseFernetKey } from "../../service/src/keyring/fernet.js";

interface Fixture {
  generated_by: string;
  key: string;
  cases: { plaintext: string; token: string }[];
}

const fixture = JSON.parse(readFileSync(new URL("../fixtures/python-fernet/fixture.json", import.meta.url), "utf8")) as Fixture;

const pythonHasCryptography = (() => {
  try {
    execFileSync("python3", ["-c", "import cryptography.fernet"], { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
})();

// Reads {"key": str, "tokens": [str]} from stdin, prints the plaintexts as a JSON array.
const PY_DECRYPT = [
  "import json, sys",
  "from cryptography.fernet import Fernet",
  "req = json.load(sys.stdin)",
  "f = Fernet(req['key'].encode('ascii'))",
  "out = [f.decrypt(t.encode('ascii')).decode('utf-8') for t in req['tokens']]",
  "sys.stdout.write(json.dumps(out))",
].join("\n");

function pythonDecrypt(key: string, tokens: string[]): string[] {
  const stdout = execFileSync("python3", ["-c", PY_DECRYPT], {
    input: JSON.stringify({ key, tokens }),
    encoding: "utf8",
    timeout: 30_000,
  });
  return JSON.parse(stdout) as string[];
}

describe("Python cryptography.fernet interop", () => {
  it("fixture has the expected cases", () => {
    expect(fixture.generated_by).toMatch(/cryptography/);
    const lengths = fixture.cases.map((c) => c.plaintext.length);
    expect(lengths).toContain(0);
    expect(lengths).toContain(4096);
    expect(fixture.cases.some((c) => c.plaintext.startsWith("sk-ant-"))).toBe(true);
    expect(fixture.cases.some((c) => /[^\p{ASCII}]/u.test(c.plaintext))).toBe(true);
  });

  it.each(fixture.cases.map((c, i) => ({ ...c, label: `#${i} (${c.plaintext.length} chars)` })))("(a) decrypts Python token $label", ({ plaintext, token }) => {
    expect(decryptFernet(parseFernetKey(fixture.key), token).toString("utf8")).toBe(plaintext);
  });

  it.skipIf(!pythonHasCryptography)("(b) python3 decrypts tokens made here", () => {
    const key = generateFernetKey();
    const k = parseFernetKey(key);
    const plaintexts = [
      ...fixture.cases.map((c) => c.plaintext),
      "sk-ant-api03-made-in-node",
      "\uFEFFleading BOM and trailing NUL\u0000",
      "y".repeat(16 * 1024 + 1),
    ];
    const tokens = plaintexts.map((p) => encryptFernet(k, p));
    expect(pythonDecrypt(key, tokens)).toEqual(plaintexts);
    // also with an explicit IV and time, and with the fixture's Python-made key
    const fixed = encryptFernet(parseFernetKey(fixture.key), "fixed iv", { iv: Buffer.alloc(16, 0xab), now: 1_700_000_000 });
    expect(pythonDecrypt(fixture.key, [fixed])).toEqual(["fixed iv"]);
  });
});
