// Key health and load spreading, through the real service and a fake provider
// on loopback: VerifyCredential and verify-before-saving, failures and
// successes reported by callers, selection strategies, use counts and
// rotation reminders.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FailureKind, KeyCheckOutcome, Provider, SelectionStrategy, type Credential } from "@provider-credentials/wire/gen/credentials_pb";
import { refusedUrl, startFakeProvider, type FakeProvider, type FakeProviderName } from "../support/fake-provider.js";
import { createTestDatabase, FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";

let db: TestDatabase;
let t: TestService;
/** A second replica on the same database, for what must hold on every replica. */
let other: TestService;
let fake: FakeProvider;

const PROVIDER_ENUM: Record<FakeProviderName, Provider> = {
  openai: Provider.OPENAI,
  anthropic: Provider.ANTHROPIC,
  gemini: Provider.GEMINI,
  fireworks: Provider.FIREWORKS,
};

let orgCounter = 0;
async function org(): Promise<string> {
  const id = `kh-${++orgCounter}`;
  await t.clients().organizations.createOrganization({ organizationId: id, name: id });
  return id;
}

async function credential(
  organizationId: string,
  init: { provider?: FakeProviderName; apiKey?: string; name?: string; apiBase?: string; weight?: number } = {},
) {
  const provider = init.provider ?? "openai";
  const { credential } = await t.clients().credentials.createCredential({
    organizationId,
    provider: PROVIDER_ENUM[provider],
    credentialName: init.name ?? `k-${Math.random().toString(36).slice(2, 8)}`,
    apiKey: init.apiKey ?? FAKE_KEYS[provider](),
    apiBase: init.apiBase ?? fake.baseUrl(provider),
    weight: init.weight,
  });
  return credential!;
}

const resolveOn = (svc: TestService, organizationId: string, provider = Provider.OPENAI) =>
  svc.clients().credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider });

const auditActions = async (credentialId: string) =>
  (await db.query<{ action: string }>("select action from audit_events where credential_id = $1 order by id", [credentialId])).map((r) => r.action);

beforeAll(async () => {
  fake = await startFakeProvider({ slowMs: 5_000 });
  db = await createTestDatabase();
  t = await startTestService({ db, keyCheckTimeoutMs: 1_000 });
  other = await startTestService({ db, masterKey: t.masterKey, adminToken: t.adminToken, keyCheckTimeoutMs: 1_000 });
});

afterAll(async () => {
  await other?.close();
  await t?.close();
  await db?.drop();
  await fake?.close();
});

describe("VerifyCredential", () => {
  const cases: Array<[string, "valid" | "invalid" | "forbidden" | "rate_limited" | "server_error" | "slow", KeyCheckOutcome]> = [
    ["a valid key", "valid", KeyCheckOutcome.VALID],
    ["a revoked key", "invalid", KeyCheckOutcome.INVALID_KEY],
    ["a key without permission", "forbidden", KeyCheckOutcome.NO_PERMISSION],
    ["a rate-limited key", "rate_limited", KeyCheckOutcome.RATE_LIMITED],
    ["a provider error", "server_error", KeyCheckOutcome.UNEXPECTED],
    ["a provider that does not answer in time", "slow", KeyCheckOutcome.UNREACHABLE],
  ];
  for (const provider of ["openai", "anthropic", "gemini", "fireworks"] as const) {
    it.each(cases)(`${provider}: %s is reported, stored, shown and audited, and the key never travels in a URL`, async (_label, behaviour, outcome) => {
      const o = await org();
      const apiKey = FAKE_KEYS[provider]();
      fake.setKey(apiKey, behaviour);
      const created = await credential(o, { provider, apiKey });
      const { check, credential: after } = await t.clients().credentials.verifyCredential({ credentialId: created.credentialId });
      expect(check?.outcome).toBe(outcome);
      expect(check?.latencyMs).toBeGreaterThan(0);
      expect(check?.message).not.toContain(apiKey);
      expect(after?.lastCheck?.outcome).toBe(outcome);
      // What the list shows.
      const listed = (await t.clients().credentials.listCredentials({ organizationId: o })).credentials[0];
      expect(listed.lastCheck).toMatchObject({ outcome, latencyMs: check!.latencyMs, message: check!.message });
      if (behaviour === "slow") expect(check?.latencyMs).toBeGreaterThanOrEqual(1_000);
      else
        expect(check?.httpStatus).toBe(
          { valid: 200, invalid: provider === "gemini" ? 400 : 401, forbidden: 403, rate_limited: 429, server_error: 500 }[behaviour],
        );
      expect(fake.urlsContaining(apiKey)).toEqual([]);
      expect(await auditActions(created.credentialId)).toEqual(["credential.create", "credential.verify"]);
      const [audit] = await db.query<{ details: unknown }>("select details from audit_events where credential_id = $1 and action = 'credential.verify'", [
        created.credentialId,
      ]);
      expect(JSON.stringify(audit.details)).not.toContain(apiKey);
    });
  }

  it("reports a provider that refuses connections as unreachable", async () => {
    const o = await org();
    const created = await credential(o, { apiBase: await refusedUrl() });
    const { check } = await t.clients().credentials.verifyCredential({ credentialId: created.credentialId });
    expect(check?.outcome).toBe(KeyCheckOutcome.UNREACHABLE);
    expect(check?.httpStatus).toBeUndefined();
  });

  it("is NOT_FOUND for an unknown credential and INVALID_ARGUMENT for a malformed id", async () => {
    expect((await rpcError(t.clients().credentials.verifyCredential({ credentialId: "00000000-0000-4000-8000-000000000000" }))).code).toBe(Code.NotFound);
    const bad = await rpcError(t.clients().credentials.verifyCredential({ credentialId: "nope" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.message).toMatch(/^credential_id: /);
  });
});

describe("verify before saving", () => {
  it("stores nothing when the provider refuses the key, and stores it when the provider accepts it", async () => {
    const o = await org();
    const bad = FAKE_KEYS.openai();
    fake.setKey(bad, "invalid");
    const err = await rpcError(
      t.clients().credentials.createCredential({
        organizationId: o,
        provider: Provider.OPENAI,
        credentialName: "checked",
        apiKey: bad,
        apiBase: fake.baseUrl("openai"),
        verify: true,
      }),
    );
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.message).toMatch(/^api_key: the provider check did not pass \(invalid key\)/);
    expect(err.message).not.toContain(bad);
    expect(await db.query("select id from provider_credentials where organization_id = $1", [o])).toEqual([]);

    const good = FAKE_KEYS.openai();
    fake.setKey(good, "valid");
    const { credential: saved } = await t.clients().credentials.createCredential({
      organizationId: o,
      provider: Provider.OPENAI,
      credentialName: "checked",
      apiKey: good,
      apiBase: fake.baseUrl("openai"),
      verify: true,
    });
    expect(saved?.isActive).toBe(true);
  });

  it("leaves a credential unchanged when a new key or api_base does not pass", async () => {
    const o = await org();
    const good = FAKE_KEYS.anthropic();
    fake.setKey(good, "valid");
    const created = await credential(o, { provider: "anthropic", apiKey: good });
    const bad = FAKE_KEYS.anthropic();
    fake.setKey(bad, "forbidden");
    const before = await db.query("select * from provider_credentials where id = $1", [created.credentialId]);
    const err = await rpcError(t.clients().credentials.updateCredential({ credentialId: created.credentialId, apiKey: bad, verify: true }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.message).toContain("no permission");
    const moved = await rpcError(
      t.clients().credentials.updateCredential({ credentialId: created.credentialId, apiKey: good, apiBase: await refusedUrl(), verify: true }),
    );
    expect(moved.code).toBe(Code.FailedPrecondition);
    expect(moved.message).toContain("unreachable");
    expect(await db.query("select * from provider_credentials where id = $1", [created.credentialId])).toEqual(before);
    // The key (entered again, as an api_base change requires) checked against a new api_base that works: saved.
    const { credential: after } = await t.clients().credentials.updateCredential({
      credentialId: created.credentialId,
      apiKey: good,
      apiBase: `${fake.url}/anthropic/`,
      verify: true,
    });
    expect(after?.apiBase).toBe(`${fake.url}/anthropic/`);
  });
});

describe("failures reported by callers", () => {
  it("marks a key failing after 3 authentication or quota failures, skips it while another is active, and a success clears it", async () => {
    const o = await org();
    const older = await credential(o, { name: "older" });
    const newer = await credential(o, { name: "newer" });
    expect((await resolveOn(other, o)).credentialId).toBe(newer.credentialId); // cached on the other replica

    const report = (kind: FailureKind) => t.clients().credentials.reportKeyFailure({ credentialId: newer.credentialId, kind });
    expect(await report(FailureKind.AUTHENTICATION)).toMatchObject({ failureStreak: 1, failing: false });
    expect(await report(FailureKind.RATE_LIMIT)).toMatchObject({ failureStreak: 1, failing: false }); // not about the key
    expect(await report(FailureKind.QUOTA)).toMatchObject({ failureStreak: 2, failing: false });
    expect(await report(FailureKind.AUTHENTICATION)).toMatchObject({ failureStreak: 3, failing: true });
    expect(await report(FailureKind.AUTHENTICATION)).toMatchObject({ failureStreak: 4, failing: true });
    expect((await auditActions(newer.credentialId)).filter((a) => a === "credential.failing")).toHaveLength(1);

    // Every replica now hands out the healthy key, unflagged.
    for (const svc of [t, other]) {
      await expect.poll(async () => (await resolveOn(svc, o)).credentialId, { timeout: 2_000 }).toBe(older.credentialId);
      expect((await resolveOn(svc, o)).failing).toBe(false);
    }
    const shown = (await t.clients().credentials.getCredential({ credentialId: newer.credentialId })).credential!;
    expect(shown).toMatchObject({ failing: true, failureStreak: 4 });
    const failingOnly = await t.clients().credentials.listCredentials({ organizationId: o, failingOnly: true });
    expect(failingOnly.credentials.map((c) => c.credentialId)).toEqual([newer.credentialId]);

    // The only active key left: still handed out (never a silent outage), flagged.
    await t.clients().credentials.deactivateCredential({ credentialId: older.credentialId });
    for (const svc of [t, other]) {
      await expect.poll(async () => (await resolveOn(svc, o)).credentialId, { timeout: 2_000 }).toBe(newer.credentialId);
      expect((await resolveOn(svc, o)).failing).toBe(true);
    }

    // A batched success report clears it everywhere.
    expect(await other.clients().credentials.reportKeySuccess({ credentialIds: [newer.credentialId, newer.credentialId, older.credentialId] })).toMatchObject({
      recovered: 1,
    });
    for (const svc of [t, other]) await expect.poll(async () => (await resolveOn(svc, o)).failing, { timeout: 2_000 }).toBe(false);
    expect((await t.clients().credentials.getCredential({ credentialId: newer.credentialId })).credential).toMatchObject({ failing: false, failureStreak: 0 });
    expect(await auditActions(newer.credentialId)).toContain("credential.recovered");
  });

  it("a passing verification clears the failing mark; a new key starts a clean record", async () => {
    const o = await org();
    const apiKey = FAKE_KEYS.openai();
    fake.setKey(apiKey, "valid");
    const c = await credential(o, { apiKey });
    for (let i = 0; i < 3; i++) await t.clients().credentials.reportKeyFailure({ credentialId: c.credentialId, kind: FailureKind.AUTHENTICATION });
    expect((await t.clients().credentials.getCredential({ credentialId: c.credentialId })).credential?.failing).toBe(true);
    const { credential: verified } = await t.clients().credentials.verifyCredential({ credentialId: c.credentialId });
    expect(verified).toMatchObject({ failing: false, failureStreak: 0 });

    for (let i = 0; i < 3; i++) await t.clients().credentials.reportKeyFailure({ credentialId: c.credentialId, kind: FailureKind.QUOTA });
    const { credential: replaced } = await t.clients().credentials.updateCredential({ credentialId: c.credentialId, apiKey: FAKE_KEYS.openai() });
    expect(replaced).toMatchObject({ failing: false, failureStreak: 0 });
    expect(replaced?.lastCheck).toBeUndefined();
  });

  it("refuses a report without a kind, with too many ids, or with a malformed id, naming the field", async () => {
    const c = await credential(await org());
    const noKind = await rpcError(t.clients().credentials.reportKeyFailure({ credentialId: c.credentialId }));
    expect(noKind.code).toBe(Code.InvalidArgument);
    expect(noKind.message).toMatch(/^kind: /);
    const empty = await rpcError(t.clients().credentials.reportKeySuccess({ credentialIds: [] }));
    expect(empty.message).toMatch(/^credential_ids: /);
    const many = await rpcError(t.clients().credentials.reportKeySuccess({ credentialIds: Array(1001).fill(c.credentialId) }));
    expect(many.message).toMatch(/^credential_ids: must name at most 1000/);
    const malformed = await rpcError(t.clients().credentials.reportKeySuccess({ credentialIds: [c.credentialId, "x"] }));
    expect(malformed.message).toMatch(/^credential_ids\[1\]: must be a UUID/);
    expect(
      (await rpcError(t.clients().credentials.reportKeyFailure({ credentialId: "00000000-0000-4000-8000-000000000000", kind: FailureKind.OTHER }))).code,
    ).toBe(Code.NotFound);
  });
});

describe("selection strategies", () => {
  async function threeKeys(weights: number[] = [1, 1, 1]) {
    const o = await org();
    const made: Credential[] = [];
    for (const [i, weight] of weights.entries()) made.push(await credential(o, { name: `w${i}`, weight }));
    return { o, ids: made.map((c) => c.credentialId) };
  }

  async function tally(svc: TestService, o: string, calls: number): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (let done = 0; done < calls; done += 25) {
      const batch = await Promise.all(Array.from({ length: Math.min(25, calls - done) }, () => resolveOn(svc, o)));
      for (const { credentialId } of batch) counts.set(credentialId!, (counts.get(credentialId!) ?? 0) + 1);
    }
    return counts;
  }

  it("defaults to the newest key", async () => {
    const { o, ids } = await threeKeys();
    expect(await tally(t, o, 20)).toEqual(new Map([[ids[2], 20]]));
    const { policies } = await t.clients().credentials.listSelectionStrategies({ organizationId: o });
    expect(policies.map((p) => p.strategy)).toEqual(Array(4).fill(SelectionStrategy.NEWEST));
  });

  it("round_robin spreads calls evenly over the healthy keys on every replica, skipping failing ones", async () => {
    const { o, ids } = await threeKeys();
    await t.clients().credentials.setSelectionStrategy({ organizationId: o, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    for (const svc of [t, other]) {
      await expect.poll(async () => (await tally(svc, o, 3)).size, { timeout: 2_000 }).toBe(3);
      const counts = await tally(svc, o, 300);
      expect([...counts.keys()].sort()).toEqual([...ids].sort());
      for (const n of counts.values()) expect(n).toBe(100);
    }
    for (let i = 0; i < 3; i++) await t.clients().credentials.reportKeyFailure({ credentialId: ids[0], kind: FailureKind.AUTHENTICATION });
    await expect.poll(async () => (await tally(other, o, 10)).has(ids[0]), { timeout: 2_000 }).toBe(false);
    const counts = await tally(other, o, 100);
    expect(counts).toEqual(
      new Map([
        [ids[1], 50],
        [ids[2], 50],
      ]),
    );
  });

  it("weighted follows the weights (0 is never picked)", async () => {
    const { o, ids } = await threeKeys([1, 3, 0]);
    await t.clients().credentials.setSelectionStrategy({ organizationId: o, provider: Provider.OPENAI, strategy: SelectionStrategy.WEIGHTED });
    const counts = await tally(t, o, 1_200);
    expect(counts.get(ids[2]) ?? 0).toBe(0);
    // Expected 300 and 900; the binomial standard deviation is 15, so ±90 (6 of them) cannot fail by chance in practice.
    expect(Math.abs((counts.get(ids[0]) ?? 0) - 300)).toBeLessThan(90);
    expect(Math.abs((counts.get(ids[1]) ?? 0) - 900)).toBeLessThan(90);
    // A weight changed through the API takes effect on the other replica too.
    await t.clients().credentials.updateCredential({ credentialId: ids[0], weight: 0 });
    await expect.poll(async () => (await tally(other, o, 50)).get(ids[1]), { timeout: 2_000 }).toBe(50);
  });

  it("refuses bad strategies and weights naming the field, and unknown organisations", async () => {
    const o = await org();
    const noStrategy = await rpcError(t.clients().credentials.setSelectionStrategy({ organizationId: o, provider: Provider.OPENAI }));
    expect(noStrategy.message).toMatch(/^strategy: /);
    const noProvider = await rpcError(t.clients().credentials.setSelectionStrategy({ organizationId: o, strategy: SelectionStrategy.WEIGHTED }));
    expect(noProvider.message).toMatch(/^provider: /);
    const missing = await rpcError(
      t.clients().credentials.setSelectionStrategy({ organizationId: "kh-nobody", provider: Provider.OPENAI, strategy: SelectionStrategy.WEIGHTED }),
    );
    expect(missing.code).toBe(Code.NotFound);
    for (const weight of [-1, 1001]) {
      const err = await rpcError(
        t.clients().credentials.createCredential({ organizationId: o, provider: Provider.OPENAI, credentialName: "w", apiKey: FAKE_KEYS.openai(), weight }),
      );
      expect(err.message).toBe("weight: must be an integer from 0 to 1000");
    }
    expect(await db.query("select id from provider_credentials where organization_id = $1", [o])).toEqual([]);
  });
});

describe("usage and rotation reminders", () => {
  it("counts hand-outs in batches and records the last use", async () => {
    const o = await org();
    const c = await credential(o);
    for (let i = 0; i < 7; i++) await resolveOn(t, o);
    for (let i = 0; i < 5; i++) await resolveOn(other, o);
    expect((await t.clients().credentials.getCredential({ credentialId: c.credentialId })).credential?.useCount).toBe(0n); // not yet flushed
    await t.service.parts.resolver.flushUsage();
    await other.service.parts.resolver.flushUsage();
    const shown = (await t.clients().credentials.getCredential({ credentialId: c.credentialId })).credential!;
    expect(shown.useCount).toBe(12n);
    expect(shown.lastUsedAt).toBeDefined();
  });

  it("flags keys older than ROTATION_DAYS and filters on it; a new key resets the age", async () => {
    const o = await org();
    const old = await credential(o, { name: "old" });
    const fresh = await credential(o, { name: "fresh" });
    await db.query("update provider_credentials set key_set_at = now() - interval '91 days' where id = $1", [old.credentialId]);
    const list = await t.clients().credentials.listCredentials({ organizationId: o });
    expect(Object.fromEntries(list.credentials.map((c) => [c.credentialName, c.rotationDue]))).toEqual({ old: true, fresh: false });
    const due = await t.clients().credentials.listCredentials({ organizationId: o, rotationDueOnly: true });
    expect(due.credentials.map((c) => c.credentialId)).toEqual([old.credentialId]);
    expect(fresh.rotationDue).toBe(false);
    // A stricter ROTATION_DAYS on another replica flags both after 10 days.
    await db.query("update provider_credentials set key_set_at = now() - interval '10 days' where id = $1", [fresh.credentialId]);
    const strict = await startTestService({ db, masterKey: t.masterKey, adminToken: t.adminToken, rotationDays: 7 });
    try {
      const strictDue = await strict.clients().credentials.listCredentials({ organizationId: o, rotationDueOnly: true });
      expect(strictDue.credentials).toHaveLength(2);
    } finally {
      await strict.close();
    }
    const { credential: rotated } = await t.clients().credentials.updateCredential({ credentialId: old.credentialId, apiKey: FAKE_KEYS.openai() });
    expect(rotated?.rotationDue).toBe(false);
  });
});
