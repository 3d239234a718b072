import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { cacheKey, ResolutionCache, teamLinkKey, type StoredCandidate, type StoredResolution } from "../../service/src/credentials/resolution-cache.js";
import type { Admitted } from "../../service/src/keyring/index.js";
import { applyInvalidation } from "../../service/src/credentials/invalidation.js";
import { PROVIDER_NAMES } from "@provider-credentials/wire/providers";

/** A candidate as the resolver makes one: admitted (the cache keeps its bytes and key id) or refused (its stored key id). */
function candidateOf(c: {
  id: string;
  sealed: string;
  keyId: string;
  refusal: StoredCandidate["refusal"];
  apiBase: string | null;
  weight: number;
  failing: boolean;
}): StoredCandidate {
  const facts = { id: c.id, apiBase: c.apiBase, weight: c.weight, failing: c.failing };
  return c.refusal === null
    ? { ...facts, admitted: { sealed: c.sealed, keyId: c.keyId } as Admitted, refusal: null }
    : { ...facts, admitted: null, refusal: c.refusal, keyId: c.keyId };
}

const value = (organizationId: string, id = "c1"): StoredResolution => ({
  organizationId,
  strategy: "newest",
  candidates: [candidateOf({ id, sealed: "\x80\x00sealed-bytes\xff", keyId: "fk_1", refusal: null, apiBase: null, weight: 1, failing: false })],
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

  it("reaches every entry of an organisation when it is invalidated, whichever of its entries went before", () => {
    for (const removed of [[2], [4], [0], [1, 2], [2, 1], [3, 4], [4, 3], [0, 4], [1, 3]]) {
      const cache = new ResolutionCache({ maxEntries: 100, ttlMs: 60_000 });
      const teams = ["t0", "t1", "t2", "t3", "t4"];
      for (const teamId of teams) cache.set(cacheKey({ teamId }, "openai"), value("o"), cache.generation);
      cache.set(cacheKey({ organizationId: "other" }, "openai"), value("other"), cache.generation);
      for (const i of removed) applyInvalidation(cache, { teamId: teams[i] });
      applyInvalidation(cache, { organizationId: "o" });
      expect(cache.size, `after removing ${removed.join(", ")}`).toBe(1);
      expect(cache.get(cacheKey({ organizationId: "other" }, "openai"))).toBeDefined();
    }
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

/**
 * The cache as it was before its memory layout changed (a Map in access order,
 * a Set of keys per organisation): the reference its behaviour must match.
 */
class ReferenceCache {
  readonly entries = new Map<string, { value: StoredResolution; expiresAt: number }>();
  generation = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
  ) {}

  get(key: string, now: number): StoredResolution | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    if (entry.expiresAt <= now) return undefined;
    this.entries.set(key, entry);
    return entry.value;
  }

  set(key: string, value: StoredResolution, generation: number, now: number): void {
    if (generation !== this.generation) return;
    this.entries.delete(key);
    this.entries.set(key, { value, expiresAt: now + this.ttlMs });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  invalidateOrganization(organizationId: string, provider?: string): void {
    this.generation++;
    for (const [key, entry] of [...this.entries]) {
      if (entry.value.organizationId === organizationId && (provider === undefined || key.endsWith(`|${provider}`))) this.entries.delete(key);
    }
  }

  invalidateTeam(teamId: string): void {
    this.generation++;
    this.entries.delete(teamLinkKey(teamId));
    for (const provider of PROVIDER_NAMES) this.entries.delete(cacheKey({ teamId }, provider));
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
  }
}

describe("ResolutionCache against the reference behaviour", () => {
  const organizations = ["o1", "o2", "o3"];
  const teams = ["t1", "t2", "t3", "t4"];
  // A team scope stands for both ways a team may be keyed: per provider (cacheKey) and by its link to its organisation (teamLinkKey).
  const scope = fc.oneof(
    fc.constantFrom(...organizations).map((organizationId) => ({ organizationId })),
    fc.constantFrom(...teams).map((teamId) => ({ teamId })),
    fc.constantFrom(...teams).map((linkOf) => ({ linkOf })),
  );
  const keyOf = (s: { organizationId: string } | { teamId: string } | { linkOf: string }, p: (typeof PROVIDER_NAMES)[number]) =>
    "linkOf" in s ? teamLinkKey(s.linkOf) : cacheKey(s, p);
  const provider = fc.constantFrom(...PROVIDER_NAMES);
  // Any text, so that the cache's packing of a candidate into one string is tried on separators, digits and non-Latin-1.
  const text = fc.oneof(fc.constantFrom("c1", "gAAAA-one", "fk_1", "", "12:3", "-:", "-"), fc.string({ unit: "binary", maxLength: 12 }));
  const candidate = fc
    .record({
      id: text,
      sealed: text,
      keyId: text,
      refusal: fc.constantFrom(null, "decrypt" as const, "binding" as const),
      apiBase: fc.option(text, { nil: null }),
      weight: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.constantFrom(0.5, 1e21, 2 ** 31, Number.MAX_SAFE_INTEGER)),
      failing: fc.boolean(),
    })
    .map(candidateOf);
  const resolution = fc.record({
    organizationId: fc.constantFrom(...organizations),
    strategy: fc.constantFrom("newest" as const, "round_robin" as const, "weighted" as const),
    candidates: fc.array(candidate, { maxLength: 3 }),
  });
  const operation = fc.oneof(
    fc.record({ op: fc.constant("set" as const), scope, provider, value: resolution, staleBy: fc.constantFrom(0, 0, 0, 1) }),
    fc.record({ op: fc.constant("get" as const), scope, provider }),
    fc.record({
      op: fc.constant("invalidateOrganization" as const),
      organizationId: fc.constantFrom(...organizations),
      provider: fc.option(provider, { nil: undefined }),
    }),
    fc.record({ op: fc.constant("invalidateTeam" as const), teamId: fc.constantFrom(...teams) }),
    fc.record({ op: fc.constant("clear" as const) }),
    fc.record({ op: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 600 }) }),
  );

  it("serves, evicts, expires and invalidates exactly as the reference does", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.array(operation, { minLength: 1, maxLength: 80, size: "max" }), (maxEntries, operations) => {
        const cache = new ResolutionCache({ maxEntries, ttlMs: 1_000 });
        const reference = new ReferenceCache(maxEntries, 1_000);
        let now = 1_000_000;
        for (const o of operations) {
          switch (o.op) {
            case "set": {
              const key = keyOf(o.scope, o.provider);
              // An organisation scope resolves to itself; a team to any organisation (teams move).
              const value = "organizationId" in o.scope ? { ...o.value, organizationId: o.scope.organizationId } : o.value;
              // staleBy 1: a load that started before the last invalidation.
              cache.set(key, structuredClone(value), cache.generation - o.staleBy, now);
              reference.set(key, value, reference.generation - o.staleBy, now);
              break;
            }
            case "get": {
              const key = keyOf(o.scope, o.provider);
              if ("linkOf" in o.scope) expect(cache.organizationOf(key, now)).toEqual(reference.get(key, now)?.organizationId);
              else expect(cache.get(key, now)).toEqual(reference.get(key, now));
              break;
            }
            case "invalidateOrganization":
              applyInvalidation(cache, { organizationId: o.organizationId, provider: o.provider });
              reference.invalidateOrganization(o.organizationId, o.provider);
              break;
            case "invalidateTeam":
              applyInvalidation(cache, { teamId: o.teamId });
              reference.invalidateTeam(o.teamId);
              break;
            case "clear":
              applyInvalidation(cache, { all: true });
              reference.clear();
              break;
            case "wait":
              now += o.ms;
              break;
          }
          expect(cache.size).toBe(reference.entries.size);
        }
        // Everything the reference still holds, the cache holds too (in no particular order of reading).
        for (const key of [...reference.entries.keys()]) expect(cache.get(key, now)).toEqual(reference.get(key, now));
      }),
      { numRuns: 1_000 },
    );
  });

  it("keeps matching it through growth, eviction and invalidation of thousands of entries of every record size", () => {
    // A seeded generator: the same operations every run.
    let state = 20261127;
    const random = () => {
      state = (state + 0x6d2b79f5) | 0;
      let t = Math.imul(state ^ (state >>> 15), 1 | state);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)];
    const organizationIds = Array.from({ length: 1_500 }, (_, i) => `org-${i}`);
    const teamIds = Array.from({ length: 3_000 }, (_, i) => `team-${i}`);
    // Records from a few bytes to several size classes, one past a 1 MiB buffer, Latin-1 and wider text.
    const texts = ["\x80\x00sealed\xff", "x".repeat(200), "y".repeat(1_500), "z".repeat(5_000), "ключ-😀"];
    const huge = "w".repeat(1_100_000);
    const resolution = (organizationId: string): StoredResolution => ({
      organizationId,
      strategy: pick(["newest", "round_robin", "weighted"] as const),
      candidates: Array.from({ length: pick([0, 1, 1, 1, 2, 5]) }, (_, i) =>
        candidateOf({
          id: `c-${i}-${Math.floor(random() * 1e6)}`,
          sealed: random() < 0.999 ? pick(texts) : huge,
          keyId: pick(["fk_1", "fk_2"]),
          refusal: pick([null, null, "decrypt", "binding"] as const),
          apiBase: pick([null, "https://gateway.example/v1", "https://ünïcode.example"]),
          weight: Math.floor(random() * 100),
          failing: random() < 0.1,
        }),
      ),
    });
    const maxEntries = 2_000;
    const cache = new ResolutionCache({ maxEntries, ttlMs: 60_000 });
    const reference = new ReferenceCache(maxEntries, 60_000);
    let now = 1_000_000;
    for (let step = 0; step < 12_000; step++) {
      const r = random();
      const provider = pick(PROVIDER_NAMES);
      const key =
        random() < 0.6
          ? cacheKey({ organizationId: pick(organizationIds) }, provider)
          : random() < 0.5
            ? teamLinkKey(pick(teamIds))
            : cacheKey({ teamId: pick(teamIds) }, provider);
      if (r < 0.55) {
        const organizationId = key.startsWith("o|") ? key.split("|")[1] : pick(organizationIds);
        const value = resolution(organizationId);
        cache.set(key, value, cache.generation, now);
        reference.set(key, value, reference.generation, now);
      } else if (r < 0.9) {
        expect(cache.get(key, now)).toEqual(reference.get(key, now));
      } else if (r < 0.97) {
        const organizationId = pick(organizationIds);
        const only = random() < 0.5 ? provider : undefined;
        applyInvalidation(cache, { organizationId, provider: only });
        reference.invalidateOrganization(organizationId, only);
      } else if (r < 0.99995) {
        const teamId = pick(teamIds);
        applyInvalidation(cache, { teamId });
        reference.invalidateTeam(teamId);
      } else {
        applyInvalidation(cache, { all: true });
        reference.clear();
      }
      now += 1;
      expect(cache.size).toBe(reference.entries.size);
    }
    expect(cache.size).toBe(maxEntries); // full, so growth and eviction were both exercised
    for (const key of [...reference.entries.keys()]) expect(cache.get(key, now)).toEqual(reference.get(key, now));
    // What it holds lives in its own buffers, at most a few hundred bytes an entry here beyond the large records.
    expect(cache.bytes).toBeGreaterThan(0);
  });
});
