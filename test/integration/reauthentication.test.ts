// Recent sign-in for sensitive actions, ResetTwoFactor, and the refusal of an account that must enrol, against a
// real service and PostgreSQL. A portal account acts through the admin token, the actor header and its session
// (SESSION_HEADER); a session's last sign-in is made older than 10 minutes here by moving its time back in the
// database, as the clock would.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Secret, TOTP } from "otpauth";
import { ACTOR_HEADER, SESSION_HEADER, SOURCE_HEADER } from "@provider-credentials/wire/auth";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { CredentialService, OrganizationService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS, rpcError, startTestService, type TestService, rpcRefusal } from "../support/harness.js";

const PASSWORD = "juniper kites over granite hills";
const OWNER = "owner@example.com";
/** An owner with two-factor sign-in on. */
const GUARDED = "guarded@example.com";
const EDITOR = "editor@example.com";
const VIEWER = "viewer@example.com";
const ORG = "acme";

let t: TestService;
/** The portal's own calls: the admin token acting for no account. */
let portal: Client<typeof AdminService>;
let guardedSecret = "";
let guardedRecoveryCodes: string[] = [];
let source = 0;
const nextSource = () => `198.51.100.${++source}`;

interface Clients {
  admin: Client<typeof AdminService>;
  credentials: Client<typeof CredentialService>;
  organizations: Client<typeof OrganizationService>;
}

/** The admin token with these headers, over gRPC, as the portal's asAdmin sends them. */
function clients(headers: Record<string, string>, token = t.adminToken): Clients {
  const add: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    for (const [name, value] of Object.entries(headers)) req.header.set(name, value);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: `http://${t.address}`, interceptors: [add] });
  return {
    admin: createClient(AdminService, transport),
    credentials: createClient(CredentialService, transport),
    organizations: createClient(OrganizationService, transport),
  };
}

/** Calls for `email` in the session `session` (none: no session header). */
const as = (email: string, session?: string) => clients({ [ACTOR_HEADER]: email, ...(session ? { [SESSION_HEADER]: session } : {}) });

async function signIn(email: string): Promise<string> {
  const answer = await portal.signIn({ email, password: PASSWORD, source: nextSource() });
  expect(answer.sessionToken).not.toBe("");
  return answer.sessionToken;
}

/** The session's last sign-in, moved back `minutes` minutes. */
async function age(session: string, minutes: number): Promise<void> {
  await t.db.query(
    "update admin_sessions set authenticated_at = now() - $2 * interval '1 minute' where id_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
    [session, minutes],
  );
}

const codeAt = (secret: string, timestamp: number) =>
  new TOTP({ algorithm: "SHA1", digits: 6, period: 30, secret: Secret.fromBase32(secret) }).generate({ timestamp });
const auditRows = (action: string, target?: string) =>
  t.db.query<{ actor: string; target: string; source: string | null; details: Record<string, unknown> }>(
    `select actor, target, source, details from audit_events where action = $1 ${target ? "and target = $2" : ""} order by id`,
    target ? [action, target] : [action],
  );

beforeAll(async () => {
  t = await startTestService();
  portal = createClient(AdminService, t.transport("grpc", t.adminToken));
  const by = { actor: "test", source: null };
  const admins = t.service.parts.admins;
  await t.clients().organizations.createOrganization({ organizationId: ORG, name: "Acme" });
  await admins.create(OWNER, PASSWORD, by);
  await admins.create(GUARDED, PASSWORD, by);
  await admins.create(EDITOR, PASSWORD, by, "password", { role: "editor" });
  await admins.create(VIEWER, PASSWORD, by, "password", { role: "viewer" });
  // GUARDED enrols an authenticator.
  const session = await signIn(GUARDED);
  const begun = await portal.beginTwoFactorEnrolment({ sessionToken: session });
  guardedSecret = begun.secret;
  guardedRecoveryCodes = (await portal.confirmTwoFactorEnrolment({ sessionToken: session, code: codeAt(begun.secret, Date.now()) })).recoveryCodes;
});
afterAll(async () => {
  await t?.close();
});

/** GUARDED's session, through its second factor. */
async function guardedSession(timestamp = Date.now()): Promise<string> {
  // Any code accepted so far (the enrolment's) may be of the same time step: forget it, as if time had passed.
  await t.db.query("update admin_users set totp_last_step = null where email = $1", [GUARDED]);
  const { secondFactorToken } = await portal.signIn({ email: GUARDED, password: PASSWORD, source: nextSource() });
  const { sessionToken } = await portal.completeSignIn({ secondFactorToken, code: codeAt(guardedSecret, timestamp), source: nextSource() });
  return sessionToken;
}

describe("sensitive actions for a portal account", () => {
  it("pass within 10 minutes of the session's sign-in", async () => {
    const session = await signIn(OWNER);
    const { token } = await as(OWNER, session).admin.createApiToken({ name: "fresh", scope: "resolve" });
    expect(token).toMatch(/^pct_/);
    await age(session, 9);
    await as(OWNER, session).admin.rotateApiToken({ name: "fresh" });
  });

  it("are refused with FAILED_PRECONDITION, reason REAUTHENTICATION_REQUIRED, when the sign-in is older, and nothing changes", async () => {
    const session = await signIn(OWNER);
    await age(session, 11);
    const owner = as(OWNER, session).admin;
    const calls: Array<[string, () => Promise<unknown>]> = [
      ["CreateApiToken", () => owner.createApiToken({ name: "stale", scope: "resolve" })],
      ["RotateApiToken", () => owner.rotateApiToken({ name: "fresh" })],
      ["CreateAdmin", () => owner.createAdmin({ email: "new@example.com", role: "viewer" })],
      ["UpdateAdmin", () => owner.updateAdmin({ email: VIEWER, role: "editor" })],
      ["DeleteAdmin", () => owner.deleteAdmin({ email: VIEWER })],
      ["RevokeAdminSessions", () => owner.revokeAdminSessions({ email: VIEWER })],
      ["ResetTwoFactor", () => owner.resetTwoFactor({ email: GUARDED })],
      ["SetSecurityPolicy", () => owner.setSecurityPolicy({ requireTwoFactor: true })],
    ];
    for (const [name, call] of calls) {
      const refused = await rpcRefusal(call());
      expect(refused, name).toMatchObject({ code: Code.FailedPrecondition, reason: "REAUTHENTICATION_REQUIRED" });
      expect(refused.message).toBe(
        `${name} needs a sign-in within the last 10 minutes: confirm your password (or a code of your authenticator app) again, then repeat it`,
      );
    }
    const { apiTokens } = await portal.listApiTokens({});
    expect(apiTokens.map((a) => a.name)).not.toContain("stale");
    const { admins } = await portal.listAdmins({});
    expect(admins.find((a) => a.email === VIEWER)).toMatchObject({ role: "viewer" });
    expect(admins.find((a) => a.email === GUARDED)).toMatchObject({ twoFactorEnabled: true });
    expect(admins.map((a) => a.email)).not.toContain("new@example.com");
    expect((await portal.getSecurityPolicy({})).policy?.requireTwoFactor).toBe(false);
  });

  it("are refused when the call names no session, or a session that is not the account's or not live", async () => {
    const noSession = await rpcRefusal(as(OWNER).admin.createApiToken({ name: "nosession", scope: "resolve" }));
    expect(noSession).toMatchObject({ code: Code.FailedPrecondition, reason: "REAUTHENTICATION_REQUIRED" });
    expect(noSession.message).toContain(SESSION_HEADER);
    const editorSession = await signIn(EDITOR);
    const others = await rpcRefusal(as(OWNER, editorSession).admin.createApiToken({ name: "others", scope: "resolve" }));
    expect(others).toMatchObject({ code: Code.FailedPrecondition, reason: "REAUTHENTICATION_REQUIRED" });
    expect(others.message).toMatch(/no live session of account "owner@example.com": sign in again/);
    const ended = await signIn(OWNER);
    await portal.signOut({ sessionToken: ended });
    expect(await rpcRefusal(as(OWNER, ended).admin.createApiToken({ name: "ended", scope: "resolve" }))).toMatchObject({ reason: "REAUTHENTICATION_REQUIRED" });
    expect((await rpcRefusal(as(OWNER, "not a session").admin.listAdmins({}))).code).toBe(Code.InvalidArgument);
  });

  it("leaves everything else alone: reads, revoking a token, organisations", async () => {
    const session = await signIn(OWNER);
    await age(session, 60);
    const owner = as(OWNER, session);
    await owner.admin.listAdmins({});
    await owner.admin.listApiTokens({});
    await owner.organizations.createOrganization({ organizationId: "stale-ok", name: "Stale but fine" });
    await owner.admin.revokeApiToken({ name: "fresh" });
  });

  it("do not concern tokens acting alone, nor an actor that is no account", async () => {
    await clients({}).admin.createApiToken({ name: "alone", scope: "resolve" });
    await clients({ [ACTOR_HEADER]: "deploy-bot" }).admin.createApiToken({ name: "bot", scope: "resolve" });
    await clients({}).admin.setSecurityPolicy({ requireTwoFactor: false });
  });
});

describe("Reauthenticate", () => {
  it("with the password: sensitive actions pass again for 10 minutes, audited", async () => {
    const session = await signIn(OWNER);
    await age(session, 30);
    expect((await rpcRefusal(as(OWNER, session).admin.createApiToken({ name: "again", scope: "resolve" }))).reason).toBe("REAUTHENTICATION_REQUIRED");
    const from = nextSource();
    const before = Date.now();
    const { reauthenticatedUntil } = await clients({ [SOURCE_HEADER]: from }).admin.reauthenticate({ sessionToken: session, password: PASSWORD });
    const until = Number(reauthenticatedUntil!.seconds) * 1000;
    expect(until).toBeGreaterThanOrEqual(before + 10 * 60_000 - 2_000);
    expect(until).toBeLessThanOrEqual(Date.now() + 10 * 60_000 + 2_000);
    await as(OWNER, session).admin.createApiToken({ name: "again", scope: "resolve" });
    expect(await auditRows("admin.reauthenticate", OWNER)).toEqual([{ actor: OWNER, target: OWNER, source: from, details: { with: "password" } }]);
  });

  it("a wrong password is UNAUTHENTICATED, counted as a failed sign-in, and changes nothing", async () => {
    const session = await signIn(EDITOR);
    await age(session, 30);
    const from = nextSource();
    const refused = await rpcRefusal(clients({ [SOURCE_HEADER]: from }).admin.reauthenticate({ sessionToken: session, password: "not the password at all" }));
    expect(refused).toMatchObject({ code: Code.Unauthenticated, message: "invalid password" });
    expect(await auditRows("admin.sign_in_failed", EDITOR)).toEqual([
      { actor: EDITOR, target: EDITOR, source: from, details: { during: "reauthenticate", with: "password" } },
    ]);
    expect(await t.db.query("select 1 from admin_sign_in_attempts where account = $1 and source = $2", [EDITOR, from])).toHaveLength(1);
    const [row] = await t.db.query<{ stale: boolean }>(
      "select authenticated_at < now() - interval '29 minutes' as stale from admin_sessions where id_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
      [session],
    );
    expect(row.stale).toBe(true);
    // Neither password nor code; a code for an account without a second factor.
    expect(await rpcError(portal.reauthenticate({ sessionToken: session }))).toMatchObject({ code: Code.InvalidArgument, message: "password: is required" });
    expect(await rpcError(portal.reauthenticate({ sessionToken: session, code: "123456" }))).toMatchObject({
      code: Code.InvalidArgument,
      message: expect.stringMatching(/^code: /),
    });
    expect((await rpcError(portal.reauthenticate({ sessionToken: "x".repeat(43), password: PASSWORD }))).code).toBe(Code.Unauthenticated);
  });

  it("with a TOTP code, once per code, or a recovery code, for an account with a second factor", async () => {
    const session = await guardedSession(Date.now() - 30_000);
    await age(session, 15);
    expect((await rpcRefusal(as(GUARDED, session).admin.createApiToken({ name: "guarded-1", scope: "resolve" }))).reason).toBe("REAUTHENTICATION_REQUIRED");
    const code = codeAt(guardedSecret, Date.now());
    await portal.reauthenticate({ sessionToken: session, code });
    await as(GUARDED, session).admin.createApiToken({ name: "guarded-1", scope: "resolve" });
    await age(session, 15);
    // The same code again: refused (a code is accepted once), counted.
    expect(await rpcError(portal.reauthenticate({ sessionToken: session, code }))).toMatchObject({
      code: Code.Unauthenticated,
      message: "invalid password or code",
    });
    await portal.reauthenticate({ sessionToken: session, code: guardedRecoveryCodes[0] });
    await as(GUARDED, session).admin.createApiToken({ name: "guarded-2", scope: "resolve" });
    const withs = (await auditRows("admin.reauthenticate", GUARDED)).map((r) => r.details.with);
    expect(withs).toEqual(["totp", "recovery_code"]);
    expect((await auditRows("admin.recovery_code_used", GUARDED)).at(-1)?.details).toEqual({ recovery_codes_left: 9 });
    // The password alone also does.
    await age(session, 15);
    await portal.reauthenticate({ sessionToken: session, password: PASSWORD });
  });
});

describe("changing a key's api_base", () => {
  const API_BASE = "http://127.0.0.1:9/v1";

  it("needs a recent sign-in for an account; the rest of a credential does not", async () => {
    const session = await signIn(EDITOR);
    await age(session, 11);
    const editor = as(EDITOR, session).credentials;
    const withBase = await rpcRefusal(
      editor.createCredential({ organizationId: ORG, provider: Provider.OPENAI, credentialName: "proxied", apiKey: FAKE_KEYS.openai(), apiBase: API_BASE }),
    );
    expect(withBase).toMatchObject({ code: Code.FailedPrecondition, reason: "REAUTHENTICATION_REQUIRED" });
    expect(withBase.message).toMatch(/^changing a key's api_base needs a sign-in within the last 10 minutes/);
    const { credential } = await editor.createCredential({
      organizationId: ORG,
      provider: Provider.OPENAI,
      credentialName: "plain",
      apiKey: FAKE_KEYS.openai(),
    });
    await editor.updateCredential({ credentialId: credential!.credentialId, credentialName: "renamed", apiBase: "" });
    expect((await rpcRefusal(editor.updateCredential({ credentialId: credential!.credentialId, apiBase: API_BASE, apiKey: FAKE_KEYS.openai() }))).reason).toBe(
      "REAUTHENTICATION_REQUIRED",
    );
    await portal.reauthenticate({ sessionToken: session, password: PASSWORD });
    await editor.updateCredential({ credentialId: credential!.credentialId, apiBase: API_BASE, apiKey: FAKE_KEYS.openai() });
    await age(session, 11);
    // The same api_base again is no change.
    await editor.updateCredential({ credentialId: credential!.credentialId, apiBase: API_BASE, credentialName: "renamed again" });
    expect((await rpcRefusal(editor.updateCredential({ credentialId: credential!.credentialId, apiBase: "", apiKey: FAKE_KEYS.openai() }))).reason).toBe(
      "REAUTHENTICATION_REQUIRED",
    );
    // A token acting alone.
    await t.clients().credentials.updateCredential({ credentialId: credential!.credentialId, apiBase: "", apiKey: FAKE_KEYS.openai() });
  });
});

describe("ResetTwoFactor", () => {
  it("owners remove an account's second factor: it signs in with its password, audited", async () => {
    const session = await signIn(OWNER);
    const { admin } = await as(OWNER, session).admin.resetTwoFactor({ email: GUARDED.toUpperCase() });
    expect(admin).toMatchObject({ email: GUARDED, twoFactorEnabled: false });
    expect((await portal.signIn({ email: GUARDED, password: PASSWORD, source: nextSource() })).sessionToken).not.toBe("");
    expect(await t.db.query("select 1 from admin_recovery_codes c join admin_users a on a.id = c.admin_id where a.email = $1", [GUARDED])).toEqual([]);
    const [row] = await t.db.query<{ totp_secret: string | null }>("select totp_secret from admin_users where email = $1", [GUARDED]);
    expect(row.totp_secret).toBeNull();
    expect(await auditRows("admin.two_factor_reset", GUARDED)).toEqual([
      expect.objectContaining({ actor: expect.stringContaining(OWNER), details: { had_two_factor: true, recovery_codes_removed: 10 } }),
    ]);
  });

  it("NOT_FOUND for no such account; refused to editors and viewers", async () => {
    const session = await signIn(OWNER);
    expect(await rpcRefusal(as(OWNER, session).admin.resetTwoFactor({ email: "nobody@example.com" }))).toMatchObject({ code: Code.NotFound });
    const editor = await signIn(EDITOR);
    expect((await rpcRefusal(as(EDITOR, editor).admin.resetTwoFactor({ email: OWNER }))).code).toBe(Code.PermissionDenied);
    const viewer = await signIn(VIEWER);
    expect((await rpcRefusal(as(VIEWER, viewer).admin.resetTwoFactor({ email: OWNER }))).code).toBe(Code.PermissionDenied);
    expect((await rpcRefusal(clients({}).admin.resetTwoFactor({ email: "not an email" }))).code).toBe(Code.InvalidArgument);
  });
});

describe("an account that must enrol a second factor", () => {
  it("is refused everything by the service until it enrols; the portal's own calls still work", async () => {
    const owner = await signIn(OWNER);
    // The owner enrols first, then requires it for everyone.
    const begun = await portal.beginTwoFactorEnrolment({ sessionToken: owner });
    await portal.confirmTwoFactorEnrolment({ sessionToken: owner, code: codeAt(begun.secret, Date.now()) });
    const viewerSession = await signIn(VIEWER);
    await as(VIEWER, viewerSession).admin.listAdmins({});
    await as(OWNER, owner).admin.setSecurityPolicy({ requireTwoFactor: true });
    const refused = await rpcRefusal(as(VIEWER, viewerSession).admin.listAdmins({}));
    expect(refused).toMatchObject({ code: Code.FailedPrecondition, reason: "TWO_FACTOR_ENROLMENT_REQUIRED" });
    expect(refused.message).toMatch(/must set up two-factor sign-in first/);
    expect((await rpcRefusal(as(VIEWER, viewerSession).organizations.listOrganizations({}))).reason).toBe("TWO_FACTOR_ENROLMENT_REQUIRED");
    expect((await portal.getSession({ sessionToken: viewerSession })).twoFactorEnrolmentRequired).toBe(true);
    // Enrolment goes through the portal's own calls.
    const viewerBegun = await portal.beginTwoFactorEnrolment({ sessionToken: viewerSession });
    await portal.confirmTwoFactorEnrolment({ sessionToken: viewerSession, code: codeAt(viewerBegun.secret, Date.now()) });
    await as(VIEWER, viewerSession).admin.listAdmins({});
    await as(OWNER, owner).admin.listAdmins({});
    await as(OWNER, owner).admin.setSecurityPolicy({ requireTwoFactor: false });
  });
});
