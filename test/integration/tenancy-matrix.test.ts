// Who may call what on which organisation: every RPC of CredentialService, OrganizationService and
// AdminService, on both ports (the grpc-js port through a plain @grpc/grpc-js client, the Connect
// port through Connect-ES), for every kind of caller and target. Every cell has an expected answer,
// written here from docs/security.md's table (not from the policy's code); a limited caller never
// reads or writes another organisation's data, and is refused alike whether a target outside its
// organisations exists or not.
import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import {
  create,
  fromBinary,
  toBinary,
  toJsonString,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import {
  CredentialAction,
  CredentialService,
  FailureKind,
  OrganizationService,
  Provider,
  SelectionStrategy,
} from "@provider-credentials/wire/gen/credentials_pb";
import { startTestService, FAKE_KEYS, type TestService } from "../support/harness.js";
import { accessOf } from "../../service/src/auth/policy.js";

const ACTOR_HEADER = "x-provider-credentials-actor";
const SESSION_HEADER = "x-provider-credentials-session";
const A = "org-a";
const B = "org-b";
const PASSWORD = "matrix-correct-horse-battery-staple-42";
/** Refused at once: nothing listens on the discard port. */
const API_BASE = "http://127.0.0.1:9/v1";

type Access = "resolve" | "report" | "read" | "edit" | "organizations" | "tokens" | "accounts" | "portal";
type Role = "owner" | "editor" | "viewer";

interface CallerSpec {
  name: string;
  /** false: the token is missing, expired or revoked. */
  authenticated: boolean;
  scope?: "resolve" | "admin" | "metrics";
  role?: Role;
  /** The organisations it may act on; undefined: all. */
  organizations?: string[];
  /** Set in beforeAll: the headers it sends. */
  headers: Record<string, string>;
}

// The documented table (docs/security.md), restated: what each scope and role may do.
const SCOPE_ACCESS: Record<string, Access[]> = {
  resolve: ["resolve", "report"],
  metrics: [],
  admin: ["resolve", "report", "read", "edit", "organizations", "tokens", "accounts", "portal"],
};
const ROLE_ACCESS: Record<Role, Access[]> = {
  owner: ["resolve", "report", "read", "edit", "organizations", "tokens", "accounts"],
  editor: ["read", "edit", "report"],
  viewer: ["read"],
};

const CALLERS: CallerSpec[] = [
  { name: "no token", authenticated: false, headers: {} },
  { name: "expired", authenticated: false, headers: {} },
  { name: "revoked", authenticated: false, headers: {} },
  { name: "metrics", authenticated: true, scope: "metrics", headers: {} },
  { name: "resolve all", authenticated: true, scope: "resolve", headers: {} },
  { name: "resolve [A]", authenticated: true, scope: "resolve", organizations: [A], headers: {} },
  { name: "admin all", authenticated: true, scope: "admin", headers: {} },
  { name: "admin [A]", authenticated: true, scope: "admin", organizations: [A], headers: {} },
  { name: "owner", authenticated: true, scope: "admin", role: "owner", headers: {} },
  { name: "editor [A]", authenticated: true, scope: "admin", role: "editor", organizations: [A], headers: {} },
  { name: "viewer", authenticated: true, scope: "admin", role: "viewer", headers: {} },
  { name: "viewer [A]", authenticated: true, scope: "admin", role: "viewer", organizations: [A], headers: {} },
];

/** Which object a call names: its own organisation's, another's, or one that does not exist. */
type Target = "A" | "B" | "missing" | "none";
type TargetKind = "organization" | "credential" | "team" | "token" | "account" | "new-organization" | "none";

/** A unary RPC, or a server-streaming one (its first message is its answer). */
type Method = DescMethodUnary | DescMethodServerStreaming;

interface RpcSpec {
  label: string;
  method: Method;
  access: Access;
  kind: TargetKind;
  /** The request for a target (fixtures made fresh when the call may change them). */
  request: (target: Target) => Promise<object> | object;
}

let t: TestService;
const fixed = { credA: "", credB: "", teamA: "team-of-a", teamB: "team-of-b", session: "" };
const admin = () => t.clients();
let grpcClient: grpc.Client;
let connectTransport: ReturnType<typeof createConnectTransport>;
const unique = () => randomBytes(4).toString("hex");

const orgOf = (target: Target) => (target === "A" ? A : target === "B" ? B : `org-missing-${unique()}`);

async function freshCredential(target: Target): Promise<string> {
  if (target === "missing") return randomUUID();
  const { credential } = await admin().credentials.createCredential({
    organizationId: orgOf(target),
    provider: Provider.ANTHROPIC,
    credentialName: `fresh-${unique()}`,
    apiKey: FAKE_KEYS.anthropic(),
    apiBase: API_BASE,
  });
  return credential!.credentialId;
}

async function freshTeam(target: Target): Promise<string> {
  if (target === "missing") return `tm-missing-${unique()}`;
  const id = `tm-${unique()}`;
  await admin().organizations.createTeam({ teamId: id, organizationId: orgOf(target), name: `Team ${id}` });
  return id;
}

async function freshToken(target: Target): Promise<string> {
  const name = `tok-${unique()}`;
  if (target !== "missing") await t.service.parts.tokens.create(name, "resolve", "test", { organizationIds: [orgOf(target)] });
  return name;
}

async function freshAccount(target: Target): Promise<string> {
  const email = `acct-${unique()}@example.com`;
  if (target !== "missing") {
    await t.service.parts.admins.create(email, PASSWORD, { actor: "test", source: null }, "password", { role: "viewer", organizations: [orgOf(target)] });
  }
  return email;
}

const credentialOf = (target: Target) => (target === "A" ? fixed.credA : target === "B" ? fixed.credB : randomUUID());
const teamOf = (target: Target) => (target === "A" ? fixed.teamA : target === "B" ? fixed.teamB : `tm-missing-${unique()}`);

const C = CredentialService.method;
const O = OrganizationService.method;
const M = AdminService.method;

const RPCS: RpcSpec[] = [
  {
    label: "CreateCredential",
    method: C.createCredential,
    access: "edit",
    kind: "organization",
    request: (x) => ({ organizationId: orgOf(x), provider: Provider.OPENAI, credentialName: `m-${unique()}`, apiKey: FAKE_KEYS.openai(), apiBase: API_BASE }),
  },
  { label: "GetCredential", method: C.getCredential, access: "read", kind: "credential", request: (x) => ({ credentialId: credentialOf(x) }) },
  { label: "ListCredentials", method: C.listCredentials, access: "read", kind: "organization", request: (x) => ({ organizationId: orgOf(x) }) },
  {
    label: "UpdateCredential",
    method: C.updateCredential,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ credentialId: await freshCredential(x), credentialName: `renamed-${unique()}` }),
  },
  {
    label: "ActivateCredential",
    method: C.activateCredential,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ credentialId: await freshCredential(x) }),
  },
  {
    label: "DeactivateCredential",
    method: C.deactivateCredential,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ credentialId: await freshCredential(x) }),
  },
  {
    label: "DeleteCredential",
    method: C.deleteCredential,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ credentialId: await freshCredential(x) }),
  },
  {
    label: "VerifyCredential",
    method: C.verifyCredential,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ credentialId: await freshCredential(x) }),
  },
  {
    label: "ReportKeyFailure",
    method: C.reportKeyFailure,
    access: "report",
    kind: "credential",
    request: async (x) => ({ credentialId: await freshCredential(x), kind: FailureKind.AUTHENTICATION }),
  },
  {
    label: "ReportKeySuccess",
    method: C.reportKeySuccess,
    access: "report",
    kind: "credential",
    request: async (x) => ({ credentialIds: [await freshCredential(x)] }),
  },
  {
    label: "SetSelectionStrategy",
    method: C.setSelectionStrategy,
    access: "edit",
    kind: "organization",
    request: (x) => ({ organizationId: orgOf(x), provider: Provider.OPENAI, strategy: SelectionStrategy.NEWEST }),
  },
  { label: "ListSelectionStrategies", method: C.listSelectionStrategies, access: "read", kind: "organization", request: (x) => ({ organizationId: orgOf(x) }) },
  {
    label: "ResolveKey by organization",
    method: C.resolveKey,
    access: "resolve",
    kind: "organization",
    request: (x) => ({ scope: { case: "organizationId", value: orgOf(x) }, provider: Provider.ANTHROPIC }),
  },
  {
    label: "ResolveKey by team",
    method: C.resolveKey,
    access: "resolve",
    kind: "team",
    request: (x) => ({ scope: { case: "teamId", value: teamOf(x) }, provider: Provider.ANTHROPIC }),
  },
  {
    label: "WatchResolutions for an organization",
    method: C.watchResolutions,
    access: "resolve",
    kind: "organization",
    request: (x) => ({ organizationIds: [orgOf(x)] }),
  },
  {
    label: "ExplainResolution by organization",
    method: C.explainResolution,
    access: "read",
    kind: "organization",
    request: (x) => ({ scope: { case: "organizationId", value: orgOf(x) }, provider: Provider.ANTHROPIC }),
  },
  {
    label: "ExplainResolution by team",
    method: C.explainResolution,
    access: "read",
    kind: "team",
    request: (x) => ({ scope: { case: "teamId", value: teamOf(x) } }),
  },
  {
    label: "RollCredential",
    method: C.rollCredential,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ credentialId: await freshCredential(x), apiKey: FAKE_KEYS.anthropic(), overlapSeconds: 60 }),
  },
  // Across every organisation the caller may read: a limited caller's answer must hold nothing of B (checked below).
  { label: "SearchCredentials", method: C.searchCredentials, access: "read", kind: "none", request: () => ({}) },
  {
    label: "SearchCredentials in an organization",
    method: C.searchCredentials,
    access: "read",
    kind: "organization",
    request: (x) => ({ organizationId: orgOf(x) }),
  },
  { label: "ListUncoveredOrganizations", method: C.listUncoveredOrganizations, access: "read", kind: "none", request: () => ({}) },
  {
    label: "BatchCredentialAction",
    method: C.batchCredentialAction,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ action: CredentialAction.DEACTIVATE, credentialIds: [await freshCredential(x)] }),
  },
  {
    label: "BatchCredentialAction with A's credential first",
    method: C.batchCredentialAction,
    access: "edit",
    kind: "credential",
    request: async (x) => ({ action: CredentialAction.DELETE, credentialIds: [await freshCredential("A"), await freshCredential(x)] }),
  },
  {
    label: "CreateOrganization",
    method: O.createOrganization,
    access: "organizations",
    kind: "new-organization",
    request: (x) => ({ organizationId: x === "missing" ? `org-new-${unique()}` : orgOf(x), name: "New" }),
  },
  { label: "GetOrganization", method: O.getOrganization, access: "read", kind: "organization", request: (x) => ({ organizationId: orgOf(x) }) },
  { label: "ListOrganizations", method: O.listOrganizations, access: "read", kind: "none", request: () => ({}) },
  // A and B still have credentials: an allowed delete is FAILED_PRECONDITION and changes nothing.
  { label: "DeleteOrganization", method: O.deleteOrganization, access: "organizations", kind: "organization", request: (x) => ({ organizationId: orgOf(x) }) },
  {
    label: "CreateTeam",
    method: O.createTeam,
    access: "edit",
    kind: "organization",
    request: (x) => ({ teamId: `tm-${unique()}`, organizationId: orgOf(x), name: "New team" }),
  },
  { label: "ListTeams", method: O.listTeams, access: "read", kind: "organization", request: (x) => ({ organizationId: orgOf(x) }) },
  { label: "DeleteTeam", method: O.deleteTeam, access: "edit", kind: "team", request: async (x) => ({ teamId: await freshTeam(x) }) },
  {
    label: "SignIn",
    method: M.signIn,
    access: "portal",
    kind: "none",
    request: () => ({ email: "owner@example.com", password: PASSWORD, source: "127.0.0.1" }),
  },
  { label: "GetSession", method: M.getSession, access: "portal", kind: "none", request: () => ({ sessionToken: fixed.session }) },
  { label: "SignOut", method: M.signOut, access: "portal", kind: "none", request: () => ({ sessionToken: randomBytes(32).toString("base64url") }) },
  {
    label: "ChangePassword",
    method: M.changePassword,
    access: "portal",
    kind: "none",
    request: () => ({ sessionToken: randomBytes(32).toString("base64url"), currentPassword: PASSWORD, newPassword: `${PASSWORD}-new` }),
  },
  // A random second-factor token or session: the policy lets it through and the service refuses the token (not the caller).
  {
    label: "CompleteSignIn",
    method: M.completeSignIn,
    access: "portal",
    kind: "none",
    request: () => ({ secondFactorToken: randomBytes(32).toString("base64url"), code: "123456", source: `198.51.100.${randomBytes(1)[0]}` }),
  },
  {
    label: "BeginTwoFactorEnrolment",
    method: M.beginTwoFactorEnrolment,
    access: "portal",
    kind: "none",
    request: () => ({ sessionToken: randomBytes(32).toString("base64url") }),
  },
  {
    label: "ConfirmTwoFactorEnrolment",
    method: M.confirmTwoFactorEnrolment,
    access: "portal",
    kind: "none",
    request: () => ({ sessionToken: randomBytes(32).toString("base64url"), code: "123456" }),
  },
  {
    label: "DisableTwoFactor",
    method: M.disableTwoFactor,
    access: "portal",
    kind: "none",
    request: () => ({ sessionToken: randomBytes(32).toString("base64url"), code: "123456" }),
  },
  { label: "GetSecurityPolicy", method: M.getSecurityPolicy, access: "read", kind: "none", request: () => ({}) },
  { label: "SetSecurityPolicy", method: M.setSecurityPolicy, access: "accounts", kind: "none", request: () => ({ requireTwoFactor: false }) },
  { label: "ListAdmins", method: M.listAdmins, access: "read", kind: "none", request: () => ({}) },
  {
    label: "CreateAdmin",
    method: M.createAdmin,
    access: "accounts",
    kind: "organization",
    request: (x) => ({ email: `new-${unique()}@example.com`, role: "viewer", organizationIds: [orgOf(x)], password: PASSWORD }),
  },
  {
    label: "UpdateAdmin",
    method: M.updateAdmin,
    access: "accounts",
    kind: "account",
    request: async (x) => ({ email: await freshAccount(x), role: "viewer" }),
  },
  { label: "DeleteAdmin", method: M.deleteAdmin, access: "accounts", kind: "account", request: async (x) => ({ email: await freshAccount(x) }) },
  {
    label: "RevokeAdminSessions",
    method: M.revokeAdminSessions,
    access: "accounts",
    kind: "account",
    request: async (x) => ({ email: await freshAccount(x) }),
  },
  { label: "ResetTwoFactor", method: M.resetTwoFactor, access: "accounts", kind: "account", request: async (x) => ({ email: await freshAccount(x) }) },
  {
    label: "Reauthenticate",
    method: M.reauthenticate,
    access: "portal",
    kind: "none",
    request: () => ({ sessionToken: randomBytes(32).toString("base64url"), password: PASSWORD }),
  },
  {
    label: "CreateApiToken",
    method: M.createApiToken,
    access: "tokens",
    kind: "organization",
    request: (x) => ({
      name: `new-${unique()}`,
      scope: "resolve",
      organizationIds: [orgOf(x)],
      expiresAt: timestampFromDate(new Date(Date.now() + 3_600_000)),
    }),
  },
  { label: "ListApiTokens", method: M.listApiTokens, access: "read", kind: "none", request: () => ({}) },
  { label: "RevokeApiToken", method: M.revokeApiToken, access: "tokens", kind: "token", request: async (x) => ({ name: await freshToken(x) }) },
  {
    label: "RotateApiToken",
    method: M.rotateApiToken,
    access: "tokens",
    kind: "token",
    request: async (x) => ({ name: await freshToken(x), overlapSeconds: 0 }),
  },
  { label: "ListAuditEvents", method: M.listAuditEvents, access: "read", kind: "none", request: () => ({ pageSize: 1000 }) },
];

type Expected = "unauthenticated" | "scope" | "role" | "unlimited-only" | "outside" | "limited" | "allowed";

/** The answer docs/security.md promises for a cell. */
function expected(caller: CallerSpec, rpc: RpcSpec, target: Target): Expected {
  if (!caller.authenticated) return "unauthenticated";
  if (!SCOPE_ACCESS[caller.scope!].includes(rpc.access)) return "scope";
  if (caller.role && !ROLE_ACCESS[caller.role].includes(rpc.access)) return "role";
  const limited = caller.organizations !== undefined;
  if (rpc.access === "portal" && (caller.role || limited)) return "unlimited-only";
  if (rpc.access === "accounts" && limited) return "unlimited-only";
  if (limited && rpc.kind === "new-organization") return "limited";
  if (limited && target !== "none" && target !== "A") return "outside";
  return "allowed";
}

type Answer = { ok: true; json: string } | { ok: false; code: number; message: string };

function grpcCall(method: Method, request: object, headers: Record<string, string>): Promise<Answer> {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
  const message = create(method.input, request as MessageInitShape<typeof method.input>);
  if (method.methodKind === "server_streaming") {
    // The first message (WatchResolutions' snapshot marker) or the status, then the stream is cancelled.
    return new Promise((resolve) => {
      const stream = grpcClient.makeServerStreamRequest(
        `/${method.parent.typeName}/${method.name}`,
        (m: typeof message) => Buffer.from(toBinary(method.input, m)),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        message,
        metadata,
        { deadline: Date.now() + 10_000 },
      );
      stream.on("data", (response: Parameters<typeof toJsonString>[1]) => {
        resolve({ ok: true, json: toJsonString(method.output, response as never) });
        stream.cancel();
      });
      stream.on("error", (error: grpc.ServiceError) => resolve({ ok: false, code: error.code, message: error.details }));
    });
  }
  return new Promise((resolve) => {
    grpcClient.makeUnaryRequest(
      `/${method.parent.typeName}/${method.name}`,
      (m: typeof message) => Buffer.from(toBinary(method.input, m)),
      (bytes: Buffer) => fromBinary(method.output, bytes),
      message,
      metadata,
      { deadline: Date.now() + 10_000 },
      (error, response) => {
        if (error) resolve({ ok: false, code: error.code, message: error.details });
        else resolve({ ok: true, json: toJsonString(method.output, response!) });
      },
    );
  });
}

async function connectCall(method: Method, request: object, headers: Record<string, string>): Promise<Answer> {
  const client = createClient(method.parent as DescService, connectTransport) as unknown as Record<
    string,
    (req: object, options: { headers: Record<string, string>; signal?: AbortSignal }) => Promise<Parameters<typeof toJsonString>[1]>
  >;
  if (method.methodKind === "server_streaming") {
    const abort = new AbortController();
    try {
      const stream = client[method.localName](request, { headers, signal: abort.signal }) as unknown as AsyncIterable<Parameters<typeof toJsonString>[1]>;
      for await (const response of stream) return { ok: true, json: toJsonString(method.output, response as never) };
      return { ok: false, code: Code.Unknown, message: "the stream ended without a message" };
    } catch (error) {
      const e = ConnectError.from(error);
      return { ok: false, code: e.code, message: e.rawMessage };
    } finally {
      abort.abort();
    }
  }
  try {
    const response = await client[method.localName](request, { headers });
    return { ok: true, json: toJsonString(method.output, response as never) };
  } catch (error) {
    const e = ConnectError.from(error);
    return { ok: false, code: e.code, message: e.rawMessage };
  }
}

/** What leaks another organisation's data into a limited caller's answer. */
const FOREIGN = () => [B, fixed.credB, fixed.teamB, "acct-b@example.com", "tok-b-fixed"];

beforeAll(async () => {
  t = await startTestService();
  const { credentials, organizations } = admin();
  for (const id of [A, B]) await organizations.createOrganization({ organizationId: id, name: id });
  await organizations.createTeam({ teamId: fixed.teamA, organizationId: A, name: "A" });
  await organizations.createTeam({ teamId: fixed.teamB, organizationId: B, name: "B" });
  const make = async (org: string) =>
    (await credentials.createCredential({ organizationId: org, provider: Provider.ANTHROPIC, credentialName: "main", apiKey: FAKE_KEYS.anthropic() }))
      .credential!.credentialId;
  fixed.credA = await make(A);
  fixed.credB = await make(B);

  const { tokens, admins } = t.service.parts;
  const token = async (name: string, scope: string, organizationIds?: string[]) => (await tokens.create(name, scope, "test", { organizationIds })).token;
  const adminAll = await token("admin-all", "admin");
  const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });
  const account = async (email: string, role: Role, organizations?: string[]) =>
    admins.create(email, PASSWORD, { actor: "test", source: null }, "password", { role, organizations });
  await account("owner@example.com", "owner");
  await account("editor-a@example.com", "editor", [A]);
  await account("viewer@example.com", "viewer");
  await account("viewer-a@example.com", "viewer", [A]);
  await account("acct-b@example.com", "viewer", [B]);
  await token("tok-b-fixed", "resolve", [B]);
  fixed.session = (await admins.signIn("owner@example.com", PASSWORD, null, null)).token;
  const sessionOf = async (email: string) => (await admins.signIn(email, PASSWORD, null, null)).token;

  const expired = await token("expired", "admin");
  await t.service.orm.em.getConnection().execute("update api_tokens set expires_at = now() - interval '1 minute' where name = 'expired'");
  const revoked = await token("revoked", "admin");
  await tokens.revoke("revoked", "test");

  const byName: Record<string, Record<string, string>> = {
    "no token": {},
    expired: bearer(expired),
    revoked: bearer(revoked),
    metrics: bearer(await token("metrics", "metrics")),
    "resolve all": bearer(await token("resolve-all", "resolve")),
    "resolve [A]": bearer(await token("resolve-a", "resolve", [A])),
    "admin all": bearer(adminAll),
    "admin [A]": bearer(await token("admin-a", "admin", [A])),
    // Accounts act in a session signed in just now: sensitive actions need a recent sign-in (reauthentication.test.ts).
    owner: { ...bearer(adminAll), [ACTOR_HEADER]: "owner@example.com", [SESSION_HEADER]: await sessionOf("owner@example.com") },
    "editor [A]": { ...bearer(adminAll), [ACTOR_HEADER]: "editor-a@example.com", [SESSION_HEADER]: await sessionOf("editor-a@example.com") },
    viewer: { ...bearer(adminAll), [ACTOR_HEADER]: "viewer@example.com" },
    "viewer [A]": { ...bearer(adminAll), [ACTOR_HEADER]: "viewer-a@example.com" },
  };
  for (const caller of CALLERS) caller.headers = byName[caller.name];

  grpcClient = new grpc.Client(t.address, grpc.credentials.createInsecure());
  connectTransport = createConnectTransport({ baseUrl: `http://127.0.0.1:${t.service.connectPort}`, httpVersion: "2" });
}, 60_000);

afterAll(async () => {
  grpcClient?.close();
  await t?.close();
});

const PORTS = { grpc: grpcCall, connect: connectCall } as const;

/** A denial's message with the target's id taken out: what must not differ between B and a missing id. */
const template = (message: string) => message.replace(/"[^"]*"/g, '"<id>"');

describe.each(Object.keys(PORTS) as Array<keyof typeof PORTS>)("on the %s port", (port) => {
  const call = PORTS[port];

  describe.each(CALLERS.map((c) => [c.name, c] as const))("caller %s", (_name, caller) => {
    it.concurrent.each(RPCS.map((r) => [r.label, r] as const))("%s: every target answers as documented", async (_label, rpc) => {
      const targets: Target[] = rpc.kind === "none" ? ["none"] : ["A", "B", "missing"];
      const denials = new Map<Target, string>();
      for (const target of targets) {
        const want = expected(caller, rpc, target);
        const answer = await call(rpc.method, await rpc.request(target), caller.headers);
        const cell = `${port} ${caller.name} ${rpc.label} target ${target}: expected ${want}, got ${JSON.stringify(answer)}`;
        if (want === "allowed") {
          // The policy let it through: success, or a domain answer about the request (never a refusal of the caller).
          if (!answer.ok) {
            expect(answer.code, cell).not.toBe(Code.PermissionDenied);
            expect(answer.code === Code.Unauthenticated && /token|authorization|disabled/.test(answer.message), cell).toBe(false);
          }
        } else {
          expect(answer.ok, cell).toBe(false);
          if (answer.ok) continue;
          expect(answer.code, cell).toBe(want === "unauthenticated" ? Code.Unauthenticated : Code.PermissionDenied);
          const pattern = {
            unauthenticated: /token|authorization/,
            scope: /has scope/,
            role: /has role/,
            "unlimited-only": /limited to no organisation/,
            limited: /a caller limited to organizations may not/,
            outside: /is not (an organization|a team|a credential|a token|an account)/,
          }[want];
          expect(answer.message, cell).toMatch(pattern);
          denials.set(target, `${answer.code} ${template(answer.message)}`);
        }
        // Zero cross-tenant reads: nothing of organisation B in a limited caller's answer.
        if (answer.ok && caller.organizations) for (const foreign of FOREIGN()) expect(answer.json, cell).not.toContain(foreign);
      }
      // No existence oracle: B and a missing id are refused identically.
      if (denials.has("B") || denials.has("missing")) expect(denials.get("B"), `${caller.name} ${rpc.label}`).toBe(denials.get("missing"));
    });
  });
});

describe("the matrix and the policy cover every RPC", () => {
  const every = [CredentialService, OrganizationService, AdminService].flatMap((s) => s.methods);
  it("every RPC of the three services has a row here", () => {
    const covered = new Set(RPCS.map((r) => r.method.parent.typeName + "/" + r.method.name));
    expect(every.map((m) => m.parent.typeName + "/" + m.name).filter((name) => !covered.has(name))).toEqual([]);
  });
  it("and an entry in the policy's table (a method without one is refused to everyone)", () => {
    expect(every.filter((m) => accessOf(m) === undefined).map((m) => m.name)).toEqual([]);
  });
});

describe("lists for a limited caller", () => {
  const headersOf = (name: string) => CALLERS.find((c) => c.name === name)!.headers;

  it.each(["admin [A]", "editor [A]", "viewer [A]"])("%s sees only organisation A's organisations, tokens, accounts and audit events", async (name) => {
    const headers = headersOf(name);
    const orgs = await connectCall(O.listOrganizations, {}, headers);
    expect(orgs.ok && JSON.parse(orgs.json)).toEqual({ organizations: [expect.objectContaining({ organizationId: A })], totalSize: 1 });
    const events = await connectCall(M.listAuditEvents, { pageSize: 1000 }, headers);
    expect(events.ok).toBe(true);
    const rows = (JSON.parse((events as { json: string }).json) as { events?: Array<{ organizationId?: string }> }).events ?? [];
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((e) => e.organizationId === A)).toBe(true);
    for (const method of [M.listApiTokens, M.listAdmins]) {
      const answer = await connectCall(method, {}, headers);
      expect(answer.ok).toBe(true);
      for (const foreign of FOREIGN()) expect((answer as { json: string }).json).not.toContain(foreign);
    }
    const tokens = await connectCall(M.listApiTokens, {}, headers);
    const names = ((JSON.parse((tokens as { json: string }).json) as { apiTokens?: Array<{ name: string }> }).apiTokens ?? []).map((x) => x.name);
    expect(names).toContain("resolve-a");
    expect(names).not.toContain("admin-all");
    expect(names).not.toContain("resolve-all");
  });

  it.each(["admin [A]", "editor [A]", "viewer [A]"])("%s finds only organisation A's credentials and uncovered organisations", async (name) => {
    const headers = headersOf(name);
    for (const call of [grpcCall, connectCall]) {
      const found = await call(C.searchCredentials, { pageSize: 200 }, headers);
      expect(found.ok).toBe(true);
      const answer = JSON.parse((found as { json: string }).json) as {
        credentials?: Array<{ organizationId: string }>;
        organizations?: Array<{ organizationId: string }>;
        totalSize?: number;
      };
      expect(answer.credentials?.length ?? 0).toBeGreaterThan(0);
      expect(answer.credentials!.every((c) => c.organizationId === A)).toBe(true);
      // The total counts A's credentials only.
      const [{ n }] = await t.db.query<{ n: number }>("select count(*)::int as n from provider_credentials where organization_id = $1", [A]);
      expect(answer.totalSize).toBe(n);
      expect(answer.organizations?.map((o) => o.organizationId)).toEqual([A]);
      // Nobody has a Fireworks credential: A and B are both uncovered, and the limited caller hears of A alone.
      const uncovered = await call(C.listUncoveredOrganizations, { provider: Provider.FIREWORKS }, headers);
      expect(uncovered.ok).toBe(true);
      const orgs = (JSON.parse((uncovered as { json: string }).json) as { organizations?: Array<{ organization: { organizationId: string } }> }).organizations;
      expect(orgs?.map((o) => o.organization.organizationId)).toEqual([A]);
      for (const foreign of FOREIGN()) expect((found as { json: string }).json + (uncovered as { json: string }).json).not.toContain(foreign);
    }
  });

  it("an unlimited caller sees both organisations", async () => {
    const orgs = await connectCall(O.listOrganizations, {}, headersOf("admin all"));
    expect(orgs.ok && orgs.json).toContain(B);
    const found = await connectCall(C.searchCredentials, { organizationId: B, query: "main" }, headersOf("admin all"));
    expect(found.ok && found.json).toContain(fixed.credB);
    const uncovered = await connectCall(C.listUncoveredOrganizations, { provider: Provider.FIREWORKS, pageSize: 200 }, headersOf("admin all"));
    expect(uncovered.ok && uncovered.json).toContain(`"${B}"`);
  });
});

describe("audit rows name the account and its role", () => {
  it("an editor's change is recorded as 'editor-a@example.com (editor) via token:admin-all'", async () => {
    const headers = CALLERS.find((c) => c.name === "editor [A]")!.headers;
    const answer = await connectCall(
      C.setSelectionStrategy,
      { organizationId: A, provider: Provider.GEMINI, strategy: SelectionStrategy.ROUND_ROBIN },
      headers,
    );
    expect(answer.ok).toBe(true);
    const rows = await t.service.orm.em
      .getConnection()
      .execute("select actor from audit_events where organization_id = ? and action like 'selection_strategy.%' order by id desc limit 1", [A]);
    expect(rows[0]?.actor).toBe("editor-a@example.com (editor) via token:admin-all");
  });

  it("no limited caller ever changed anything outside organisation A", async () => {
    const rows = await t.service.orm.em
      .getConnection()
      .execute(
        "select actor, action, organization_id from audit_events where (actor ~ '(token:admin-a|token:resolve-a)$' or actor like 'editor-a@%' or actor like 'viewer%') and organization_id is not null and organization_id <> ?",
        [A],
      );
    expect(rows).toEqual([]);
  });

  it("a disabled account is refused (UNAUTHENTICATED)", async () => {
    const { admins } = t.service.parts;
    await admins.create("gone@example.com", PASSWORD, { actor: "test", source: null }, "password", { role: "editor" });
    await admins.update("gone@example.com", { disabled: true }, { actor: "test", source: null });
    const headers = { ...CALLERS.find((c) => c.name === "admin all")!.headers, [ACTOR_HEADER]: "gone@example.com" };
    const answer = await grpcCall(O.listOrganizations, {}, headers);
    expect(answer).toMatchObject({ ok: false, code: Code.Unauthenticated });
  });

  it("an actor that is no account keeps the admin token's rights", async () => {
    const headers = { ...CALLERS.find((c) => c.name === "admin [A]")!.headers, [ACTOR_HEADER]: "nightly-job" };
    expect((await grpcCall(O.getOrganization, { organizationId: A }, headers)).ok).toBe(true);
    expect(await grpcCall(O.getOrganization, { organizationId: B }, headers)).toMatchObject({ ok: false, code: Code.PermissionDenied });
  });
});
