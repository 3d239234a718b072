import { describe, expect, it } from "vitest";
import { cacheKey, ResolutionCache, type StoredResolution } from "../../service/src/credentials/resolution-cache.js";
import { applyInvalidation } from "../../service/src/credentials/invalidation.js";

const value = (organizationId: string, id = "c1"): StoredResolution => ({
  organizationId,
  strategy: "newest",
  candidates: [{ id, token: "gAAAA-ciphertext", keyId: "fk_1", binding: "rb1.mac", apiBase: null, weight: 1, failing: false }],
});

describe("ResolutionCache", () => {
  it("drops a load that raced with an invalidation, so a stale read is never cached", () => {
    const cache = new ResolutionCache({ maxEntries: 10, ttlMs: 60_000 });
    const key = cacheKey({ organizationId: "o" }, "openai");
    const started = cache.generation; // a miss starts loading
    applyInvalidation(cache, { organizationId: "o", provider: "openai" }); // a change commits meanwhile
    cache.set(key, value("o"), started); // the load finishes with what it read before the change
    expect(cache.get(key)).toBeUndefined();
    cache.set(key, value("o", "c2"), cache.generation);
    expect(cache.get(key)?.candidates[0]?.id).toBe("c2");
  });

  it("invalidates an organisation's entries for one provider, including team scopes that resolved to it", () => {
    const cache = new ResolutionCache({ maxEntries: 10, ttlMs: 60_000 });
    const g = cache.generation;
    cache.set(cacheKey({ organizationId: "o" }, "openai"), value("o"), g);
    cache.set(cacheKey({ teamId: "t" }, "openai"), value("o"), g);
    cache.set(cacheKey({ teamId: "t" }, "anthropic"), value("o"), g);
    cache.set(cacheKey({ organizationId: "other" }, "openai"), value("other"), g);
    applyInvalidation(cache, { organizationId: "o", provider: "openai" });
    expect(cache.get(cacheKey({ organizationId: "o" }, "openai"))).toBeUndefined();
    expect(cache.get(cacheKey({ teamId: "t" }, "openai"))).toBeUndefined();
    expect(cache.get(cacheKey({ teamId: "t" }, "anthropic"))).toBeDefined();
    expect(cache.get(cacheKey({ organizationId: "other" }, "openai"))).toBeDefined();
    applyInvalidation(cache, { teamId: "t" });
    expect(cache.get(cacheKey({ teamId: "t" }, "anthropic"))).toBeUndefined();
    applyInvalidation(cache, { all: true });
    expect(cache.size).toBe(0);
  });

  it("evicts the least recently used entry beyond its bound and expires entries after the TTL", () => {
    const cache = new ResolutionCache({ maxEntries: 2, ttlMs: 1_000 });
    const g = cache.generation;
    cache.set("a", value("a"), g, 0);
    cache.set("b", value("b"), g, 0);
    expect(cache.get("a", 10)).toBeDefined(); // a is now more recent than b
    cache.set("c", value("c"), g, 10);
    expect(cache.get("b", 20)).toBeUndefined();
    expect(cache.get("a", 20)).toBeDefined();
    expect(cache.get("c", 1_009)).toBeDefined();
    expect(cache.get("c", 1_010)).toBeUndefined();
  });

  it("stores nothing while disabled, and holds ciphertext only", () => {
    const cache = new ResolutionCache({ maxEntries: 10, ttlMs: 60_000 });
    cache.setEnabled(false);
    cache.set("a", value("a"), cache.generation);
    expect(cache.size).toBe(0);
    cache.setEnabled(true);
    cache.set("a", value("a"), cache.generation);
    expect(JSON.stringify(cache.get("a"))).not.toMatch(/sk-/);
    expect(new ResolutionCache({ maxEntries: 0, ttlMs: 1 }).isEnabled).toBe(false);
  });
});
