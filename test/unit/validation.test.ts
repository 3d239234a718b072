import { describe, expect, it } from "vitest";
import { ServiceError } from "../../service/src/errors.js";
import {
  comparableName,
  keyHint,
  validateApiBase,
  validateApiKey,
  validateCredentialId,
  validateId,
  validateName,
  validateNewId,
} from "../../service/src/credentials/validation.js";
import { pageSize, PageTokens, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE } from "../../service/src/paging.js";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/index.js";
import { environmentKeys, providerOfKey } from "@provider-credentials/wire/providers";

// Fixed, key-shaped values (never real keys): random fakes would make a test that can fail by chance.
const OPENAI_SHAPED = "sk-proj-Zq3vN8xR2mT7bK1wY6pL4sD9fG0hJ5cA";
const ANTHROPIC_SHAPED = "sk-ant-api03-Xw7Lq2Nz9Rb4Tk8Ym1Vc6Pd3Sg5Hj0Fa-AA";
const GEMINI_SHAPED = "AIzaSyB3kQ9mX2vT7nL1pR8wC4dF6gH0jK5sZ";
const FIREWORKS_SHAPED = "fw_3Zq8Lm2Xc9Rt4Vb7Nk1Pq6Ws";

function failure(fn: () => unknown): ServiceError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ServiceError) return error;
    throw error;
  }
  throw new Error("expected a validation error");
}

describe("ids", () => {
  it.each(["org-1", "A.b_c-9", "x".repeat(64)])("accepts %s", (id) => expect(validateId("organization_id", id)).toBe(id));
  it.each([
    ["", "organization_id: is required"],
    ["x".repeat(65), "organization_id: must be 1-64 characters"],
    ["org 1", "organization_id: must be 1-64 characters"],
    ["org/1", "organization_id: must be 1-64 characters"],
    ["orgé", "organization_id: must be 1-64 characters"],
  ])("refuses %j", (id, message) => {
    const error = failure(() => validateId("organization_id", id));
    expect(error.kind).toBe("invalid_argument");
    expect(error.field).toBe("organization_id");
    expect(error.message).toContain(message);
  });
  it("credential ids are UUIDs, normalised to lower case", () => {
    expect(validateCredentialId("0F8FAD5B-D9CB-469F-A165-70867728950E")).toBe("0f8fad5b-d9cb-469f-a165-70867728950e");
    expect(failure(() => validateCredentialId("abc")).message).toBe("credential_id: must be a UUID");
  });
});

describe("names", () => {
  it("trims", () => expect(validateName("credential_name", "  Prod key  ")).toBe("Prod key"));
  it("counts characters, not UTF-16 units", () => expect(validateName("name", "🔑".repeat(200))).toHaveLength(400));
  it.each([
    ["", "is required"],
    ["   ", "is required"],
    ["x".repeat(201), "at most 200"],
    ["a\u0000b", "control characters"],
    ["a\nb", "control characters"],
  ])("refuses %j", (name, message) => expect(failure(() => validateName("credential_name", name)).message).toContain(message));

  it.each([
    ["photo\u202egnp.exe", "U+202E"], // right-to-left override: shows as "photoexe.png"
    ["prod\u200bkey", "U+200B"], // zero-width space
    ["a\u2066b", "U+2066"], // left-to-right isolate
    ["soft\u00adhyphen", "U+00AD"],
    ["line\u2028break", "U+2028"],
    ["half\ud800", "U+D800"], // a lone surrogate
  ])("refuses the invisible formatting character in %j, naming the field and the character", (name, code) => {
    const error = failure(() => validateName("credential_name", name));
    expect(error.field).toBe("credential_name");
    expect(error.message).toBe(`credential_name: must not contain invisible formatting characters (found ${code}), which can make text show as something else`);
  });
  it.each([OPENAI_SHAPED, ANTHROPIC_SHAPED, GEMINI_SHAPED, FIREWORKS_SHAPED, `my key: ${OPENAI_SHAPED}`, `(${GEMINI_SHAPED})`])(
    "refuses a name holding a provider key (%#) without repeating it",
    (name) => {
      const error = failure(() => validateName("name", name));
      expect(error.message).toMatch(/^name: looks like a provider API key; keys go only in api_key/);
      expect(error.message).not.toContain(name.slice(-8));
    },
  );
  it.each(["sk-team-prod-2024-backup-eu", "AIRFLOW-Production-2", "fw-production-key-for-eu-west-1", "Prod key (sk-…Ab12)", "日本のキー", "Straße ✨"])(
    "accepts the honest name %j",
    (name) => expect(validateName("credential_name", name)).toBe(name),
  );
  it("compares names after NFKC and case folding", () => {
    expect(comparableName("ｐｒｏｄ")).toBe(comparableName("PROD"));
    expect(comparableName("Straße")).toBe(comparableName("STRASSE"));
    expect(comparableName("ﬁle")).toBe(comparableName("FILE"));
    expect(comparableName("Ⅻ")).toBe(comparableName("xii"));
    expect(comparableName("prod")).not.toBe(comparableName("prod2"));
  });
  it("refuses a key shaped id for a new organisation or team, and a key shaped api_base", () => {
    expect(failure(() => validateNewId("team_id", "sk-4fQ9zLm2Xc8Rt1Vb7Nk3Pq6Ws")).message).toMatch(/^team_id: looks like a provider API key/);
    expect(validateNewId("team_id", "sk-team-2024")).toBe("sk-team-2024");
    expect(failure(() => validateApiBase(`https://proxy.example.com/v1/${OPENAI_SHAPED}`)).message).toMatch(/^api_base: looks like a provider API key/);
    expect(failure(() => validateApiBase("https://proxy.example.com/\u202ev1")).message).toMatch(/^api_base: must not contain invisible/);
  });
});

describe("api keys", () => {
  const openai = "sk-proj-abcdefghijklmnop1234";
  it("accepts each provider's documented prefix", () => {
    expect(validateApiKey(openai, "openai", null)).toBe(openai);
    expect(validateApiKey("sk-ant-api03-abcdefghijkl", "anthropic", null)).toBe("sk-ant-api03-abcdefghijkl");
    expect(validateApiKey("AIzaSyAbcdefghijklmnop", "gemini", null)).toBe("AIzaSyAbcdefghijklmnop");
    expect(validateApiKey("fw_abcdefghijklmnop", "fireworks", null)).toBe("fw_abcdefghijklmnop");
  });
  it("trims surrounding whitespace", () => expect(validateApiKey(`  ${openai}\n`, "openai", null)).toBe(openai));
  it("says when an Anthropic key is offered as OpenAI", () => {
    const error = failure(() => validateApiKey("sk-ant-api03-abcdefghijkl", "openai", null));
    expect(error.message).toContain('api_key: OpenAI keys start with "sk-"');
    expect(error.message).toContain("it looks like an Anthropic key");
  });
  it("names the expected prefix for the wrong provider", () => {
    expect(failure(() => validateApiKey(openai, "gemini", null)).message).toContain('Google Gemini keys start with "AI"');
    expect(failure(() => validateApiKey(openai, "fireworks", null)).message).toContain('Fireworks AI keys start with "fw"');
  });
  it("accepts any format behind a proxy api_base, but still applies the generic rules", () => {
    expect(validateApiKey("proxy-token-123", "anthropic", "https://proxy.local")).toBe("proxy-token-123");
    expect(failure(() => validateApiKey("short", "anthropic", "https://proxy.local")).message).toContain("at least 8");
  });
  it.each([
    ["", "is required"],
    ["sk-1234", "at least 8"],
    ["sk-" + "a".repeat(4094), "at most 4096"],
    ["sk-abc def123", "printable ASCII"],
    ["sk-abc\tdef123", "printable ASCII"],
    ["sk-abcdéf1234", "printable ASCII"],
  ])("refuses %j without echoing it", (key, message) => {
    const error = failure(() => validateApiKey(key, "openai", null));
    expect(error.field).toBe("api_key");
    expect(error.message).toContain(message);
    if (key.length > 3) expect(error.message).not.toContain(key.trim());
  });
  it("knows which provider a key looks like", () => {
    expect(providerOfKey("sk-ant-x")?.name).toBe("anthropic");
    expect(providerOfKey("sk-x")?.name).toBe("openai");
    expect(providerOfKey("xyz")).toBeUndefined();
  });
});

describe("api_base", () => {
  it("accepts http and https, empty means none", () => {
    expect(validateApiBase("https://proxy.example.com/v1")).toBe("https://proxy.example.com/v1");
    expect(validateApiBase("http://10.0.0.1:8080")).toBe("http://10.0.0.1:8080");
    expect(validateApiBase("")).toBeNull();
  });
  it.each([
    ["ftp://example.com", "http or https"],
    ["not a url", "absolute http or https URL"],
    ["/relative/path", "absolute http or https URL"],
    ["https://user:secret@example.com", "must not contain a user name or password"],
    ["https://example.com/" + "a".repeat(2049), "at most 2048"],
  ])("refuses %j", (url, message) => expect(failure(() => validateApiBase(url)).message).toContain(message));
});

describe("key hints", () => {
  it("shows the provider prefix and the last 4 characters", () => {
    expect(keyHint("sk-proj-abcdefghijklAb12", "openai")).toBe("sk-…Ab12");
    expect(keyHint("sk-ant-api03-abcdefghijklWxYz", "anthropic")).toBe("sk-ant-…WxYz");
    expect(keyHint("AIzaSyabcdefghijkl9876", "gemini")).toBe("AIza…9876");
    expect(keyHint("AIbcdefghijklmnopq9876", "gemini")).toBe("AI…9876");
  });
  it("shows no tail for short keys, and no prefix a key does not have", () => {
    expect(keyHint("sk-abcdefgh", "openai")).toBe("sk-…");
    expect(keyHint("proxy-token-abcdef12345", "openai")).toBe("…2345");
  });
  it("never contains most of the key", () => {
    const key = "sk-proj-abcdefghijklmnopqrstuvwxyz";
    expect(keyHint(key, "openai").length).toBeLessThan(key.length / 3);
  });
});

describe("paging", () => {
  it("defaults, caps and refuses negatives", () => {
    expect(pageSize(0)).toBe(DEFAULT_PAGE_SIZE);
    expect(pageSize(10)).toBe(10);
    expect(pageSize(100_000)).toBe(MAX_PAGE_SIZE);
    expect(failure(() => pageSize(-1)).message).toBe("page_size: must be zero or a positive integer");
  });
  it("round-trips page tokens and refuses malformed, forged, edited and foreign ones", () => {
    const masterKey = generateMasterKey();
    const pages = new PageTokens(createKeyring(masterKey));
    const token = pages.encode("credentials", "org-a", [1700000000000, "abc"]);
    expect(pages.decode("credentials", "org-a", token, ["number", "string"])).toEqual([1700000000000, "abc"]);
    expect(pages.decode("credentials", "org-a", "", ["number"])).toBeUndefined();
    // Another process with the same MASTER_KEY (a replica, a restart) accepts it; one with another key does not.
    expect(new PageTokens(createKeyring(masterKey)).decode("credentials", "org-a", token, ["number", "string"])).toEqual([1700000000000, "abc"]);
    expect(new PageTokens(createKeyring(`${generateMasterKey()},${masterKey}`)).decode("credentials", "org-a", token, ["number", "string"])).toEqual([
      1700000000000,
      "abc",
    ]);
    const edited = Buffer.from(token, "base64url");
    edited[edited.length - 3] ^= 1;
    const forged = Buffer.from(JSON.stringify(["credentials", "org-a", [1700000000000, "abc"]])).toString("base64url");
    for (const bad of [
      "%%%",
      "bm90IGpzb24",
      forged,
      edited.toString("base64url"),
      new PageTokens(createKeyring(generateMasterKey())).encode("credentials", "org-a", [1700000000000, "abc"]),
      pages.encode("credentials", "org-a", ["x", "y"]),
      pages.encode("credentials", "org-a", [1]),
      pages.encode("teams", "org-a", [1700000000000, "abc"]),
    ]) {
      expect(failure(() => pages.decode("credentials", "org-a", bad, ["number", "string"])).message).toBe(
        "page_token: is malformed; pass the next_page_token of the previous page unchanged",
      );
    }
    expect(failure(() => pages.decode("credentials", "org-b", token, ["number", "string"])).message).toMatch(/^page_token: was made for another organization/);
  });
});

describe("environment fallback keys", () => {
  it("reads each provider's variable, GOOGLE_API_KEY for Gemini when GEMINI_API_KEY is unset, and ignores blanks", () => {
    const keys = environmentKeys({ OPENAI_API_KEY: " sk-env ", GOOGLE_API_KEY: "AIgoogle", ANTHROPIC_API_KEY: "  " });
    expect(keys.get("openai")).toEqual({ apiKey: "sk-env", variable: "OPENAI_API_KEY" });
    expect(keys.get("gemini")).toEqual({ apiKey: "AIgoogle", variable: "GOOGLE_API_KEY" });
    expect(keys.has("anthropic")).toBe(false);
    expect(environmentKeys({ GEMINI_API_KEY: "AIgemini", GOOGLE_API_KEY: "AIgoogle" }).get("gemini")?.variable).toBe("GEMINI_API_KEY");
  });
});

describe("error logging", () => {
  it("keeps a database error's own sentence and SQLSTATE but drops the SQL and its parameters", async () => {
    const { serializeError } = await import("../../service/src/logger.js");
    const error = Object.assign(
      new Error(`insert into admin_users (password_hash) values ('scrypt$15$secret') - duplicate key value violates unique constraint "admin_users_email_uq"`),
      {
        name: "DatabaseError",
        code: "23505",
        detail: "Key (lower(email))=(alice@example.com) already exists.",
      },
    );
    const logged = serializeError(error);
    expect(logged).toEqual({ type: "DatabaseError", code: "23505", message: 'duplicate key value violates unique constraint "admin_users_email_uq"' });
    expect(JSON.stringify(logged)).not.toContain("scrypt$15$secret");
    expect(JSON.stringify(logged)).not.toContain("alice@example.com");
  });
});
