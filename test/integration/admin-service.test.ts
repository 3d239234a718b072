import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import { AdminService, ListApiTokensResponseSchema } from "../../service/src/gen/admin_pb.js";
import { Provider } from "../../service/src/gen/credentials_pb.js";
import { AdminStore } from "../../service/src/admins/admin-store.js";
import { ensureFirstAdmin } from "../../service/src/admins/first-admin.js";
import { ConfigError } from "../../service/src/runtime/config.js";
import { FAKE_KEYS, rpcError, startTestService, type TestService } from "../support/harness.js";

let t: TestService;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
const PASSWORD = "correct horse battery staple";

beforeAll(async () => {
  t = await startTestService();
  admin = createClient(AdminService, t.transport("grpc", t.adminToken));
  await new AdminStore(t.service.orm).create("Alice@Example.com", PASSWORD, { actor: "test", source: null });
});
afterAll(async () => {
  await t?.close();
});

describe("administrators", () => {
  it("stores emails in lower case and passwords only as scrypt hashes", async () => {
    const rows = await t.db.query<{ email: string; password_hash: string }>("select email, password_hash from admin_users");
    expect(rows).toHaveLength(1);
    expect(rows[0].email).toBe("alice@example.com");
    expect(rows[0].password_hash).toMatch(/^scrypt\$15\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(await t.db.query("select * from admin_users"))).not.toContain(PASSWORD);
    const { admins } = await admin.listAdmins({});
    expect(admins.map((a) => a.email)).toEqual(["alice@example.com"]);
  });

  it("refuses weak passwords and malformed emails when creating", async () => {
    const store = new AdminStore(t.service.orm);
    await expect(store.create("bob@example.com", "short", { actor: "test", source: null })).rejects.toThrow("password: must be at least 12 characters");
    await expect(store.create("not-an-email", PASSWORD, { actor: "test", source: null })).rejects.toThrow("email: must be an email address");
    await expect(store.create("ALICE@example.com", PASSWORD, { actor: "test", source: null })).rejects.toThrow(
      'email: an administrator with email "alice@example.com" already exists',
    );
  });
});

describe("sign-in and sessions", () => {
  it("signs in case-insensitively, returns a 256-bit session id stored only as its hash, and audits it", async () => {
    const res = await admin.signIn({ email: " ALICE@example.com ", password: PASSWORD, source: "203.0.113.7", userAgent: "vitest" });
    expect(res.sessionToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(res.admin?.email).toBe("alice@example.com");
    const expires = Number(res.expiresAt!.seconds) * 1000;
    expect(expires - Date.now()).toBeGreaterThan(11.9 * 3600_000);
    expect(expires - Date.now()).toBeLessThanOrEqual(12 * 3600_000);
    const sessions = await t.db.query<{ id_hash: string; source: string; user_agent: string }>("select id_hash, source, user_agent from admin_sessions");
    expect(sessions).toContainEqual({
      id_hash: createHash("sha256").update(res.sessionToken).digest("hex"),
      source: "203.0.113.7",
      user_agent: "vitest",
    });
    expect(JSON.stringify(sessions)).not.toContain(res.sessionToken);
    const audit = await t.db.query("select actor, action, source from audit_events where action = 'admin.sign_in'");
    expect(audit).toContainEqual({ actor: "alice@example.com", action: "admin.sign_in", source: "203.0.113.7" });
  });

  it("answers a wrong password and an unknown email alike, and audits the failures", async () => {
    const wrong = await rpcError(admin.signIn({ email: "alice@example.com", password: "nope-nope-nope", source: "198.51.100.1" }));
    const unknown = await rpcError(admin.signIn({ email: "mallory@example.com", password: PASSWORD, source: "198.51.100.1" }));
    expect(wrong).toEqual({ code: Code.Unauthenticated, message: "invalid email or password" });
    expect(unknown).toEqual(wrong);
    const failures = await t.db.query<{ target: string }>(
      "select target from audit_events where action = 'admin.sign_in_failed' and source = '198.51.100.1' order by id",
    );
    expect(failures.map((f) => f.target)).toEqual(["alice@example.com", "mallory@example.com"]);
    expect(JSON.stringify(await t.db.query("select * from audit_events"))).not.toContain("nope-nope-nope");
  });

  it("GetSession returns the administrator until sign-out, then refuses", async () => {
    const { sessionToken } = await admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "127.0.0.1" });
    const session = await admin.getSession({ sessionToken });
    expect(session.admin?.email).toBe("alice@example.com");
    await admin.signOut({ sessionToken });
    await admin.signOut({ sessionToken }); // idempotent
    expect(await rpcError(admin.getSession({ sessionToken }))).toEqual({ code: Code.Unauthenticated, message: "session expired or signed out" });
    expect(await rpcError(admin.getSession({ sessionToken: "garbage" }))).toEqual({ code: Code.Unauthenticated, message: "session expired or signed out" });
  });

  it("expires a session idle for more than 12 hours, and extends one in use", async () => {
    const { sessionToken } = await admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "127.0.0.1" });
    const hash = createHash("sha256").update(sessionToken).digest("hex");
    await t.db.query("update admin_sessions set last_seen_at = now() - interval '11 hours 59 minutes' where id_hash = $1", [hash]);
    const kept = await admin.getSession({ sessionToken });
    expect(Number(kept.expiresAt!.seconds) * 1000 - Date.now()).toBeGreaterThan(11.9 * 3600_000);
    await t.db.query("update admin_sessions set last_seen_at = now() - interval '12 hours 1 minute' where id_hash = $1", [hash]);
    expect((await rpcError(admin.getSession({ sessionToken }))).code).toBe(Code.Unauthenticated);
  });

  it("resetting a password signs out every session of that administrator", async () => {
    const store = new AdminStore(t.service.orm);
    await store.create("carol@example.com", PASSWORD, { actor: "test", source: null });
    const { sessionToken } = await admin.signIn({ email: "carol@example.com", password: PASSWORD, source: "127.0.0.1" });
    const fresh = await store.resetPassword("carol@example.com", undefined, { actor: "test", source: null });
    expect(fresh).toHaveLength(20);
    expect((await rpcError(admin.getSession({ sessionToken }))).code).toBe(Code.Unauthenticated);
    expect((await rpcError(admin.signIn({ email: "carol@example.com", password: PASSWORD, source: "127.0.0.2" }))).code).toBe(Code.Unauthenticated);
    await admin.signIn({ email: "carol@example.com", password: fresh, source: "127.0.0.2" });
  });
});

describe("sign-in rate limiting", () => {
  it("after 10 failures in 15 minutes for an account, refuses even the right password, with Retry-After", async () => {
    const store = new AdminStore(t.service.orm);
    await store.create("dave@example.com", PASSWORD, { actor: "test", source: null });
    for (let i = 0; i < 10; i++) {
      // Each from a different address: the account limit is what trips.
      expect((await rpcError(admin.signIn({ email: "dave@example.com", password: `wrong-${i}-password`, source: `192.0.2.${i}` }))).code).toBe(
        Code.Unauthenticated,
      );
    }
    let error: ConnectError | undefined;
    try {
      await admin.signIn({ email: "dave@example.com", password: PASSWORD, source: "192.0.2.200" });
    } catch (e) {
      error = ConnectError.from(e);
    }
    expect(error?.code).toBe(Code.ResourceExhausted);
    expect(error?.rawMessage).toBe("too many failed sign-ins; try again in 15 minutes");
    const retryAfter = Number(error?.metadata.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(880);
    expect(retryAfter).toBeLessThanOrEqual(900);
    // A blocked attempt is not another failure: it does not extend the lock.
    const [{ n }] = await t.db.query<{ n: string }>(
      "select count(*) as n from audit_events where action = 'admin.sign_in_failed' and target = 'dave@example.com'",
    );
    expect(Number(n)).toBe(10);
    // Once the failures age out of the window, the right password works again.
    await t.db.query("update audit_events set occurred_at = occurred_at - interval '15 minutes' where target = 'dave@example.com'");
    const ok = await admin.signIn({ email: "dave@example.com", password: PASSWORD, source: "192.0.2.200" });
    expect(ok.admin?.email).toBe("dave@example.com");
  });

  it("after 10 failures from one address, refuses that address for any account but not others", async () => {
    for (let i = 0; i < 10; i++) {
      await rpcError(admin.signIn({ email: `guess${i}@example.com`, password: "whatever-password", source: "198.18.0.9" }));
    }
    expect((await rpcError(admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "198.18.0.9" }))).code).toBe(Code.ResourceExhausted);
    const elsewhere = await admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "198.18.0.10" });
    expect(elsewhere.admin?.email).toBe("alice@example.com");
  });
});

describe("API tokens over RPC", () => {
  it("creates a token shown once, lists it without the token, and revokes it at once on this replica", async () => {
    const created = await admin.createApiToken({ name: "gateway", scope: "resolve" });
    expect(created.token).toMatch(/^pct_[A-Za-z0-9_-]{43}$/);
    expect(created.apiToken?.createdBy).toBe("token:service-admin-token");
    const { organizations, credentials } = t.clients();
    await organizations.createOrganization({ organizationId: "tok-org", name: "Tokens" });
    const key = FAKE_KEYS.openai();
    await credentials.createCredential({ organizationId: "tok-org", provider: Provider.OPENAI, credentialName: "k", apiKey: key });
    const gateway = t.clients(created.token).credentials;
    expect((await gateway.resolveKey({ scope: { case: "organizationId", value: "tok-org" }, provider: Provider.OPENAI })).apiKey).toBe(key);

    const listed = await admin.listApiTokens({});
    expect(listed.apiTokens.map((x) => [x.name, x.scope])).toContainEqual(["gateway", "resolve"]);
    expect(toJsonString(ListApiTokensResponseSchema, listed)).not.toContain(created.token);

    expect((await rpcError(admin.createApiToken({ name: "gateway", scope: "admin" }))).code).toBe(Code.AlreadyExists);
    expect(await rpcError(admin.createApiToken({ name: "x", scope: "root" }))).toEqual({
      code: Code.InvalidArgument,
      message: "scope: must be one of: resolve, admin",
    });

    await admin.revokeApiToken({ name: "gateway" });
    expect((await rpcError(gateway.resolveKey({ scope: { case: "organizationId", value: "tok-org" }, provider: Provider.OPENAI }))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await rpcError(admin.revokeApiToken({ name: "gateway" }))).code).toBe(Code.NotFound);
  });

  it("refuses AdminService to a resolve-scope token", async () => {
    const { token } = await admin.createApiToken({ name: "resolver-only", scope: "resolve" });
    const limited = createClient(AdminService, t.transport("grpc", token));
    expect((await rpcError(limited.listApiTokens({}))).code).toBe(Code.PermissionDenied);
    expect((await rpcError(limited.listAuditEvents({}))).code).toBe(Code.PermissionDenied);
    expect((await rpcError(limited.signIn({ email: "alice@example.com", password: PASSWORD }))).code).toBe(Code.PermissionDenied);
  });
});

describe("audit log over RPC", () => {
  it("lists newest first, filters by organisation, credential and action, and pages", async () => {
    const { organizations, credentials } = t.clients(t.adminToken, { "x-provider-credentials-actor": "bob@example.com" });
    await organizations.createOrganization({ organizationId: "audit-org", name: "Audit" });
    const { credential } = await credentials.createCredential({
      organizationId: "audit-org",
      provider: Provider.ANTHROPIC,
      credentialName: "a",
      apiKey: FAKE_KEYS.anthropic(),
    });
    const id = credential!.credentialId;
    await credentials.deactivateCredential({ credentialId: id });
    await credentials.activateCredential({ credentialId: id });
    await credentials.updateCredential({ credentialId: id, credentialName: "renamed" });

    const byOrg = await admin.listAuditEvents({ organizationId: "audit-org" });
    expect(byOrg.events.map((e) => e.action)).toEqual([
      "credential.update",
      "credential.activate",
      "credential.deactivate",
      "credential.create",
      "organization.create",
    ]);
    expect(byOrg.events.every((e) => e.actor === "bob@example.com")).toBe(true);
    expect(JSON.parse(byOrg.events[0].detailsJson)).toMatchObject({ changed: ["credential_name"], credential_name: "renamed" });

    const byCredential = await admin.listAuditEvents({ credentialId: id, action: "credential.activate" });
    expect(byCredential.events).toHaveLength(1);

    const first = await admin.listAuditEvents({ organizationId: "audit-org", pageSize: 2 });
    const second = await admin.listAuditEvents({ organizationId: "audit-org", pageSize: 2, pageToken: first.nextPageToken });
    const third = await admin.listAuditEvents({ organizationId: "audit-org", pageSize: 2, pageToken: second.nextPageToken });
    expect([...first.events, ...second.events, ...third.events].map((e) => e.action)).toEqual(byOrg.events.map((e) => e.action));
    expect(third.nextPageToken).toBe("");

    expect((await rpcError(admin.listAuditEvents({ action: "DROP TABLE" }))).message).toBe("action: must look like credential.update or organization.delete");
    expect((await rpcError(admin.listAuditEvents({ pageToken: "xyz" }))).message).toMatch(/^page_token: is malformed/);
    expect((await rpcError(admin.listAuditEvents({ credentialId: "nope" }))).message).toBe("credential_id: must be a UUID");
  });
});

describe("first administrator", () => {
  it("is created from ADMIN_EMAIL and ADMIN_PASSWORD, generated on the embedded default, and skipped once any exists", async () => {
    const other = await startTestService();
    try {
      const store = new AdminStore(other.service.orm);
      await expect(ensureFirstAdmin(store, { ADMIN_EMAIL: "root@example.com" }, false)).rejects.toBeInstanceOf(ConfigError);
      await expect(ensureFirstAdmin(store, { ADMIN_EMAIL: "root@example.com", ADMIN_PASSWORD: "short" }, false)).rejects.toThrow(
        "ADMIN_EMAIL / ADMIN_PASSWORD: password: must be at least 12 characters",
      );
      expect(await ensureFirstAdmin(store, {}, false)).toBeUndefined();
      const generated = await ensureFirstAdmin(store, {}, true);
      expect(generated?.email).toBe("admin@localhost");
      expect(generated?.generatedPassword).toMatch(/^[A-Za-z0-9]{20}$/);
      expect(await ensureFirstAdmin(store, { ADMIN_EMAIL: "root@example.com", ADMIN_PASSWORD: PASSWORD }, true)).toBeUndefined();
      const signedIn = await createClient(AdminService, other.transport("grpc", other.adminToken)).signIn({
        email: "admin@localhost",
        password: generated!.generatedPassword!,
      });
      expect(signedIn.admin?.email).toBe("admin@localhost");
    } finally {
      await other.close();
    }
  });
});

describe("the caller's address in the audit log", () => {
  it("is taken from x-provider-credentials-source when an admin token forwards it, else from the socket", async () => {
    const forwarded = t.clients(t.adminToken, { "x-provider-credentials-source": "203.0.113.9" });
    await forwarded.organizations.createOrganization({ organizationId: "src-org", name: "Source" });
    await t.clients().organizations.createOrganization({ organizationId: "src-org-2", name: "Source 2" });
    const rows = await t.db.query<{ organization_id: string; source: string }>(
      "select organization_id, source from audit_events where action = 'organization.create' and organization_id like 'src-org%' order by id",
    );
    expect(rows).toEqual([
      { organization_id: "src-org", source: "203.0.113.9" },
      { organization_id: "src-org-2", source: "127.0.0.1" },
    ]);
  });
});
