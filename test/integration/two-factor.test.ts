import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { Secret, TOTP } from "otpauth";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { rpcError, startTestService, type TestService } from "../support/harness.js";

// Two-factor sign-in (TOTP, RFC 6238) over AdminService against a real service and PostgreSQL. The codes are
// made here from the secret BeginTwoFactorEnrolment gives, as an authenticator app would.

const PASSWORD = "juniper kites over granite hills";
const OWNER = "owner@example.com";
const SECOND = "second@example.com";
const THIRD = "third@example.com";
/** Enrolled only to be locked out by the sign-in limits. */
const FOURTH = "fourth@example.com";
/** Enrolled to turn it off (the others' deliberate failures fill the per-account limit). */
const FIFTH = "fifth@example.com";

let t: TestService;
let admin: Client<typeof AdminService>;
/** Every TOTP secret and recovery code handed out: none may appear anywhere after enrolment. */
const secrets: string[] = [];
let ownerSecret = "";
let source = 0;
const nextSource = () => `192.0.2.${++source}`;

const codeAt = (secret: string, timestamp: number) =>
  new TOTP({ algorithm: "SHA1", digits: 6, period: 30, secret: Secret.fromBase32(secret) }).generate({ timestamp });
const auditRows = (action: string) =>
  t.db.query<{ actor: string; target: string; source: string | null; details: Record<string, unknown> }>(
    "select actor, target, source, details from audit_events where action = $1 order by id",
    [action],
  );

async function session(email: string): Promise<string> {
  const answer = await admin.signIn({ email, password: PASSWORD, source: nextSource() });
  expect(answer.sessionToken).not.toBe("");
  return answer.sessionToken;
}

/** Enrols `email`'s authenticator: its secret, the recovery codes and a session. */
async function enrol(email: string): Promise<{ secret: string; recoveryCodes: string[]; sessionToken: string }> {
  const sessionToken = await session(email);
  const begun = await admin.beginTwoFactorEnrolment({ sessionToken });
  secrets.push(begun.secret);
  const { recoveryCodes } = await admin.confirmTwoFactorEnrolment({ sessionToken, code: codeAt(begun.secret, Date.now()) });
  secrets.push(...recoveryCodes);
  return { secret: begun.secret, recoveryCodes, sessionToken };
}

async function secondFactorToken(email: string, from = nextSource()): Promise<string> {
  const answer = await admin.signIn({ email, password: PASSWORD, source: from });
  expect(answer.sessionToken).toBe("");
  expect(answer.admin).toBeUndefined();
  expect(answer.secondFactorToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
  return answer.secondFactorToken;
}

beforeAll(async () => {
  t = await startTestService();
  admin = createClient(AdminService, t.transport("grpc", t.adminToken));
  for (const email of [OWNER, SECOND, THIRD, FOURTH, FIFTH]) await t.service.parts.admins.create(email, PASSWORD, { actor: "test", source: null });
});
afterAll(async () => {
  await t?.close();
});

describe("enrolment", () => {
  let enrolled: Awaited<ReturnType<typeof enrol>>;

  it("a wrong confirmation code is INVALID_ARGUMENT naming code and changes nothing", async () => {
    const sessionToken = await session(OWNER);
    const begun = await admin.beginTwoFactorEnrolment({ sessionToken });
    secrets.push(begun.secret);
    expect(begun.secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(begun.otpauthUri).toMatch(/^otpauth:\/\/totp\/.*owner(%40|@)example\.com\?/);
    expect(begun.otpauthUri).toContain(`secret=${begun.secret}`);
    const wrong = String((Number(codeAt(begun.secret, Date.now())) + 500_000) % 1_000_000).padStart(6, "0");
    const refused = await rpcError(admin.confirmTwoFactorEnrolment({ sessionToken, code: wrong }));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.message).toMatch(/^code: /);
    expect((await admin.getSession({ sessionToken })).admin!.twoFactorEnabled).toBe(false);
    // Nothing is enabled until confirmed: SignIn still gives a session.
    expect((await admin.signIn({ email: OWNER, password: PASSWORD, source: nextSource() })).sessionToken).not.toBe("");
  });

  it("confirming with a current code enables it and gives ten distinct recovery codes", async () => {
    enrolled = await enrol(OWNER);
    ownerSecret = enrolled.secret;
    expect(enrolled.recoveryCodes).toHaveLength(10);
    expect(new Set(enrolled.recoveryCodes).size).toBe(10);
    const { admin: me } = await admin.getSession({ sessionToken: enrolled.sessionToken });
    expect(me!.twoFactorEnabled).toBe(true);
    expect((await admin.listAdmins({})).admins.find((a) => a.email === OWNER)!.twoFactorEnabled).toBe(true);
    expect(await auditRows("admin.two_factor_enabled")).toEqual([expect.objectContaining({ actor: OWNER, target: OWNER })]);
  });

  it("a second enrolment is refused while one is on", async () => {
    expect((await rpcError(admin.beginTwoFactorEnrolment({ sessionToken: enrolled.sessionToken }))).code).toBe(Code.FailedPrecondition);
  });

  it("the secret is stored sealed, never in clear, and the recovery codes only hashed", async () => {
    const [row] = await t.db.query<{ totp_secret: string; totp_pending_secret: string | null }>(
      "select totp_secret, totp_pending_secret from admin_users where email = $1",
      [OWNER],
    );
    expect(row.totp_secret).toMatch(/^as1\.fk_[0-9a-f]{16}\./);
    expect(row.totp_pending_secret).toBeNull();
    const dump = JSON.stringify(await t.db.query("select * from admin_users")) + JSON.stringify(await t.db.query("select * from admin_recovery_codes"));
    for (const secret of secrets) {
      expect(dump).not.toContain(secret);
      expect(dump.toLowerCase()).not.toContain(secret.toLowerCase().replace(/-/g, ""));
    }
    expect(await t.db.query("select 1 from admin_recovery_codes a join admin_users u on u.id = a.admin_id where u.email = $1", [OWNER])).toHaveLength(10);
  });
});

describe("signing in with a second factor", () => {
  let secret: string;
  let recoveryCodes: string[];

  beforeAll(async () => {
    ({ secret, recoveryCodes } = await enrol(SECOND));
  });

  it("a wrong password gets no second-factor token", async () => {
    const refused = await rpcError(admin.signIn({ email: SECOND, password: "wrong password entirely", source: nextSource() }));
    expect(refused.code).toBe(Code.Unauthenticated);
  });

  it("the code used to confirm the enrolment is refused again (same 30-second step)", async () => {
    const token = await secondFactorToken(SECOND);
    const refused = await rpcError(admin.completeSignIn({ secondFactorToken: token, code: codeAt(secret, Date.now()), source: nextSource() }));
    expect(refused).toEqual({ code: Code.Unauthenticated, message: "invalid or expired code" });
  });

  it("the next code opens a session, once: the token and the code are both spent", async () => {
    const token = await secondFactorToken(SECOND);
    const code = codeAt(secret, Date.now() + 30_000);
    const done = await admin.completeSignIn({ secondFactorToken: token, code, source: "192.0.2.200", userAgent: "test" });
    expect(done.admin!.email).toBe(SECOND);
    expect((await admin.getSession({ sessionToken: done.sessionToken })).admin!.email).toBe(SECOND);
    const signIns = await auditRows("admin.sign_in");
    expect(signIns.at(-1)).toEqual(expect.objectContaining({ actor: SECOND, source: "192.0.2.200", details: { second_factor: "totp" } }));
    // The used token, and the used code with a fresh token.
    expect((await rpcError(admin.completeSignIn({ secondFactorToken: token, code, source: nextSource() }))).code).toBe(Code.Unauthenticated);
    const fresh = await secondFactorToken(SECOND);
    expect(await rpcError(admin.completeSignIn({ secondFactorToken: fresh, code, source: nextSource() }))).toEqual({
      code: Code.Unauthenticated,
      message: "invalid or expired code",
    });
  });

  it("a wrong code is refused and counted as a failed sign-in; five spend the token", async () => {
    const from = "198.51.100.9";
    const token = await secondFactorToken(SECOND, from);
    const before = (await auditRows("admin.sign_in_failed")).length;
    for (let i = 0; i < 5; i++) {
      expect(await rpcError(admin.completeSignIn({ secondFactorToken: token, code: "000000", source: from }))).toEqual({
        code: Code.Unauthenticated,
        message: "invalid or expired code",
      });
    }
    const failures = (await auditRows("admin.sign_in_failed")).slice(before);
    expect(failures).toHaveLength(5);
    expect(failures[0]).toEqual(expect.objectContaining({ actor: SECOND, target: SECOND, source: from, details: { during: "second_factor" } }));
    const [counted] = await t.db.query<{ n: string }>("select count(*) as n from admin_sign_in_attempts where source = $1", [from]);
    expect(Number(counted.n)).toBe(5);
    // Spent: even a right recovery code is refused with it now.
    expect((await rpcError(admin.completeSignIn({ secondFactorToken: token, code: recoveryCodes[9], source: from }))).code).toBe(Code.Unauthenticated);
  });

  it("wrong codes reach the sign-in limits", async () => {
    const { secret: fourth } = await enrol(FOURTH);
    const from = "198.51.100.10";
    for (let i = 0; i < 10; i++) {
      const token = await secondFactorToken(FOURTH, "198.51.100.11");
      await rpcError(admin.completeSignIn({ secondFactorToken: token, code: "000000", source: from }));
    }
    const token = await secondFactorToken(FOURTH, "198.51.100.12");
    const refused = await rpcError(admin.completeSignIn({ secondFactorToken: token, code: codeAt(fourth, Date.now() + 30_000), source: from }));
    expect(refused.code).toBe(Code.ResourceExhausted);
  });

  it("a recovery code works once, in any case and with or without dashes", async () => {
    const token = await secondFactorToken(SECOND);
    const typed = recoveryCodes[0].toUpperCase().replace(/-/g, " ");
    const done = await admin.completeSignIn({ secondFactorToken: token, code: typed, source: nextSource() });
    expect(done.sessionToken).not.toBe("");
    const used = await auditRows("admin.recovery_code_used");
    expect(used.at(-1)).toEqual(expect.objectContaining({ actor: SECOND, details: { recovery_codes_left: 9 } }));
    const again = await secondFactorToken(SECOND);
    expect((await rpcError(admin.completeSignIn({ secondFactorToken: again, code: recoveryCodes[0], source: nextSource() }))).code).toBe(Code.Unauthenticated);
  });

  it("a token older than 5 minutes, or unknown, is refused even with a right code", async () => {
    const token = await secondFactorToken(SECOND);
    await t.db.query("update admin_second_factor_tokens set expires_at = now() - interval '1 second' where used_at is null");
    expect((await rpcError(admin.completeSignIn({ secondFactorToken: token, code: recoveryCodes[1], source: nextSource() }))).code).toBe(Code.Unauthenticated);
    const unknown = await rpcError(admin.completeSignIn({ secondFactorToken: "x".repeat(43), code: recoveryCodes[1], source: nextSource() }));
    expect(unknown).toEqual({ code: Code.Unauthenticated, message: "invalid or expired code" });
    // The recovery code was not spent by the refused attempts.
    const fresh = await secondFactorToken(SECOND);
    expect((await admin.completeSignIn({ secondFactorToken: fresh, code: recoveryCodes[1], source: nextSource() })).sessionToken).not.toBe("");
  });

  it("a bad source is INVALID_ARGUMENT naming source", async () => {
    const refused = await rpcError(admin.completeSignIn({ secondFactorToken: "x", code: "123456", source: "1.2.3.4 5.6.7.8" }));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.message).toMatch(/^source: /);
  });

  it("turning it off needs a right code (a wrong one is INVALID_ARGUMENT and counted), then SignIn gives a session again", async () => {
    const { recoveryCodes } = await enrol(FIFTH);
    const token = await secondFactorToken(FIFTH);
    const { sessionToken } = await admin.completeSignIn({ secondFactorToken: token, code: recoveryCodes[2], source: nextSource() });
    const wrong = await rpcError(admin.disableTwoFactor({ sessionToken, code: "000000" }));
    expect(wrong.code).toBe(Code.InvalidArgument);
    expect(wrong.message).toMatch(/^code: /);
    expect((await auditRows("admin.sign_in_failed")).at(-1)!.details).toEqual({ during: "disable_two_factor" });
    await admin.disableTwoFactor({ sessionToken, code: recoveryCodes[3] });
    expect(await auditRows("admin.two_factor_disabled")).toEqual([expect.objectContaining({ actor: FIFTH, target: FIFTH })]);
    expect((await admin.getSession({ sessionToken })).admin!.twoFactorEnabled).toBe(false);
    expect((await admin.signIn({ email: FIFTH, password: PASSWORD, source: nextSource() })).sessionToken).not.toBe("");
    expect(await t.db.query("select 1 from admin_recovery_codes a join admin_users u on u.id = a.admin_id where u.email = $1", [FIFTH])).toHaveLength(0);
    expect((await rpcError(admin.disableTwoFactor({ sessionToken, code: "000000" }))).code).toBe(Code.FailedPrecondition);
  });
});

describe("the security policy", () => {
  it("is off by default; owners turn it on, audited; an account without a second factor must enrol", async () => {
    expect((await admin.getSecurityPolicy({})).policy!.requireTwoFactor).toBe(false);
    const third = await session(THIRD);
    expect((await admin.getSession({ sessionToken: third })).twoFactorEnrolmentRequired).toBe(false);
    const set = await admin.setSecurityPolicy({ requireTwoFactor: true });
    expect(set.policy!.requireTwoFactor).toBe(true);
    expect((await admin.getSecurityPolicy({})).policy!.requireTwoFactor).toBe(true);
    expect((await auditRows("security_policy.set")).at(-1)!.details).toEqual(expect.objectContaining({ require_two_factor: { from: false, to: true } }));
    expect((await admin.getSession({ sessionToken: third })).twoFactorEnrolmentRequired).toBe(true);
    // The owner, enrolled, is not asked; and cannot turn it off while the policy requires it.
    const token = await secondFactorToken(OWNER);
    const { sessionToken: owner } = await admin.completeSignIn({
      secondFactorToken: token,
      code: codeAt(ownerSecret, Date.now() + 30_000),
      source: nextSource(),
    });
    expect((await admin.getSession({ sessionToken: owner })).twoFactorEnrolmentRequired).toBe(false);
    expect((await rpcError(admin.disableTwoFactor({ sessionToken: owner, code: "000000" }))).code).toBe(Code.FailedPrecondition);
    // Once the third account enrols, it is no longer asked.
    const begun = await admin.beginTwoFactorEnrolment({ sessionToken: third });
    secrets.push(begun.secret);
    secrets.push(...(await admin.confirmTwoFactorEnrolment({ sessionToken: third, code: codeAt(begun.secret, Date.now()) })).recoveryCodes);
    expect((await admin.getSession({ sessionToken: third })).twoFactorEnrolmentRequired).toBe(false);
    await admin.setSecurityPolicy({ requireTwoFactor: false });
  });
});

describe("nothing leaks", () => {
  it("no secret or recovery code in any later response, audit row or log line", async () => {
    const json = (value: unknown) => JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
    const responses = json([await admin.listAdmins({}), await admin.listAuditEvents({ pageSize: 1000 }), await admin.getSecurityPolicy({})]);
    const audit = json(await t.db.query("select * from audit_events"));
    const logs = t.logs.join("\n");
    expect(secrets.length).toBeGreaterThan(20);
    for (const secret of secrets) {
      for (const text of [responses, audit, logs]) expect(text).not.toContain(secret);
    }
  });
});
