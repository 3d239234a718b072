import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { toJsonString } from "@bufbuild/protobuf";
import { CredentialStanding, Provider, RollCredentialResponseSchema, SelectionStrategy } from "@provider-credentials/wire/gen/credentials_pb";
import { createTestDatabase, startTestService, FAKE_KEYS, rpcError, type TestDatabase, type TestService } from "../support/harness.js";
import { startFakeProvider, type FakeProvider } from "../support/fake-provider.js";

// RollCredential: a new key in one step; the old one deactivated now or by the service after the overlap, on its own.

let fake: FakeProvider;
let db: TestDatabase;
/** Two replicas of one deployment: the sweeper runs in each; a roll on one is seen by the other's warm cache. */
let t: TestService;
let other: TestService;

beforeAll(async () => {
  fake = await startFakeProvider();
  db = await createTestDatabase();
  t = await startTestService({ db, cacheMaxEntries: 1000, cacheTtlMs: 600_000 });
  other = await startTestService({ db, masterKey: t.masterKey, adminToken: t.adminToken, cacheMaxEntries: 1000, cacheTtlMs: 600_000 });
});
afterAll(async () => {
  await other?.close();
  await t?.close();
  await db?.drop();
  await fake?.close();
});

let seq = 0;
const uniqueId = (label: string) => `${label}-${++seq}-${randomBytes(3).toString("hex")}`;

async function setup(init: { name?: string; weight?: number; apiBase?: string } = {}) {
  const org = uniqueId("org");
  await t.clients().organizations.createOrganization({ organizationId: org, name: `Org ${org}` });
  const apiKey = FAKE_KEYS.openai();
  const { credential } = await t.clients().credentials.createCredential({
    organizationId: org,
    provider: Provider.OPENAI,
    credentialName: init.name ?? "production",
    apiKey,
    weight: init.weight,
    apiBase: init.apiBase,
  });
  return { org, id: credential!.credentialId, apiKey, version: credential!.version };
}

const resolve = (svc: TestService, org: string) =>
  svc.clients().credentials.resolveKey({ scope: { case: "organizationId", value: org }, provider: Provider.OPENAI });

const today = () => new Date().toISOString().slice(0, 10);

async function audits(org: string) {
  return db.query<{ action: string; actor: string; credential_id: string; target: string | null; details: Record<string, unknown>; text: string }>(
    "select action, actor, credential_id, target, details, row_to_json(a)::text as text from audit_events a where organization_id = $1 order by id",
    [org],
  );
}

describe("RollCredential", () => {
  it("now: the new key is a new active credential in use at once, with the old name, weight and api_base; the old one is renamed and inactive", async () => {
    const old = await setup({ weight: 7, apiBase: "https://proxy.example.com/v1" });
    expect((await resolve(other, old.org)).apiKey).toBe(old.apiKey); // warm the other replica's cache
    const newKey = FAKE_KEYS.openai();
    const rolled = await t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: newKey });
    const { credential, previous } = rolled;
    expect(credential!.credentialId).not.toBe(old.id);
    expect(credential).toMatchObject({
      credentialName: "production",
      isActive: true,
      weight: 7,
      apiBase: "https://proxy.example.com/v1",
      organizationId: old.org,
    });
    expect(previous).toMatchObject({ credentialId: old.id, credentialName: `production (replaced ${today()})`, isActive: false });
    expect(Math.abs(timestampDate(rolled.previousDeactivatesAt!).getTime() - Date.now())).toBeLessThan(60_000);
    expect(toJsonString(RollCredentialResponseSchema, rolled)).not.toContain(newKey);

    for (const svc of [t, other]) {
      const resolved = await resolve(svc, old.org);
      expect(resolved.apiKey).toBe(newKey);
      expect(resolved.credentialId).toBe(credential!.credentialId);
    }
    const explained = await t.clients().credentials.explainResolution({ scope: { case: "organizationId", value: old.org }, provider: Provider.OPENAI });
    const standings = Object.fromEntries(explained.resolutions[0].credentials.map((c) => [c.credentialId, c.standing]));
    expect(standings).toEqual({ [credential!.credentialId]: CredentialStanding.IN_USE, [old.id]: CredentialStanding.INACTIVE });

    // One audit event names both, and carries no key.
    const rows = (await audits(old.org)).filter((r) => r.action === "credential.roll");
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ credential_id: credential!.credentialId, target: old.id });
    expect(rows[0].details).toMatchObject({ previous_credential_id: old.id, overlap_seconds: 0, credential_name: "production" });
    expect(rows[0].text).not.toContain(newKey);
    expect(rows[0].text).not.toContain(old.apiKey);
    expect(t.logs.join("\n")).not.toContain(newKey);
  });

  it("with an overlap: both stay active, the new one in use; ResolveKey stops handing out the old one at its time even with a warm cache, and the service deactivates it", async () => {
    const old = await setup({ name: "overlap" });
    await t.clients().credentials.setSelectionStrategy({ organizationId: old.org, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    const rolled = await t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: FAKE_KEYS.openai(), overlapSeconds: 2 });
    const newId = rolled.credential!.credentialId;
    const deactivatesAt = timestampDate(rolled.previousDeactivatesAt!).getTime();
    expect(rolled.previous).toMatchObject({ isActive: true, credentialName: `overlap (replaced ${today()})` });
    expect(deactivatesAt - Date.now()).toBeGreaterThan(0);
    // Round robin during the overlap: both are handed out (and both replicas' caches are warm).
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) for (const svc of [t, other]) seen.add((await resolve(svc, old.org)).credentialId!);
    expect(seen).toEqual(new Set([newId, old.id]));

    // Stop the sweepers' effect from hiding the resolver's own rule: check at the time, before waiting for the sweep.
    while (Date.now() < deactivatesAt + 50) await sleep(25);
    for (let i = 0; i < 6; i++) for (const svc of [t, other]) expect((await resolve(svc, old.org)).credentialId).toBe(newId);

    // The service deactivates it by itself (no one calls anything), once, audited.
    let isActive = true;
    for (let i = 0; i < 100 && isActive; i++) {
      isActive = (await t.clients().credentials.getCredential({ credentialId: old.id })).credential!.isActive;
      if (isActive) await sleep(100);
    }
    expect(isActive).toBe(false);
    await sleep(1_500); // both replicas' sweepers have run again since
    const deactivations = (await audits(old.org)).filter((r) => r.action === "credential.deactivate");
    expect(deactivations).toHaveLength(1);
    expect(deactivations[0]).toMatchObject({ credential_id: old.id, actor: "service" });
    expect(deactivations[0].details).toMatchObject({ reason: "roll_overlap_ended" });
  });

  it("re-activating the old one during the overlap keeps it (the scheduled deactivation is dropped)", async () => {
    const old = await setup();
    await t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: FAKE_KEYS.openai(), overlapSeconds: 1 });
    await t.clients().credentials.activateCredential({ credentialId: old.id });
    await sleep(2_500);
    expect((await t.clients().credentials.getCredential({ credentialId: old.id })).credential!.isActive).toBe(true);
  });

  it("verify: a key the provider refuses changes nothing; a valid one is rolled", async () => {
    const old = await setup({ apiBase: fake.baseUrl("openai") });
    const bad = FAKE_KEYS.openai();
    fake.setKey(bad, "invalid");
    const before = await audits(old.org);
    const refused = await rpcError(t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: bad, verify: true }));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.message).toMatch(/^api_key: the provider check did not pass/);
    expect(refused.message).not.toContain(bad);
    const listed = await t.clients().credentials.listCredentials({ organizationId: old.org });
    expect(listed.credentials.map((c) => [c.credentialId, c.credentialName, c.isActive])).toEqual([[old.id, "production", true]]);
    expect(await audits(old.org)).toEqual(before);

    const good = FAKE_KEYS.openai();
    fake.setKey(good, "valid");
    const rolled = await t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: good, verify: true });
    expect(rolled.credential!.apiBase).toBe(fake.baseUrl("openai"));
    expect(fake.requests.some((r) => r.key === good)).toBe(true);
    expect((await resolve(t, old.org)).apiKey).toBe(good);
  });

  it("expected_version: a stale version is ABORTED and nothing changes", async () => {
    const old = await setup();
    await t.clients().credentials.updateCredential({ credentialId: old.id, weight: 3 });
    const stale = await rpcError(t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: FAKE_KEYS.openai(), expectedVersion: old.version }));
    expect(stale.code).toBe(Code.Aborted);
    expect(stale.message).toMatch(/expected_version/);
    expect((await t.clients().credentials.listCredentials({ organizationId: old.org })).credentials).toHaveLength(1);
    const ok = await t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: FAKE_KEYS.openai(), expectedVersion: old.version + 1 });
    expect(ok.credential!.weight).toBe(3);
  });

  it("rolling twice the same day numbers the replaced name; a long name is cut to the limit", async () => {
    const old = await setup();
    const first = await t.clients().credentials.rollCredential({ credentialId: old.id, apiKey: FAKE_KEYS.openai() });
    const second = await t.clients().credentials.rollCredential({ credentialId: first.credential!.credentialId, apiKey: FAKE_KEYS.openai() });
    expect(second.previous!.credentialName).toBe(`production (replaced ${today()}, 2)`);
    expect(second.credential!.credentialName).toBe("production");

    const long = await setup({ name: "n".repeat(200) });
    const rolled = await t.clients().credentials.rollCredential({ credentialId: long.id, apiKey: FAKE_KEYS.openai() });
    expect([...rolled.previous!.credentialName]).toHaveLength(200);
    expect(rolled.previous!.credentialName.endsWith(`(replaced ${today()})`)).toBe(true);
    expect(rolled.credential!.credentialName).toBe("n".repeat(200));
  });

  it("bad input names the field; an unknown credential is NOT_FOUND; a limited caller is refused another organisation's credential and a missing one alike", async () => {
    const old = await setup();
    const c = t.clients().credentials;
    const cases: Array<[Parameters<typeof c.rollCredential>[0], string]> = [
      [{ credentialId: old.id, apiKey: "" }, "api_key"],
      [{ credentialId: old.id, apiKey: FAKE_KEYS.openai(), overlapSeconds: 86_401 }, "overlap_seconds"],
      [{ credentialId: old.id, apiKey: FAKE_KEYS.openai(), overlapSeconds: -1 }, "overlap_seconds"],
      [{ credentialId: old.id, apiKey: FAKE_KEYS.openai(), expectedVersion: 0 }, "expected_version"],
      [{ credentialId: old.id, apiKey: FAKE_KEYS.openai(), apiBase: "not a url" }, "api_base"],
      [{ credentialId: "nope", apiKey: FAKE_KEYS.openai() }, "credential_id"],
    ];
    for (const [request, field] of cases) {
      const err = await rpcError(c.rollCredential(request));
      expect(err.code, field).toBe(Code.InvalidArgument);
      expect(err.message).toContain(field);
    }
    const missingId = "00000000-0000-4000-8000-000000000000";
    expect((await rpcError(c.rollCredential({ credentialId: missingId, apiKey: FAKE_KEYS.openai() }))).code).toBe(Code.NotFound);

    const mine = await setup();
    const { token } = await t.service.parts.tokens.create(uniqueId("limited"), "admin", "test", { organizationIds: [mine.org] });
    const limited = t.clients(token).credentials;
    const refusedB = await rpcError(limited.rollCredential({ credentialId: old.id, apiKey: FAKE_KEYS.openai() }));
    const refusedMissing = await rpcError(limited.rollCredential({ credentialId: missingId, apiKey: FAKE_KEYS.openai() }));
    expect(refusedB.code).toBe(Code.PermissionDenied);
    expect(refusedMissing.code).toBe(Code.PermissionDenied);
    expect(refusedMissing.message.replace(missingId, "X")).toBe(refusedB.message.replace(old.id, "X"));
    expect((await limited.rollCredential({ credentialId: mine.id, apiKey: FAKE_KEYS.openai() })).credential!.organizationId).toBe(mine.org);
  });
});
