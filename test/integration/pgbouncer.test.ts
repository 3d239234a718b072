// The service behind PgBouncer in transaction pooling mode (docs/operations/pgbouncer.md): Debian's
// `pgbouncer` in front of the test PostgreSQL (the embedded one under `npm test`, the machine's
// PostgreSQL 15 when TEST_DATABASE_URL points at it, as in CI's second run). Two replicas start at
// once with DATABASE_URL on PgBouncer and DATABASE_LISTEN_URL direct, and everything that matters
// runs through it: migrations (each applied once), resolution, every kind of change and its
// invalidation across the replicas, tokens and accounts, and `npm run rotate-master-key`.
//
// Without pgbouncer installed the file is skipped, saying so; with PGBOUNCER_REQUIRED=1 (CI) it fails.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { FailureKind, KeySource, Provider, SelectionStrategy } from "@provider-credentials/wire/gen/credentials_pb";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { migrationsList } from "../../migrations/index.js";
import { createTestDatabase, FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";
import { findPgbouncer, startPgbouncer, type Pgbouncer } from "../support/pgbouncer.js";

const binary = findPgbouncer();
const required = process.env.PGBOUNCER_REQUIRED === "1";
if (!binary && !required) {
  console.log(
    "test/integration/pgbouncer.test.ts skipped: pgbouncer is not installed (Debian: apt-get install -y pgbouncer). " +
      "Set PGBOUNCER_REQUIRED=1 to fail instead (CI does).",
  );
}

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
const ENV_KEY = "sk-from-the-environment-0000";

let db: TestDatabase;
let bouncer: Pgbouncer;
/** The test database through PgBouncer. */
let pooledUrl: string;
let a: TestService; // the replica administrators talk to
let b: TestService; // the replica that serves resolutions
const extra: TestService[] = [];
const masterKey = generateMasterKey();
const adminToken = generateToken();

/** A replica with DATABASE_URL on PgBouncer and DATABASE_LISTEN_URL direct, as docs/operations/pgbouncer.md says. */
const replica = (key = masterKey) =>
  startTestService({
    db: { ...db, url: pooledUrl },
    masterKey: key,
    adminToken,
    env: { OPENAI_API_KEY: ENV_KEY },
    serviceOptions: { databaseListenUrl: db.url, preparedStatements: false },
  });

describe.skipIf(!binary && !required)("behind PgBouncer in transaction pooling mode", () => {
  beforeAll(async () => {
    if (!binary) throw new Error("PGBOUNCER_REQUIRED=1 but pgbouncer is not installed (Debian: apt-get install -y pgbouncer)");
    db = await createTestDatabase();
    bouncer = await startPgbouncer(inject("adminDatabaseUrl"), binary);
    pooledUrl = bouncer.rewrite(db.url);
    // Both at once: they take turns at the migrations through PgBouncer.
    [a, b] = await Promise.all([replica(), replica()]);
  }, 60_000);
  afterAll(async () => {
    for (const t of [...extra, b, a]) await t?.close();
    await bouncer?.stop();
    await db?.drop();
  });

  const resolveOn = (t: TestService, scope: { organizationId: string } | { teamId: string }, token?: string) =>
    t.clients(token).credentials.resolveKey({
      scope: "teamId" in scope ? { case: "teamId", value: scope.teamId } : { case: "organizationId", value: scope.organizationId },
      provider: Provider.OPENAI,
    });

  /** SQL statements replica `t` sends while `work` runs. */
  async function queriesDuring(t: TestService, work: () => Promise<unknown>): Promise<number> {
    const knex = t.service.orm.em.getConnection().getKnex();
    let count = 0;
    const onQuery = () => count++;
    knex.on("query", onQuery);
    try {
      await work();
    } finally {
      knex.removeListener("query", onQuery);
    }
    return count;
  }

  /**
   * Resolves on B until it is answered from B's cache (no SQL): the next change must then reach B by
   * NOTIFY to be seen. (On a loaded machine a late heartbeat may switch the cache off for a moment.)
   */
  async function cachedOnB(scope: { organizationId: string } | { teamId: string }): Promise<void> {
    const deadline = Date.now() + 10_000;
    await resolveOn(b, scope);
    while ((await queriesDuring(b, () => resolveOn(b, scope))) > 0) {
      if (Date.now() > deadline) throw new Error(`replica B never answered ${JSON.stringify(scope)} from its cache`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Polls replica B until `check` passes: invalidation crosses replicas asynchronously, within milliseconds. */
  async function eventuallyOnB(check: () => Promise<void>): Promise<void> {
    const deadline = Date.now() + 3_000;
    for (;;) {
      try {
        return await check();
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }

  it("runs through PgBouncer: two replicas starting at once applied each migration once, and listen directly", async () => {
    const applied = await db.query<{ name: string; n: number }>("select name, count(*)::int as n from mikro_orm_migrations group by name order by name");
    expect(applied.length).toBe(migrationsList.length);
    expect(applied.every((m) => m.n === 1)).toBe(true);

    await resolveOn(a, { organizationId: "warm-up" }).catch(() => undefined);
    const pools = await bouncer.admin<{ database: string; pool_mode: string }>("SHOW POOLS");
    expect(pools.find((p) => p.database === db.name)?.pool_mode).toBe("transaction");
    const clients = await bouncer.admin<{ database: string; application_name: string }>("SHOW CLIENTS");
    expect(clients.filter((c) => c.database === db.name).length).toBeGreaterThan(0);
    // The LISTEN connections bypass PgBouncer: one per replica, straight to PostgreSQL.
    expect(clients.filter((c) => c.application_name === "provider-credentials-invalidation")).toEqual([]);
    const listeners = await db.query<{ n: number }>(
      "select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'provider-credentials-invalidation'",
    );
    expect(listeners[0].n).toBe(2);
  });

  it("resolves by organisation and by team, and falls back to the environment, on both replicas", async () => {
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: "res-org", name: "Res" });
    await organizations.createTeam({ teamId: "res-team", organizationId: "res-org", name: "T" });
    const key = FAKE_KEYS.openai();
    const { credential } = await credentials.createCredential({ organizationId: "res-org", provider: Provider.OPENAI, credentialName: "k", apiKey: key });
    for (const t of [a, b]) {
      for (const scope of [{ organizationId: "res-org" }, { teamId: "res-team" }]) {
        const r = await resolveOn(t, scope);
        expect(r).toMatchObject({ apiKey: key, source: KeySource.ORGANIZATION, credentialId: credential!.credentialId, organizationId: "res-org" });
      }
    }
    await organizations.createOrganization({ organizationId: "env-org", name: "Env" });
    expect(await resolveOn(b, { organizationId: "env-org" })).toMatchObject({ source: KeySource.ENVIRONMENT, apiKey: ENV_KEY });
    expect((await rpcError(resolveOn(b, { organizationId: "no-such-org" }))).code).toBe(Code.NotFound);
    // Many calls at once on both replicas: PgBouncer hands the server connections around between them.
    const many = await Promise.all(
      Array.from({ length: 60 }, (_, i) => resolveOn(i % 2 ? a : b, i % 3 ? { organizationId: "res-org" } : { teamId: "res-team" })),
    );
    expect(new Set(many.map((r) => r.apiKey))).toEqual(new Set([key]));
  });

  it("every kind of change made on one replica is seen by the other, whose cache held the old answer", async () => {
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: "x-org", name: "Cross" });
    await organizations.createTeam({ teamId: "x-team", organizationId: "x-org", name: "T" });
    const first = FAKE_KEYS.openai();
    const { credential: one } = await credentials.createCredential({
      organizationId: "x-org",
      provider: Provider.OPENAI,
      credentialName: "one",
      apiKey: first,
    });
    const team = { teamId: "x-team" };
    await cachedOnB(team);
    expect((await resolveOn(b, team)).apiKey).toBe(first);

    // A new key for the credential.
    const rotated = FAKE_KEYS.openai();
    await credentials.updateCredential({ credentialId: one!.credentialId, apiKey: rotated });
    await eventuallyOnB(async () => expect((await resolveOn(b, team)).apiKey).toBe(rotated));

    // Its api_base.
    await cachedOnB(team);
    await credentials.updateCredential({ credentialId: one!.credentialId, apiBase: "https://proxy.example.com/v1", apiKey: rotated });
    await eventuallyOnB(async () => expect((await resolveOn(b, team)).apiBase).toBe("https://proxy.example.com/v1"));

    // A newer credential.
    await cachedOnB(team);
    const second = FAKE_KEYS.openai();
    const { credential: two } = await credentials.createCredential({
      organizationId: "x-org",
      provider: Provider.OPENAI,
      credentialName: "two",
      apiKey: second,
    });
    await eventuallyOnB(async () => expect((await resolveOn(b, team)).apiKey).toBe(second));

    // Deactivated, activated.
    await cachedOnB(team);
    await credentials.deactivateCredential({ credentialId: two!.credentialId });
    await eventuallyOnB(async () => expect((await resolveOn(b, team)).apiKey).toBe(rotated));
    await cachedOnB(team);
    await credentials.activateCredential({ credentialId: two!.credentialId });
    await eventuallyOnB(async () => expect((await resolveOn(b, team)).apiKey).toBe(second));

    // The gateway reports the newer key failing: the older one answers; a success brings it back.
    await cachedOnB(team);
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId: two!.credentialId, kind: FailureKind.AUTHENTICATION });
    await eventuallyOnB(async () => expect((await resolveOn(b, team)).apiKey).toBe(rotated));
    await cachedOnB(team);
    await credentials.reportKeySuccess({ credentialIds: [two!.credentialId] });
    await eventuallyOnB(async () => expect((await resolveOn(b, team)).apiKey).toBe(second));

    // The selection strategy: round robin hands out both keys.
    await cachedOnB(team);
    await credentials.setSelectionStrategy({ organizationId: "x-org", provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    await eventuallyOnB(async () => {
      const keys = new Set([(await resolveOn(b, team)).apiKey, (await resolveOn(b, team)).apiKey]);
      expect(keys).toEqual(new Set([rotated, second]));
    });

    // Deleted credentials: the environment's key.
    await cachedOnB(team);
    await credentials.deleteCredential({ credentialId: two!.credentialId });
    await credentials.deleteCredential({ credentialId: one!.credentialId });
    await eventuallyOnB(async () => expect(await resolveOn(b, team)).toMatchObject({ source: KeySource.ENVIRONMENT, apiKey: ENV_KEY }));

    // A deleted team, then a deleted organisation.
    await cachedOnB(team);
    await organizations.deleteTeam({ teamId: "x-team" });
    await eventuallyOnB(async () => expect((await rpcError(resolveOn(b, team))).code).toBe(Code.NotFound));
    await cachedOnB({ organizationId: "x-org" });
    await organizations.deleteOrganization({ organizationId: "x-org" });
    await eventuallyOnB(async () => expect((await rpcError(resolveOn(b, { organizationId: "x-org" }))).code).toBe(Code.NotFound));
  });

  it("tokens and accounts: created, used, rotated, revoked, signed in and out", async () => {
    const admin = createClient(AdminService, a.transport("grpc", a.adminToken));
    await a.clients().organizations.createOrganization({ organizationId: "tok-org", name: "Tok" });
    const key = FAKE_KEYS.openai();
    await a.clients().credentials.createCredential({ organizationId: "tok-org", provider: Provider.OPENAI, credentialName: "k", apiKey: key });

    const created = await admin.createApiToken({ name: "gw", scope: "resolve", organizationIds: ["tok-org"] });
    expect((await resolveOn(b, { organizationId: "tok-org" }, created.token)).apiKey).toBe(key);
    const rotated = await admin.rotateApiToken({ name: "gw" });
    expect((await resolveOn(b, { organizationId: "tok-org" }, rotated.token)).apiKey).toBe(key);
    await admin.revokeApiToken({ name: "gw" });
    expect((await rpcError(resolveOn(a, { organizationId: "tok-org" }, rotated.token))).code).toBe(Code.Unauthenticated);

    await admin.createAdmin({ email: "keeper@example.com", role: "owner" });
    const { password } = await admin.createAdmin({ email: "pool@example.com", role: "editor" });
    // Sign-in takes transaction-level advisory locks (the sign-in limits): they work on PgBouncer.
    const session = await admin.signIn({ email: "pool@example.com", password, source: "192.0.2.10" });
    expect((await admin.getSession({ sessionToken: session.sessionToken })).admin?.email).toBe("pool@example.com");
    expect(await rpcError(admin.signIn({ email: "pool@example.com", password: "wrong password!", source: "192.0.2.10" }))).toEqual({
      code: Code.Unauthenticated,
      message: "invalid email or password",
    });
    await admin.signOut({ sessionToken: session.sessionToken });
    expect((await rpcError(admin.getSession({ sessionToken: session.sessionToken }))).code).toBe(Code.Unauthenticated);
    await admin.deleteAdmin({ email: "pool@example.com" });
    expect((await admin.listAdmins({})).admins.map((x) => x.email)).not.toContain("pool@example.com");
  });

  it("npm run rotate-master-key and verify-keys through PgBouncer; replicas on the new key resolve", async () => {
    await a.clients().organizations.createOrganization({ organizationId: "rot-org", name: "Rot" });
    const keys = [FAKE_KEYS.openai(), FAKE_KEYS.anthropic()];
    await a.clients().credentials.createCredential({ organizationId: "rot-org", provider: Provider.OPENAI, credentialName: "o", apiKey: keys[0] });
    await a.clients().credentials.createCredential({ organizationId: "rot-org", provider: Provider.ANTHROPIC, credentialName: "a", apiKey: keys[1] });

    const newKey = generateMasterKey();
    const cli = (script: string, key: string) =>
      run(TSX, [`service/src/cli/${script}.ts`], { env: { PATH: process.env.PATH, DATABASE_URL: pooledUrl, MASTER_KEY: key } }).catch(
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const rotation = await cli("rotate-master-key", `${newKey},${masterKey}`);
    expect(rotation.stdout).toMatch(/Re-encrypted \d+ credential\(s\)/);
    expect(rotation.stdout).toContain("Every credential is now under");
    const byKey = await db.query<{ key_id: string }>("select distinct key_id from provider_credentials");
    expect(byKey).toEqual([{ key_id: createKeyring(newKey).primaryKeyId }]);

    const verified = await cli("verify-keys", newKey);
    expect((verified as { code?: number }).code ?? 0).toBe(0);

    // A replica on the new key alone, through PgBouncer, resolves what was stored under the old one.
    const c = await replica(newKey);
    extra.push(c);
    const r = await c.clients().credentials.resolveKey({ scope: { case: "organizationId", value: "rot-org" }, provider: Provider.OPENAI });
    expect(r.apiKey).toBe(keys[0]);
    const r2 = await c.clients().credentials.resolveKey({ scope: { case: "organizationId", value: "rot-org" }, provider: Provider.ANTHROPIC });
    expect(r2.apiKey).toBe(keys[1]);
  }, 120_000);

  it("PgBouncer logged no error", async () => {
    const log = await bouncer.log();
    expect(log).not.toMatch(/prepared statement .* does not exist|unsupported startup parameter/);
  });
});
