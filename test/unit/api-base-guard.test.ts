// Where an api_base may point (issue #19, item 5): refused kinds of address, API_BASE_ALLOW, and a key check
// that resolves the host once, refuses before sending anything, connects only to the vetted address and never
// echoes the target's answer.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiBaseGuard, parseApiBaseAllow, refusedKind, type ResolvedAddress } from "../../service/src/credentials/api-base-guard.js";
import { checkProviderKey } from "../../service/src/credentials/provider-check.js";
import { ServiceError } from "../../service/src/errors.js";
import { startFakeProvider, type FakeProvider } from "../support/fake-provider.js";

let fake: FakeProvider;
beforeAll(async () => {
  fake = await startFakeProvider({ keys: { "sk-proj-good-key-1234567890": "valid" } });
});
afterAll(async () => {
  await fake.close();
});

/** A resolver answering from a table, counting the lookups. */
function table(names: Record<string, string[]>) {
  const lookups: string[] = [];
  const resolve = async (host: string): Promise<ResolvedAddress[]> => {
    lookups.push(host);
    const found = names[host];
    if (!found) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
    return found.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  };
  return { resolve, lookups };
}

async function refusalOnSave(guard: ApiBaseGuard, apiBase: string): Promise<ServiceError | undefined> {
  try {
    await guard.checkOnSave(apiBase);
    return undefined;
  } catch (error) {
    if (error instanceof ServiceError) return error;
    throw error;
  }
}

describe("refused kinds of address", () => {
  it.each([
    ["127.0.0.1", "loopback"],
    ["127.8.9.10", "loopback"],
    ["::1", "loopback"],
    ["169.254.169.254", "link-local"],
    ["fe80::1", "link-local"],
    ["10.1.2.3", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.254", "private"],
    ["192.168.0.10", "private"],
    ["fc00::1", "unique-local"],
    ["fd12:3456::1", "unique-local"],
    ["0.0.0.0", "unspecified"],
    ["::", "unspecified"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:7f00:1", "loopback"],
    ["::ffff:169.254.169.254", "link-local"],
    ["::ffff:10.0.0.1", "private"],
  ])("%s is %s", (address, kind) => {
    expect(refusedKind(address)).toBe(kind);
  });

  it.each(["8.8.8.8", "172.32.0.1", "172.15.255.255", "192.169.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])("%s is not refused", (address) => {
    expect(refusedKind(address)).toBeUndefined();
  });
});

describe("API_BASE_ALLOW", () => {
  it("reads host names, addresses and CIDR networks", () => {
    const allow = parseApiBaseAllow(" 127.0.0.1, 10.0.0.0/8 ,LLM-Proxy.Internal., fd00::/8, [::1] ");
    expect([...allow.hosts]).toEqual(["llm-proxy.internal"]);
    expect(allow.networks.check("127.0.0.1", "ipv4")).toBe(true);
    expect(allow.networks.check("10.200.0.1", "ipv4")).toBe(true);
    expect(allow.networks.check("fd00::5", "ipv6")).toBe(true);
    expect(allow.networks.check("::1", "ipv6")).toBe(true);
    expect(allow.networks.check("192.168.0.1", "ipv4")).toBe(false);
  });

  it.each(["10.0.0.0/33", "10.0.0.0/x", "not a host", "http://x.example", "fd00::/129"])("refuses %j, naming the variable", (entry) => {
    expect(() => parseApiBaseAllow(entry)).toThrow(/^API_BASE_ALLOW: /);
  });
});

describe("on save", () => {
  const names = table({ "localhost.test": ["127.0.0.1"], "mixed.test": ["93.184.215.14", "10.0.0.7"], "public.test": ["93.184.215.14"] });
  const guard = new ApiBaseGuard(undefined, names.resolve);

  it.each([
    "http://127.0.0.1:8080/v1",
    "http://127.1/v1",
    "http://2130706433/v1",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/v1",
    "http://172.16.5.4/v1",
    "http://192.168.1.1/v1",
    "http://[::1]:8080/v1",
    "http://[fd00::1]/v1",
    "http://[fe80::1]/v1",
    "http://0.0.0.0:8080/v1",
    "http://[::]/v1",
    "http://[::ffff:127.0.0.1]/v1",
    "http://[::ffff:a9fe:a9fe]/v1",
    "http://localhost.test/v1",
    "http://mixed.test/v1",
  ])("refuses %s, naming api_base", async (apiBase) => {
    const error = await refusalOnSave(guard, apiBase);
    expect(error?.kind).toBe("invalid_argument");
    expect(error?.field).toBe("api_base");
    expect(error?.message).toMatch(/^api_base: (is|resolves to) an? [a-z-]+ address; .*API_BASE_ALLOW/);
  });

  it("does not name the address a host name resolves to", async () => {
    const error = await refusalOnSave(guard, "http://mixed.test/v1");
    expect(error?.message).not.toContain("10.0.0.7");
  });

  it("accepts public addresses, and names that do not resolve (nothing is sent on save)", async () => {
    expect(await refusalOnSave(guard, "https://public.test/v1")).toBeUndefined();
    expect(await refusalOnSave(guard, "https://93.184.215.14/v1")).toBeUndefined();
    expect(await refusalOnSave(guard, "https://nowhere.test/v1")).toBeUndefined();
  });

  it("accepts what API_BASE_ALLOW lists: a host name whatever it resolves to, an address, a network", async () => {
    const allowed = new ApiBaseGuard(parseApiBaseAllow("localhost.test,192.168.0.0/16,::1"), names.resolve);
    expect(await refusalOnSave(allowed, "http://localhost.test/v1")).toBeUndefined();
    expect(await refusalOnSave(allowed, "http://192.168.7.7/v1")).toBeUndefined();
    expect(await refusalOnSave(allowed, "http://[::1]:9/v1")).toBeUndefined();
    expect((await refusalOnSave(allowed, "http://10.0.0.1/v1"))?.field).toBe("api_base");
    expect((await refusalOnSave(allowed, "http://mixed.test/v1"))?.field).toBe("api_base");
  });

  it("the system resolver: localhost is loopback", async () => {
    const error = await refusalOnSave(new ApiBaseGuard(), "http://localhost:8080/v1");
    expect(error?.message).toMatch(/^api_base: resolves to a loopback address/);
  });
});

describe("at check time", () => {
  const key = "sk-proj-good-key-1234567890";

  it("a refused api_base is not called: no request reaches it, and the message names api_base", async () => {
    fake.clearRequests();
    const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase: fake.baseUrl("openai"), guard: new ApiBaseGuard() });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: null });
    expect(result.message).toMatch(/^OpenAI was not called: the api_base is a loopback address; .*API_BASE_ALLOW\.$/);
    expect(fake.requests).toEqual([]);
  });

  it("a host name is resolved once and the connection goes to that address (no second lookup to rebind)", async () => {
    fake.clearRequests();
    const port = new URL(fake.url).port;
    // Not a name the system resolver knows: the check can only connect through the vetted address.
    const names = table({ "provider.rebind.test": ["127.0.0.1"] });
    const guard = new ApiBaseGuard(parseApiBaseAllow("127.0.0.1"), names.resolve);
    const result = await checkProviderKey({ provider: "openai", apiKey: key, apiBase: `http://provider.rebind.test:${port}/openai`, guard });
    expect(result).toMatchObject({ outcome: "valid", httpStatus: 200 });
    expect(names.lookups).toEqual(["provider.rebind.test"]);
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0].headers.host).toBe(`provider.rebind.test:${port}`);
  });

  it("a name resolving to any refused address is not called", async () => {
    fake.clearRequests();
    const names = table({ "two.test": ["93.184.215.14", "127.0.0.1"] });
    const result = await checkProviderKey({
      provider: "openai",
      apiKey: key,
      apiBase: "http://two.test/v1",
      guard: new ApiBaseGuard(undefined, names.resolve),
    });
    expect(result).toMatchObject({ outcome: "unexpected", httpStatus: null });
    expect(result.message).toMatch(/the api_base resolves to a loopback address/);
  });

  it("never echoes the target's body, error code or headers", async () => {
    const probe = "sk-proj-probe-key-0987654321";
    const secret = "INTERNAL_ADMIN_PANEL_v2";
    for (const status of [400, 401, 403, 404, 429, 500, 200, 302]) {
      fake.setKey(probe, {
        status,
        headers: { "content-type": status === 200 ? "text/html" : "application/json", location: "http://internal-secret.example/", "retry-after": "4242424" },
        body: { error: { code: secret, type: secret, message: `secret ${secret} body` } },
      });
      const guard = new ApiBaseGuard(parseApiBaseAllow("127.0.0.1"));
      const result = await checkProviderKey({ provider: "openai", apiKey: probe, apiBase: fake.baseUrl("openai"), guard });
      expect(result.httpStatus).toBe(status);
      expect(result.message).not.toContain(secret);
      expect(result.message).not.toContain("internal-secret");
      expect(result.message).not.toContain("4242424");
      expect(result.message).not.toContain("secret");
    }
  });
});
