import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { ACCOUNT_CACHE_TTL_MS, AdminStore } from "../../service/src/admins/admin-store.js";
import { passwordProblem } from "../../service/src/admins/passwords.js";
import { rpcError, startTestService, type TestService } from "../support/harness.js";

// Portal accounts over AdminService (with the unlimited SERVICE_ADMIN_TOKEN: which caller may call what is the
// permission matrix's business) and through `npm run admin`, against a real service and PostgreSQL.

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
const OWNER_PASSWORD = "juniper kites over granite hills";
const CHOSEN = "copper lanterns drift past midnight";
const NEW_PASSWORD = "seven quiet herons fold their maps";

let t: TestService;
let admin: Client<typeof AdminService>;
/** Every password this file uses or is given: none may appear in an audit row or a log line. */
const passwords = new Set<string>([OWNER_PASSWORD, CHOSEN, NEW_PASSWORD]);
let source = 0;
/** A fresh address per sign-in, so that this file's deliberate failures never reach the per-address limit. */
const nextSource = () => `192.0.2.${++source}`;

const signIn = (email: string, password: string) => admin.signIn({ email, password, source: nextSource() });
const auditRows = (action: string) =>
  t.db.query<{ actor: string; action: string; target: string; details: Record<string, unknown> }>(
    "select actor, action, target, details from audit_events where action = $1 order by id",
    [action],
  );

async function adminCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(TSX, ["service/src/cli/admin.ts", ...args], {
      env: { PATH: process.env.PATH, DATABASE_URL: t.db.url, MASTER_KEY: t.masterKey, LOG_LEVEL: "warn", npm_lifecycle_event: "admin", ...env },
      timeout: 90_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  t = await startTestService();
  admin = createClient(AdminService, t.transport("grpc", t.adminToken));
  // The first administrator, as ADMIN_PASSWORD or `npm run admin -- create` makes it: an owner.
  await t.service.parts.admins.create("root@example.com", OWNER_PASSWORD, { actor: "test", source: null });
  const organizations = t.clients().organizations;
  for (const id of ["acme", "globex", "initech"]) await organizations.createOrganization({ organizationId: id, name: id });
});
afterAll(async () => {
  await t?.close();
});

describe("CreateAdmin", () => {
  it("creates an account with a role and organisations, returning a strong one-time password only when none was given", async () => {
    const created = await admin.createAdmin({ email: "Vera@Example.com", role: "viewer", organizationIds: ["acme", "globex", "acme"] });
    passwords.add(created.password);
    expect(created.password).toMatch(/^[A-Za-z0-9]{20}$/);
    expect(passwordProblem(created.password, "vera@example.com")).toBeUndefined();
    expect(created.admin).toMatchObject({ email: "vera@example.com", role: "viewer", organizationIds: ["acme", "globex"], disabled: false });
    const signedIn = await signIn("vera@example.com", created.password);
    expect(signedIn.admin).toMatchObject({ role: "viewer", organizationIds: ["acme", "globex"], disabled: false });

    const chosen = await admin.createAdmin({ email: "ed@example.com", role: "editor", password: CHOSEN });
    expect(chosen.password).toBe("");
    expect(chosen.admin).toMatchObject({ role: "editor", organizationIds: [], disabled: false });
    await signIn("ed@example.com", CHOSEN);

    const { admins } = await admin.listAdmins({});
    expect(admins.map((a) => [a.email, a.role, a.organizationIds, a.disabled])).toEqual([
      ["ed@example.com", "editor", [], false],
      ["root@example.com", "owner", [], false],
      ["vera@example.com", "viewer", ["acme", "globex"], false],
    ]);
    const rows = await t.db.query("select email, role, organization_ids, disabled_at from admin_users order by email");
    expect(rows).toEqual([
      { email: "ed@example.com", role: "editor", organization_ids: null, disabled_at: null },
      { email: "root@example.com", role: "owner", organization_ids: null, disabled_at: null },
      { email: "vera@example.com", role: "viewer", organization_ids: ["acme", "globex"], disabled_at: null },
    ]);
    const audit = await auditRows("admin.create");
    expect(audit.slice(-2)).toEqual([
      {
        actor: expect.stringContaining("service-admin-token"),
        action: "admin.create",
        target: "vera@example.com",
        details: { role: "viewer", organization_ids: ["acme", "globex"] },
      },
      {
        actor: expect.stringContaining("service-admin-token"),
        action: "admin.create",
        target: "ed@example.com",
        details: { role: "editor", organization_ids: null },
      },
    ]);
  });

  it("refuses bad input naming the field, writing nothing", async () => {
    const before = await t.db.query("select count(*)::int as n from admin_users");
    const cases: Array<[Parameters<typeof admin.createAdmin>[0], Code, string]> = [
      [{ email: "", role: "viewer" }, Code.InvalidArgument, "email: is required"],
      [{ email: "not-an-email", role: "viewer" }, Code.InvalidArgument, "email: must be an email address"],
      [{ email: "x@example.com", role: "" }, Code.InvalidArgument, "role: is required: owner, editor or viewer"],
      [{ email: "x@example.com", role: "admin" }, Code.InvalidArgument, "role: must be owner, editor or viewer"],
      [
        { email: "x@example.com", role: "owner", organizationIds: ["acme"] },
        Code.InvalidArgument,
        "organization_ids: an owner is never limited to organisations",
      ],
      [{ email: "x@example.com", role: "viewer", organizationIds: ["acme", "bad id!"] }, Code.InvalidArgument, "organization_ids[1]: must be 1-64 characters"],
      [{ email: "x@example.com", role: "viewer", organizationIds: ["acme", ""] }, Code.InvalidArgument, "organization_ids[1]: is required"],
      [{ email: "x@example.com", role: "viewer", organizationIds: ["acme", "nope"] }, Code.NotFound, 'organization_ids[1]: organization "nope" not found'],
      [{ email: "x@example.com", role: "viewer", password: "short" }, Code.InvalidArgument, "password: must be at least 12 characters"],
      [{ email: "x@example.com", role: "viewer", password: "aaaaaaaaaaaa" }, Code.InvalidArgument, "password: is too easy to guess"],
      [{ email: "ROOT@example.com", role: "viewer" }, Code.AlreadyExists, 'email: an administrator with email "root@example.com" already exists'],
    ];
    for (const [request, code, message] of cases) {
      const error = await rpcError(admin.createAdmin(request));
      expect(error.code, message).toBe(code);
      expect(error.message, message).toContain(message);
    }
    const tooMany = await rpcError(
      admin.createAdmin({ email: "x@example.com", role: "viewer", organizationIds: Array.from({ length: 1001 }, (_, i) => `o${i}`) }),
    );
    expect(tooMany).toEqual({ code: Code.InvalidArgument, message: "organization_ids: must list at most 1000 organisations" });
    expect(await t.db.query("select count(*)::int as n from admin_users")).toEqual(before);
  });
});

describe("UpdateAdmin", () => {
  it("changes role and organisations, ends sessions only when rights shrink, and audits what changed", async () => {
    const { password } = await admin.createAdmin({ email: "uma@example.com", role: "viewer", organizationIds: ["acme"] });
    passwords.add(password);
    const first = await signIn("uma@example.com", password);

    // More rights: the session goes on.
    const raised = await admin.updateAdmin({ email: "uma@example.com", role: "editor", organizations: { organizationIds: ["acme", "globex"] } });
    expect(raised.admin).toMatchObject({ role: "editor", organizationIds: ["acme", "globex"] });
    expect((await admin.getSession({ sessionToken: first.sessionToken })).admin?.role).toBe("editor");

    // Fewer organisations: every session ends.
    await admin.updateAdmin({ email: "uma@example.com", organizations: { organizationIds: ["globex"] } });
    expect((await rpcError(admin.getSession({ sessionToken: first.sessionToken }))).code).toBe(Code.Unauthenticated);

    // A lower role: every session ends.
    const second = await signIn("uma@example.com", password);
    await admin.updateAdmin({ email: "uma@example.com", role: "viewer" });
    expect((await rpcError(admin.getSession({ sessionToken: second.sessionToken }))).code).toBe(Code.Unauthenticated);

    // Every organisation (an empty list) is more, not less.
    const third = await signIn("uma@example.com", password);
    const all = await admin.updateAdmin({ email: "uma@example.com", organizations: { organizationIds: [] } });
    expect(all.admin?.organizationIds).toEqual([]);
    expect((await admin.getSession({ sessionToken: third.sessionToken })).admin?.email).toBe("uma@example.com");

    // Nothing changes: no audit row.
    await admin.updateAdmin({ email: "uma@example.com", role: "viewer" });

    const audit = await t.db.query<{ details: Record<string, unknown> }>(
      "select details from audit_events where action = 'admin.update' and target = 'uma@example.com' order by id",
    );
    expect(audit.map((a) => a.details)).toEqual([
      { role: { from: "viewer", to: "editor" }, organization_ids: { from: ["acme"], to: ["acme", "globex"] }, sessions_ended: 0 },
      { organization_ids: { from: ["acme", "globex"], to: ["globex"] }, sessions_ended: 1 },
      { role: { from: "editor", to: "viewer" }, sessions_ended: 1 },
      { organization_ids: { from: ["globex"], to: null }, sessions_ended: 0 },
    ]);
  });

  it("refuses bad input naming the field, and an owner limited to organisations", async () => {
    await admin.createAdmin({ email: "lim@example.com", role: "editor", organizationIds: ["acme"] }).then((r) => passwords.add(r.password));
    const cases: Array<[Parameters<typeof admin.updateAdmin>[0], Code, string]> = [
      [{ email: "nobody@example.com", role: "viewer" }, Code.NotFound, 'email: no administrator with email "nobody@example.com"'],
      [{ email: "lim@example.com", role: "boss" }, Code.InvalidArgument, "role: must be owner, editor or viewer"],
      [
        { email: "lim@example.com", organizations: { organizationIds: ["ok", "no way"] } },
        Code.InvalidArgument,
        "organizations.organization_ids[1]: must be 1-64",
      ],
      [
        { email: "lim@example.com", organizations: { organizationIds: ["acme", "ghost"] } },
        Code.NotFound,
        'organizations.organization_ids[1]: organization "ghost" not found',
      ],
      [{ email: "lim@example.com", role: "owner" }, Code.InvalidArgument, 'role: "lim@example.com" is limited to organisations and an owner never is'],
      [
        { email: "lim@example.com", role: "owner", organizations: { organizationIds: ["acme"] } },
        Code.InvalidArgument,
        "organizations.organization_ids: an owner is never limited",
      ],
    ];
    for (const [request, code, message] of cases) {
      const error = await rpcError(admin.updateAdmin(request));
      expect(error.code, message).toBe(code);
      expect(error.message, message).toContain(message);
    }
    expect(await t.db.query("select role, organization_ids from admin_users where email = 'lim@example.com'")).toEqual([
      { role: "editor", organization_ids: ["acme"] },
    ]);
    // Made an owner together with every organisation: allowed.
    const owner = await admin.updateAdmin({ email: "lim@example.com", role: "owner", organizations: { organizationIds: [] } });
    expect(owner.admin).toMatchObject({ role: "owner", organizationIds: [] });
    await admin.deleteAdmin({ email: "lim@example.com" });
  });

  it("disabling ends every session, refuses sign-in like a wrong password, and re-enabling lets the account back in", async () => {
    const { password } = await admin.createAdmin({ email: "dan@example.com", role: "editor" });
    passwords.add(password);
    const a = await signIn("dan@example.com", password);
    const b = await signIn("dan@example.com", password);
    const directory = t.service.parts.admins;
    expect(await directory.account("dan@example.com")).toMatchObject({ role: "editor", organizations: null, disabled: false });

    const disabled = await admin.updateAdmin({ email: "dan@example.com", disabled: true });
    expect(disabled.admin?.disabled).toBe(true);
    for (const s of [a, b]) expect((await rpcError(admin.getSession({ sessionToken: s.sessionToken }))).code).toBe(Code.Unauthenticated);
    expect(await rpcError(signIn("dan@example.com", password))).toEqual({ code: Code.Unauthenticated, message: "invalid email or password" });
    // This replica's directory knows at once.
    expect(await directory.account("DAN@example.com")).toMatchObject({ email: "dan@example.com", disabled: true });
    expect((await admin.listAdmins({})).admins.find((x) => x.email === "dan@example.com")?.disabled).toBe(true);
    const [failure] = await t.db.query("select details from audit_events where action = 'admin.sign_in_failed' and target = 'dan@example.com'");
    expect(failure).toEqual({ details: { account_disabled: true } });

    await admin.updateAdmin({ email: "dan@example.com", disabled: false });
    expect((await signIn("dan@example.com", password)).admin?.disabled).toBe(false);
    const audit = await t.db.query<{ details: Record<string, unknown> }>(
      "select details from audit_events where action = 'admin.update' and target = 'dan@example.com' order by id",
    );
    expect(audit.map((r) => r.details)).toEqual([
      { disabled: { from: false, to: true }, sessions_ended: 2 },
      { disabled: { from: true, to: false }, sessions_ended: 0 },
    ]);
  });
});

describe("the account directory", () => {
  it("answers role, organisations and disabled, and another replica sees a change within the cache's lifetime", async () => {
    await admin.createAdmin({ email: "rep@example.com", role: "viewer", organizationIds: ["acme"] }).then((r) => passwords.add(r.password));
    const otherReplica = new AdminStore(t.service.orm);
    const grant = await otherReplica.account("rep@example.com");
    expect(grant).toMatchObject({ email: "rep@example.com", role: "viewer", disabled: false });
    expect([...grant!.organizations!]).toEqual(["acme"]);
    expect(await otherReplica.account("ghost@example.com")).toBeUndefined();
    expect(await otherReplica.account("not an email")).toBeUndefined();

    await admin.updateAdmin({ email: "rep@example.com", role: "editor", organizations: { organizationIds: ["globex"] } });
    // This replica forgets at once; the other trusts what it read for at most ACCOUNT_CACHE_TTL_MS.
    expect(await t.service.parts.admins.account("rep@example.com")).toMatchObject({ role: "editor" });
    expect(await otherReplica.account("rep@example.com")).toMatchObject({ role: "viewer" });
    await new Promise((resolve) => setTimeout(resolve, ACCOUNT_CACHE_TTL_MS + 200));
    const fresh = await otherReplica.account("rep@example.com");
    expect(fresh).toMatchObject({ role: "editor" });
    expect([...fresh!.organizations!]).toEqual(["globex"]);
  });
});

describe("the last enabled owner", () => {
  it("can never be demoted, disabled or removed, even by concurrent changes", async () => {
    const refusals = [
      admin.updateAdmin({ email: "root@example.com", role: "editor" }),
      admin.updateAdmin({ email: "root@example.com", disabled: true }),
      admin.deleteAdmin({ email: "root@example.com" }),
    ];
    const messages = ["demoted", "disabled", "removed"];
    // All three are in flight at once and awaited in turn: mark their rejections handled now.
    for (const call of refusals) call.catch(() => undefined);
    for (const [i, call] of refusals.entries()) {
      expect(await rpcError(call)).toEqual({
        code: Code.FailedPrecondition,
        message: `email: "root@example.com" is the last enabled owner and cannot be ${messages[i]}; make another account an owner first`,
      });
    }
    // A disabled owner does not count.
    await admin.createAdmin({ email: "owner2@example.com", role: "owner", password: CHOSEN });
    await admin.updateAdmin({ email: "owner2@example.com", disabled: true });
    expect((await rpcError(admin.updateAdmin({ email: "root@example.com", role: "viewer" }))).code).toBe(Code.FailedPrecondition);
    await admin.updateAdmin({ email: "owner2@example.com", disabled: false });

    // Two owners demoting each other at once: one stays an owner.
    const both = await Promise.allSettled([
      admin.updateAdmin({ email: "root@example.com", role: "editor" }),
      admin.updateAdmin({ email: "owner2@example.com", disabled: true }),
    ]);
    expect(both.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const owners = await t.db.query("select email from admin_users where role = 'owner' and disabled_at is null");
    expect(owners).toHaveLength(1);
    // Put things back: root the owner, owner2 gone.
    if (owners[0].email !== "root@example.com") await admin.updateAdmin({ email: "root@example.com", role: "owner" });
    await admin.updateAdmin({ email: "owner2@example.com", disabled: false });
    await admin.deleteAdmin({ email: "owner2@example.com" });
    expect((await rpcError(admin.deleteAdmin({ email: "root@example.com" }))).code).toBe(Code.FailedPrecondition);
  });
});

describe("sessions, passwords and removal", () => {
  it("RevokeAdminSessions ends every session of the account and is audited", async () => {
    const { password } = await admin.createAdmin({ email: "sam@example.com", role: "viewer" });
    passwords.add(password);
    const sessions = [await signIn("sam@example.com", password), await signIn("sam@example.com", password)];
    expect(await admin.revokeAdminSessions({ email: "sam@example.com" })).toMatchObject({ sessionsEnded: 2 });
    for (const s of sessions) expect((await rpcError(admin.getSession({ sessionToken: s.sessionToken }))).code).toBe(Code.Unauthenticated);
    expect((await auditRows("admin.sessions_revoked")).at(-1)).toMatchObject({ target: "sam@example.com", details: { sessions_ended: 2 } });
    expect((await rpcError(admin.revokeAdminSessions({ email: "ghost@example.com" }))).code).toBe(Code.NotFound);
    // Still allowed to sign in again.
    await signIn("sam@example.com", password);
  });

  it("ChangePassword needs the current password, answers a wrong one like a failed sign-in, and ends the other sessions", async () => {
    const { password } = await admin.createAdmin({ email: "pia@example.com", role: "editor" });
    passwords.add(password);
    const mine = await signIn("pia@example.com", password);
    const other = await signIn("pia@example.com", password);

    const attemptsBefore = await t.db.query("select count(*)::int as n from admin_sign_in_attempts where account = 'pia@example.com'");
    expect(
      await rpcError(admin.changePassword({ sessionToken: mine.sessionToken, currentPassword: "not my password at all", newPassword: NEW_PASSWORD })),
    ).toEqual({ code: Code.Unauthenticated, message: "invalid email or password" });
    // It counts against the sign-in limit.
    const attemptsAfter = await t.db.query<{ n: number }>("select count(*)::int as n from admin_sign_in_attempts where account = 'pia@example.com'");
    expect(attemptsAfter[0].n).toBe((attemptsBefore[0] as { n: number }).n + 1);
    expect((await auditRows("admin.sign_in_failed")).at(-1)).toMatchObject({ target: "pia@example.com", details: { during: "change_password" } });

    expect(await rpcError(admin.changePassword({ sessionToken: mine.sessionToken, currentPassword: password, newPassword: "aaaaaaaaaaaa" }))).toMatchObject({
      code: Code.InvalidArgument,
      message: expect.stringContaining("new_password: is too easy to guess"),
    });
    expect(
      (await rpcError(admin.changePassword({ sessionToken: mine.sessionToken, currentPassword: password, newPassword: "pia@example.com and more" }))).message,
    ).toContain("new_password: must not contain the administrator's email address");
    expect((await rpcError(admin.changePassword({ sessionToken: "x".repeat(43), currentPassword: password, newPassword: NEW_PASSWORD }))).code).toBe(
      Code.Unauthenticated,
    );

    await admin.changePassword({ sessionToken: mine.sessionToken, currentPassword: password, newPassword: NEW_PASSWORD });
    expect((await admin.getSession({ sessionToken: mine.sessionToken })).admin?.email).toBe("pia@example.com");
    expect((await rpcError(admin.getSession({ sessionToken: other.sessionToken }))).code).toBe(Code.Unauthenticated);
    expect((await rpcError(signIn("pia@example.com", password))).code).toBe(Code.Unauthenticated);
    await signIn("pia@example.com", NEW_PASSWORD);
    expect((await auditRows("admin.password_changed")).at(-1)).toMatchObject({
      actor: "pia@example.com",
      target: "pia@example.com",
      details: { sessions_ended: 1 },
    });
  });

  it("DeleteAdmin removes the account, ends its sessions and is audited", async () => {
    const { password } = await admin.createAdmin({ email: "rex@example.com", role: "viewer" });
    passwords.add(password);
    const s = await signIn("rex@example.com", password);
    expect(await admin.deleteAdmin({ email: "Rex@example.com" })).toMatchObject({ sessionsEnded: 1 });
    expect((await rpcError(admin.getSession({ sessionToken: s.sessionToken }))).code).toBe(Code.Unauthenticated);
    expect(await t.service.parts.admins.account("rex@example.com")).toBeUndefined();
    expect((await auditRows("admin.remove")).at(-1)).toMatchObject({ target: "rex@example.com", details: { sessions_ended: 1 } });
    expect(await rpcError(admin.deleteAdmin({ email: "rex@example.com" }))).toEqual({
      code: Code.NotFound,
      message: 'email: no administrator with email "rex@example.com"',
    });
  });
});

describe("npm run admin", () => {
  it("creates accounts with roles and organisations, changes them, lists and removes them", { timeout: 300_000 }, async () => {
    const created = await adminCli(["create", "--email", "cli-viewer@example.com", "--role", "viewer", "--organizations", "acme"]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stderr).toContain("Created viewer cli-viewer@example.com (acme).");
    const generated = /Password \(shown only this once\): (\S+)/.exec(created.stdout)![1];
    passwords.add(generated);
    expect((await signIn("cli-viewer@example.com", generated)).admin).toMatchObject({ role: "viewer", organizationIds: ["acme"] });

    // A chosen password is taken from ADMIN_PASSWORD and never printed.
    const chosen = await adminCli(["create", "--email", "cli-editor@example.com", "--role", "editor"], { ADMIN_PASSWORD: CHOSEN });
    expect(chosen.code, chosen.stderr).toBe(0);
    expect(chosen.stdout + chosen.stderr).not.toContain(CHOSEN);
    expect(chosen.stdout).not.toContain("Password");

    const limitedOwner = await adminCli(["create", "--email", "cli-owner@example.com", "--role", "owner", "--organizations", "acme"]);
    expect(limitedOwner.code).toBe(1);
    expect(limitedOwner.stderr).toContain("Error: organizations: an owner is never limited to organisations");
    const badRole = await adminCli(["create", "--email", "cli-owner@example.com", "--role", "root"]);
    expect(badRole.stderr).toContain("Error: role: must be owner, editor or viewer");
    const ghost = await adminCli(["set-role", "--email", "cli-viewer@example.com", "--role", "editor", "--organizations", "acme,ghost"]);
    expect(ghost.code).toBe(1);
    expect(ghost.stderr).toContain('Error: organizations[1]: organization "ghost" not found');

    const narrowed = await adminCli(["set-role", "--email", "cli-viewer@example.com", "--role", "editor", "--organizations", "acme, globex"]);
    expect(narrowed.code, narrowed.stderr).toBe(0);
    expect(narrowed.stderr).toContain("cli-viewer@example.com is now editor (acme, globex); 0 sessions ended.");
    const promoted = await adminCli(["set-role", "--email", "cli-viewer@example.com", "--role", "owner"]);
    expect(promoted.stderr).toContain("cli-viewer@example.com is now owner (every organisation); 0 sessions ended.");
    const demoted = await adminCli(["set-role", "--email", "cli-viewer@example.com", "--role", "viewer", "--organizations", "initech"]);
    expect(demoted.stderr).toContain("cli-viewer@example.com is now viewer (initech); 1 session ended.");
    const everywhere = await adminCli(["set-role", "--email", "cli-viewer@example.com", "--role", "viewer", "--all-organizations"]);
    expect(everywhere.stderr).toContain("is now viewer (every organisation)");
    expect((await adminCli(["set-role", "--email", "cli-viewer@example.com"])).code).toBe(2);
    expect((await adminCli(["set-role", "--email", "x@example.com", "--role", "viewer", "--organizations", "a", "--all-organizations"])).code).toBe(2);

    await admin.updateAdmin({ email: "cli-editor@example.com", disabled: true });
    const list = await adminCli(["list"]);
    expect(list.code, list.stderr).toBe(0);
    const line = (email: string) => list.stdout.split("\n").find((l) => l.startsWith(email)) ?? "";
    expect(line("cli-viewer@example.com")).toMatch(/^cli-viewer@example\.com\s+viewer\s+all organisations\s+enabled\s+last sign-in \d{4}-/);
    expect(line("cli-editor@example.com")).toMatch(/\seditor\s+all organisations\s+disabled\s+last sign-in never/);
    expect(line("root@example.com")).toMatch(/\sowner\s/);

    const lastOwner = await adminCli(["set-role", "--email", "root@example.com", "--role", "editor"]);
    expect(lastOwner.code).toBe(1);
    expect(lastOwner.stderr).toContain('Error: email: "root@example.com" is the last enabled owner and cannot be demoted');
    const removed = await adminCli(["remove", "--email", "cli-viewer@example.com"]);
    expect(removed.code, removed.stderr).toBe(0);
    expect((await adminCli(["remove", "--email", "root@example.com"])).stderr).toContain("is the last enabled owner and cannot be removed");

    const audit = await t.db.query<{ actor: string; action: string; details: Record<string, unknown> }>(
      "select actor, action, details from audit_events where target = 'cli-viewer@example.com' and action <> 'admin.sign_in' order by id",
    );
    expect(audit.map((a) => a.action)).toEqual(["admin.create", "admin.update", "admin.update", "admin.update", "admin.update", "admin.remove"]);
    for (const row of audit) expect(row.actor).toMatch(/^cli:/);
  });
});

describe("secrets", () => {
  it("no password ever appears in an audit row or a log line", async () => {
    const audit = JSON.stringify(await t.db.query("select * from audit_events"));
    const logs = t.logs.join("\n");
    expect(passwords.size).toBeGreaterThan(8);
    for (const password of passwords) {
      expect(audit).not.toContain(password);
      expect(logs).not.toContain(password);
    }
  });
});
