// Every change goes through one primitive, runChange (service/src/db/change.ts): one transaction with the
// audit rows its work declared, one pg_notify per distinct invalidation, then this replica's own
// invalidation after the commit. This file calls every RPC of the three services, enumerated from their
// generated descriptors, so that an RPC added without a case here fails; for each it asserts exactly the
// audit rows written and the notifications sent on the invalidation channel (heard on a LISTEN connection
// of its own). Then runChange itself: a change that fails writes, notifies and calls nothing.
import type { AuditAction } from "@provider-credentials/wire/audit-actions";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Secret, TOTP } from "otpauth";
import { createClient } from "@connectrpc/connect";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import {
  CredentialAction,
  CredentialService,
  FailureKind,
  OrganizationService,
  Provider,
  SelectionStrategy,
} from "@provider-credentials/wire/gen/credentials_pb";
import { AdminStore } from "../../service/src/admins/admin-store.js";
import { runChange } from "../../service/src/db/change.js";
import { INVALIDATION_CHANNEL, type Invalidation } from "../../service/src/credentials/invalidation.js";
import { ServiceError } from "../../service/src/errors.js";
import { startFakeProvider, type FakeProvider } from "../support/fake-provider.js";
import { FAKE_KEYS, startTestService, type TestService } from "../support/harness.js";

/** An audit row as this test compares it: who and what it names, and the names of its details. */
interface AuditRow {
  action: string;
  organizationId: string | null;
  credentialId: string | null;
  target: string | null;
  details: string[];
}

interface Expected {
  audits: AuditRow[];
  notifications: Invalidation[];
  /** The audit rows' order is not defined (one statement writes several). */
  auditsInAnyOrder?: boolean;
}

/** Sets up what the call needs, then returns the call, which answers what it must have written. */
type Case = () => Promise<() => Promise<Expected>>;

const NOTHING: Expected = { audits: [], notifications: [] };
const PASSWORD = "correct horse battery staple";
const EMAIL = "change@example.com";

let t: TestService;
let fake: FakeProvider;
let listener: pg.Client;
let heard: string[] = [];
let admin: ReturnType<typeof createClient<typeof AdminService>>;
const api = () => t.clients();

beforeAll(async () => {
  fake = await startFakeProvider();
  t = await startTestService({ failureThreshold: 1, keyCheckTimeoutMs: 5_000 });
  admin = createClient(AdminService, t.transport("grpc", t.adminToken));
  await new AdminStore(t.service.orm).create(EMAIL, PASSWORD, { actor: "test", source: null });
  listener = new pg.Client({ connectionString: t.db.url });
  await listener.connect();
  listener.on("notification", (message) => heard.push(message.payload ?? ""));
  await listener.query(`listen ${INVALIDATION_CHANNEL}`);
});

afterAll(async () => {
  await listener?.end();
  await t?.close();
  await fake?.close();
});

let sentinels = 0;
/**
 * The notifications heard since the last call, once every transaction committed before this call has been
 * heard: PostgreSQL delivers notifications in commit order, so a sentinel sent now arrives after them.
 */
async function notificationsSoFar(): Promise<Invalidation[]> {
  const sentinel = JSON.stringify({ teamId: `sentinel-${++sentinels}` });
  await t.db.query("select pg_notify($1, $2)", [INVALIDATION_CHANNEL, sentinel]);
  while (!heard.includes(sentinel)) await new Promise((resolve) => setTimeout(resolve, 5));
  const payloads = heard.slice(0, heard.indexOf(sentinel));
  heard = heard.slice(heard.indexOf(sentinel) + 1);
  return payloads.map((p) => JSON.parse(p) as Invalidation);
}

async function lastAuditId(): Promise<string> {
  const [row] = await t.db.query<{ id: string | null }>("select max(id)::text as id from audit_events");
  return row.id ?? "0";
}

async function auditsAfter(id: string): Promise<AuditRow[]> {
  const rows = await t.db.query<{ action: string; organization_id: string | null; credential_id: string | null; target: string | null; details: object }>(
    "select action, organization_id, credential_id, target, details from audit_events where id > $1 order by id",
    [id],
  );
  return rows.map((r) => ({
    action: r.action,
    organizationId: r.organization_id,
    credentialId: r.credential_id,
    target: r.target,
    details: Object.keys(r.details).sort(),
  }));
}

const audit = (action: string, row: Partial<Omit<AuditRow, "action">> = {}): AuditRow => ({
  action,
  organizationId: row.organizationId ?? null,
  credentialId: row.credentialId ?? null,
  target: row.target ?? null,
  details: [...(row.details ?? [])].sort(),
});

let counter = 0;
const unique = (prefix: string) => `${prefix}-${++counter}`;

/** The authenticator app's current code for a TOTP secret (base32). */
const totp = (secret: string) => new TOTP({ algorithm: "SHA1", digits: 6, period: 30, secret: Secret.fromBase32(secret) }).generate();

/** A new account, signed in. */
async function signedInAccount(): Promise<{ email: string; sessionToken: string }> {
  const email = `${unique("two-factor")}@example.com`;
  await admin.createAdmin({ email, role: "viewer", password: PASSWORD });
  const { sessionToken } = await admin.signIn({ email, password: PASSWORD, source: "192.0.2.1" });
  return { email, sessionToken };
}

/** A new account with two-factor sign-in on, signed in, and its recovery codes. */
async function enrolled(): Promise<{ email: string; sessionToken: string; recoveryCodes: string[] }> {
  const { email, sessionToken } = await signedInAccount();
  const { secret } = await admin.beginTwoFactorEnrolment({ sessionToken });
  const { recoveryCodes } = await admin.confirmTwoFactorEnrolment({ sessionToken, code: totp(secret) });
  return { email, sessionToken, recoveryCodes };
}

async function organization(): Promise<string> {
  const id = unique("org");
  await api().organizations.createOrganization({ organizationId: id, name: id });
  return id;
}

/** An OpenAI credential whose key the fake provider accepts. */
async function credential(organizationId: string): Promise<string> {
  const apiKey = FAKE_KEYS.openai();
  fake.setKey(apiKey, "valid");
  const { credential } = await api().credentials.createCredential({
    organizationId,
    provider: Provider.OPENAI,
    credentialName: unique("key"),
    apiKey,
    apiBase: fake.baseUrl("openai"),
  });
  return credential!.credentialId;
}

const markFailing = (id: string) => t.db.query("update provider_credentials set failing_since = now(), failure_streak = 3 where id = $1", [id]);

/** Each RPC that changes something, by `Service.Method`. */
const MUTATING: Record<string, Case> = {
  "CredentialService.CreateCredential": async () => {
    const o = await organization();
    return async () => {
      const { credential } = await api().credentials.createCredential({
        organizationId: o,
        provider: Provider.OPENAI,
        credentialName: "primary",
        apiKey: FAKE_KEYS.openai(),
      });
      return {
        audits: [
          audit("credential.create", {
            organizationId: o,
            credentialId: credential!.credentialId,
            details: ["provider", "credential_name", "key_hint", "api_base", "weight"],
          }),
        ],
        notifications: [{ organizationId: o, provider: "openai", reason: "credential" }],
      };
    };
  },
  "CredentialService.UpdateCredential": async () => {
    const o = await organization();
    const id = await credential(o);
    return async () => {
      await api().credentials.updateCredential({ credentialId: id, credentialName: unique("renamed"), weight: 5 });
      return {
        audits: [
          audit("credential.update", { organizationId: o, credentialId: id, details: ["changed", "key_hint", "credential_name", "api_base", "weight"] }),
        ],
        notifications: [{ organizationId: o, provider: "openai", reason: "credential" }],
      };
    };
  },
  "CredentialService.ActivateCredential": async () => {
    const o = await organization();
    const id = await credential(o);
    await api().credentials.deactivateCredential({ credentialId: id });
    return async () => {
      await api().credentials.activateCredential({ credentialId: id });
      return {
        audits: [audit("credential.activate", { organizationId: o, credentialId: id, details: ["credential_name", "key_hint"] })],
        notifications: [{ organizationId: o, provider: "openai", reason: "credential" }],
      };
    };
  },
  "CredentialService.DeactivateCredential": async () => {
    const o = await organization();
    const id = await credential(o);
    return async () => {
      await api().credentials.deactivateCredential({ credentialId: id });
      return {
        audits: [audit("credential.deactivate", { organizationId: o, credentialId: id, details: ["credential_name", "key_hint"] })],
        notifications: [{ organizationId: o, provider: "openai", reason: "credential" }],
      };
    };
  },
  "CredentialService.DeleteCredential": async () => {
    const o = await organization();
    const id = await credential(o);
    return async () => {
      await api().credentials.deleteCredential({ credentialId: id });
      return {
        audits: [audit("credential.delete", { organizationId: o, credentialId: id, details: ["provider", "credential_name", "key_hint"] })],
        notifications: [{ organizationId: o, provider: "openai", reason: "credential" }],
      };
    };
  },
  // One change: an event per credential as if deactivated alone, in the order named; one invalidation per organisation and provider.
  "CredentialService.BatchCredentialAction": async () => {
    const o = await organization();
    const other = await organization();
    const ids = [await credential(o), await credential(other), await credential(o)];
    return async () => {
      await api().credentials.batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: ids });
      return {
        audits: ids.map((id, i) =>
          audit("credential.deactivate", { organizationId: i === 1 ? other : o, credentialId: id, details: ["credential_name", "key_hint"] }),
        ),
        notifications: [
          { organizationId: o, provider: "openai", reason: "credential" },
          { organizationId: other, provider: "openai", reason: "credential" },
        ],
      };
    };
  },
  // One event names both credentials; deactivated now (overlap 0): one invalidation.
  "CredentialService.RollCredential": async () => {
    const o = await organization();
    const id = await credential(o);
    return async () => {
      const { credential: rolled } = await api().credentials.rollCredential({ credentialId: id, apiKey: FAKE_KEYS.openai() });
      return {
        audits: [
          audit("credential.roll", {
            organizationId: o,
            credentialId: rolled!.credentialId,
            target: id,
            details: [
              "provider",
              "credential_name",
              "key_hint",
              "api_base",
              "weight",
              "previous_credential_id",
              "previous_credential_name",
              "previous_key_hint",
              "overlap_seconds",
              "previous_deactivates_at",
              "verified",
            ],
          }),
        ],
        notifications: [{ organizationId: o, provider: "openai", reason: "credential" }],
      };
    };
  },
  "CredentialService.VerifyCredential": async () => {
    const o = await organization();
    const id = await credential(o);
    await markFailing(id);
    return async () => {
      await api().credentials.verifyCredential({ credentialId: id });
      return {
        audits: [
          audit("credential.verify", { organizationId: o, credentialId: id, details: ["outcome", "http_status", "latency_ms", "key_hint"] }),
          audit("credential.recovered", { organizationId: o, credentialId: id, details: ["reason", "key_hint"] }),
        ],
        notifications: [{ organizationId: o, provider: "openai", reason: "key_health" }],
      };
    };
  },
  "CredentialService.ReportKeyFailure": async () => {
    const o = await organization();
    const id = await credential(o);
    return async () => {
      // FAILURE_THRESHOLD is 1 here: the first authentication failure marks the credential failing.
      await api().credentials.reportKeyFailure({ credentialId: id, kind: FailureKind.AUTHENTICATION });
      return {
        audits: [audit("credential.failing", { organizationId: o, credentialId: id, details: ["kind", "failure_streak", "threshold", "key_hint"] })],
        notifications: [{ organizationId: o, provider: "openai", reason: "key_health" }],
      };
    };
  },
  "CredentialService.ReportKeySuccess": async () => {
    const o = await organization();
    const a = await credential(o);
    const b = await credential(o);
    await markFailing(a);
    await markFailing(b);
    return async () => {
      await api().credentials.reportKeySuccess({ credentialIds: [a, b, a] });
      return {
        audits: [a, b].map((id) => audit("credential.recovered", { organizationId: o, credentialId: id, details: ["reason", "key_hint"] })),
        auditsInAnyOrder: true,
        // Two recoveries of one organisation and provider: one notification.
        notifications: [{ organizationId: o, provider: "openai", reason: "key_health" }],
      };
    };
  },
  "CredentialService.SetSelectionStrategy": async () => {
    const o = await organization();
    return async () => {
      await api().credentials.setSelectionStrategy({ organizationId: o, provider: Provider.ANTHROPIC, strategy: SelectionStrategy.ROUND_ROBIN });
      return {
        audits: [audit("selection_strategy.set", { organizationId: o, target: "anthropic", details: ["provider", "from", "to"] })],
        notifications: [{ organizationId: o, provider: "anthropic", reason: "selection_strategy" }],
      };
    };
  },
  "OrganizationService.CreateOrganization": async () => async () => {
    const id = unique("org");
    await api().organizations.createOrganization({ organizationId: id, name: "Acme" });
    return { audits: [audit("organization.create", { organizationId: id, details: ["name"] })], notifications: [] };
  },
  // An empty organisation, then one offboarded with cascade: each credential and team as if deleted alone, then the organisation.
  "OrganizationService.DeleteOrganization": async () => {
    const o = await organization();
    const leaving = await organization();
    const id = await credential(leaving);
    const team = unique("team");
    await api().organizations.createTeam({ teamId: team, organizationId: leaving, name: "Team" });
    return async () => {
      await api().organizations.deleteOrganization({ organizationId: o });
      await api().organizations.deleteOrganization({ organizationId: leaving, cascade: true });
      return {
        audits: [
          audit("organization.delete", { organizationId: o, details: ["name"] }),
          audit("credential.delete", { organizationId: leaving, credentialId: id, details: ["provider", "credential_name", "key_hint"] }),
          audit("team.delete", { organizationId: leaving, target: team, details: ["name"] }),
          audit("organization.delete", {
            organizationId: leaving,
            details: ["name", "cascade", "deleted_credentials", "deleted_teams", "deleted_selection_strategies"],
          }),
        ],
        notifications: [
          { organizationId: o, reason: "organization" },
          { organizationId: leaving, provider: "openai", reason: "credential" },
          { teamId: team, organizationId: leaving, reason: "team" },
          { organizationId: leaving, reason: "organization" },
        ],
      };
    };
  },
  "OrganizationService.CreateTeam": async () => {
    const o = await organization();
    return async () => {
      const team = unique("team");
      await api().organizations.createTeam({ teamId: team, organizationId: o, name: "Team" });
      return { audits: [audit("team.create", { organizationId: o, target: team, details: ["name"] })], notifications: [] };
    };
  },
  "OrganizationService.DeleteTeam": async () => {
    const o = await organization();
    const team = unique("team");
    await api().organizations.createTeam({ teamId: team, organizationId: o, name: "Team" });
    return async () => {
      await api().organizations.deleteTeam({ teamId: team });
      return {
        audits: [audit("team.delete", { organizationId: o, target: team, details: ["name"] })],
        notifications: [{ teamId: team, organizationId: o, reason: "team" }],
      };
    };
  },
  "AdminService.SignIn": async () => async () => {
    await admin.signIn({ email: EMAIL, password: PASSWORD, source: "192.0.2.1" });
    return { audits: [audit("admin.sign_in", { target: EMAIL })], notifications: [] };
  },
  "AdminService.SignOut": async () => {
    const { sessionToken } = await admin.signIn({ email: EMAIL, password: PASSWORD, source: "192.0.2.1" });
    return async () => {
      await admin.signOut({ sessionToken });
      return { audits: [audit("admin.sign_out", { target: EMAIL })], notifications: [] };
    };
  },
  "AdminService.CreateApiToken": async () => async () => {
    const name = unique("token");
    await admin.createApiToken({ name, scope: "resolve" });
    return { audits: [audit("token.create", { target: name, details: ["scope", "organization_ids", "expires_at", "prefix"] })], notifications: [] };
  },
  "AdminService.RotateApiToken": async () => {
    const name = unique("token");
    await admin.createApiToken({ name, scope: "resolve" });
    return async () => {
      await admin.rotateApiToken({ name, overlapSeconds: 60 });
      return { audits: [audit("token.rotate", { target: name, details: ["overlap_seconds", "previous_valid_until", "prefix"] })], notifications: [] };
    };
  },
  "AdminService.RevokeApiToken": async () => {
    const name = unique("token");
    await admin.createApiToken({ name, scope: "resolve" });
    return async () => {
      await admin.revokeApiToken({ name });
      return { audits: [audit("token.revoke", { target: name })], notifications: [] };
    };
  },
  "AdminService.CompleteSignIn": async () => {
    const { email, recoveryCodes } = await enrolled();
    const { secondFactorToken } = await admin.signIn({ email, password: PASSWORD, source: "192.0.2.1" });
    return async () => {
      await admin.completeSignIn({ secondFactorToken, code: recoveryCodes[0], source: "192.0.2.1" });
      return {
        audits: [
          audit("admin.recovery_code_used", { target: email, details: ["recovery_codes_left"] }),
          audit("admin.sign_in", { target: email, details: ["second_factor"] }),
        ],
        notifications: [],
      };
    };
  },
  // Keeps a pending secret: nothing changes for the account until it is confirmed, so nothing is audited.
  "AdminService.BeginTwoFactorEnrolment": async () => {
    const { sessionToken } = await signedInAccount();
    return async () => (await admin.beginTwoFactorEnrolment({ sessionToken }), NOTHING);
  },
  "AdminService.ConfirmTwoFactorEnrolment": async () => {
    const { email, sessionToken } = await signedInAccount();
    const { secret } = await admin.beginTwoFactorEnrolment({ sessionToken });
    return async () => {
      await admin.confirmTwoFactorEnrolment({ sessionToken, code: totp(secret) });
      return { audits: [audit("admin.two_factor_enabled", { target: email, details: ["recovery_codes"] })], notifications: [] };
    };
  },
  "AdminService.DisableTwoFactor": async () => {
    const { email, sessionToken, recoveryCodes } = await enrolled();
    return async () => {
      await admin.disableTwoFactor({ sessionToken, code: recoveryCodes[0] });
      return {
        audits: [audit("admin.recovery_code_used", { target: email, details: ["recovery_codes_left"] }), audit("admin.two_factor_disabled", { target: email })],
        notifications: [],
      };
    };
  },
  "AdminService.SetSecurityPolicy": async () => async () => {
    await admin.setSecurityPolicy({ requireTwoFactor: false });
    return { audits: [audit("security_policy.set", { details: ["require_two_factor", "accounts_without_two_factor"] })], notifications: [] };
  },
  "AdminService.CreateAdmin": async () => async () => {
    const email = `${unique("account")}@example.com`;
    await admin.createAdmin({ email, role: "viewer" });
    return { audits: [audit("admin.create", { target: email, details: ["role", "organization_ids"] })], notifications: [] };
  },
  "AdminService.UpdateAdmin": async () => {
    const email = `${unique("account")}@example.com`;
    await admin.createAdmin({ email, role: "viewer" });
    return async () => {
      await admin.updateAdmin({ email, role: "editor" });
      return { audits: [audit("admin.update", { target: email, details: ["role", "sessions_ended"] })], notifications: [] };
    };
  },
  "AdminService.DeleteAdmin": async () => {
    const email = `${unique("account")}@example.com`;
    await admin.createAdmin({ email, role: "viewer" });
    return async () => {
      await admin.deleteAdmin({ email });
      return { audits: [audit("admin.remove", { target: email, details: ["sessions_ended"] })], notifications: [] };
    };
  },
  "AdminService.RevokeAdminSessions": async () => async () => {
    await admin.revokeAdminSessions({ email: EMAIL });
    return { audits: [audit("admin.sessions_revoked", { target: EMAIL, details: ["sessions_ended"] })], notifications: [] };
  },
  "AdminService.Reauthenticate": async () => {
    const { email, sessionToken } = await signedInAccount();
    return async () => {
      await admin.reauthenticate({ sessionToken, password: PASSWORD });
      return { audits: [audit("admin.reauthenticate", { target: email, details: ["with"] })], notifications: [] };
    };
  },
  "AdminService.ResetTwoFactor": async () => {
    const { email } = await enrolled();
    return async () => {
      await admin.resetTwoFactor({ email });
      return { audits: [audit("admin.two_factor_reset", { target: email, details: ["had_two_factor", "recovery_codes_removed"] })], notifications: [] };
    };
  },
  "AdminService.ChangePassword": async () => {
    const email = `${unique("account")}@example.com`;
    await admin.createAdmin({ email, role: "viewer", password: PASSWORD });
    const { sessionToken } = await admin.signIn({ email, password: PASSWORD, source: "192.0.2.1" });
    return async () => {
      await admin.changePassword({ sessionToken, currentPassword: PASSWORD, newPassword: "seven quiet herons fold their maps" });
      return { audits: [audit("admin.password_changed", { target: email, details: ["sessions_ended"] })], notifications: [] };
    };
  },
};

/** Each RPC that changes nothing: called all the same, it must write no audit row and notify nothing. */
const READ_ONLY: Record<string, Case> = {
  "CredentialService.GetCredential": async () => {
    const id = await credential(await organization());
    return async () => (await api().credentials.getCredential({ credentialId: id }), NOTHING);
  },
  "CredentialService.ListCredentials": async () => {
    const o = await organization();
    return async () => (await api().credentials.listCredentials({ organizationId: o }), NOTHING);
  },
  "CredentialService.ListSelectionStrategies": async () => {
    const o = await organization();
    return async () => (await api().credentials.listSelectionStrategies({ organizationId: o }), NOTHING);
  },
  // Counts the use in the background (use_count, last_used_at): not audited, and nothing a cache holds.
  "CredentialService.ResolveKey": async () => {
    const o = await organization();
    await credential(o);
    return async () => (await api().credentials.resolveKey({ scope: { case: "organizationId", value: o }, provider: Provider.OPENAI }), NOTHING);
  },
  "CredentialService.ExplainResolution": async () => {
    const o = await organization();
    await credential(o);
    return async () => (await api().credentials.explainResolution({ scope: { case: "organizationId", value: o } }), NOTHING);
  },
  "CredentialService.SearchCredentials": async () => {
    const o = await organization();
    await credential(o);
    return async () => (await api().credentials.searchCredentials({ query: o }), NOTHING);
  },
  "CredentialService.ListUncoveredOrganizations": async () => async () => (await api().credentials.listUncoveredOrganizations({}), NOTHING),
  // Opens the change stream, takes its snapshot marker and closes it: nothing written, nothing notified.
  "CredentialService.WatchResolutions": async () => async () => {
    for await (const message of api().credentials.watchResolutions({})) {
      if (message.event.case === "snapshot") break;
    }
    return NOTHING;
  },
  "OrganizationService.GetOrganization": async () => {
    const o = await organization();
    return async () => (await api().organizations.getOrganization({ organizationId: o }), NOTHING);
  },
  "OrganizationService.ListOrganizations": async () => async () => (await api().organizations.listOrganizations({}), NOTHING),
  "OrganizationService.ListTeams": async () => {
    const o = await organization();
    return async () => (await api().organizations.listTeams({ organizationId: o }), NOTHING);
  },
  // Extends the session's idle expiry: not audited.
  "AdminService.GetSession": async () => {
    const { sessionToken } = await admin.signIn({ email: EMAIL, password: PASSWORD, source: "192.0.2.1" });
    return async () => (await admin.getSession({ sessionToken }), NOTHING);
  },
  "AdminService.ListAdmins": async () => async () => (await admin.listAdmins({}), NOTHING),
  "AdminService.GetSecurityPolicy": async () => async () => (await admin.getSecurityPolicy({}), NOTHING),
  "AdminService.ListApiTokens": async () => async () => (await admin.listApiTokens({}), NOTHING),
  "AdminService.ListAuditEvents": async () => async () => (await admin.listAuditEvents({ pageSize: 10 }), NOTHING),
};

const RPCS = [CredentialService, OrganizationService, AdminService].flatMap((service) => service.methods.map((method) => `${service.name}.${method.name}`));

describe("every RPC writes exactly its audit rows and notifications", () => {
  it("has a case for every RPC of the generated services, and none for an RPC that does not exist", () => {
    expect(Object.keys(MUTATING).filter((name) => name in READ_ONLY)).toEqual([]);
    expect([...Object.keys(MUTATING), ...Object.keys(READ_ONLY)].filter((name) => !RPCS.includes(name))).toEqual([]);
  });

  for (const rpc of RPCS) {
    it(rpc, async () => {
      const prepare = MUTATING[rpc] ?? READ_ONLY[rpc];
      if (!prepare) throw new Error(`${rpc} has no case: add what it writes to MUTATING, or list it in READ_ONLY`);
      const call = await prepare();
      await notificationsSoFar();
      const before = await lastAuditId();
      const expected = await call();
      const notifications = await notificationsSoFar();
      const audits = await auditsAfter(before);
      const order = (rows: AuditRow[]) =>
        expected.auditsInAnyOrder ? [...rows].sort((x, y) => String(x.credentialId).localeCompare(String(y.credentialId))) : rows;
      expect(order(audits)).toEqual(order(expected.audits));
      expect(notifications).toEqual(expected.notifications);
    });
  }
});

describe("runChange", () => {
  const insertOrganization = (em: Parameters<Parameters<typeof runChange>[1]>[0]["em"], id: string) =>
    em
      .getConnection()
      .execute("insert into organizations (id, name, created_at, updated_at) values (?, ?, now(), now())", [id, id], "run", em.getTransactionContext());
  const organizationExists = async (id: string) => (await t.db.query("select 1 from organizations where id = $1", [id])).length === 1;

  it("writes its audit rows and notifies once per distinct invalidation, then calls onChange after the commit", async () => {
    await notificationsSoFar();
    const before = await lastAuditId();
    const local: Invalidation[] = [];
    /** Whether another connection sees the change, asked from inside onChange. */
    const visible: Array<Promise<boolean>> = [];
    const id = unique("org");
    const result = await runChange(
      t.service.orm,
      async ({ em, audit, invalidate }) => {
        await insertOrganization(em, id);
        invalidate({ organizationId: id });
        audit({ actor: "test", action: "test.first" as AuditAction, organizationId: id, details: { a: 1 } });
        invalidate({ organizationId: id });
        invalidate({ teamId: `${id}-team` });
        audit({ actor: "test", action: "test.second" as AuditAction, organizationId: id });
        return "done";
      },
      {
        onChange: (change) => {
          local.push(change);
          visible.push(organizationExists(id));
        },
      },
    );
    expect(result).toBe("done");
    expect(await organizationExists(id)).toBe(true);
    expect(await auditsAfter(before)).toEqual([audit("test.first", { organizationId: id, details: ["a"] }), audit("test.second", { organizationId: id })]);
    expect(await notificationsSoFar()).toEqual([{ organizationId: id }, { teamId: `${id}-team` }]);
    // onChange ran once per distinct invalidation, when the change was already visible to everyone else.
    expect(local).toEqual([{ organizationId: id }, { teamId: `${id}-team` }]);
    expect(await Promise.all(visible)).toEqual([true, true]);
  });

  it("writes nothing, notifies nothing and calls no onChange when the work throws after declaring an audit row and an invalidation", async () => {
    await notificationsSoFar();
    const before = await lastAuditId();
    const local: Invalidation[] = [];
    const id = unique("org");
    const failure = new Error("the work failed after its first write");
    const error = await runChange(
      t.service.orm,
      async ({ em, audit, invalidate }) => {
        await insertOrganization(em, id);
        audit({ actor: "test", action: "test.rolled_back" as AuditAction, organizationId: id });
        invalidate({ organizationId: id });
        throw failure;
      },
      { onChange: (change) => local.push(change) },
    ).catch((e: unknown) => e);
    expect(error).toBe(failure);
    expect(await organizationExists(id)).toBe(false);
    expect(await auditsAfter(before)).toEqual([]);
    expect(await notificationsSoFar()).toEqual([]);
    expect(local).toEqual([]);
  });

  it("writes nothing, notifies nothing and calls no onChange when an audit row it declared cannot be written", async () => {
    await notificationsSoFar();
    const before = await lastAuditId();
    const local: Invalidation[] = [];
    const id = unique("org");
    const error = await runChange(
      t.service.orm,
      async ({ em, audit, invalidate }) => {
        await insertOrganization(em, id);
        invalidate({ organizationId: id });
        // audit_events.action is NOT NULL.
        audit({ actor: "test", action: null as unknown as AuditAction, organizationId: id });
      },
      { onChange: (change) => local.push(change) },
    ).catch((e: unknown) => e);
    expect((error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code).toBe("23502");
    expect(await organizationExists(id)).toBe(false);
    expect(await auditsAfter(before)).toEqual([]);
    expect(await notificationsSoFar()).toEqual([]);
    expect(local).toEqual([]);
  });

  it("answers a constraint violation with the domain error the change names for it, and nothing else", async () => {
    const id = await organization();
    const duplicate = () => new ServiceError("already_exists", `organization_id: "${id}" is taken`, "organization_id");
    await notificationsSoFar();
    const before = await lastAuditId();
    const local: Invalidation[] = [];
    const error = await runChange(
      t.service.orm,
      async ({ em, audit, invalidate }) => {
        audit({ actor: "test", action: "test.duplicate" as AuditAction, organizationId: id });
        invalidate({ organizationId: id });
        await insertOrganization(em, id);
      },
      { onChange: (change) => local.push(change), constraints: { unique: duplicate, foreignKey: () => new Error("not this one") } },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ServiceError);
    expect(error).toMatchObject({ kind: "already_exists", message: `organization_id: "${id}" is taken`, field: "organization_id" });
    expect(await auditsAfter(before)).toEqual([]);
    expect(await notificationsSoFar()).toEqual([]);
    expect(local).toEqual([]);
    // Without a mapping, the violation is rethrown as it is.
    const raw = await runChange(t.service.orm, async ({ em }) => insertOrganization(em, id)).catch((e: unknown) => e);
    expect(raw).not.toBeInstanceOf(ServiceError);
    expect(String((raw as Error).message)).toMatch(/duplicate key/);
  });
});
