import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  checkProviderKey,
  DEFAULT_PROVIDER_CHECK_TIMEOUT_MS,
  formatDuration,
  MAX_CHECK_BODY_BYTES,
  providerModelsUrl,
  sanitiseCode,
  scrub,
  type ProviderCheckOutcome,
  type ProviderCheckResult,
} from "../../service/src/credentials/provider-check.js";
import { FAKE_PROVIDER_NAMES, refusedUrl, startFakeProvider, type FakeBehaviour, type FakeProvider, type FakeProviderName } from "../support/fake-provider.js";

const PREFIX: Record<FakeProviderName, string> = { openai: "sk-proj-", anthropic: "sk-ant-api03-", gemini: "AIza", fireworks: "fw_" };
const LABEL: Record<FakeProviderName, string> = {
  openai: "OpenAI",
  anthropic: "Anthropic",
  gemini: "Google Gemini",
  fireworks: "Fireworks AI",
};
const MODELS_PATH: Record<FakeProviderName, string> = {
  openai: "/v1/models",
  anthropic: "/v1/models",
  gemini: "/v1beta/models",
  fireworks: "/inference/v1/models",
};

/** Random, key-shaped: no English words inside, so no message could contain a run of it by chance. */
function newKey(provider: FakeProviderName): string {
  const key = PREFIX[provider] + randomBytes(24).toString("base64url");
  allKeys.push(key);
  return key;
}
const allKeys: string[] = [];

/** No 6-character run of the key (nor its first 8 or last 4 characters, which OpenAI echoes) is in the text. */
function expectKeyAbsent(text: string, key: string): void {
  expect(text).not.toContain(key);
  expect(text).not.toContain(key.slice(0, 8));
  expect(text).not.toContain(key.slice(-4));
  for (let i = 0; i + 6 <= key.length; i++) expect(text, `run at ${i}`).not.toContain(key.slice(i, i + 6));
}

function expectSafe(result: ProviderCheckResult, key: string): void {
  expectKeyAbsent(result.message, key);
  if (result.providerCode) expectKeyAbsent(result.providerCode, key);
  expectKeyAbsent(JSON.stringify(result), key);
}

let fake: FakeProvider;

beforeAll(async () => {
  fake = await startFakeProvider({ slowMs: 5_000 });
});

afterAll(async () => {
  // Across every request this file made, on both servers, no key ever travelled in a URL.
  for (const key of allKeys) expect(fake.urlsContaining(key)).toEqual([]);
  for (const key of allKeys) expect(fake.urlsContaining(key.slice(-8))).toEqual([]);
  await fake.close();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("the request each provider gets", () => {
  it.each(FAKE_PROVIDER_NAMES)("%s: exact path, auth header style and nothing else secret", async (provider) => {
    const key = newKey(provider);
    fake.setKey(key, "valid");
    fake.clearRequests();
    const result = await checkProviderKey({ provider, apiKey: key, apiBase: fake.baseUrl(provider) });
    expect(result.outcome).toBe("valid");
    expect(fake.requests).toHaveLength(1);
    const [request] = fake.requests;
    expect(request.method).toBe("GET");
    expect(request.url).toBe(`/${provider}${MODELS_PATH[provider]}`); // no query at all
    expect(request.path).toBe(`/${provider}${MODELS_PATH[provider]}`);
    expect(request.key).toBe(key);
    const h = request.headers;
    switch (provider) {
      case "openai":
      case "fireworks":
        expect(h.authorization).toBe(`Bearer ${key}`);
        expect(h["x-api-key"]).toBeUndefined();
        expect(h["x-goog-api-key"]).toBeUndefined();
        expect(h["anthropic-version"]).toBeUndefined();
        break;
      case "anthropic":
        expect(h["x-api-key"]).toBe(key);
        expect(h["anthropic-version"]).toBe("2023-06-01");
        expect(h.authorization).toBeUndefined();
        expect(h["x-goog-api-key"]).toBeUndefined();
        break;
      case "gemini":
        expect(h["x-goog-api-key"]).toBe(key);
        expect(h.authorization).toBeUndefined();
        expect(h["x-api-key"]).toBeUndefined();
        expect(request.url).not.toContain("key=");
        break;
    }
    // The key appears in exactly one header value.
    const carrying = Object.entries(h).filter(([, v]) => String(v).includes(key));
    expect(carrying).toHaveLength(1);
    expect(h.accept).toBe("application/json");
  });

  it("the fake's root paths (the real providers' paths) work too", async () => {
    for (const provider of FAKE_PROVIDER_NAMES) {
      const key = newKey(provider);
      fake.setKey(key, "valid");
      fake.clearRequests();
      const result = await checkProviderKey({ provider, apiKey: key, apiBase: fake.url });
      expect(result.outcome, provider).toBe("valid");
      expect(fake.requests[0].path).toBe(MODELS_PATH[provider]);
      expect(fake.requests[0].provider).toBe(provider);
    }
  });
});

describe("api_base: the version segment is never doubled", () => {
  const cases: Array<[FakeProviderName, string, string]> = [
    ["openai", "", "/openai/v1/models"],
    ["openai", "/", "/openai/v1/models"],
    ["openai", "/v1", "/openai/v1/models"],
    ["openai", "/v1/", "/openai/v1/models"],
    ["openai", "/v1//", "/openai/v1/models"],
    ["anthropic", "", "/anthropic/v1/models"],
    ["anthropic", "/v1", "/anthropic/v1/models"],
    ["anthropic", "/v1/", "/anthropic/v1/models"],
    ["gemini", "", "/gemini/v1beta/models"],
    ["gemini", "/", "/gemini/v1beta/models"],
    ["gemini", "/v1beta", "/gemini/v1beta/models"],
    ["gemini", "/v1beta/", "/gemini/v1beta/models"],
    ["gemini", "/v1", "/gemini/v1/models"],
    ["fireworks", "", "/fireworks/inference/v1/models"],
    ["fireworks", "/", "/fireworks/inference/v1/models"],
    ["fireworks", "/inference", "/fireworks/inference/v1/models"],
    ["fireworks", "/inference/", "/fireworks/inference/v1/models"],
    ["fireworks", "/inference/v1", "/fireworks/inference/v1/models"],
    ["fireworks", "/inference/v1/", "/fireworks/inference/v1/models"],
  ];
  it.each(cases)("%s with base …%s calls %s", async (provider, suffix, path) => {
    const key = newKey(provider);
    fake.setKey(key, "valid");
    fake.clearRequests();
    const result = await checkProviderKey({ provider, apiKey: key, apiBase: fake.baseUrl(provider) + suffix });
    expect(result.outcome).toBe("valid");
    expect(fake.requests.map((r) => r.path)).toEqual([path]);
  });

  it("builds the documented URLs", () => {
    const u = (provider: FakeProviderName, base: string | null) => providerModelsUrl(provider, base).href;
    expect(u("openai", null)).toBe("https://api.openai.com/v1/models");
    expect(u("anthropic", null)).toBe("https://api.anthropic.com/v1/models");
    expect(u("gemini", null)).toBe("https://generativelanguage.googleapis.com/v1beta/models");
    expect(u("fireworks", null)).toBe("https://api.fireworks.ai/inference/v1/models");
    expect(u("openai", "")).toBe("https://api.openai.com/v1/models");
    expect(u("openai", "https://gw.example/v1")).toBe("https://gw.example/v1/models");
    expect(u("openai", "https://gw.example/openai/")).toBe("https://gw.example/openai/v1/models");
    expect(u("openai", "https://gw.example/apiv1")).toBe("https://gw.example/apiv1/v1/models"); // whole segments only
    expect(u("openai", "https://gw.example/V1")).toBe("https://gw.example/V1/v1/models"); // paths are case-sensitive
    // A query or fragment is refused by api_base validation: no request is made.
    expect(() => u("openai", "https://gw.example/v1?tenant=a#frag")).toThrow();
    expect(u("anthropic", "https://gw.example/anthropic/v1/")).toBe("https://gw.example/anthropic/v1/models");
    expect(u("gemini", "https://gw.example/v1beta")).toBe("https://gw.example/v1beta/models");
    expect(u("gemini", "https://generativelanguage.googleapis.com/v1")).toBe("https://generativelanguage.googleapis.com/v1/models");
    expect(u("fireworks", "https://api.fireworks.ai/inference/v1")).toBe("https://api.fireworks.ai/inference/v1/models");
    expect(u("fireworks", "https://api.fireworks.ai/inference")).toBe("https://api.fireworks.ai/inference/v1/models");
    expect(u("fireworks", "https://gw.example/v1")).toBe("https://gw.example/v1/models");
    expect(u("fireworks", "https://gw.example")).toBe("https://gw.example/inference/v1/models");
    expect(u("openai", "http://127.0.0.1:8080")).toBe("http://127.0.0.1:8080/v1/models");
  });

  it.each(["ftp://gw.example/v1", "not a url", "https://user:pass@gw.example/v1"])(
    "an unusable api_base %j is reported without any request",
    async (apiBase) => {
      const key = newKey("openai");
      const fetchImpl = vi.fn<typeof fetch>();
      const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase, fetchImpl });
      expect(fetchImpl).not.toHaveBeenCalled();
      expect(result.outcome).toBe("unexpected");
      expect(result.httpStatus).toBeNull();
      expect(result.message).toMatch(/^OpenAI was not called: the api_base /);
      expect(result.message).not.toContain("user:pass");
      expectSafe(result, key);
    },
  );
});

describe("every provider × every outcome", () => {
  const expected: Record<FakeProviderName, Record<string, { outcome: ProviderCheckOutcome; status: number | null; code?: string }>> = {
    openai: {
      valid: { outcome: "valid", status: 200 },
      invalid: { outcome: "invalid_key", status: 401, code: "invalid_api_key" },
      forbidden: { outcome: "no_permission", status: 403, code: "invalid_request_error" },
      rate_limited: { outcome: "rate_limited", status: 429, code: "rate_limit_exceeded" },
      server_error: { outcome: "unexpected", status: 500, code: "server_error" },
      redirect: { outcome: "unexpected", status: 302 },
      html: { outcome: "unexpected", status: 200 },
    },
    anthropic: {
      valid: { outcome: "valid", status: 200 },
      invalid: { outcome: "invalid_key", status: 401, code: "authentication_error" },
      forbidden: { outcome: "no_permission", status: 403, code: "permission_error" },
      rate_limited: { outcome: "rate_limited", status: 429, code: "rate_limit_error" },
      server_error: { outcome: "unexpected", status: 500, code: "api_error" },
      redirect: { outcome: "unexpected", status: 302 },
      html: { outcome: "unexpected", status: 200 },
    },
    gemini: {
      valid: { outcome: "valid", status: 200 },
      invalid: { outcome: "invalid_key", status: 400, code: "API_KEY_INVALID" },
      forbidden: { outcome: "no_permission", status: 403, code: "SERVICE_DISABLED" },
      rate_limited: { outcome: "rate_limited", status: 429, code: "RESOURCE_EXHAUSTED" },
      server_error: { outcome: "unexpected", status: 500, code: "INTERNAL" },
      redirect: { outcome: "unexpected", status: 302 },
      html: { outcome: "unexpected", status: 200 },
    },
    fireworks: {
      valid: { outcome: "valid", status: 200 },
      invalid: { outcome: "invalid_key", status: 401, code: "UNAUTHENTICATED" },
      forbidden: { outcome: "no_permission", status: 403, code: "PERMISSION_DENIED" },
      rate_limited: { outcome: "rate_limited", status: 429, code: "RESOURCE_EXHAUSTED" },
      server_error: { outcome: "unexpected", status: 500, code: "INTERNAL" },
      redirect: { outcome: "unexpected", status: 302 },
      html: { outcome: "unexpected", status: 200 },
    },
  };
  const cases = FAKE_PROVIDER_NAMES.flatMap((provider) =>
    Object.entries(expected[provider]).map(([behaviour, want]) => ({ provider, behaviour: behaviour as FakeBehaviour, ...want })),
  );

  it.each(cases)("$provider $behaviour → $outcome ($status)", async ({ provider, behaviour, outcome, status, code }) => {
    const key = newKey(provider);
    fake.setKey(key, behaviour);
    fake.clearRequests();
    const before = Date.now();
    const result = await checkProviderKey({ provider, apiKey: key, apiBase: fake.baseUrl(provider) });
    expect(result.outcome).toBe(outcome);
    expect(result.httpStatus).toBe(status);
    expect(result.providerCode).toBe(code);
    expect(result.message).toContain(LABEL[provider]);
    expect(result.message).toMatch(/\.$/);
    expect(result.checkedAt.getTime()).toBeGreaterThanOrEqual(before - 1);
    expect(result.checkedAt.getTime()).toBeLessThanOrEqual(Date.now());
    expect(result.latencyMs).toBeGreaterThan(0);
    expect(result.latencyMs).toBeLessThan(5_000);
    expectSafe(result, key);
    expect(fake.requests.map((r) => r.answered)).toEqual([behaviour]);

    if (outcome === "valid") expect(result.message).toBe(`${LABEL[provider]} accepted the key (HTTP 200).`);
    if (outcome === "invalid_key") expect(result.message).toBe(`${LABEL[provider]} rejected the key as invalid (HTTP ${status}).`);
    if (outcome === "no_permission") expect(result.message).toMatch(/refused the key access/);
    if (behaviour === "rate_limited") {
      // The code stays in providerCode; the message is fixed text and the status, nothing from the answer.
      expect(result.message).toBe(`${LABEL[provider]} rate limited the key (HTTP 429).`);
    }
    if (behaviour === "server_error") expect(result.message).toContain(`answered with a server error (HTTP 500).`);
    if (behaviour === "html") expect(result.message).toContain("but not with JSON;");
    if (behaviour === "redirect") {
      expect(result.message).toContain("redirect (HTTP 302)");
      // The Location header is the target's text: not echoed.
      expect(result.message).not.toContain(new URL(fake.redirectTarget.url).host);
      expect(result.message).toContain("not followed");
      // Not followed: the target never saw a request, let alone the key.
      expect(fake.redirectTarget.requests).toEqual([]);
      expect(fake.redirectTarget.received(key)).toBe(false);
    }
  });

  it.each(FAKE_PROVIDER_NAMES)("%s slow → unreachable: timed out", async (provider) => {
    const key = newKey(provider);
    fake.setKey(key, "slow");
    const result = await checkProviderKey({ provider, apiKey: key, apiBase: fake.baseUrl(provider), timeoutMs: 150 });
    expect(result).toMatchObject({ outcome: "unreachable", httpStatus: null, providerCode: "TIMEOUT" });
    expect(result.message).toBe(`Could not reach ${LABEL[provider]} at ${new URL(fake.url).host}: timed out after 150 ms.`);
    expect(result.latencyMs).toBeGreaterThanOrEqual(145);
    expect(result.latencyMs).toBeLessThan(2_000);
    expectSafe(result, key);
  });

  it.each(FAKE_PROVIDER_NAMES)("%s connection refused → unreachable", async (provider) => {
    const key = newKey(provider);
    const base = await refusedUrl();
    const result = await checkProviderKey({ provider, apiKey: key, apiBase: base });
    expect(result).toMatchObject({ outcome: "unreachable", httpStatus: null, providerCode: "ECONNREFUSED" });
    expect(result.message).toBe(`Could not reach ${LABEL[provider]} at ${new URL(base).host}: connection refused.`);
    expect(result.latencyMs).toBeLessThan(2_000);
    expectSafe(result, key);
  });
});

describe("provider-specific answers", () => {
  it("Gemini's 403 'API key not valid' is an invalid key, not a permission problem", async () => {
    const key = newKey("gemini");
    fake.setKey(key, {
      status: 403,
      body: { error: { code: 403, message: "API key not valid. Please pass a valid API key.", status: "PERMISSION_DENIED" } },
    });
    const result = await checkProviderKey({ provider: "gemini", apiKey: key, apiBase: fake.baseUrl("gemini") });
    expect(result).toMatchObject({ outcome: "invalid_key", httpStatus: 403, providerCode: "PERMISSION_DENIED" });
  });

  it("a 400 from another provider is unexpected, not an invalid key", async () => {
    const key = newKey("openai");
    fake.setKey(key, { status: 400, body: { error: { message: "API key not valid", code: "bad_request" } } });
    const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase: fake.baseUrl("openai") });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: 400, providerCode: "bad_request" });
  });

  it("Anthropic's 529 overloaded is unexpected with its status", async () => {
    const key = newKey("anthropic");
    fake.setKey(key, { status: 529, body: { type: "error", error: { type: "overloaded_error", message: "Overloaded" } } });
    const result = await checkProviderKey({ provider: "anthropic", apiKey: key, apiBase: fake.baseUrl("anthropic") });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: 529, providerCode: "overloaded_error" });
    expect(result.message).toBe(`Anthropic at ${new URL(fake.url).host} answered with a server error (HTTP 529).`);
  });

  it("a wrong api_base path (404) says to check the api_base", async () => {
    const key = newKey("openai");
    const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase: `${fake.url}/nowhere` });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: 404 });
    expect(result.message).toContain("check the api_base");
  });

  it("OpenAI's insufficient_quota 429 is rate limited, with the code to tell quota apart", async () => {
    const key = newKey("openai");
    fake.setKey(key, {
      status: 429,
      body: { error: { message: "You exceeded your current quota", type: "insufficient_quota", code: "insufficient_quota" } },
    });
    const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase: fake.baseUrl("openai") });
    expect(result).toMatchObject({ outcome: "rate_limited", providerCode: "insufficient_quota" });
    expect(result.message).toBe("OpenAI rate limited the key (HTTP 429).");
  });

  it("Retry-After, the target's text, is left out of the message", async () => {
    const key = newKey("anthropic");
    fake.setKey(key, { status: 429, headers: { "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT" }, body: "" });
    const dated = await checkProviderKey({ provider: "anthropic", apiKey: key, apiBase: fake.baseUrl("anthropic") });
    expect(dated.message).toBe("Anthropic rate limited the key (HTTP 429).");
    fake.setKey(key, { status: 429, headers: { "retry-after": "<script>soon</script>" }, body: "" });
    const junk = await checkProviderKey({ provider: "anthropic", apiKey: key, apiBase: fake.baseUrl("anthropic") });
    expect(junk.message).toBe("Anthropic rate limited the key (HTTP 429).");
  });

  it("a 200 JSON body without a JSON content type is still valid", async () => {
    const key = newKey("fireworks");
    fake.setKey(key, { status: 200, headers: { "content-type": "text/plain" }, body: '{"object":"list","data":[]}' });
    const result = await checkProviderKey({ provider: "fireworks", apiKey: key, apiBase: fake.baseUrl("fireworks") });
    expect(result.outcome).toBe("valid");
  });

  it("the status decides when an error body stalls (slow_body): the timeout does not hide a 401", async () => {
    const key = newKey("anthropic");
    fake.setKey(key, "slow_body");
    const result = await checkProviderKey({ provider: "anthropic", apiKey: key, apiBase: fake.baseUrl("anthropic"), timeoutMs: 150 });
    expect(result).toMatchObject({ outcome: "invalid_key", httpStatus: 401 });
    expect(result.latencyMs).toBeGreaterThanOrEqual(145);
    expect(result.latencyMs).toBeLessThan(2_000);
  });

  it("a key that cannot go in a header is not sent", async () => {
    const fetchImpl = vi.fn<typeof fetch>();
    for (const apiKey of ["", "sk-has space-123", "sk-line\nbreak-12", "sk-ünïcode-1234"]) {
      const result = await checkProviderKey({ provider: "openai", apiKey, apiBase: null, fetchImpl });
      expect(result).toMatchObject({ outcome: "invalid_key", httpStatus: null });
      expect(result.message).toMatch(/^OpenAI was not called/);
    }
    expect(fetchImpl).not.toHaveBeenCalled();
  });
});

describe("messages never carry the key", () => {
  it("OpenAI's 401 echoes part of the key; the result does not", async () => {
    const key = newKey("openai");
    fake.setKey(key, "invalid");
    fake.clearRequests();
    const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase: fake.baseUrl("openai") });
    expect(result.outcome).toBe("invalid_key");
    expectSafe(result, key);
  });

  it.each([
    ["the key itself as the code", (key: string) => ({ error: { code: key } })],
    ["a run of the key inside the code", (key: string) => ({ error: { code: `bad_${key.slice(9, 17)}_x` } })],
    ["a key-shaped code", () => ({ error: { code: "sk-live-abcdefghijklmnop" } })],
    ["a code with a long number", () => ({ error: { code: "err_12345678901" } })],
    ["free text as the code", () => ({ error: { code: "your key sk-proj-abc is wrong" } })],
    ["the key in a Gemini reason", (key: string) => ({ error: { status: key, details: [{ reason: key }] } })],
  ])("a hostile body (%s) gives no code and a clean message", async (_name, body) => {
    const key = newKey("openai");
    fake.setKey(key, { status: 401, body: body(key) });
    const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase: fake.baseUrl("openai") });
    expect(result.outcome).toBe("invalid_key");
    expect(result.providerCode).toBeUndefined();
    expect(result.message).toBe("OpenAI rejected the key as invalid (HTTP 401).");
    expectSafe(result, key);
  });

  it("a host name containing part of the key is redacted from the message", async () => {
    const key = "sk-proj-abcdef0123456789XYZ";
    const refused = Object.assign(new TypeError("fetch failed"), { cause: Object.assign(new Error("x"), { code: "ECONNREFUSED" }) });
    const result = await checkProviderKey({
      provider: "openai",
      apiKey: key,
      apiBase: "https://sk-proj-abcdef0123.example/v1",
      fetchImpl: () => Promise.reject(refused),
    });
    expect(result.outcome).toBe("unreachable");
    expect(result.message).toBe("Could not reach OpenAI at [redacted].example: connection refused.");
    expectSafe(result, key);
  });

  it("scrub and sanitiseCode", () => {
    const key = "AIzaSyD-0123456789abcdefghij";
    expect(scrub(`x ${key} y`, key)).toBe("x [redacted] y");
    expect(scrub("x 89abcd y", key)).toBe("x [redacted] y");
    expect(scrub("nothing here", key)).toBe("nothing here");
    expect(sanitiseCode("API_KEY_INVALID", key)).toBe("API_KEY_INVALID");
    expect(sanitiseCode("AIzaSyFoo", key)).toBeUndefined();
    expect(sanitiseCode("Bearer", key)).toBeUndefined();
    expect(sanitiseCode(401, key)).toBeUndefined();
    expect(sanitiseCode("x", key)).toBeUndefined();
    expect(sanitiseCode("a".repeat(49), key)).toBeUndefined();
  });
});

describe("redirects", () => {
  it.each(FAKE_PROVIDER_NAMES)("%s: a redirect is not followed and the target never gets the key", async (provider) => {
    const key = newKey(provider);
    fake.setKey(key, "redirect");
    fake.clearRequests();
    const result = await checkProviderKey({ provider, apiKey: key, apiBase: fake.baseUrl(provider) });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: 302 });
    expect(fake.requests).toHaveLength(1);
    expect(fake.redirectTarget.requests).toHaveLength(0);
    expect(fake.redirectTarget.received(key)).toBe(false);
  });

  it("a followed redirect would hand an x-api-key to the target (fetch strips only Authorization cross-origin)", async () => {
    // Why redirect: "manual" matters: fetch's own redirect handling drops Authorization on a
    // cross-origin hop but forwards custom headers such as Anthropic's and Gemini's key headers.
    const key = newKey("anthropic");
    fake.setKey(key, "redirect");
    fake.clearRequests();
    const followed = await fetch(`${fake.baseUrl("anthropic")}/v1/models`, { headers: { "x-api-key": key, "anthropic-version": "2023-06-01" } });
    expect(followed.status).toBe(200);
    await followed.arrayBuffer();
    expect(fake.redirectTarget.requests).toHaveLength(1);
    expect(fake.redirectTarget.received(key)).toBe(true);
  });

  it("a browser-style opaque redirect (status 0) is unexpected too", async () => {
    const opaque = { type: "opaqueredirect", status: 0, headers: new Headers(), body: null } as unknown as Response;
    const result = await checkProviderKey({ provider: "gemini", apiKey: newKey("gemini"), apiBase: null, fetchImpl: async () => opaque });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: null });
    expect(result.message).toContain("redirect");
  });
});

describe("network failures", () => {
  const failing =
    (code: string): typeof fetch =>
    () =>
      Promise.reject(Object.assign(new TypeError("fetch failed"), { cause: Object.assign(new Error(`boom ${code}`), { code }) }));

  it.each([
    ["ENOTFOUND", "host name not found (DNS)"],
    ["EAI_AGAIN", "DNS lookup failed (temporary)"],
    ["ECONNRESET", "connection reset"],
    ["EHOSTUNREACH", "host unreachable"],
    ["UND_ERR_SOCKET", "connection closed by the server"],
    ["CERT_HAS_EXPIRED", "TLS certificate not accepted (CERT_HAS_EXPIRED)"],
    ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "TLS certificate not accepted (UNABLE_TO_VERIFY_LEAF_SIGNATURE)"],
    ["ERR_TLS_CERT_ALTNAME_INVALID", "TLS certificate not accepted (ERR_TLS_CERT_ALTNAME_INVALID)"],
    ["ERR_SSL_WRONG_VERSION_NUMBER", "TLS handshake failed (ERR_SSL_WRONG_VERSION_NUMBER)"],
    ["EWHATEVER", "network error (EWHATEVER)"],
  ])("%s → %s", async (code, reason) => {
    const key = newKey("fireworks");
    const result = await checkProviderKey({ provider: "fireworks", apiKey: key, apiBase: null, fetchImpl: failing(code) });
    expect(result).toMatchObject({ outcome: "unreachable", httpStatus: null, providerCode: code });
    expect(result.message).toBe(`Could not reach Fireworks AI at api.fireworks.ai: ${reason}.`);
  });

  it("an error without a code, and an AggregateError of connect attempts", async () => {
    const bare = await checkProviderKey({ provider: "openai", apiKey: newKey("openai"), apiBase: null, fetchImpl: () => Promise.reject(new Error("?")) });
    expect(bare.message).toBe("Could not reach OpenAI at api.openai.com: network error.");
    const aggregate = new TypeError("fetch failed", {
      cause: new AggregateError([Object.assign(new Error("a"), { code: "ENETUNREACH" }), Object.assign(new Error("b"), { code: "ECONNREFUSED" })]),
    });
    const result = await checkProviderKey({ provider: "openai", apiKey: newKey("openai"), apiBase: null, fetchImpl: () => Promise.reject(aggregate) });
    expect(result.message).toBe("Could not reach OpenAI at api.openai.com: network unreachable.");
  });

  it("real DNS failure (.invalid never resolves) → unreachable", async () => {
    const result = await checkProviderKey({ provider: "openai", apiKey: newKey("openai"), apiBase: "http://no-such-host.invalid", timeoutMs: 5_000 });
    expect(result.outcome).toBe("unreachable");
    expect(result.message).toMatch(/^Could not reach OpenAI at no-such-host\.invalid: /);
  });

  it("real TLS failure: https to a plain-HTTP server → unreachable, handshake failed", async () => {
    const key = newKey("anthropic");
    const base = fake.baseUrl("anthropic").replace("http:", "https:");
    const result = await checkProviderKey({ provider: "anthropic", apiKey: key, apiBase: base });
    expect(result.outcome).toBe("unreachable");
    expect(result.message).toMatch(/: TLS handshake failed \([A-Z_]+\)\.$/);
    expectSafe(result, key);
  });

  const openssl = (() => {
    try {
      execFileSync("openssl", ["version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();
  it.skipIf(!openssl)("real TLS failure: a self-signed certificate → unreachable, certificate not accepted, key not sent", async () => {
    const dir = mkdtempSync(join(tmpdir(), "provider-check-tls-"));
    try {
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=127.0.0.1",
          "-keyout",
          join(dir, "key.pem"),
          "-out",
          join(dir, "cert.pem"),
        ],
        { stdio: "ignore" },
      );
      let requests = 0;
      const server = https.createServer({ key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) }, (_req, res) => {
        requests++;
        res.end("{}");
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const { port } = server.address() as AddressInfo;
      try {
        const result = await checkProviderKey({ provider: "openai", apiKey: newKey("openai"), apiBase: `https://127.0.0.1:${port}` });
        expect(result.outcome).toBe("unreachable");
        expect(result.message).toMatch(/: TLS certificate not accepted \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)\)\.$/);
        expect(requests).toBe(0);
      } finally {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("timeouts, cancellation, latency and the body cap", () => {
  it("the default timeout is 10 s, and says so", async () => {
    expect(DEFAULT_PROVIDER_CHECK_TIMEOUT_MS).toBe(10_000);
    expect(formatDuration(10_000)).toBe("10 s");
    expect(formatDuration(2_500)).toBe("2.5 s");
    expect(formatDuration(250)).toBe("250 ms");
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const hanging: typeof fetch = (_url, init) => new Promise((_resolve, reject) => init?.signal?.addEventListener("abort", () => reject(init.signal?.reason)));
    const pending = checkProviderKey({ provider: "gemini", apiKey: newKey("gemini"), apiBase: null, fetchImpl: hanging });
    await vi.advanceTimersByTimeAsync(9_999);
    let settled = false;
    void pending.then(() => (settled = true));
    await Promise.resolve();
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const result = await pending;
    expect(result).toMatchObject({ outcome: "unreachable", providerCode: "TIMEOUT" });
    expect(result.message).toBe("Could not reach Google Gemini at generativelanguage.googleapis.com: timed out after 10 s.");
  });

  it("the timeout holds even when the fetch implementation ignores its signal", async () => {
    const deaf: typeof fetch = () => new Promise(() => undefined);
    const result = await checkProviderKey({ provider: "fireworks", apiKey: newKey("fireworks"), apiBase: null, timeoutMs: 100, fetchImpl: deaf });
    expect(result).toMatchObject({ outcome: "unreachable", providerCode: "TIMEOUT" });
    expect(result.message).toBe("Could not reach Fireworks AI at api.fireworks.ai: timed out after 100 ms.");
    expect(result.latencyMs).toBeGreaterThanOrEqual(95);
  });

  it("the caller's signal cancels: the check rejects with its reason and records nothing", async () => {
    const key = newKey("openai");
    fake.setKey(key, "slow");
    const controller = new AbortController();
    const reason = new Error("shutting down");
    const pending = checkProviderKey({ provider: "openai", apiKey: key, apiBase: fake.baseUrl("openai"), signal: controller.signal });
    setTimeout(() => controller.abort(reason), 50);
    await expect(pending).rejects.toBe(reason);
    const already = AbortSignal.abort(reason);
    await expect(checkProviderKey({ provider: "openai", apiKey: key, apiBase: null, signal: already })).rejects.toBe(reason);
  });

  it("latency is measured: a provider answering after 200 ms takes at least that", async () => {
    const key = newKey("gemini");
    fake.setKey(key, { status: 200, body: { models: [] }, delayMs: 200 });
    const result = await checkProviderKey({ provider: "gemini", apiKey: key, apiBase: fake.baseUrl("gemini") });
    expect(result.outcome).toBe("valid");
    expect(result.latencyMs).toBeGreaterThanOrEqual(195);
    expect(result.latencyMs).toBeLessThan(2_000);
    expect(Number.isInteger(result.latencyMs)).toBe(true);
  });

  it("reads at most 64 KiB of an endless error body", async () => {
    let pulled = 0;
    const chunk = new Uint8Array(16 * 1024).fill(0x61);
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    const response = new Response(endless, { status: 418, headers: { "content-type": "application/json" } });
    const result = await checkProviderKey({ provider: "openai", apiKey: newKey("openai"), apiBase: null, fetchImpl: async () => response });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: 418 });
    expect(pulled).toBeLessThanOrEqual(MAX_CHECK_BODY_BYTES + 2 * chunk.byteLength);
  });

  it("a valid answer's body is not read at all", async () => {
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(new Uint8Array(1024));
      },
    });
    const response = new Response(body, { status: 200, headers: { "content-type": "application/json" } });
    const result = await checkProviderKey({ provider: "openai", apiKey: newKey("openai"), apiBase: null, fetchImpl: async () => response });
    expect(result.outcome).toBe("valid");
    expect(pulled).toBeLessThanOrEqual(1); // a stream may pull once ahead on its own
  });
});
