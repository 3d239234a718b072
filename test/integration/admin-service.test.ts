import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import { AdminService, ListApiTokensResponseSchema } from "@provider-credentials/wire/gen/admin_pb";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { AdminStore, SIGN_IN_ACCOUNT_MAX_FAILURES, SIGN_IN_MAX_FAILURES } from "../../service/src/admins/admin-store.js";
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
    // Long enough, but guessable or made of the account's own name: refused, saying why, never repeating the password.
    const refusals: Array<[string, string]> = [
      ["aaaaaaaaaaaa", "password: is too easy to guess"],
      ["password1234", "password: is too easy to guess"],
      ["qwertyuiop12", "password: is too easy to guess"],
      ["bob@example.com", "password: must not contain the administrator's email address or the part of it before the @"],
      ["my BOB@Example.com secret!", "password: must not contain the administrator's email address or the part of it before the @"],
      ["Bobby tables' long secret", "password: must not contain the administrator's email address or the part of it before the @"],
    ];
    for (const [weak, message] of refusals) {
      const error = await store.create("bob@example.com", weak, { actor: "test", source: null }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(error?.message, weak).toContain(message);
      expect(error?.message, weak).not.toContain(weak);
      expect((error as { kind?: string }).kind).toBe("invalid_argument");
    }
    await expect(store.resetPassword("alice@example.com", "aaaaaaaaaaaa", { actor: "test", source: null })).rejects.toThrow("password: is too easy to guess");
    expect(await t.db.query("select email from admin_users where email = 'bob@example.com'")).toEqual([]);
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

  // Issue #19, item 16: a session used every day never ended (one 400 days old still worked).
  it("ends a session 7 days after sign-in however much it is used, and says so in expires_at", async () => {
    const { sessionToken } = await admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "127.0.0.1" });
    const hash = createHash("sha256").update(sessionToken).digest("hex");
    // Signed in 6 days 23 hours ago and used just now: alive, ending at the 7-day mark, not 12 hours from now.
    await t.db.query("update admin_sessions set created_at = now() - interval '6 days 23 hours', last_seen_at = now() where id_hash = $1", [hash]);
    const kept = await admin.getSession({ sessionToken });
    const left = Number(kept.expiresAt!.seconds) * 1000 - Date.now();
    expect(left).toBeGreaterThan(58 * 60_000);
    expect(left).toBeLessThanOrEqual(60 * 60_000);
    await t.db.query("update admin_sessions set created_at = now() - interval '7 days 1 minute', last_seen_at = now() where id_hash = $1", [hash]);
    expect(await rpcError(admin.getSession({ sessionToken }))).toEqual({ code: Code.Unauthenticated, message: "session expired or signed out" });
    const old = (await admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "127.0.0.1" })).sessionToken;
    await t.db.query("update admin_sessions set created_at = now() - interval '400 days', last_seen_at = now() where id_hash = $1", [
      createHash("sha256").update(old).digest("hex"),
    ]);
    expect((await rpcError(admin.getSession({ sessionToken: old }))).code).toBe(Code.Unauthenticated);
  });

  it("takes the session lifetime from ADMIN_SESSION_LIFETIME_HOURS", async () => {
    const short = await startTestService({ sessionLifetimeHours: 1 });
    try {
      await new AdminStore(short.service.orm).create("hal@example.com", PASSWORD, { actor: "test", source: null });
      const client = createClient(AdminService, short.transport("grpc", short.adminToken));
      const res = await client.signIn({ email: "hal@example.com", password: PASSWORD, source: "127.0.0.1" });
      const left = Number(res.expiresAt!.seconds) * 1000 - Date.now();
      expect(left).toBeGreaterThan(59 * 60_000);
      expect(left).toBeLessThanOrEqual(60 * 60_000);
      expect((await client.getSession({ sessionToken: res.sessionToken })).admin?.email).toBe("hal@example.com");
      await short.db.query("update admin_sessions set created_at = now() - interval '61 minutes', last_seen_at = now()");
      expect((await rpcError(client.getSession({ sessionToken: res.sessionToken }))).code).toBe(Code.Unauthenticated);
    } finally {
      await short.close();
    }
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
  it("after 10 failures in 15 minutes for an account, refuses the addresses that failed, with Retry-After, but not an address that did not", async () => {
    const store = new AdminStore(t.service.orm);
    await store.create("dave@example.com", PASSWORD, { actor: "test", source: null });
    for (let i = 0; i < SIGN_IN_ACCOUNT_MAX_FAILURES; i++) {
      // Each from a different address: only the account's count reaches its limit.
      expect((await rpcError(admin.signIn({ email: "dave@example.com", password: `wrong-${i}-password`, source: `192.0.2.${i}` }))).code).toBe(
        Code.Unauthenticated,
      );
    }
    let error: ConnectError | undefined;
    try {
      await admin.signIn({ email: "dave@example.com", password: PASSWORD, source: "192.0.2.3" });
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
    expect(Number(n)).toBe(SIGN_IN_ACCOUNT_MAX_FAILURES);
    // An address without a failure for the account is still judged: the right password works, a wrong one is counted there.
    const ok = await admin.signIn({ email: "dave@example.com", password: PASSWORD, source: "192.0.2.200" });
    expect(ok.admin?.email).toBe("dave@example.com");
    expect((await rpcError(admin.signIn({ email: "dave@example.com", password: "wrong-again-password", source: "192.0.2.201" }))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await rpcError(admin.signIn({ email: "dave@example.com", password: PASSWORD, source: "192.0.2.201" }))).code).toBe(Code.ResourceExhausted);
    // Once the failures age out of the window, the right password works again from an address that failed.
    await t.db.query("update admin_sign_in_attempts set started_at = started_at - interval '15 minutes' where account = 'dave@example.com'");
    const again = await admin.signIn({ email: "dave@example.com", password: PASSWORD, source: "192.0.2.3" });
    expect(again.admin?.email).toBe("dave@example.com");
  });

  it("after 10 failures from one address, refuses that address for any account but not others", async () => {
    for (let i = 0; i < SIGN_IN_MAX_FAILURES; i++) {
      await rpcError(admin.signIn({ email: `guess${i}@example.com`, password: "whatever-password", source: "198.18.0.9" }));
    }
    expect((await rpcError(admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "198.18.0.9" }))).code).toBe(Code.ResourceExhausted);
    const elsewhere = await admin.signIn({ email: "alice@example.com", password: PASSWORD, source: "198.18.0.10" });
    expect(elsewhere.admin?.email).toBe("alice@example.com");
  });

  // Issue #19, item 3: 200 wrong passwords at once from one address were all judged (401), and the right one was
  // accepted after 30 failures of the same burst.
  it("judges no more attempts than the limit however many arrive at once, and then refuses the right password", async () => {
    const store = new AdminStore(t.service.orm);
    await store.create("erin@example.com", PASSWORD, { actor: "test", source: null });
    const source = "198.51.100.77";
    const burst = await Promise.all(
      Array.from({ length: 200 }, (_, i) => rpcError(admin.signIn({ email: "erin@example.com", password: `wrong password number ${i}`, source }))),
    );
    const codes = burst.map((e) => e.code);
    const judged = codes.filter((c) => c === Code.Unauthenticated).length;
    expect(judged).toBeLessThanOrEqual(SIGN_IN_MAX_FAILURES);
    expect(judged).toBeGreaterThan(0);
    // Every other attempt is refused as too many, none fails otherwise.
    expect(burst.filter((e) => e.code !== Code.Unauthenticated && e.code !== Code.ResourceExhausted)).toEqual([]);
    const [{ n }] = await t.db.query<{ n: string }>(
      "select count(*) as n from audit_events where action = 'admin.sign_in_failed' and target = 'erin@example.com'",
    );
    expect(Number(n)).toBe(judged);
    // The right password, in the same burst of attempts from that address, is refused now that the limit is reached.
    const right = await rpcError(admin.signIn({ email: "erin@example.com", password: PASSWORD, source }));
    expect(right.code).toBe(Code.ResourceExhausted);
    // Both ports answer from the same count.
    const overConnect = createClient(AdminService, t.transport("connect", t.adminToken));
    expect((await rpcError(overConnect.signIn({ email: "erin@example.com", password: PASSWORD, source }))).code).toBe(Code.ResourceExhausted);
  });

  it("a burst mixing the right password with wrong ones never judges more than the limit, and the right one wins only if judged", async () => {
    const store = new AdminStore(t.service.orm);
    await store.create("frank@example.com", PASSWORD, { actor: "test", source: null });
    const source = "198.51.100.78";
    const attempts = Array.from({ length: 60 }, (_, i) => (i === 30 ? PASSWORD : `wrong password number ${i}`));
    const outcomes = await Promise.all(
      attempts.map((password) =>
        admin.signIn({ email: "frank@example.com", password, source }).then(
          () => "signed in",
          (e) => ConnectError.from(e).code,
        ),
      ),
    );
    const failures = outcomes.filter((o) => o === Code.Unauthenticated).length;
    expect(failures).toBeLessThanOrEqual(SIGN_IN_MAX_FAILURES);
    expect(outcomes.filter((o) => o === "signed in").length).toBeLessThanOrEqual(1);
    // A success was an attempt judged like the others, and only the right password's.
    if (outcomes[30] !== "signed in") expect(outcomes[30]).toBe(Code.ResourceExhausted);
    expect(outcomes.filter((o, i) => i !== 30 && o === "signed in")).toEqual([]);
  });

  // Issue #19, item 4: knowing an administrator's email was enough to keep them locked out from every address.
  it("an attacker who exhausts their address's limit for an account does not lock its owner out from another address", async () => {
    const store = new AdminStore(t.service.orm);
    await store.create("grace@example.com", PASSWORD, { actor: "test", source: null });
    const attacker = "203.0.113.66";
    for (let i = 0; i < SIGN_IN_MAX_FAILURES + 5; i++) {
      await rpcError(admin.signIn({ email: "grace@example.com", password: `attacker guess ${i}`, source: attacker }));
    }
    expect((await rpcError(admin.signIn({ email: "grace@example.com", password: PASSWORD, source: attacker }))).code).toBe(Code.ResourceExhausted);
    // The owner, from their own address, with the right password.
    const owner = await admin.signIn({ email: "grace@example.com", password: PASSWORD, source: "203.0.113.5" });
    expect(owner.admin?.email).toBe("grace@example.com");
    expect((await admin.getSession({ sessionToken: owner.sessionToken })).admin?.email).toBe("grace@example.com");
    // And still after more failures from more addresses, from an address that has not failed.
    for (let i = 0; i < 5; i++) await rpcError(admin.signIn({ email: "grace@example.com", password: "another guess!!", source: `203.0.113.${100 + i}` }));
    expect((await admin.signIn({ email: "grace@example.com", password: PASSWORD, source: "203.0.113.6" })).admin?.email).toBe("grace@example.com");
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
      message: "scope: must be one of: resolve, admin, metrics",
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
    expect(byOrg.events.every((e) => e.actor === "bob@example.com via token:service-admin-token")).toBe(true);
    expect(JSON.parse(byOrg.events[0].detailsJson)).toMatchObject({ changed: ["credential_name"], credential_name: "renamed" });

    const byCredential = await admin.listAuditEvents({ credentialId: id, action: "credential.activate" });
    expect(byCredential.events).toHaveLength(1);

    const first = await admin.listAuditEvents({ organizationId: "audit-org", pageSize: 2 });
    const second = await admin.listAuditEvents({ organizationId: "audit-org", pageSize: 2, pageToken: first.nextPageToken });
    const third = await admin.listAuditEvents({ organizationId: "audit-org", pageSize: 2, pageToken: second.nextPageToken });
    expect([...first.events, ...second.events, ...third.events].map((e) => e.action)).toEqual(byOrg.events.map((e) => e.action));
    expect(third.nextPageToken).toBe("");

    expect((await rpcError(admin.listAuditEvents({ action: "DROP TABLE" }))).message).toMatch(/^action: must be one of the actions the audit log records/);
    expect((await rpcError(admin.listAuditEvents({ action: "credential.explode" }))).message).toMatch(/^action: must be one of the actions/);
    expect((await rpcError(admin.listAuditEvents({ actor: "\u0000" }))).message).toBe("actor: must be 1-128 printable ASCII characters");
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
        "ADMIN_PASSWORD: must be at least 12 characters",
      );
      for (const [weak, why] of [
        ["aaaaaaaaaaaa", "ADMIN_PASSWORD: is too easy to guess"],
        ["root@example.com", "ADMIN_PASSWORD: must not contain the administrator's email address"],
      ]) {
        const error = await ensureFirstAdmin(store, { ADMIN_EMAIL: "root@example.com", ADMIN_PASSWORD: weak }, false).catch((e: Error) => e);
        expect(error).toBeInstanceOf(ConfigError);
        expect((error as Error).message).toContain(why);
        expect((error as Error).message).not.toContain(weak);
      }
      await expect(ensureFirstAdmin(store, { ADMIN_EMAIL: "root", ADMIN_PASSWORD: PASSWORD }, false)).rejects.toThrow("ADMIN_EMAIL: must be an email address");
      expect(await store.count()).toBe(0);
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

describe("removing an administrator", () => {
  it("ends their sessions at once, is audited, and never removes the last administrator", async () => {
    const other = await startTestService();
    try {
      const store = new AdminStore(other.service.orm);
      const client = createClient(AdminService, other.transport("grpc", other.adminToken));
      const by = { actor: "cli:operator", source: null };
      await store.create("ivan@example.com", PASSWORD, by);
      await store.create("judy@example.com", PASSWORD, by);
      const { sessionToken } = await client.signIn({ email: "judy@example.com", password: PASSWORD, source: "127.0.0.1" });
      const second = await client.signIn({ email: "judy@example.com", password: PASSWORD, source: "127.0.0.2" });
      expect((await client.getSession({ sessionToken })).admin?.email).toBe("judy@example.com");

      expect(await store.remove(" JUDY@example.com ", by)).toEqual({ sessionsEnded: 2 });
      for (const token of [sessionToken, second.sessionToken])
        expect((await rpcError(client.getSession({ sessionToken: token }))).code).toBe(Code.Unauthenticated);
      expect((await rpcError(client.signIn({ email: "judy@example.com", password: PASSWORD, source: "127.0.0.1" }))).code).toBe(Code.Unauthenticated);
      expect((await client.listAdmins({})).admins.map((a) => a.email)).toEqual(["ivan@example.com"]);
      const audit = await other.db.query("select actor, action, target, details from audit_events where action = 'admin.remove'");
      expect(audit).toEqual([{ actor: "cli:operator", action: "admin.remove", target: "judy@example.com", details: { sessions_ended: 2 } }]);

      await expect(store.remove("judy@example.com", by)).rejects.toThrow('email: no administrator with email "judy@example.com"');
      await expect(store.remove("ivan@example.com", by)).rejects.toThrow('email: "ivan@example.com" is the last administrator and cannot be removed');
      expect((await client.listAdmins({})).admins.map((a) => a.email)).toEqual(["ivan@example.com"]);

      // Two removals at once cannot leave none.
      await store.create("kate@example.com", PASSWORD, by);
      const both = await Promise.allSettled([store.remove("ivan@example.com", by), store.remove("kate@example.com", by)]);
      expect(both.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect((await client.listAdmins({})).admins).toHaveLength(1);
    } finally {
      await other.close();
    }
  });
});
