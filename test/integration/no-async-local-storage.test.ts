// Writes run in transactions without AsyncLocalStorage (inTransaction, service/src/db/orm.ts). On Node 20 the
// first AsyncLocalStorage.run() in a process turns on a promise hook for good, which every later promise pays
// for, ResolveKey's included; em.transactional() ran every write inside MikroORM's TransactionContext, one such
// storage. These tests run the real service in this process, as a replica would, and check:
//   - its start-up and its plain-SQL transactions turn on no promise hook at all;
//   - writes through the API never enter MikroORM's TransactionContext or RequestContext;
//   - inTransaction is still a transaction: a failure rolls everything back (leaving the pool whole), and a
//     commit is what makes the rows visible to other connections.
// A write that flushes entities (every audited change) does still turn the hook on: MikroORM's flush runs in
// an AsyncLocalStorage of its own (UnitOfWork's "inside flush" guard). That part is not checked here.
import { executionAsyncId } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { RequestContext, TransactionContext } from "@mikro-orm/core";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { FailureKind, Provider, SelectionStrategy } from "../../service/src/gen/credentials_pb.js";
import { inTransaction } from "../../service/src/db/orm.js";
import { AuditEventEntity, OrganizationEntity } from "../../service/src/db/entities.js";
import { recordAudit } from "../../service/src/audit/audit-store.js";
import { bindLegacyRows } from "../../service/src/keyring/rewrap.js";

let t: TestService;
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
  t = await startTestService();
});
afterAll(async () => {
  await t?.close();
});

const now = () => new Date();

describe("no AsyncLocalStorage in the service process", () => {
  // First in the file: any flush later on turns the hook on for the rest of the process.
  it("starts (migrations, binding legacy rows in a transaction), resolves keys and runs plain-SQL transactions without a promise hook", async () => {
    expect(hookBeforeStart, "the test process had a promise hook before the service started").toBe(false);
    expect(await promiseHookEnabled()).toBe(false);
    // Transactions of plain SQL statements: binding legacy rows (also run at start-up), a success report with
    // nothing to reset, and one through the helper directly.
    expect(await bindLegacyRows(t.service.orm, t.service.parts.keyring)).toBe(0);
    expect(await t.clients().credentials.reportKeySuccess({ credentialIds: [randomUUID()] })).toMatchObject({ recovered: 0 });
    await inTransaction(t.service.orm, async (em) => {
      await em.getConnection().execute("select pg_notify('no-als-test', 'x')", [], "run", em.getTransactionContext());
    });
    // The hot path: a credential written out of band (through the service it would be flushed), then resolved,
    // its use recorded; and a "not found".
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
      expect(await credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider: Provider.OPENAI })).toMatchObject({ apiKey, credentialId: id });
    }
    await t.service.parts.resolver.flushUsage();
    expect(await t.db.query("select use_count::int as n from provider_credentials where id = $1", [id])).toEqual([{ n: 3 }]);
    expect((await rpcError(credentials.resolveKey({ scope: { case: "organizationId", value: "nobody" }, provider: Provider.OPENAI }))).code).toBe(Code.NotFound);
    expect(await promiseHookEnabled()).toBe(false);
    expect(enabled(TransactionContext["storage"])).toBe(false);
    expect(enabled(RequestContext["storage"])).toBe(false);
  });

  it("creates, updates, deactivates, reports on and deletes organisations, teams and credentials without MikroORM's TransactionContext or RequestContext", async () => {
    const { organizations, credentials } = t.clients();
    const organizationId = `no-als-${randomUUID().slice(0, 8)}`;
    await organizations.createOrganization({ organizationId, name: "No ALS" });
    await organizations.createTeam({ teamId: `${organizationId}-team`, organizationId, name: "Team" });
    const { credential } = await credentials.createCredential({
      organizationId,
      provider: Provider.OPENAI,
      credentialName: "main",
      apiKey: FAKE_KEYS.openai(),
    });
    const credentialId = credential!.credentialId;
    await credentials.updateCredential({ credentialId, credentialName: "renamed" });
    await credentials.setSelectionStrategy({ organizationId, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId, kind: FailureKind.AUTHENTICATION });
    expect(await credentials.reportKeySuccess({ credentialIds: [credentialId] })).toMatchObject({ recovered: 1 });
    await credentials.deactivateCredential({ credentialId });
    await credentials.activateCredential({ credentialId });
    await credentials.deleteCredential({ credentialId });
    await organizations.deleteTeam({ teamId: `${organizationId}-team` });
    await organizations.deleteOrganization({ organizationId });
    await t.service.parts.admins.create(`no-als-${randomUUID().slice(0, 8)}@example.com`, undefined, { actor: "test", source: null });

    // The writes happened, each with its audit row.
    expect(await t.db.query("select 1 from organizations where id = $1", [organizationId])).toEqual([]);
    const actions = await t.db.query<{ action: string }>("select action from audit_events where organization_id = $1 order by id", [organizationId]);
    expect(actions.map((r) => r.action)).toEqual([
      "organization.create",
      "team.create",
      "credential.create",
      "credential.update",
      "selection_strategy.set",
      "credential.failing",
      "credential.recovered",
      "credential.deactivate",
      "credential.activate",
      "credential.delete",
      "team.delete",
      "organization.delete",
    ]);
    expect(enabled(TransactionContext["storage"])).toBe(false);
    expect(enabled(RequestContext["storage"])).toBe(false);
  });
});

describe("inTransaction", () => {
  const orm = () => t.service.orm;
  const organizationRow = (id: string) => ({ id, name: id, createdAt: now(), updatedAt: now() });
  const rows = (id: string) => t.db.query("select id from organizations where id = $1", [id]);

  it("commits: the rows appear to other connections only once it resolves, and it returns what `work` returns", async () => {
    const id = `commit-${randomUUID().slice(0, 8)}`;
    const result = await inTransaction(orm(), async (em) => {
      expect(em.isInTransaction()).toBe(true);
      await em.getConnection().execute("insert into organizations (id, name, created_at, updated_at) values (?, ?, now(), now())", [id, id], "run", em.getTransactionContext());
      em.create(OrganizationEntity, organizationRow(`${id}-entity`));
      recordAudit(em, { actor: "test", action: "test.commit", organizationId: id });
      // Not committed yet: another connection sees nothing.
      expect(await rows(id)).toEqual([]);
      return "done";
    });
    expect(result).toBe("done");
    expect(await rows(id)).toEqual([{ id }]);
    expect(await rows(`${id}-entity`)).toEqual([{ id: `${id}-entity` }]);
    expect(await t.db.query("select action from audit_events where organization_id = $1", [id])).toEqual([{ action: "test.commit" }]);
  });

  it("forks the EntityManager it is given, and the one it hands to `work` is not the caller's", async () => {
    const id = `fork-${randomUUID().slice(0, 8)}`;
    const outer = orm().em.fork();
    await inTransaction(outer, async (em) => {
      expect(em).not.toBe(outer);
      expect(outer.isInTransaction()).toBe(false);
      em.create(OrganizationEntity, organizationRow(id));
    });
    expect(await rows(id)).toEqual([{ id }]);
  });

  it("rolls back when `work` throws after writing, and rethrows that error", async () => {
    const id = `rollback-${randomUUID().slice(0, 8)}`;
    const boom = new Error("boom");
    const error = await inTransaction(orm(), async (em) => {
      await em.getConnection().execute("insert into organizations (id, name, created_at, updated_at) values (?, ?, now(), now())", [id, id], "run", em.getTransactionContext());
      em.create(OrganizationEntity, organizationRow(`${id}-entity`));
      await em.flush();
      expect(await em.count(OrganizationEntity, { id: { $in: [id, `${id}-entity`] } })).toBe(2);
      throw boom;
    }).catch((e: unknown) => e);
    expect(error).toBe(boom);
    expect(await rows(id)).toEqual([]);
    expect(await rows(`${id}-entity`)).toEqual([]);
  });

  it("rolls back when the flush at commit fails, and rethrows the database's error", async () => {
    const id = `flush-${randomUUID().slice(0, 8)}`;
    await inTransaction(orm(), async (em) => {
      em.create(OrganizationEntity, organizationRow(id));
    });
    const error = await inTransaction(orm(), async (em) => {
      await em.getConnection().execute("insert into organizations (id, name, created_at, updated_at) values (?, ?, now(), now())", [`${id}-raw`, id], "run", em.getTransactionContext());
      em.create(AuditEventEntity, { occurredAt: now(), actor: "test", action: "test.flush_failed", organizationId: id, credentialId: null, target: null, source: null, details: {} });
      // A duplicate primary key: the flush inside the commit fails.
      em.create(OrganizationEntity, organizationRow(id));
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "23505" });
    expect(await rows(`${id}-raw`)).toEqual([]);
    expect(await t.db.query("select 1 from audit_events where action = 'test.flush_failed'")).toEqual([]);
  });

  it("returns its connection to the pool whatever happens: many more failed transactions than connections, then a good one", async () => {
    const id = `pool-${randomUUID().slice(0, 8)}`;
    await inTransaction(orm(), async (em) => {
      em.create(OrganizationEntity, organizationRow(`${id}-taken`));
    });
    // The harness gives the service 5 connections, each waited for at most 1.5 s: a leaked one would show.
    for (let i = 0; i < 12; i++) {
      const failure = i % 3;
      await expect(
        inTransaction(orm(), async (em) => {
          em.create(OrganizationEntity, organizationRow(`${id}-${i}`));
          await em.flush();
          if (failure === 0) throw new Error("work failed");
          // A failed statement: PostgreSQL aborts the transaction.
          if (failure === 1) await em.getConnection().execute("select * from no_such_table", [], "all", em.getTransactionContext());
          // A duplicate primary key: the flush at commit fails.
          em.create(OrganizationEntity, organizationRow(`${id}-taken`));
        }),
      ).rejects.toThrow();
    }
    expect(await t.db.query("select id from organizations where id like $1 order by id", [`${id}-%`])).toEqual([{ id: `${id}-taken` }]);
    await inTransaction(orm(), async (em) => {
      em.create(OrganizationEntity, organizationRow(id));
    });
    expect(await rows(id)).toEqual([{ id }]);
    const open = await t.db.query("select count(*)::int as n from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'");
    expect(open).toEqual([{ n: 0 }]);
  });
});
