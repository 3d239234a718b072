// PostgreSQL stopped under ResolveKey load, on a PostgreSQL of this file's own
// (the shared test database must never go down). Proves: no call hangs (each
// one is timed), uncached calls and admin writes fail with UNAVAILABLE and a
// clear message, cached resolutions are answered for the outage grace window
// and not after it, nothing is half written, nothing crashes, and the service
// recovers by itself when PostgreSQL is back.
//
// The outage behaviour under test (service/src/credentials/resolution-cache.ts):
// when the invalidation connection drops, the cache is bypassed at once (every
// call goes to the database, so a replica that can still reach the database
// never serves a resolution it may have missed an invalidation for); only when
// the database cannot be reached either does a call get what was cached when
// the connection dropped, for RESOLVE_CACHE_OUTAGE_GRACE_MS (default 5 s) after
// the drop. Cached resolve-scope tokens are honoured as long (token-store.ts).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { DEFAULT_CACHE_OUTAGE_GRACE_MS } from "../../service/src/server.js";
import { DB_HOT_PATH_TIMEOUT_MS } from "../../service/src/db/orm.js";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";
import { createDatabaseOn, startDedicatedPostgres, type DedicatedPostgres } from "../support/dedicated-postgres.js";

const GRACE_MS = DEFAULT_CACHE_OUTAGE_GRACE_MS;
/** The bound: no call takes longer than this while PostgreSQL is down (or coming back). */
const MAX_CALL_MS = 2_000;
const UNAVAILABLE_MESSAGE = "the credentials database is unavailable; try again shortly";

let pgServer: DedicatedPostgres;
let db: TestDatabase;
let t: TestService;

beforeAll(async () => {
  pgServer = await startDedicatedPostgres();
  db = await createDatabaseOn(pgServer.adminUrl);
  t = await startTestService({ db });
});
afterAll(async () => {
  await t?.close();
  if (pgServer?.running) await db?.drop();
  await pgServer?.destroy();
});

interface Sample {
  loop: string;
  start: number;
  end: number;
  ok: boolean;
  code?: number;
  message?: string;
  apiKey?: string;
}

/** Runs `call` over and over until stopped, timing every call. */
function loop(name: string, samples: Sample[], call: (n: number) => Promise<{ apiKey?: string } | void>) {
  let running = true;
  const done = (async () => {
    for (let n = 0; running; n++) {
      const start = Date.now();
      try {
        const res = await call(n);
        samples.push({ loop: name, start, end: Date.now(), ok: true, apiKey: res?.apiKey });
      } catch (error) {
        const e = error as { code?: number; rawMessage?: string };
        samples.push({ loop: name, start, end: Date.now(), ok: false, code: e.code, message: e.rawMessage });
      }
      // Yield to timers between calls: a cached call may complete without touching the event loop's timer phase.
      await new Promise((r) => setImmediate(r));
    }
  })();
  return async () => {
    running = false;
    await done;
  };
}

/** A call that must fail with UNAVAILABLE and the clear message, within the bound. */
async function expectUnavailable(what: string, promise: Promise<unknown>): Promise<void> {
  const start = Date.now();
  const error = await rpcError(promise);
  const took = Date.now() - start;
  expect({ what, code: error.code, message: error.message }).toEqual({ what, code: Code.Unavailable, message: UNAVAILABLE_MESSAGE });
  expect(took, `${what} took ${took} ms`).toBeLessThan(MAX_CALL_MS);
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    let passed = false;
    try {
      passed = await check();
    } catch {
      passed = false;
    }
    if (passed) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Everything the outage must leave as it was; last-use times are written in the background and left out. */
async function snapshot(): Promise<string> {
  const tables = {
    organizations: await db.query("select * from organizations order by id"),
    teams: await db.query("select * from teams order by id"),
    credentials: await db.query(
      "select id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_binding, key_hint, api_base, is_active, activated_at, version, created_at, updated_at, created_by, updated_by from provider_credentials order by id",
    ),
    audit: await db.query("select * from audit_events order by id"),
    tokens: await db.query("select name, scope, token_hash, created_at from api_tokens order by name"),
  };
  return JSON.stringify(tables);
}

describe("PostgreSQL stopped under ResolveKey load", () => {
  it("fails fast, serves cached keys for the grace window only, writes nothing half, and recovers by itself", { timeout: 120_000 }, async () => {
    // -- Setup: a cached key (org and team scope), a key never resolved before the outage, a resolve-scope token.
    const { organizations, credentials } = t.clients();
    await organizations.createOrganization({ organizationId: "hot-org", name: "Hot" });
    await organizations.createTeam({ teamId: "hot-team", organizationId: "hot-org", name: "Team" });
    const hotKey = FAKE_KEYS.openai();
    const { credential: hot } = await credentials.createCredential({
      organizationId: "hot-org",
      provider: Provider.OPENAI,
      credentialName: "hot",
      apiKey: hotKey,
    });
    await organizations.createOrganization({ organizationId: "cold-org", name: "Cold" });
    const coldKey = FAKE_KEYS.anthropic();
    await credentials.createCredential({ organizationId: "cold-org", provider: Provider.ANTHROPIC, credentialName: "cold", apiKey: coldKey });
    await organizations.createOrganization({ organizationId: "writes-org", name: "Writes" });
    const { token: resolveToken } = await new TokenStore(t.service.orm).create("outage-gateway", "resolve", "test");
    const gateway = t.clients(resolveToken).credentials;
    const cache = t.service.parts.cache;
    await waitFor("cache enabled", () => cache.isEnabled, 10_000);

    // -- Steady load: two cached scopes, an uncached one (unknown teams are never cached), and admin writes.
    const samples: Sample[] = [];
    const createdNames: string[] = [];
    const stops = [
      loop("cached-team", samples, () => gateway.resolveKey({ scope: { case: "teamId", value: "hot-team" }, provider: Provider.OPENAI })),
      loop("cached-org", samples, () => gateway.resolveKey({ scope: { case: "organizationId", value: "hot-org" }, provider: Provider.OPENAI })),
      loop("uncached", samples, (n) => gateway.resolveKey({ scope: { case: "teamId", value: `ghost-team-${n}` }, provider: Provider.OPENAI })),
      loop("writes", samples, async (n) => {
        await credentials.createCredential({ organizationId: "writes-org", provider: Provider.GEMINI, credentialName: `w-${n}`, apiKey: FAKE_KEYS.gemini() });
        createdNames.push(`w-${n}`);
      }),
    ];
    try {
      await waitFor("warm cache", () => samples.filter((s) => s.ok && s.loop.startsWith("cached")).length >= 20 && cache.size >= 2, 10_000);
      const before = await snapshot();

      // -- Outage.
      const stopCalled = Date.now();
      await pgServer.stop();
      const stopped = Date.now(); // the server process has exited: nothing can answer from the database now
      // When this replica stopped hearing invalidations: the start of its grace window.
      const dropLine = await (async () => {
        await waitFor("invalidation connection lost", () => t.logs.some((l) => l.includes("cache invalidation connection lost")), 10_000);
        return JSON.parse(t.logs.find((l) => l.includes("cache invalidation connection lost"))!) as { time: number };
      })();
      const dropped = dropLine.time;
      expect(dropped).toBeGreaterThanOrEqual(stopCalled);
      expect(cache.isEnabled).toBe(false);

      // Admin writes fail with a clear UNAVAILABLE (and, as the snapshot below shows, leave nothing behind).
      await expectUnavailable("CreateOrganization", organizations.createOrganization({ organizationId: "outage-org", name: "Outage" }));
      await expectUnavailable("CreateTeam", organizations.createTeam({ teamId: "outage-team", organizationId: "hot-org", name: "T" }));
      await expectUnavailable(
        "CreateCredential",
        credentials.createCredential({ organizationId: "hot-org", provider: Provider.OPENAI, credentialName: "during", apiKey: FAKE_KEYS.openai() }),
      );
      await expectUnavailable(
        "UpdateCredential",
        credentials.updateCredential({ credentialId: hot!.credentialId, credentialName: "renamed", apiKey: FAKE_KEYS.openai() }),
      );
      await expectUnavailable("DeactivateCredential", credentials.deactivateCredential({ credentialId: hot!.credentialId }));
      await expectUnavailable("DeleteCredential", credentials.deleteCredential({ credentialId: hot!.credentialId }));
      await expectUnavailable("DeleteOrganization", organizations.deleteOrganization({ organizationId: "cold-org" }));
      // A key this replica never cached cannot be answered.
      await expectUnavailable(
        "ResolveKey (never cached)",
        gateway.resolveKey({ scope: { case: "organizationId", value: "cold-org" }, provider: Provider.ANTHROPIC }),
      );

      // Let the load run past the end of the grace window, then some.
      await waitFor("past the grace window", () => Date.now() > dropped + GRACE_MS + 1_500, GRACE_MS + 10_000);
      expect(cache.isEnabled).toBe(false);

      // -- PostgreSQL comes back; the service is not restarted.
      const restartCalled = Date.now();
      await pgServer.start();
      // Nothing the failed writes attempted, and nothing of a write cut off by the stop, is there.
      const after = await snapshot();

      // Recovers by itself: the listener reconnects, the cache is used again, resolves and writes succeed.
      const listeners = () =>
        db.query("select pid from pg_stat_activity where datname = current_database() and application_name = 'provider-credentials-invalidation'");
      await waitFor(
        "recovery",
        async () => {
          const r = await gateway.resolveKey({ scope: { case: "organizationId", value: "cold-org" }, provider: Provider.ANTHROPIC });
          return r.apiKey === coldKey && cache.isEnabled && (await listeners()).length === 1;
        },
        20_000,
      );
      const recovered = Date.now();
      await organizations.createOrganization({ organizationId: "after-org", name: "After" });
      await waitFor("the cache in use again", () => cache.size > 0, 5_000);
      // Let the load run on the recovered service.
      const resumed = Date.now();
      await waitFor("load resumed", () => samples.filter((s) => s.start > resumed && s.ok && s.loop === "writes").length >= 3, 10_000);
      for (const stop of stops.splice(0)) await stop();

      // -- What the load saw.
      // Every database failure was recognised as one: nothing was logged as an internal error.
      expect(t.logs.filter((l) => (JSON.parse(l) as { level: number }).level >= 50)).toEqual([]);
      // Nothing hung: not one call, whatever its outcome, took 2 s or more.
      const slow = samples.filter((s) => s.end - s.start >= MAX_CALL_MS);
      expect(slow, "calls that took 2 s or more").toEqual([]);
      // Every failure was UNAVAILABLE with the clear message (unknown teams are NOT_FOUND when the database answers).
      const failures = samples.filter((s) => !s.ok && !(s.loop === "uncached" && s.code === Code.NotFound));
      expect(failures.length).toBeGreaterThan(0);
      expect(failures.filter((s) => s.code !== Code.Unavailable || s.message !== UNAVAILABLE_MESSAGE)).toEqual([]);
      // No failure at all outside the outage.
      expect(failures.filter((s) => s.end < stopCalled || s.start > recovered)).toEqual([]);
      // Every success of the resolve loops returned the right key.
      for (const s of samples.filter((x) => x.ok && x.loop.startsWith("cached"))) expect(s.apiKey).toBe(hotKey);

      for (const name of ["cached-team", "cached-org"]) {
        const mine = samples.filter((s) => s.loop === name);
        // Calls that began well inside the grace window were answered from the cache...
        const inWindow = mine.filter((s) => s.start >= dropped && s.end < dropped + GRACE_MS - 1_000);
        expect(inWindow.length, `${name}: calls inside the grace window`).toBeGreaterThan(0);
        expect(
          inWindow.filter((s) => !s.ok),
          `${name}: failed inside the grace window`,
        ).toEqual([]);
        // ... and none that began after it, until PostgreSQL was back.
        const afterWindow = mine.filter((s) => s.start >= Math.max(dropped + GRACE_MS, stopped) && s.end <= restartCalled);
        expect(afterWindow.length, `${name}: calls after the grace window`).toBeGreaterThan(0);
        expect(
          afterWindow.filter((s) => s.ok),
          `${name}: answered after the grace window`,
        ).toEqual([]);
      }
      // Uncached calls failed while PostgreSQL was down.
      const uncachedDown = samples.filter((s) => s.loop === "uncached" && s.start >= stopped && s.end <= restartCalled);
      expect(uncachedDown.length).toBeGreaterThan(0);
      expect(uncachedDown.filter((s) => s.code !== Code.Unavailable)).toEqual([]);

      // -- Nothing half written.
      // Everything but the writes loop's own credentials is exactly as before the outage.
      const strip = (json: string) => {
        const tables = JSON.parse(json) as Record<string, Array<Record<string, unknown>>>;
        tables.credentials = tables.credentials.filter((c) => c.organization_id !== "writes-org");
        tables.audit = tables.audit.filter((a) => a.organization_id !== "writes-org");
        return tables;
      };
      expect(strip(after)).toEqual(strip(before));
      // The writes loop, whose calls ran into the stop: a credential exists exactly when its create
      // succeeded, and each has exactly one audit row (the change and its audit commit together or not at all).
      const rows = await db.query<{ id: string; credential_name: string }>(
        "select id, credential_name from provider_credentials where organization_id = 'writes-org'",
      );
      expect(rows.map((r) => r.credential_name).sort()).toEqual([...createdNames].sort());
      const audited = await db.query<{ credential_id: string }>(
        "select credential_id from audit_events where organization_id = 'writes-org' and action = 'credential.create'",
      );
      expect(audited.map((a) => a.credential_id).sort()).toEqual(rows.map((r) => r.id).sort());
      expect(samples.some((s) => s.loop === "writes" && !s.ok)).toBe(true);
    } finally {
      for (const stop of stops) await stop();
    }
  });
});

describe("PostgreSQL frozen (SIGSTOP: connections open, nothing answers) under ResolveKey load", () => {
  it(
    "notices within the heartbeat, answers every ResolveKey within its statement timeout, from the cache for the grace window, and recovers when it thaws",
    { timeout: 120_000 },
    async () => {
      const { organizations, credentials } = t.clients();
      await organizations.createOrganization({ organizationId: "frozen-org", name: "Frozen" });
      const apiKey = FAKE_KEYS.openai();
      await credentials.createCredential({ organizationId: "frozen-org", provider: Provider.OPENAI, credentialName: "k", apiKey });
      const { token } = await new TokenStore(t.service.orm).create("frozen-gateway", "resolve", "test");
      const gateway = t.clients(token).credentials;
      const cache = t.service.parts.cache;
      await waitFor("cache enabled", () => cache.isEnabled, 20_000);

      const samples: Sample[] = [];
      const stops = [
        loop("cached", samples, () => gateway.resolveKey({ scope: { case: "organizationId", value: "frozen-org" }, provider: Provider.OPENAI })),
        loop("uncached", samples, (n) => gateway.resolveKey({ scope: { case: "teamId", value: `frozen-ghost-${n}` }, provider: Provider.OPENAI })),
      ];
      let frozenAt = 0;
      let thawedAt = 0;
      let suspendedAfterMs = 0;
      try {
        await waitFor("warm", () => samples.filter((s) => s.ok && s.loop === "cached").length >= 20, 10_000);
        await pgServer.freeze();
        frozenAt = Date.now();
        // A frozen or partitioned database looks the same from here, and behind a partition other replicas may
        // go on changing keys: the listener's heartbeat (2 s) notices the silent connection and the cache is bypassed.
        suspendedAfterMs = await waitFor("the heartbeat notices the frozen connection", () => !cache.isEnabled, 6_000);
        // Longer than the token cache (5 s), so that tokens are looked up again, and fail, while frozen.
        await new Promise((r) => setTimeout(r, Math.max(0, frozenAt + 7_000 - Date.now())));
        thawedAt = Date.now();
        await pgServer.thaw();
        // Recovers: a key never resolved before is read from the database again.
        const fresh = FAKE_KEYS.anthropic();
        await waitFor(
          "writes and reads after the thaw",
          async () => {
            await credentials.createCredential({
              organizationId: "frozen-org",
              provider: Provider.ANTHROPIC,
              credentialName: `after-${Date.now()}`,
              apiKey: fresh,
            });
            return (await gateway.resolveKey({ scope: { case: "organizationId", value: "frozen-org" }, provider: Provider.ANTHROPIC })).apiKey === fresh;
          },
          20_000,
        );
        const recovered = Date.now();
        await waitFor("load after the thaw", () => samples.filter((s) => s.start > recovered && s.ok).length >= 20, 10_000);
      } finally {
        await pgServer.thaw();
        for (const stop of stops) await stop();
      }

      // Not one ResolveKey hung: each gave up within the hot path's statement timeout (plus scheduling slack).
      const slow = samples.filter((s) => s.end - s.start >= DB_HOT_PATH_TIMEOUT_MS + 1_500);
      expect(slow).toEqual([]);
      expect(samples.filter((s) => !s.ok && s.code !== Code.Unavailable && s.code !== Code.NotFound)).toEqual([]);
      // The heartbeat took the cache out of service 2-4 s into the freeze; cached keys still answered, from what was
      // cached when the connection was given up, for the outage grace window (5 s, longer than the rest of the freeze).
      expect(suspendedAfterMs).toBeGreaterThanOrEqual(1_500);
      expect(suspendedAfterMs).toBeLessThan(6_000);
      expect(t.logs.some((l) => l.includes("did not answer its heartbeat"))).toBe(true);
      await waitFor("the cache back in service after the thaw", () => cache.isEnabled, 20_000);
      const cached = samples.filter((s) => s.loop === "cached");
      expect(cached.filter((s) => !s.ok)).toEqual([]);
      expect(cached.every((s) => s.apiKey === apiKey)).toBe(true);
      // What had to come from the database failed with UNAVAILABLE while it was frozen.
      const uncachedFrozen = samples.filter((s) => s.loop === "uncached" && s.start >= frozenAt + 100 && s.end <= thawedAt);
      expect(uncachedFrozen.length).toBeGreaterThan(0);
      expect(uncachedFrozen.filter((s) => s.code !== Code.Unavailable)).toEqual([]);
      expect(t.logs.filter((l) => (JSON.parse(l) as { level: number }).level >= 50)).toEqual([]);
    },
  );
});
