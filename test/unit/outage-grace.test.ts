// What a replica may still answer when it can hear no invalidations and cannot
// reach the database: the resolution cache's and the token cache's outage grace
// window, and which errors count as "the database cannot be reached".
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ResolutionCache, type StoredResolution } from "../../service/src/credentials/resolution-cache.js";
import { isDatabaseUnavailable } from "../../service/src/db/errors.js";
import { TokenStore } from "../../service/src/auth/token-store.js";
import type { Orm } from "../../service/src/db/orm.js";
import type { Admitted } from "../../service/src/keyring/index.js";

const value = (organizationId: string): StoredResolution => ({
  organizationId,
  strategy: "newest",
  candidates: [
    { id: "c1", admitted: { sealed: "\x80\x00sealed-bytes\xff", keyId: "fk_1" } as Admitted, refusal: null, apiBase: null, weight: 1, failing: false },
  ],
});

describe("ResolutionCache while suspended (invalidation connection down)", () => {
  it("serves nothing and stores nothing, but keeps what it had for getStale until the grace window ends", () => {
    const cache = new ResolutionCache({ maxEntries: 10, ttlMs: 60_000, outageGraceMs: 5_000 });
    cache.set("a", value("a"), cache.generation, 0);
    const loading = cache.generation; // a load in flight when the connection drops
    cache.suspend(1_000);
    expect(cache.isEnabled).toBe(false);
    expect(cache.get("a", 1_001)).toBeUndefined(); // the database is asked first
    expect(cache.getStale("a", 1_001)).toEqual(value("a"));
    cache.set("b", value("b"), loading, 1_002); // may be stale already: not stored
    cache.set("b", value("b"), cache.generation, 1_002); // nor is anything loaded while deaf
    expect(cache.getStale("b", 1_003)).toBeUndefined();
    // Failed reconnection attempts do not extend the window.
    cache.suspend(4_000);
    expect(cache.getStale("a", 5_999)).toEqual(value("a"));
    expect(cache.getStale("a", 6_000)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("honours invalidations and the TTL while suspended, and starts empty when it reconnects", () => {
    const cache = new ResolutionCache({ maxEntries: 10, ttlMs: 2_000, outageGraceMs: 5_000 });
    cache.set("o|x|openai", value("x"), cache.generation, 0);
    cache.set("o|y|openai", value("y"), cache.generation, 0);
    cache.suspend(1_000);
    cache.invalidateOrganization("x"); // this replica's own change
    expect(cache.getStale("o|x|openai", 1_001)).toBeUndefined();
    expect(cache.getStale("o|y|openai", 1_999)).toEqual(value("y"));
    expect(cache.getStale("o|y|openai", 2_000)).toBeUndefined(); // TTL
    cache.set("o|y|openai", value("y"), cache.generation, 0);
    cache.setEnabled(true);
    expect(cache.size).toBe(0);
    expect(cache.getStale("o|y|openai", 1_001)).toBeUndefined();
  });

  it("without a grace window (the default) clears at once, as before", () => {
    const cache = new ResolutionCache({ maxEntries: 10, ttlMs: 60_000 });
    cache.set("a", value("a"), cache.generation, 0);
    cache.suspend(1);
    expect(cache.size).toBe(0);
    expect(cache.getStale("a", 1)).toBeUndefined();
  });
});

describe("isDatabaseUnavailable", () => {
  it("recognises what pg, knex and PostgreSQL say when the database cannot be reached", () => {
    for (const error of [
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }),
      Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }),
      Object.assign(new Error("the database system is shutting down"), { code: "57P03" }),
      new Error("Connection terminated unexpectedly"),
      new Error("timeout expired"),
      new Error("select 1 - Client has encountered a connection error and is not queryable"),
      new Error("Transaction query already complete, run with DEBUG=knex:tx for more info"),
      Object.assign(new Error("Knex: Timeout acquiring a connection. The pool is probably full."), { name: "KnexTimeoutError" }),
    ]) {
      expect(isDatabaseUnavailable(error), error.message).toBe(true);
    }
    for (const error of [new Error("syntax error"), Object.assign(new Error("duplicate key"), { code: "23505" }), undefined, "x"]) {
      expect(isDatabaseUnavailable(error)).toBe(false);
    }
  });
});

describe("TokenStore when the database cannot be reached", () => {
  // Only the clock is faked: the store reads Date.now(), and the test moves it.
  beforeEach(() => vi.useFakeTimers({ toFake: ["Date"] }));
  afterEach(() => vi.useRealTimers());
  const wait = (ms: number) => vi.setSystemTime(Date.now() + ms);
  function store(outageGraceMs: number) {
    let fail: Error | undefined;
    const statement = {
      timeout: async () => {
        if (fail) throw fail;
        return { rows: [{ name: "gateway", scope: "resolve", organization_ids: null, expires_at: null, current: true, previous_valid_until: null }] };
      },
    };
    const orm = { em: { getConnection: () => ({ getKnex: () => ({ raw: () => statement }) }) } } as unknown as Orm;
    return { tokens: new TokenStore(orm, { cacheTtlMs: 50, outageGraceMs }), down: (e?: Error) => (fail = e) };
  }
  const refused = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
  // Shaped like real tokens: anything else is refused without asking the database.
  const KNOWN = `pct_${"k".repeat(43)}`;
  const UNKNOWN = `pct_${"u".repeat(43)}`;
  const GATEWAY = { name: "gateway", scope: "resolve", organizations: null };

  it("accepts a token it looked up recently for the grace window past its cache entry, and no longer", async () => {
    const { tokens, down } = store(200);
    expect(await tokens.authenticate(KNOWN)).toEqual(GATEWAY);
    down(refused);
    wait(80); // cache entry expired, grace not
    expect(await tokens.authenticate(KNOWN)).toEqual(GATEWAY);
    await expect(tokens.authenticate(UNKNOWN)).rejects.toBe(refused);
    wait(250); // grace over
    await expect(tokens.authenticate(KNOWN)).rejects.toBe(refused);
  });

  it("never for errors other than an unreachable database, nor without a grace window", async () => {
    const other = store(10_000);
    await other.tokens.authenticate(KNOWN);
    other.down(new Error("syntax error"));
    wait(80);
    await expect(other.tokens.authenticate(KNOWN)).rejects.toThrow("syntax error");
    const none = store(0);
    await none.tokens.authenticate(KNOWN);
    none.down(refused);
    wait(80);
    await expect(none.tokens.authenticate(KNOWN)).rejects.toBe(refused);
  });
});
