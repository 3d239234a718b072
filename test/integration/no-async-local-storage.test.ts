// Writes run in transactions without AsyncLocalStorage (inTransaction, service/src/db/orm.ts). On Node 20 the
// first AsyncLocalStorage.run() in a process turns on a promise hook for good, which every later promise pays
// for, ResolveKey's included; em.transactional() ran every write inside MikroORM's TransactionContext, one such
// storage, and MikroORM's flush runs inside another (UnitOfWork's "inside flush" guard). So no write flushes:
// each is an explicit statement in the transaction, and inTransaction commits without a flush. These tests run
// the real service in this process, as a replica would, and check:
//   - its start-up, its reads and every kind of write it makes (through the API, the admin CLI's store, the
//     helper directly) leave the process without a promise hook;
//   - inTransaction is still a transaction: a failure rolls every statement back (leaving the pool whole), and
//     a commit is what makes the rows visible to other connections;
//   - a change left for a flush (em.create, em.remove, a changed loaded entity) fails loudly and writes nothing.
// The promise hook, once on, stays on: every test here checks it is still off when it ends.
import type { AuditAction } from "@provider-credentials/wire/audit-actions";
import { executionAsyncId } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { RequestContext, TransactionContext } from "@mikro-orm/core";
import type { EntityManager } from "@mikro-orm/postgresql";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { startFakeProvider, type FakeProvider } from "../support/fake-provider.js";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { FailureKind, KeyCheckOutcome, Provider, SelectionStrategy } from "@provider-credentials/wire/gen/credentials_pb";
import { inTransaction } from "../../service/src/db/orm.js";
import { AuditEventEntity, OrganizationEntity } from "../../service/src/db/entities.js";
import { recordAudit } from "../../service/src/audit/audit-store.js";
import { bindLegacyRows, listLegacyRows } from "../../service/src/credentials/rewrap.js";

let t: TestService;
/** A provider that accepts every key, for VerifyCredential. */
let fake: FakeProvider;
/** Whether the process had a promise hook before the service started (vitest's worker should not). */
let hookBeforeStart: boolean;

/**
 * Whether any async hook watches promises in this process (what an enabled AsyncLocalStorage installs on
 * Node 20): without one, code resumed after an await runs with execution async id 0; with one, every promise
 * gets an id of its own.
 */
async function promiseHookEnabled(): Promise<boolean> {
  await null;
  return executionAsyncId() !== 0;
}

/**
 * Node 20's AsyncLocalStorage sets `enabled` on its first run() or enterWith(), and it stays set. (MikroORM's
 * storages are private in its typings, hence the bracket access.)
 */
function enabled(storage: unknown): boolean {
  const flag = (storage as { enabled?: unknown }).enabled;
  if (typeof flag !== "boolean") throw new Error("this Node's AsyncLocalStorage has no `enabled` flag; the test needs another way to tell");
  return flag;
}

beforeAll(async () => {
  hookBeforeStart = await promiseHookEnabled();
  fake = await startFakeProvider({ unknownKey: "valid" });
  t = await startTestService();
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
});

const now = () => new Date();
/** What the service records as the actor of a call with SERVICE_ADMIN_TOKEN. */
const ADMIN_ACTOR = "token:service-admin-token";

describe("no AsyncLocalStorage in the service process", () => {
  // First in the file: whatever turned the hook on would leave it on for the rest of the process.
  it("starts (migrations, counting legacy rows), resolves keys and runs plain-SQL transactions without a promise hook", async () => {
    expect(hookBeforeStart, "the test process had a promise hook before the service started").toBe(false);
    expect(await promiseHookEnabled()).toBe(false);
    // Transactions of plain SQL statements: binding legacy rows (none listed), a success report with
    // nothing to reset, and one through the helper directly.
    expect(await bindLegacyRows(t.service.orm, t.service.parts.keyring, await listLegacyRows(t.service.orm, t.service.parts.keyring), "test")).toEqual({
      bound: [],
      skipped: [],
    });
    expect(await t.clients().credentials.reportKeySuccess({ credentialIds: [randomUUID()] })).toMatchObject({ recovered: 0 });
    await inTransaction(t.service.orm, async (em) => {
      await em.getConnection().execute("select pg_notify('no-als-test', 'x')", [], "run", em.getTransactionContext());
    });
    // The hot path: a credential written out of band (so that this test depends on no write path), then
    // resolved, its use recorded; and a "not found".
    const organizationId = `hot-${randomUUID().slice(0, 8)}`;
    const id = randomUUID();
    const apiKey = FAKE_KEYS.openai();
    const { token, keyId, binding } = t.service.parts.keyring.encryptBound(apiKey, { id, organizationId, provider: "openai", apiBase: null });
    await t.db.query("insert into organizations (id, name, created_at, updated_at) values ($1, $1, now(), now())", [organizationId]);
    await t.db.query(
      `insert into provider_credentials (id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_binding, key_hint,
         api_base, is_active, activated_at, version, created_at, updated_at, created_by, updated_by, weight, use_count, key_set_at)
       values ($1, $2, 'openai', 'hot', $3, $4, $5, 'sk-...', null, true, now(), 1, now(), now(), 'test', 'test', 1, 0, now())`,
      [id, organizationId, token, keyId, binding],
    );
    const { credentials } = t.clients();
    for (let i = 0; i < 3; i++) {
      expect(await credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider: Provider.OPENAI })).toMatchObject({
        apiKey,
        credentialId: id,
      });
    }
    await t.service.parts.resolver.flushUsage();
    expect(await t.db.query("select use_count::int as n from provider_credentials where id = $1", [id])).toEqual([{ n: 3 }]);
    expect((await rpcError(credentials.resolveKey({ scope: { case: "organizationId", value: "nobody" }, provider: Provider.OPENAI }))).code).toBe(
      Code.NotFound,
    );
    expect(await promiseHookEnabled()).toBe(false);
    expect(enabled(TransactionContext["storage"])).toBe(false);
    expect(enabled(RequestContext["storage"])).toBe(false);
  });

  it("makes every kind of write (organisations, teams, credentials, key health, strategies, administrators, tokens) without a promise hook", async () => {
    const { organizations, credentials } = t.clients();
    const admin = createClient(AdminService, t.transport("grpc", t.adminToken));
    /** Each write is checked on its own, so that a failure names the one that turned the hook on. */
    const hookStaysOff = async (after: string) => expect(await promiseHookEnabled(), `the promise hook is on after ${after}`).toBe(false);
    const organizationId = `no-als-${randomUUID().slice(0, 8)}`;
    const teamId = `${organizationId}-team`;
    const credentialRow = async (id: string) =>
      (
        await t.db.query<{
          credential_name: string;
          version: number;
          updated_by: string;
          weight: number;
          is_active: boolean;
          failure_streak: number;
          failing: boolean;
          check_outcome: string | null;
        }>(
          `select credential_name, version, updated_by, weight, is_active, failure_streak, failing_since is not null as failing, check_outcome
           from provider_credentials where id = $1`,
          [id],
        )
      )[0];

    // Organisations and teams, and a refused duplicate (a unique violation, mapped as before).
    await organizations.createOrganization({ organizationId, name: "No ALS" });
    await hookStaysOff("CreateOrganization");
    expect((await rpcError(organizations.createOrganization({ organizationId, name: "again" }))).code).toBe(Code.AlreadyExists);
    await organizations.createTeam({ teamId, organizationId, name: "Team" });
    await hookStaysOff("CreateTeam");
    expect((await rpcError(organizations.createTeam({ teamId: `${teamId}-2`, organizationId: "nobody", name: "x" }))).code).toBe(Code.NotFound);
    await hookStaysOff("refused CreateOrganization and CreateTeam");

    // Credentials: create, a refused duplicate name, an unknown organisation (a foreign key violation).
    const { credential } = await credentials.createCredential({
      organizationId,
      provider: Provider.OPENAI,
      credentialName: "main",
      apiKey: FAKE_KEYS.openai(),
      apiBase: fake.baseUrl("openai"),
    });
    const credentialId = credential!.credentialId;
    expect(credential).toMatchObject({ version: 1, credentialName: "main", updatedBy: ADMIN_ACTOR });
    await hookStaysOff("CreateCredential");
    expect(
      (await rpcError(credentials.createCredential({ organizationId, provider: Provider.OPENAI, credentialName: "MAIN", apiKey: FAKE_KEYS.openai() }))).code,
    ).toBe(Code.AlreadyExists);
    expect(
      (await rpcError(credentials.createCredential({ organizationId: "nobody", provider: Provider.OPENAI, credentialName: "x", apiKey: FAKE_KEYS.openai() })))
        .code,
    ).toBe(Code.NotFound);
    await hookStaysOff("refused CreateCredential");

    // Updates: name and weight at the expected version; a stale expected version; a name taken by another
    // credential; a new key; a new api_base (the stored key rebound).
    const { credential: other } = await credentials.createCredential({
      organizationId,
      provider: Provider.OPENAI,
      credentialName: "other",
      apiKey: FAKE_KEYS.openai(),
    });
    const renamed = (await credentials.updateCredential({ credentialId, credentialName: "renamed", weight: 7, expectedVersion: 1 })).credential!;
    expect(renamed).toMatchObject({ version: 2, credentialName: "renamed", weight: 7 });
    expect(await credentialRow(credentialId)).toMatchObject({ credential_name: "renamed", version: 2, weight: 7, updated_by: ADMIN_ACTOR });
    await hookStaysOff("UpdateCredential");
    const stale = await rpcError(credentials.updateCredential({ credentialId, credentialName: "stale", expectedVersion: 1 }));
    expect(stale).toMatchObject({ code: Code.Aborted, message: expect.stringMatching(/^expected_version: the credential is at version 2, not 1/) });
    expect((await rpcError(credentials.updateCredential({ credentialId, credentialName: "OTHER" }))).code).toBe(Code.AlreadyExists);
    expect(await credentialRow(credentialId)).toMatchObject({ credential_name: "renamed", version: 2 });
    await hookStaysOff("refused UpdateCredential");
    const newKey = FAKE_KEYS.openai();
    const rekeyed = (await credentials.updateCredential({ credentialId, apiKey: newKey })).credential!;
    expect(rekeyed.version).toBe(3);
    const newBase = `${fake.baseUrl("openai")}/v1`;
    const rebased = (await credentials.updateCredential({ credentialId, apiBase: newBase, apiKey: newKey })).credential!;
    expect(rebased).toMatchObject({ version: 4, apiBase: newBase });
    await hookStaysOff("UpdateCredential with a new key and api_base");
    await credentials.deleteCredential({ credentialId: other!.credentialId });
    // The new key and api_base were stored as one row that still opens (the key bound to the new api_base).
    const resolved = await credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider: Provider.OPENAI });
    expect(resolved).toMatchObject({ credentialId, apiKey: newKey, apiBase: newBase });

    // Selection strategy: set (a new row), then changed (an update).
    await credentials.setSelectionStrategy({ organizationId, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    await credentials.setSelectionStrategy({ organizationId, provider: Provider.OPENAI, strategy: SelectionStrategy.WEIGHTED });
    expect(await t.db.query("select strategy, updated_by from selection_strategies where organization_id = $1", [organizationId])).toEqual([
      { strategy: "weighted", updated_by: ADMIN_ACTOR },
    ]);
    await hookStaysOff("SetSelectionStrategy");

    // Key health: failures until marked failing, a verification that passes (recovers it), failing again, a
    // success report that recovers it; and a failure kind that does not count (no write).
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId, kind: FailureKind.AUTHENTICATION });
    expect(await credentialRow(credentialId)).toMatchObject({ failure_streak: 3, failing: true, version: 4 });
    await credentials.reportKeyFailure({ credentialId, kind: FailureKind.RATE_LIMIT });
    await hookStaysOff("ReportKeyFailure");
    const verified = await credentials.verifyCredential({ credentialId });
    expect(verified.check?.outcome).toBe(KeyCheckOutcome.VALID);
    expect(verified.credential).toMatchObject({ failureStreak: 0, failing: false });
    expect(await credentialRow(credentialId)).toMatchObject({ failure_streak: 0, failing: false, check_outcome: "valid", version: 4 });
    await hookStaysOff("VerifyCredential");
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId, kind: FailureKind.QUOTA });
    expect(await credentials.reportKeySuccess({ credentialIds: [credentialId] })).toMatchObject({ recovered: 1 });
    expect(await credentialRow(credentialId)).toMatchObject({ failure_streak: 0, failing: false });
    await hookStaysOff("ReportKeySuccess");

    // Deactivate, activate, delete; then the team and the organisation (refused while they hold something).
    await credentials.deactivateCredential({ credentialId });
    expect(await credentialRow(credentialId)).toMatchObject({ is_active: false, version: 5 });
    await credentials.activateCredential({ credentialId });
    expect(await credentialRow(credentialId)).toMatchObject({ is_active: true, version: 6 });
    await hookStaysOff("DeactivateCredential and ActivateCredential");
    expect((await rpcError(organizations.deleteOrganization({ organizationId }))).code).toBe(Code.FailedPrecondition);
    await credentials.deleteCredential({ credentialId });
    await organizations.deleteTeam({ teamId });
    await organizations.deleteOrganization({ organizationId });
    expect(await t.db.query("select 1 from organizations where id = $1", [organizationId])).toEqual([]);
    expect((await rpcError(credentials.deleteCredential({ credentialId }))).code).toBe(Code.NotFound);
    await hookStaysOff("DeleteCredential, DeleteTeam and DeleteOrganization");

    // Every write has its audit row, and the refused ones none.
    const actions = await t.db.query<{ action: string }>("select action from audit_events where organization_id = $1 order by id", [organizationId]);
    expect(actions.map((r) => r.action)).toEqual([
      "organization.create",
      "team.create",
      "credential.create",
      "credential.create",
      "credential.update",
      "credential.update",
      "credential.update",
      "credential.delete",
      "selection_strategy.set",
      "selection_strategy.set",
      "credential.failing",
      "credential.verify",
      "credential.recovered",
      "credential.failing",
      "credential.recovered",
      "credential.deactivate",
      "credential.activate",
      "credential.delete",
      "team.delete",
      "organization.delete",
    ]);

    // Administrators (the admin CLI's store, then the portal's RPCs) and API tokens.
    const email = `${organizationId}@example.com`;
    const by = { actor: "test", source: null };
    await t.service.parts.admins.create(email, "first password 123", by);
    await hookStaysOff("creating an administrator");
    await t.service.parts.admins.resetPassword(email, "second password 123", by);
    await hookStaysOff("resetting a password");
    const { sessionToken } = await admin.signIn({ email, password: "second password 123", source: "192.0.2.1" });
    await hookStaysOff("SignIn");
    expect((await rpcError(admin.signIn({ email, password: "first password 123", source: "192.0.2.1" }))).code).toBe(Code.Unauthenticated);
    await hookStaysOff("a failed SignIn");
    await admin.signOut({ sessionToken });
    await hookStaysOff("SignOut");
    const tokenName = `${organizationId}-token`;
    await admin.createApiToken({ name: tokenName, scope: "resolve" });
    expect((await rpcError(admin.createApiToken({ name: tokenName, scope: "resolve" }))).code).toBe(Code.AlreadyExists);
    await hookStaysOff("CreateApiToken");
    await admin.revokeApiToken({ name: tokenName });
    expect((await rpcError(admin.revokeApiToken({ name: tokenName }))).code).toBe(Code.NotFound);
    await hookStaysOff("RevokeApiToken");
    const adminActions = await t.db.query<{ action: string }>("select action from audit_events where target in ($1, $2) order by id", [email, tokenName]);
    expect(adminActions.map((r) => r.action)).toEqual([
      "admin.create",
      "admin.reset_password",
      "admin.sign_in",
      "admin.sign_in_failed",
      "admin.sign_out",
      "token.create",
      "token.revoke",
    ]);

    expect(enabled(TransactionContext["storage"])).toBe(false);
    expect(enabled(RequestContext["storage"])).toBe(false);
  });
});

describe("inTransaction", () => {
  const orm = () => t.service.orm;
  const organizationRow = (id: string) => ({ id, name: id, createdAt: now(), updatedAt: now() });
  const rows = (id: string) => t.db.query("select id from organizations where id = $1", [id]);
  const insertRaw = (em: EntityManager, id: string) =>
    em
      .getConnection()
      .execute("insert into organizations (id, name, created_at, updated_at) values (?, ?, now(), now())", [id, id], "run", em.getTransactionContext());

  afterEach(async () => {
    expect(await promiseHookEnabled(), "the promise hook is on").toBe(false);
  });

  it("commits: the rows appear to other connections only once it resolves, and it returns what `work` returns", async () => {
    const id = `commit-${randomUUID().slice(0, 8)}`;
    const result = await inTransaction(orm(), async (em) => {
      expect(em.isInTransaction()).toBe(true);
      await insertRaw(em, id);
      await em.insert(OrganizationEntity, organizationRow(`${id}-entity`));
      await recordAudit(em, { actor: "test", action: "test.commit" as AuditAction, organizationId: id });
      // Visible in the transaction, and not yet to another connection.
      expect(await em.count(OrganizationEntity, { id: { $in: [id, `${id}-entity`] } })).toBe(2);
      expect(await rows(id)).toEqual([]);
      expect(await rows(`${id}-entity`)).toEqual([]);
      return "done";
    });
    expect(result).toBe("done");
    expect(await rows(id)).toEqual([{ id }]);
    expect(await rows(`${id}-entity`)).toEqual([{ id: `${id}-entity` }]);
    expect(await t.db.query("select action from audit_events where organization_id = $1", [id])).toEqual([{ action: "test.commit" as AuditAction }]);
  });

  it("forks the EntityManager it is given, and the one it hands to `work` is not the caller's", async () => {
    const id = `fork-${randomUUID().slice(0, 8)}`;
    const outer = orm().em.fork();
    await inTransaction(outer, async (em) => {
      expect(em).not.toBe(outer);
      expect(outer.isInTransaction()).toBe(false);
      await em.insert(OrganizationEntity, organizationRow(id));
    });
    expect(await rows(id)).toEqual([{ id }]);
  });

  it("runs em.insert, insertMany, nativeUpdate, nativeDelete and SQL in its transaction: a throw after them leaves nothing behind, and rethrows", async () => {
    const id = `rollback-${randomUUID().slice(0, 8)}`;
    await t.db.query("insert into organizations (id, name, created_at, updated_at) values ($1, 'before', now(), now()), ($2, 'before', now(), now())", [
      `${id}-kept`,
      `${id}-doomed`,
    ]);
    const boom = new Error("boom");
    const error = await inTransaction(orm(), async (em) => {
      await insertRaw(em, `${id}-raw`);
      await em.insert(OrganizationEntity, organizationRow(`${id}-entity`));
      await em.insertMany(OrganizationEntity, [organizationRow(`${id}-many-1`), organizationRow(`${id}-many-2`)]);
      expect(await em.nativeUpdate(OrganizationEntity, { id: `${id}-kept` }, { name: "changed" })).toBe(1);
      expect(await em.nativeDelete(OrganizationEntity, { id: `${id}-doomed` })).toBe(1);
      await recordAudit(em, { actor: "test", action: "test.rolled_back" as AuditAction, organizationId: id });
      // The transaction sees its own writes, another connection none of them.
      expect(await em.count(OrganizationEntity, { id: { $like: `${id}-%` } })).toBe(5);
      expect((await em.findOne(OrganizationEntity, { id: `${id}-kept` }))?.name).toBe("changed");
      expect(await t.db.query("select id, name from organizations where id like $1 order by id", [`${id}-%`])).toEqual([
        { id: `${id}-doomed`, name: "before" },
        { id: `${id}-kept`, name: "before" },
      ]);
      throw boom;
    }).catch((e: unknown) => e);
    expect(error).toBe(boom);
    expect(await t.db.query("select id, name from organizations where id like $1 order by id", [`${id}-%`])).toEqual([
      { id: `${id}-doomed`, name: "before" },
      { id: `${id}-kept`, name: "before" },
    ]);
    expect(await t.db.query("select 1 from audit_events where action = 'test.rolled_back' and organization_id = $1", [id])).toEqual([]);
  });

  it("reads without flushing, and commits what it loaded unchanged", async () => {
    const id = `read-${randomUUID().slice(0, 8)}`;
    await t.db.query("insert into organizations (id, name, created_at, updated_at) values ($1, $1, now(), now())", [id]);
    const name = await inTransaction(orm(), async (em) => {
      const row = await em.findOne(OrganizationEntity, { id });
      expect(await em.count(OrganizationEntity, { id })).toBe(1);
      expect(await em.find(OrganizationEntity, { id: { $in: [id] } })).toEqual([row]);
      await em.nativeUpdate(OrganizationEntity, { id }, { name: "renamed" });
      return row!.name;
    });
    expect(name).toBe(id);
    expect(await t.db.query("select name from organizations where id = $1", [id])).toEqual([{ name: "renamed" }]);
  });

  it("refuses to commit what only a flush would write (em.create, em.persist, em.remove, a changed loaded entity): a programming error, and nothing is written", async () => {
    const id = `unflushed-${randomUUID().slice(0, 8)}`;
    await t.db.query("insert into organizations (id, name, created_at, updated_at) values ($1, 'loaded', now(), now())", [`${id}-loaded`]);
    const attempts: Array<[string, (em: EntityManager) => Promise<void>, RegExp]> = [
      ["em.create", async (em) => void em.create(OrganizationEntity, organizationRow(`${id}-created`)), /create Organization/],
      [
        "em.create, then a read that would have auto-flushed it",
        async (em) => {
          em.create(OrganizationEntity, organizationRow(`${id}-created`));
          expect(await em.count(OrganizationEntity, { id: `${id}-created` })).toBe(0);
        },
        /create Organization/,
      ],
      [
        "em.persist",
        async (em) =>
          void em.persist(
            em.create(AuditEventEntity, {
              occurredAt: now(),
              actor: "test",
              action: "test.unflushed" as AuditAction,
              organizationId: id,
              credentialId: null,
              target: null,
              source: null,
              details: {},
            }),
          ),
        /create AuditEvent/,
      ],
      ["em.remove", async (em) => void em.remove((await em.findOne(OrganizationEntity, { id: `${id}-loaded` }))!), /delete Organization/],
      ["a changed loaded entity", async (em) => void ((await em.findOne(OrganizationEntity, { id: `${id}-loaded` }))!.name = "changed"), /update Organization/],
    ];
    for (const [what, change, named] of attempts) {
      const error = await inTransaction(orm(), async (em) => {
        await insertRaw(em, `${id}-raw`);
        await recordAudit(em, { actor: "test", action: "test.unflushed" as AuditAction, organizationId: id });
        await change(em);
      }).catch((e: unknown) => e);
      expect(error, what).toBeInstanceOf(Error);
      expect((error as Error).message, what).toMatch(/^programming error: inTransaction never flushes/);
      expect((error as Error).message, what).toMatch(named);
    }
    expect(await t.db.query("select id, name from organizations where id like $1 order by id", [`${id}-%`])).toEqual([{ id: `${id}-loaded`, name: "loaded" }]);
    expect(await t.db.query("select 1 from audit_events where organization_id = $1", [id])).toEqual([]);
  });

  it("rolls back when the COMMIT fails, and rethrows the database's error", async () => {
    const id = `commit-fails-${randomUUID().slice(0, 8)}`;
    const error = await inTransaction(orm(), async (em) => {
      await em.insert(OrganizationEntity, organizationRow(id));
      await recordAudit(em, { actor: "test", action: "test.commit_failed" as AuditAction, organizationId: id });
      await failAtCommit(em);
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "23505" });
    expect(await rows(id)).toEqual([]);
    expect(await t.db.query("select 1 from audit_events where organization_id = $1", [id])).toEqual([]);
  });

  it("returns its connection to the pool whatever happens: many more failed transactions than connections, then a good one", async () => {
    const id = `pool-${randomUUID().slice(0, 8)}`;
    await inTransaction(orm(), async (em) => {
      await em.insert(OrganizationEntity, organizationRow(`${id}-taken`));
    });
    // The harness gives the service 5 connections, each waited for at most 1.5 s: a leaked one would show.
    for (let i = 0; i < 15; i++) {
      const failure = i % 5;
      await expect(
        inTransaction(orm(), async (em) => {
          await em.insert(OrganizationEntity, organizationRow(`${id}-${i}`));
          if (failure === 0) throw new Error("work failed");
          // A failed statement: PostgreSQL aborts the transaction.
          if (failure === 1) await em.getConnection().execute("select * from no_such_table", [], "all", em.getTransactionContext());
          // A duplicate primary key.
          if (failure === 2) await em.insert(OrganizationEntity, organizationRow(`${id}-taken`));
          // Something left for a flush.
          if (failure === 3) em.create(OrganizationEntity, organizationRow(`${id}-created-${i}`));
          // The COMMIT fails.
          if (failure === 4) await failAtCommit(em);
        }),
      ).rejects.toThrow();
    }
    expect(await t.db.query("select id from organizations where id like $1 order by id", [`${id}-%`])).toEqual([{ id: `${id}-taken` }]);
    await inTransaction(orm(), async (em) => {
      await em.insert(OrganizationEntity, organizationRow(id));
    });
    expect(await rows(id)).toEqual([{ id }]);
    const open = await t.db.query("select count(*)::int as n from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'");
    expect(open).toEqual([{ n: 0 }]);
  });
});

/** Makes the transaction's COMMIT fail: a deferred unique constraint is checked only then. */
async function failAtCommit(em: EntityManager): Promise<void> {
  const run = (sql: string) => em.getConnection().execute(sql, [], "run", em.getTransactionContext());
  await run("create temporary table commit_check (id int primary key deferrable initially deferred) on commit drop");
  await run("insert into commit_check values (1), (1)");
}
