// Upgrades (docs/operations/upgrade.md): replicas apply pending migrations at start-up, one at a
// time under a PostgreSQL advisory lock, so two replicas starting at once apply each migration
// exactly once; and migrations only expand, so the previous version keeps working against the new
// schema during a rolling upgrade: its replicas go on resolving, writing and signing in while a
// new replica has migrated the database, hear the new replica's changes (and it theirs), and an
// old replica can still start (a rollback, or an old pod restarted mid-rollout).
//
// The previous version is main before this round's migrations (PREVIOUS_VERSION below, override
// with PREVIOUS_VERSION=<commit>), extracted with `git archive` into a temporary folder (no
// worktree, no branch touched) and run from source with this checkout's node_modules. Without git
// history (a shallow or exported tree) that part is skipped with a message.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { CredentialService, OrganizationService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { createOrm, migrate } from "../../service/src/db/orm.js";
import { migrationsList } from "../../migrations/index.js";
import { createTestDatabase, FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";
import { freePort } from "../support/kit.js";

/** main before this round's migrations: the version a rolling upgrade starts from. */
const PREVIOUS_VERSION = process.env.PREVIOUS_VERSION || "4536855";
const TSX = path.resolve("node_modules/.bin/tsx");

const appliedMigrations = async (db: TestDatabase) =>
  (await db.query<{ name: string }>("select name from mikro_orm_migrations order by id")).map((r) => r.name);

describe("migrations at start-up", () => {
  let db: TestDatabase;
  const services: TestService[] = [];
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const s of services) await s.close();
    await db?.drop();
  });

  it("two replicas starting at once on an empty database apply each migration exactly once, and both serve", async () => {
    const masterKey = generateMasterKey();
    const adminToken = generateToken();
    const started = await Promise.all([startTestService({ db, masterKey, adminToken }), startTestService({ db, masterKey, adminToken })]);
    services.push(...started);
    const applied = await appliedMigrations(db);
    expect(applied).toEqual(migrationsList.map((m) => m.name));
    // Had both run a migration, its DDL would have failed the second time (a table or column that exists), or left two rows.
    expect(new Set(applied).size).toBe(applied.length);
    for (const s of started) {
      const { organizations } = s.clients();
      expect((await organizations.listOrganizations({})).organizations).toBeInstanceOf(Array);
    }
    await started[0].clients().organizations.createOrganization({ organizationId: "both-replicas", name: "Both" });
    const seen = await started[1].clients().organizations.getOrganization({ organizationId: "both-replicas" });
    expect(seen.organization?.name).toBe("Both");
  });

  it("`npm run migrate` run by three at once, and by replicas already started, finds nothing left to do", async () => {
    const orms = await Promise.all([1, 2, 3].map(() => createOrm({ databaseUrl: db.url, poolSize: 1 })));
    try {
      const results = await Promise.all(orms.map((orm) => migrate(orm, db.url)));
      expect(results).toEqual([[], [], []]);
    } finally {
      for (const orm of orms) await orm.close(true);
    }
    expect(await appliedMigrations(db)).toHaveLength(migrationsList.length);
  });

  it("on a fresh database, three migrators racing apply every migration once between them", async () => {
    const fresh = await createTestDatabase();
    const orms = await Promise.all([1, 2, 3].map(() => createOrm({ databaseUrl: fresh.url, poolSize: 1 })));
    try {
      const results = await Promise.all(orms.map((orm) => migrate(orm, fresh.url)));
      // One of them applied everything; the others, waiting on the lock, found nothing pending.
      expect(results.flat().sort()).toEqual(migrationsList.map((m) => m.name).sort());
      expect(results.filter((r) => r.length > 0)).toHaveLength(1);
      expect(await appliedMigrations(fresh)).toEqual(migrationsList.map((m) => m.name));
    } finally {
      for (const orm of orms) await orm.close(true);
      await fresh.drop();
    }
  });
});

/** The previous version's source tree, or why there is none. */
function extractPrevious(): { dir: string; migrations: string[] } | string {
  let commit: string;
  try {
    commit = execFileSync("git", ["rev-parse", "--verify", `${PREVIOUS_VERSION}^{commit}`], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return `no git history holding ${PREVIOUS_VERSION} here (a shallow clone or an export)`;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "pc-previous-"));
  // git archive | tar: a copy of the tree at that commit; nothing in this checkout changes.
  execFileSync("sh", ["-c", `git archive --format=tar "${commit}" | tar -x -C "${dir}"`]);
  // This checkout's dependencies, except the workspace package, which must be the previous version's own.
  const modules = path.join(dir, "node_modules");
  mkdirSync(path.join(modules, "@provider-credentials"), { recursive: true });
  for (const entry of readdirSync("node_modules")) {
    if (entry === "@provider-credentials") continue;
    symlinkSync(path.resolve("node_modules", entry), path.join(modules, entry));
  }
  symlinkSync(path.join(dir, "packages/wire"), path.join(modules, "@provider-credentials/wire"));
  const index = execFileSync("git", ["show", `${commit}:migrations/index.ts`], { encoding: "utf8" });
  const migrations = [...index.matchAll(/name: "([^"]+)"/g)].map((m) => m[1]);
  return { dir, migrations };
}

interface OldReplica {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<number | null>;
}

const previous = existsSync(".git") || process.env.PREVIOUS_VERSION ? extractPrevious() : "no .git folder here";
if (typeof previous === "string") console.error(`rolling-upgrade: the previous-version part is SKIPPED, ${previous}.`);

describe.skipIf(typeof previous === "string")(`a rolling upgrade from the previous version (${PREVIOUS_VERSION})`, () => {
  const prev = previous as { dir: string; migrations: string[] };
  const masterKey = generateMasterKey();
  const adminToken = generateToken();
  const adminEmail = "rolling@example.com";
  const adminPassword = "violet harbour quantum biscuit 47";
  let db: TestDatabase;
  let oldA: OldReplica;
  let next: TestService;
  const children: ChildProcess[] = [];

  /** A replica of the previous version, from its own source tree, as its own process. */
  async function startOld(): Promise<OldReplica> {
    const port = await freePort();
    const child = spawn(TSX, ["service/src/main.ts"], {
      cwd: prev.dir,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        DATABASE_URL: db.url,
        MASTER_KEY: masterKey,
        SERVICE_ADMIN_TOKEN: adminToken,
        ADMIN_EMAIL: adminEmail,
        ADMIN_PASSWORD: adminPassword,
        HOST: "127.0.0.1",
        GRPC_PORT: String(port),
        CONNECT_PORT: String(await freePort()),
        API_BASE_ALLOW: "127.0.0.1",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let output = "";
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const deadline = Date.now() + 90_000;
    while (!output.includes("credentials service ready")) {
      if (child.exitCode !== null) throw new Error(`the previous version exited at start-up:\n${output}`);
      if (Date.now() > deadline) throw new Error(`the previous version was not ready in 90 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return { child, port, output: () => output, exited };
  }

  const clientsOf = (port: number) => {
    const transport = createGrpcTransport({
      baseUrl: `http://127.0.0.1:${port}`,
      interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${adminToken}`), next(req))],
    });
    return {
      credentials: createClient(CredentialService, transport),
      organizations: createClient(OrganizationService, transport),
      admin: createClient(AdminService, transport),
    };
  };
  const scope = (organizationId: string) => ({ case: "organizationId" as const, value: organizationId });

  /** Polls `check` until it passes or `ms` have gone (invalidation across replicas takes milliseconds). */
  async function eventually(check: () => Promise<void>, ms = 3_000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        return await check();
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await next?.close();
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await db?.drop();
    rmSync(prev.dir, { recursive: true, force: true });
  });

  it("the previous version installs its schema and serves", async () => {
    const newer = migrationsList.map((m) => m.name).filter((name) => !prev.migrations.includes(name));
    if (newer.length === 0) console.error(`rolling-upgrade: this tree adds no migration to ${PREVIOUS_VERSION}; the rolling case only restarts replicas`);
    expect(
      prev.migrations.every((name) => migrationsList.some((m) => m.name === name)),
      "migrations are append-only",
    ).toBe(true);
    oldA = await startOld();
    expect(await appliedMigrations(db)).toEqual(prev.migrations);
    const { organizations, credentials } = clientsOf(oldA.port);
    await organizations.createOrganization({ organizationId: "rolling", name: "Rolling" });
    await credentials.createCredential({ organizationId: "rolling", provider: Provider.OPENAI, credentialName: "before", apiKey: FAKE_KEYS.openai() });
  }, 120_000);

  it("a new replica migrates the database while the old one runs, and both resolve what the other wrote", async () => {
    next = await startTestService({ db, masterKey, adminToken });
    expect(await appliedMigrations(db)).toEqual(migrationsList.map((m) => m.name));
    const old = clientsOf(oldA.port);
    const neu = next.clients();

    // Written by the old version before the upgrade: both serve it.
    const before = (await old.credentials.resolveKey({ scope: scope("rolling"), provider: Provider.OPENAI })).apiKey;
    expect((await neu.credentials.resolveKey({ scope: scope("rolling"), provider: Provider.OPENAI })).apiKey).toBe(before);

    // The old version writes against the new schema; the new one reads it.
    const anthropic = FAKE_KEYS.anthropic();
    const { credential } = await old.credentials.createCredential({
      organizationId: "rolling",
      provider: Provider.ANTHROPIC,
      credentialName: "old writes",
      apiKey: anthropic,
    });
    expect((await neu.credentials.resolveKey({ scope: scope("rolling"), provider: Provider.ANTHROPIC })).apiKey).toBe(anthropic);
    expect((await old.credentials.listCredentials({ organizationId: "rolling" })).credentials.map((c) => c.credentialName).sort()).toEqual([
      "before",
      "old writes",
    ]);

    // The new version writes; the old one reads it, and hears its invalidations.
    const gemini = FAKE_KEYS.gemini();
    await neu.credentials.createCredential({ organizationId: "rolling", provider: Provider.GEMINI, credentialName: "new writes", apiKey: gemini });
    await eventually(async () => {
      expect((await old.credentials.resolveKey({ scope: scope("rolling"), provider: Provider.GEMINI })).apiKey).toBe(gemini);
    });
    await neu.credentials.deactivateCredential({ credentialId: credential!.credentialId });
    await eventually(async () => {
      const refused = await rpcError(old.credentials.resolveKey({ scope: scope("rolling"), provider: Provider.ANTHROPIC }));
      expect([Code.NotFound, Code.FailedPrecondition]).toContain(refused.code);
    });
    // And the other way round.
    await old.credentials.activateCredential({ credentialId: credential!.credentialId });
    await eventually(async () => {
      expect((await neu.credentials.resolveKey({ scope: scope("rolling"), provider: Provider.ANTHROPIC })).apiKey).toBe(anthropic);
    });
  }, 60_000);

  it("the old version still signs administrators in against the new schema", async () => {
    const { admin } = clientsOf(oldA.port);
    const signedIn = await admin
      .signIn({ email: adminEmail, password: adminPassword, source: "127.0.0.1", userAgent: "rolling-upgrade test" })
      .catch((error: Error) => {
        // What the old replica logged says which migration broke it (a NOT NULL column it does not fill, say).
        const logged = oldA
          .output()
          .split("\n")
          .filter((line) => /"level":(50|60)/.test(line))
          .slice(-3);
        throw new Error(`the previous version's SignIn failed against the new schema: ${error.message}\n${logged.join("\n")}`);
      });
    expect(signedIn.sessionToken.length).toBeGreaterThan(0);
    // The new replica knows the session the old one opened (a portal's next request may reach either).
    const newAdmin = createClient(AdminService, next.transport("grpc", next.adminToken));
    expect((await newAdmin.getSession({ sessionToken: signedIn.sessionToken })).admin?.email).toBe(adminEmail);
    // And the other way round.
    const other = await newAdmin.signIn({ email: adminEmail, password: adminPassword, source: "127.0.0.1", userAgent: "rolling-upgrade test" });
    expect((await admin.getSession({ sessionToken: other.sessionToken })).admin?.email).toBe(adminEmail);
  });

  it("an old replica restarted after the new migrations starts and serves (rollback, or an old pod restarted mid-rollout)", async () => {
    const oldB = await startOld();
    expect(oldB.output()).not.toMatch(/migration/i);
    const { credentials } = clientsOf(oldB.port);
    expect((await credentials.resolveKey({ scope: scope("rolling"), provider: Provider.GEMINI })).apiKey).toMatch(/^AIza/);
    // The old replica applied nothing and removed nothing.
    expect(await appliedMigrations(db)).toEqual(migrationsList.map((m) => m.name));
    oldB.child.kill("SIGTERM");
    expect(await oldB.exited).toBe(0);
    oldA.child.kill("SIGTERM");
    expect(await oldA.exited).toBe(0);
  }, 120_000);
});
