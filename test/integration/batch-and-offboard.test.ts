// BatchCredentialAction (activate, deactivate or delete up to 200 credentials in one transaction, all or none, each
// audited as if changed alone) and DeleteOrganization with cascade (offboarding: the organisation's credentials,
// teams and selection strategies go with it, each audited), against the real service and PostgreSQL.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { Code } from "@connectrpc/connect";
import { ACTOR_HEADER, SESSION_HEADER } from "@provider-credentials/wire/auth";
import { CredentialAction, Provider, SelectionStrategy } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS, rpcError, startTestService, type TestService, rpcRefusal } from "../support/harness.js";

const PASSWORD = "offboarding-correct-horse-battery-staple";
const OWNER = "owner@example.com";

let t: TestService;
const creds = () => t.clients().credentials;
const orgs = () => t.clients().organizations;
let counter = 0;

beforeAll(async () => {
  t = await startTestService();
  for (const id of ["batch-a", "batch-b"]) await orgs().createOrganization({ organizationId: id, name: id.toUpperCase() });
  await t.service.parts.admins.create(OWNER, PASSWORD, { actor: "test", source: null });
});
afterAll(async () => {
  await t?.close();
});

/** A new OpenAI credential of the organisation; returns its id and key. */
async function credential(organizationId: string, provider = Provider.OPENAI): Promise<{ id: string; key: string; name: string }> {
  const key = provider === Provider.OPENAI ? FAKE_KEYS.openai() : provider === Provider.ANTHROPIC ? FAKE_KEYS.anthropic() : FAKE_KEYS.gemini();
  const name = `c-${++counter}`;
  const { credential: made } = await creds().createCredential({ organizationId, provider, credentialName: name, apiKey: key });
  return { id: made!.credentialId, key, name };
}

/** Every stored column that a batch could change, for the given credentials (by id). */
const rows = (ids: string[]) =>
  t.db.query("select id, is_active, activated_at, version, updated_at, updated_by, deactivate_at from provider_credentials where id = any($1) order by id", [
    ids,
  ]);
const auditCount = async () => (await t.db.query<{ n: number }>("select count(*)::int as n from audit_events"))[0].n;
const auditOf = (action: string, ids: string[]) =>
  t.db.query<{ credential_id: string; actor: string; organization_id: string; details: Record<string, unknown> }>(
    "select credential_id, actor, organization_id, details from audit_events where action = $1 and credential_id = any($2) order by id",
    [action, ids],
  );

/** A portal session of OWNER, and making it `minutes` old. */
const signIn = async () => (await t.service.parts.admins.signIn(OWNER, PASSWORD, null, null)).token;
const age = (session: string, minutes: number) =>
  t.db.query("update admin_sessions set authenticated_at = now() - $2 * interval '1 minute' where id_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')", [
    session,
    minutes,
  ]);

describe("BatchCredentialAction", () => {
  it("made for a portal account, deleting needs a sign-in within 10 minutes; activating and deactivating do not", async () => {
    const made = [await credential("batch-a"), await credential("batch-a")];
    const ids = made.map((m) => m.id);
    const as = (session: string) => t.clients(t.adminToken, { [ACTOR_HEADER]: OWNER, [SESSION_HEADER]: session }).credentials;
    const session = await signIn();
    await age(session, 11);
    expect(await as(session).batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: ids })).toMatchObject({
      credentials: [{ isActive: false }, { isActive: false }],
    });
    const err = await rpcRefusal(as(session).batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: ids }));
    expect(err).toMatchObject({ code: Code.FailedPrecondition, reason: "REAUTHENTICATION_REQUIRED" });
    expect(err.message).toMatch(/^deleting credentials together needs a sign-in within the last 10 minutes/);
    expect(await rows(ids)).toHaveLength(2);
    const fresh = await signIn();
    expect((await as(fresh).batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: ids })).credentials).toHaveLength(2);
    expect(await rows(ids)).toHaveLength(0);
  });

  it("deactivates every credential named in one call, each audited as DeactivateCredential audits, in the order named", async () => {
    const made = [await credential("batch-a"), await credential("batch-a"), await credential("batch-a")];
    const ids = [made[2].id, made[0].id, made[1].id];
    const { credentials } = await creds().batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: ids });
    expect(credentials.map((c) => [c.credentialId, c.isActive, c.version])).toEqual(ids.map((id) => [id, false, 2]));
    expect((await rows(ids)).every((r) => r.is_active === false)).toBe(true);
    const events = await auditOf("credential.deactivate", ids);
    expect(events.map((e) => e.credential_id)).toEqual(ids);
    for (const [i, e] of events.entries()) {
      const c = made.find((m) => m.id === ids[i])!;
      expect(e).toMatchObject({ actor: "token:service-admin-token", organization_id: "batch-a", details: { credential_name: c.name } });
      expect(Object.keys(e.details).sort()).toEqual(["credential_name", "key_hint"]);
      expect(JSON.stringify(e)).not.toContain(c.key);
    }
    // The same as the single RPC writes.
    const single = await credential("batch-a");
    await creds().deactivateCredential({ credentialId: single.id });
    const [one] = await auditOf("credential.deactivate", [single.id]);
    expect(Object.keys(one.details).sort()).toEqual(Object.keys(events[0].details).sort());
  });

  it("is all or none: one unknown id among valid ones changes nothing, and NOT_FOUND names it", async () => {
    const a = await credential("batch-a");
    const b = await credential("batch-b");
    const unknown = randomUUID();
    const before = await rows([a.id, b.id]);
    const audits = await auditCount();
    for (const action of [CredentialAction.DEACTIVATE, CredentialAction.DELETE, CredentialAction.ACTIVATE]) {
      expect(await rpcRefusal(creds().batchCredentialAction({ action, credentialIds: [a.id, unknown, b.id] }))).toEqual({
        code: Code.NotFound,
        message: `credential_ids[1]: credential "${unknown}" not found`,
        reason: "NOT_FOUND",
        field: "credential_ids[1]",
      });
    }
    expect(await rows([a.id, b.id])).toEqual(before);
    expect(await auditCount()).toBe(audits);
    // The first unknown one is named.
    const second = randomUUID();
    expect((await rpcError(creds().batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [a.id, b.id, second, unknown] }))).message).toBe(
      `credential_ids[2]: credential "${second}" not found`,
    );
    expect(await rows([a.id, b.id])).toEqual(before);
  });

  it("activates in the order named: the last one named is the newest, and ResolveKey hands it out at once", async () => {
    await orgs().createOrganization({ organizationId: "batch-order", name: "Order" });
    const made = [await credential("batch-order"), await credential("batch-order"), await credential("batch-order")];
    const scope = { case: "organizationId" as const, value: "batch-order" };
    // The newest is in use, and cached.
    expect((await creds().resolveKey({ scope, provider: Provider.OPENAI })).apiKey).toBe(made[2].key);
    await creds().batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: made.map((m) => m.id) });
    expect((await rpcError(creds().resolveKey({ scope, provider: Provider.OPENAI }))).code).toBe(Code.FailedPrecondition);
    const order = [made[2].id, made[1].id, made[0].id];
    const { credentials } = await creds().batchCredentialAction({ action: CredentialAction.ACTIVATE, credentialIds: order });
    expect(credentials.map((c) => [c.credentialId, c.isActive])).toEqual(order.map((id) => [id, true]));
    expect((await creds().resolveKey({ scope, provider: Provider.OPENAI })).apiKey).toBe(made[0].key);
    const times = await t.db.query<{ id: string; activated_at: Date }>(
      "select id, activated_at from provider_credentials where organization_id = 'batch-order' order by activated_at",
    );
    expect(times.map((r) => r.id)).toEqual(order);
    expect(new Set(times.map((r) => r.activated_at.getTime())).size).toBe(3);
    expect((await auditOf("credential.activate", order)).map((e) => e.credential_id)).toEqual(order);
  });

  it("leaves a credential already in the state asked for as it is, unaudited, as the single RPC does", async () => {
    const active = await credential("batch-a");
    const inactive = await credential("batch-a");
    await creds().deactivateCredential({ credentialId: inactive.id });
    const before = await rows([inactive.id]);
    const { credentials } = await creds().batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: [inactive.id, active.id] });
    expect(credentials.map((c) => c.version)).toEqual([2, 2]);
    expect(await rows([inactive.id])).toEqual(before);
    expect((await auditOf("credential.deactivate", [inactive.id, active.id])).map((e) => e.credential_id)).toEqual([inactive.id, active.id]);
  });

  it("deletes every credential named, answers them as they were, audits each as DeleteCredential does", async () => {
    const made = [await credential("batch-b", Provider.ANTHROPIC), await credential("batch-b", Provider.GEMINI)];
    const ids = made.map((m) => m.id);
    const { credentials } = await creds().batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: ids });
    expect(credentials.map((c) => [c.credentialId, c.credentialName, c.provider])).toEqual([
      [made[0].id, made[0].name, Provider.ANTHROPIC],
      [made[1].id, made[1].name, Provider.GEMINI],
    ]);
    expect(await rows(ids)).toEqual([]);
    const events = await auditOf("credential.delete", ids);
    expect(events.map((e) => [e.credential_id, e.organization_id, e.details.provider, e.details.credential_name])).toEqual([
      [made[0].id, "batch-b", "anthropic", made[0].name],
      [made[1].id, "batch-b", "gemini", made[1].name],
    ]);
    for (const [i, e] of events.entries()) expect(JSON.stringify(e)).not.toContain(made[i].key);
    expect((await rpcError(creds().getCredential({ credentialId: ids[0] }))).code).toBe(Code.NotFound);
  });

  it("refuses bad input with INVALID_ARGUMENT naming the field, and changes nothing", async () => {
    const a = await credential("batch-a");
    const before = await rows([a.id]);
    const audits = await auditCount();
    const cases: Array<[object, string, string]> = [
      [{ credentialIds: [a.id] }, "action", "action: must be one of CREDENTIAL_ACTION_ACTIVATE, CREDENTIAL_ACTION_DEACTIVATE, CREDENTIAL_ACTION_DELETE"],
      [
        { action: 99, credentialIds: [a.id] },
        "action",
        "action: must be one of CREDENTIAL_ACTION_ACTIVATE, CREDENTIAL_ACTION_DEACTIVATE, CREDENTIAL_ACTION_DELETE",
      ],
      [{ action: CredentialAction.DELETE, credentialIds: [] }, "credential_ids", "credential_ids: must name at least one credential"],
      [
        { action: CredentialAction.DELETE, credentialIds: [a.id, ...Array.from({ length: 200 }, () => randomUUID())] },
        "credential_ids",
        "credential_ids: must name at most 200 credentials; 201 were given",
      ],
      [{ action: CredentialAction.DELETE, credentialIds: [a.id, "not-a-uuid"] }, "credential_ids[1]", "credential_ids[1]: must be a UUID"],
      [{ action: CredentialAction.DELETE, credentialIds: [a.id, ""] }, "credential_ids[1]", "credential_ids[1]: is required"],
      [
        { action: CredentialAction.DELETE, credentialIds: [a.id, randomUUID(), a.id.toUpperCase()] },
        "credential_ids[2]",
        "credential_ids[2]: repeats credential_ids[0]; name each credential once",
      ],
    ];
    for (const [request, field, message] of cases) {
      expect(await rpcRefusal(creds().batchCredentialAction(request))).toEqual({ code: Code.InvalidArgument, message, reason: "INVALID_ARGUMENT", field });
    }
    expect(await rows([a.id])).toEqual(before);
    expect(await auditCount()).toBe(audits);
  });

  it("takes 200 credentials at once", async () => {
    await orgs().createOrganization({ organizationId: "batch-many", name: "Many" });
    await t.db.query(
      `insert into provider_credentials (id, organization_id, provider, credential_name, credential_name_key, encrypted_api_key, key_id, key_hint,
         is_active, activated_at, version, created_at, updated_at, weight, use_count, key_set_at, failure_streak)
       select gen_random_uuid(), 'batch-many', 'openai', 'bulk ' || n, 'bulk ' || n, 'x', 'k', 'sk-…0000', true, now(), 1, now(), now(), 1, 0, now(), 0
       from generate_series(1, 200) n`,
    );
    const ids = (await t.db.query<{ id: string }>("select id from provider_credentials where organization_id = 'batch-many' order by id")).map((r) => r.id);
    const { credentials } = await creds().batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: ids });
    expect(credentials).toHaveLength(200);
    expect(await t.db.query("select count(*)::int as n from provider_credentials where organization_id = 'batch-many' and is_active")).toEqual([{ n: 0 }]);
    expect(await auditOf("credential.deactivate", ids)).toHaveLength(200);
    await creds().batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: ids });
    expect(await t.db.query("select count(*)::int as n from provider_credentials where organization_id = 'batch-many'")).toEqual([{ n: 0 }]);
  });

  describe("a caller limited to organisation A", () => {
    let limited: ReturnType<TestService["clients"]>;
    beforeAll(async () => {
      const { token } = await t.service.parts.tokens.create("batch-limited", "admin", "test", { organizationIds: ["batch-a"] });
      limited = t.clients(token);
    });

    it("is refused for a credential of B, the same way as for one that does not exist, and nothing changes", async () => {
      const a = await credential("batch-a");
      const b = await credential("batch-b");
      const before = await rows([a.id, b.id]);
      const audits = await auditCount();
      const answers: string[] = [];
      for (const other of [b.id, randomUUID()]) {
        const err = await rpcRefusal(limited.credentials.batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [a.id, other] }));
        expect(err).toEqual({
          code: Code.PermissionDenied,
          message: `credential_ids[1]: "${other}" is not a credential of an organization this caller may access`,
          reason: "OUTSIDE_CALLER_ORGANIZATIONS",
          field: "credential_ids[1]",
        });
        answers.push(err.message.replace(other, "<id>"));
      }
      expect(answers[0]).toBe(answers[1]);
      expect(await rows([a.id, b.id])).toEqual(before);
      expect(await auditCount()).toBe(audits);
    });

    it("may change its own organisation's credentials", async () => {
      const a = await credential("batch-a");
      const { credentials } = await limited.credentials.batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: [a.id] });
      expect(credentials[0]?.isActive).toBe(false);
      expect((await auditOf("credential.deactivate", [a.id]))[0]?.actor).toBe("token:batch-limited");
    });
  });
});

describe("DeleteOrganization with cascade (offboarding)", () => {
  const PROVIDERS = [Provider.OPENAI, Provider.ANTHROPIC, Provider.GEMINI];

  it("deletes 65 credentials, the teams, the selection strategies and the organisation in one change, each audited", async () => {
    const org = "leaving";
    await orgs().createOrganization({ organizationId: org, name: "Leaving Ltd" });
    const made = [];
    for (let i = 0; i < 65; i++) made.push(await credential(org, PROVIDERS[i % 3]));
    const teams = ["leaving-t1", "leaving-t2", "leaving-t3"];
    for (const teamId of teams) await orgs().createTeam({ teamId, organizationId: org, name: teamId });
    await creds().setSelectionStrategy({ organizationId: org, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    // Cached answers, by organisation and by team: the deletion must drop them.
    expect((await creds().resolveKey({ scope: { case: "organizationId", value: org }, provider: Provider.ANTHROPIC })).organizationId).toBe(org);
    expect((await creds().resolveKey({ scope: { case: "teamId", value: "leaving-t1" }, provider: Provider.GEMINI })).organizationId).toBe(org);
    // Another organisation is untouched.
    const bystander = await credential("batch-b");

    const answer = await orgs().deleteOrganization({ organizationId: org, cascade: true });
    expect(answer).toMatchObject({ deletedCredentials: 65, deletedTeams: 3 });

    expect(await t.db.query("select id from organizations where id = $1", [org])).toEqual([]);
    expect(await t.db.query("select id from provider_credentials where organization_id = $1", [org])).toEqual([]);
    expect(await t.db.query("select id from teams where organization_id = $1", [org])).toEqual([]);
    expect(await t.db.query("select * from selection_strategies where organization_id = $1", [org])).toEqual([]);
    expect(await rows([bystander.id])).toHaveLength(1);

    const deleted = await auditOf(
      "credential.delete",
      made.map((m) => m.id),
    );
    expect(deleted.map((e) => e.credential_id).sort()).toEqual(made.map((m) => m.id).sort());
    expect(deleted.every((e) => e.organization_id === org && e.actor === "token:service-admin-token")).toBe(true);
    const teamEvents = await t.db.query<{ target: string; details: unknown }>(
      "select target, details from audit_events where action = 'team.delete' and organization_id = $1 order by target",
      [org],
    );
    expect(teamEvents).toEqual(teams.map((id) => ({ target: id, details: { name: id } })));
    const orgEvents = await t.db.query<{ details: unknown }>("select details from audit_events where action = 'organization.delete' and organization_id = $1", [
      org,
    ]);
    expect(orgEvents).toEqual([
      { details: { name: "Leaving Ltd", cascade: true, deleted_credentials: 65, deleted_teams: 3, deleted_selection_strategies: 1 } },
    ]);
    // The organisation's event comes last, after every credential's and team's.
    const order = await t.db.query<{ action: string }>("select action from audit_events where organization_id = $1 and action like '%.delete' order by id", [
      org,
    ]);
    expect(order.at(-1)?.action).toBe("organization.delete");
    const all = JSON.stringify(await t.db.query("select * from audit_events where organization_id = $1", [org]));
    for (const m of made) expect(all).not.toContain(m.key);

    expect(await rpcError(creds().resolveKey({ scope: { case: "organizationId", value: org }, provider: Provider.ANTHROPIC }))).toEqual({
      code: Code.NotFound,
      message: `organization "${org}" not found`,
    });
    expect(await rpcError(creds().resolveKey({ scope: { case: "teamId", value: "leaving-t1" }, provider: Provider.GEMINI }))).toEqual({
      code: Code.NotFound,
      message: 'team "leaving-t1" not found',
    });
  });

  it("without cascade, an organisation with credentials or teams is still FAILED_PRECONDITION, and nothing is deleted", async () => {
    await orgs().createOrganization({ organizationId: "staying", name: "Staying" });
    await credential("staying");
    await orgs().createTeam({ teamId: "staying-t", organizationId: "staying", name: "T" });
    const before = await t.db.query("select id from provider_credentials where organization_id = 'staying'");
    for (const cascade of [undefined, false]) {
      expect(await rpcRefusal(orgs().deleteOrganization({ organizationId: "staying", cascade }))).toEqual({
        code: Code.FailedPrecondition,
        message: 'organization "staying" still has 1 credential and 1 team; delete them first, so that nothing is lost by accident',
        reason: "ORGANIZATION_IN_USE",
        field: undefined,
      });
    }
    expect(await t.db.query("select id from provider_credentials where organization_id = 'staying'")).toEqual(before);
    expect(await t.db.query("select id from teams where organization_id = 'staying'")).toEqual([{ id: "staying-t" }]);
    expect(await t.db.query("select id from audit_events where action = 'organization.delete' and organization_id = 'staying'")).toEqual([]);
  });

  it("an empty organisation goes with or without cascade; an unknown one is NOT_FOUND", async () => {
    await orgs().createOrganization({ organizationId: "empty-cascade", name: "E" });
    expect(await orgs().deleteOrganization({ organizationId: "empty-cascade", cascade: true })).toMatchObject({ deletedCredentials: 0, deletedTeams: 0 });
    expect(await rpcError(orgs().deleteOrganization({ organizationId: "empty-cascade", cascade: true }))).toEqual({
      code: Code.NotFound,
      message: 'organization "empty-cascade" not found',
    });
  });

  it("a caller limited to another organisation is refused, and nothing is deleted", async () => {
    const { token } = await t.service.parts.tokens.create("cascade-limited", "admin", "test", { organizationIds: ["batch-a"] });
    await credential("batch-b");
    const before = await t.db.query("select id from provider_credentials where organization_id = 'batch-b' order by id");
    expect(await rpcError(t.clients(token).organizations.deleteOrganization({ organizationId: "batch-b", cascade: true }))).toEqual({
      code: Code.PermissionDenied,
      message: 'organization_id: "batch-b" is not an organization this caller may access',
    });
    expect(await t.db.query("select id from provider_credentials where organization_id = 'batch-b' order by id")).toEqual(before);
  });

  describe("made for a portal account", () => {
    const as = (session: string) => t.clients(t.adminToken, { [ACTOR_HEADER]: OWNER, [SESSION_HEADER]: session }).organizations;

    it("needs a sign-in within 10 minutes (REAUTHENTICATION_REQUIRED), while a plain delete does not", async () => {
      await orgs().createOrganization({ organizationId: "stale-offboard", name: "S" });
      await credential("stale-offboard");
      await orgs().createOrganization({ organizationId: "stale-empty", name: "S" });
      const session = await signIn();
      await age(session, 11);
      const err = await rpcRefusal(as(session).deleteOrganization({ organizationId: "stale-offboard", cascade: true }));
      expect(err).toMatchObject({ code: Code.FailedPrecondition, reason: "REAUTHENTICATION_REQUIRED" });
      expect(err.message).toMatch(/^deleting an organization with its credentials and teams needs a sign-in within the last 10 minutes/);
      expect(await t.db.query("select count(*)::int as n from provider_credentials where organization_id = 'stale-offboard'")).toEqual([{ n: 1 }]);
      // Without a session at all, refused too.
      const none = t.clients(t.adminToken, { [ACTOR_HEADER]: OWNER }).organizations;
      expect((await rpcRefusal(none.deleteOrganization({ organizationId: "stale-offboard", cascade: true }))).reason).toBe("REAUTHENTICATION_REQUIRED");
      // A delete that destroys nothing is not sensitive.
      await as(session).deleteOrganization({ organizationId: "stale-empty" });

      const fresh = await signIn();
      expect(await as(fresh).deleteOrganization({ organizationId: "stale-offboard", cascade: true })).toMatchObject({ deletedCredentials: 1, deletedTeams: 0 });
      const [event] = await t.db.query<{ actor: string }>(
        "select actor from audit_events where action = 'organization.delete' and organization_id = 'stale-offboard'",
      );
      expect(event.actor).toBe(`${OWNER} (owner) via token:service-admin-token`);
    });
  });
});

describe("DeleteOrganization with cascade racing with a team being added", () => {
  it("waits for it and deletes it with the rest: no foreign-key error, nothing left behind", async () => {
    await orgs().createOrganization({ organizationId: "racing", name: "Racing" });
    await credential("racing");
    const other = new pg.Client({ connectionString: t.db.url });
    await other.connect();
    try {
      // Another session adds a team but has not committed yet: the cascade waits on the organisation's row.
      await other.query("begin");
      await other.query("insert into teams (id, organization_id, name, created_at, updated_at) values ('late', 'racing', 'Late', now(), now())");
      const pending = orgs().deleteOrganization({ organizationId: "racing", cascade: true });
      const deadline = Date.now() + 10_000;
      for (;;) {
        const waiting = await t.db.query(
          "select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query ilike '%from \"organizations\"%for update%'",
        );
        if (waiting.length > 0) break;
        if (Date.now() > deadline) throw new Error("the cascade never waited for the organisation's row");
        await new Promise((r) => setTimeout(r, 50));
      }
      await other.query("commit");
      expect(await pending).toMatchObject({ deletedCredentials: 1, deletedTeams: 1 });
    } finally {
      await other.end();
    }
    expect(await t.db.query("select id from teams where organization_id = 'racing'")).toEqual([]);
    expect(await t.db.query("select target from audit_events where action = 'team.delete' and organization_id = 'racing'")).toEqual([{ target: "late" }]);
  });
});
