// Who may call what on which organisation, through the portal: every REST operation of the OpenAPI
// document, every tRPC procedure of the router (over /api/trpc), and every page under
// portal/src/routes, for every kind of caller and target. Token callers send their bearer token;
// accounts use a session signed in through /login. Every cell has an expected answer, written from
// docs/security.md's table (the same one test/integration/tenancy-matrix.test.ts restates for the
// RPCs); a limited caller never reads or writes another organisation's data (its answers carry
// nothing of B, and the database shows nothing of B changed), and is refused alike whether a target
// outside its organisations exists or not.
import { randomBytes, randomUUID } from "node:crypto";
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS } from "../support/harness.js";
import { documentedOperations, startTestPortal, type PortalResponse, type TestPortal } from "../support/portal-harness.js";
import { appRouter } from "../../portal/src/lib/server/trpc/routers/_app.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const A = "org-a";
const B = "org-b";
const PASSWORD = "matrix-portal-correct-horse-battery-42";
/** Refused at once: nothing listens on the discard port. */
const API_BASE = "http://127.0.0.1:9/v1";

type Access = "read" | "edit" | "organizations" | "tokens" | "accounts";
type Role = "owner" | "editor" | "viewer";

interface CallerSpec {
  name: string;
  /** false: the token is missing, expired or revoked. */
  authenticated: boolean;
  scope?: "resolve" | "admin" | "metrics";
  role?: Role;
  organizations?: string[];
  /** Set in beforeAll: a bearer token, or a session (accounts). */
  token?: string;
  session?: string;
  email?: string;
  /** When the session was signed in: renewed well within the service's 10 minutes for sensitive actions. */
  signedInAt?: number;
  renewing?: Promise<void>;
}

// The documented table (docs/security.md), restated: what each scope and role may do.
const SCOPE_ACCESS: Record<string, Access[]> = {
  resolve: [],
  metrics: [],
  admin: ["read", "edit", "organizations", "tokens", "accounts"],
};
const ROLE_ACCESS: Record<Role, Access[]> = {
  owner: ["read", "edit", "organizations", "tokens", "accounts"],
  editor: ["read", "edit"],
  viewer: ["read"],
};

const CALLERS: CallerSpec[] = [
  { name: "no token", authenticated: false },
  { name: "resolve all", authenticated: true, scope: "resolve" },
  { name: "resolve [A]", authenticated: true, scope: "resolve", organizations: [A] },
  { name: "admin all", authenticated: true, scope: "admin" },
  { name: "admin [A]", authenticated: true, scope: "admin", organizations: [A] },
  { name: "metrics", authenticated: true, scope: "metrics" },
  { name: "expired", authenticated: false },
  { name: "revoked", authenticated: false },
  { name: "owner", authenticated: true, scope: "admin", role: "owner", email: "owner@example.com" },
  { name: "editor [A]", authenticated: true, scope: "admin", role: "editor", organizations: [A], email: "editor-a@example.com" },
  { name: "viewer", authenticated: true, scope: "admin", role: "viewer", email: "viewer@example.com" },
  { name: "viewer [A]", authenticated: true, scope: "admin", role: "viewer", organizations: [A], email: "viewer-a@example.com" },
];

/** Which object a call names: its own organisation's, another's, or one that does not exist. */
type Target = "A" | "B" | "missing" | "none";
type TargetKind = "organization" | "credential" | "team" | "token" | "account" | "new-organization" | "none";

let portal: TestPortal;
const fixed = { credA: "", credB: "", teamA: "team-of-a", teamB: "team-of-b" };
const unique = () => randomBytes(4).toString("hex");
const orgOf = (target: Target) => (target === "A" ? A : target === "B" ? B : `org-missing-${unique()}`);
const credentialOf = (target: Target) => (target === "A" ? fixed.credA : target === "B" ? fixed.credB : randomUUID());
const teamOf = (target: Target) => (target === "A" ? fixed.teamA : target === "B" ? fixed.teamB : `tm-missing-${unique()}`);
const clients = () => portal.service.clients();
/** Every credential, team, token and account made in B for a call: no limited caller's change may name one. */
const madeForB = new Set<string>([]);
const inB = <T extends string>(target: Target, id: T): T => {
  if (target === "B") madeForB.add(id);
  return id;
};

async function freshCredential(target: Target): Promise<string> {
  if (target === "missing") return randomUUID();
  const { credential } = await clients().credentials.createCredential({
    organizationId: orgOf(target),
    provider: Provider.ANTHROPIC,
    credentialName: `fresh-${unique()}`,
    apiKey: FAKE_KEYS.anthropic(),
    apiBase: API_BASE,
  });
  return inB(target, credential!.credentialId);
}

async function freshTeam(target: Target): Promise<string> {
  if (target === "missing") return `tm-missing-${unique()}`;
  const id = `tm-${unique()}`;
  await clients().organizations.createTeam({ teamId: id, organizationId: orgOf(target), name: `Team ${id}` });
  return inB(target, id);
}

async function freshToken(target: Target): Promise<string> {
  const name = `tok-${unique()}`;
  if (target !== "missing") await portal.service.service.parts.tokens.create(name, "resolve", "test", { organizationIds: [orgOf(target)] });
  return inB(target, name);
}

async function freshAccount(target: Target): Promise<string> {
  const email = `acct-${unique()}@example.com`;
  if (target !== "missing") {
    await portal.service.service.parts.admins.create(email, PASSWORD, { actor: "test", source: null }, "password", {
      role: "viewer",
      organizations: [orgOf(target)],
    });
  }
  return inB(target, email);
}

async function freshOrganization(target: Target): Promise<string> {
  if (target === "missing") return `org-missing-${unique()}`;
  const id = `org-off-${unique()}`;
  await clients().organizations.createOrganization({ organizationId: id, name: `Offboarded ${id}` });
  await clients().organizations.createTeam({ teamId: `tm-${unique()}`, organizationId: id, name: "A team" });
  await clients().credentials.createCredential({
    organizationId: id,
    provider: Provider.ANTHROPIC,
    credentialName: "to go",
    apiKey: FAKE_KEYS.anthropic(),
    apiBase: API_BASE,
  });
  return inB(target, id);
}

/** One procedure: its REST operation, what it needs, and its input for a target (fixtures made fresh when it changes them). */
interface OperationSpec {
  procedure: string;
  rest: string;
  access: Access;
  kind: TargetKind;
  /** `allowed`: whether the policy lets this caller do it to this target (for an input that must not succeed on A). */
  input: (target: Target, allowed: boolean) => Promise<Record<string, unknown>> | Record<string, unknown>;
  /** An allowed call on A answers this status (a refusal of the input, so that A's fixtures stay), with this field named. */
  allowedOnA?: { status: number; field: string };
}

const inAnHour = () => new Date(Date.now() + 3_600_000).toISOString();

const OPERATIONS: OperationSpec[] = [
  {
    procedure: "credentials.list",
    rest: "GET /provider-credentials/organization/{organization_id}",
    access: "read",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x) }),
  },
  // Across organisations: a limited caller finds only its own ("main of org-a", never "main of org-b").
  {
    procedure: "credentials.search",
    rest: "GET /provider-credentials/search",
    access: "read",
    kind: "none",
    input: () => ({ q: "main of" }),
  },
  // All or none: A's credential with B's (or a missing one) is refused whole for a caller limited to A.
  {
    procedure: "credentials.batch",
    rest: "POST /provider-credentials/batch",
    access: "edit",
    kind: "credential",
    input: async (x) => ({
      action: "deactivate",
      credential_ids: x === "A" ? [await freshCredential("A")] : [await freshCredential("A"), await freshCredential(x)],
    }),
  },
  {
    procedure: "credentials.get",
    rest: "GET /provider-credentials/{credential_id}",
    access: "read",
    kind: "credential",
    input: (x) => ({ credential_id: credentialOf(x) }),
  },
  {
    procedure: "credentials.create",
    rest: "POST /provider-credentials/create",
    access: "edit",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x), provider: "openai", credential_name: `m-${unique()}`, api_key: FAKE_KEYS.openai(), api_base: API_BASE }),
  },
  {
    procedure: "credentials.update",
    rest: "PUT /provider-credentials/{credential_id}",
    access: "edit",
    kind: "credential",
    input: async (x) => ({ credential_id: await freshCredential(x), credential_name: `renamed-${unique()}` }),
  },
  {
    procedure: "credentials.activate",
    rest: "PUT /provider-credentials/{credential_id}/activate",
    access: "edit",
    kind: "credential",
    input: async (x) => ({ credential_id: await freshCredential(x) }),
  },
  {
    procedure: "credentials.deactivate",
    rest: "PUT /provider-credentials/{credential_id}/deactivate",
    access: "edit",
    kind: "credential",
    input: async (x) => ({ credential_id: await freshCredential(x) }),
  },
  {
    procedure: "credentials.verify",
    rest: "POST /provider-credentials/{credential_id}/verify",
    access: "edit",
    kind: "credential",
    input: async (x) => ({ credential_id: await freshCredential(x) }),
  },
  {
    procedure: "credentials.delete",
    rest: "DELETE /provider-credentials/{credential_id}",
    access: "edit",
    kind: "credential",
    input: async (x) => ({ credential_id: await freshCredential(x) }),
  },
  {
    procedure: "selectionStrategies.list",
    rest: "GET /provider-credentials/organization/{organization_id}/selection-strategies",
    access: "read",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x) }),
  },
  {
    procedure: "selectionStrategies.set",
    rest: "PUT /provider-credentials/organization/{organization_id}/selection-strategies/{provider}",
    access: "edit",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x), provider: "openai", strategy: "newest" }),
  },
  { procedure: "organizations.list", rest: "GET /organizations", access: "read", kind: "none", input: () => ({ q: "org-", offset: 0 }) },
  { procedure: "organizations.uncovered", rest: "GET /uncovered-organizations", access: "read", kind: "none", input: () => ({}) },
  // B and missing: a fresh organisation (with a credential and a team) outside A, confirmed, so that the service decides.
  // A: refused callers confirm it (the service must refuse them); allowed ones mistype the confirmation (400), so A stays.
  {
    procedure: "organizations.offboard",
    rest: "POST /organizations/{organization_id}/offboard",
    access: "organizations",
    kind: "organization",
    input: async (x, allowed) => {
      const id = x === "A" ? A : await freshOrganization(x);
      return { organization_id: id, confirm_organization_id: x === "A" && allowed ? `${id}-typo` : id };
    },
    allowedOnA: { status: 400, field: "confirm_organization_id" },
  },
  {
    procedure: "organizations.create",
    rest: "POST /organizations",
    access: "organizations",
    kind: "new-organization",
    input: (x) => ({ organization_id: x === "missing" ? `org-new-${unique()}` : orgOf(x), name: "New" }),
  },
  {
    procedure: "organizations.get",
    rest: "GET /organizations/{organization_id}",
    access: "read",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x) }),
  },
  // A and B still have credentials: an allowed delete is 409 and changes nothing.
  {
    procedure: "organizations.delete",
    rest: "DELETE /organizations/{organization_id}",
    access: "organizations",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x) }),
  },
  {
    procedure: "teams.list",
    rest: "GET /organizations/{organization_id}/teams",
    access: "read",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x) }),
  },
  {
    procedure: "teams.create",
    rest: "POST /organizations/{organization_id}/teams",
    access: "edit",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x), team_id: `tm-${unique()}`, name: "New team" }),
  },
  { procedure: "teams.delete", rest: "DELETE /teams/{team_id}", access: "edit", kind: "team", input: async (x) => ({ team_id: await freshTeam(x) }) },
  { procedure: "audit.list", rest: "GET /audit-events", access: "read", kind: "none", input: () => ({}) },
  { procedure: "tokens.list", rest: "GET /tokens", access: "read", kind: "none", input: () => ({}) },
  {
    procedure: "tokens.create",
    rest: "POST /tokens",
    access: "tokens",
    kind: "organization",
    input: (x) => ({ name: `new-${unique()}`, scope: "resolve", organization_ids: [orgOf(x)], expires_at: inAnHour() }),
  },
  { procedure: "tokens.rotate", rest: "POST /tokens/{name}/rotate", access: "tokens", kind: "token", input: async (x) => ({ name: await freshToken(x) }) },
  { procedure: "tokens.revoke", rest: "DELETE /tokens/{name}", access: "tokens", kind: "token", input: async (x) => ({ name: await freshToken(x) }) },
  { procedure: "accounts.list", rest: "GET /accounts", access: "read", kind: "none", input: () => ({}) },
  {
    procedure: "accounts.create",
    rest: "POST /accounts",
    access: "accounts",
    kind: "organization",
    input: (x) => ({ email: `new-${unique()}@example.com`, role: "viewer", organization_ids: [orgOf(x)], password: PASSWORD }),
  },
  {
    procedure: "accounts.update",
    rest: "PUT /accounts/{email}",
    access: "accounts",
    kind: "account",
    input: async (x) => ({ email: await freshAccount(x), role: "viewer" }),
  },
  {
    procedure: "accounts.delete",
    rest: "DELETE /accounts/{email}",
    access: "accounts",
    kind: "account",
    input: async (x) => ({ email: await freshAccount(x) }),
  },
  {
    procedure: "accounts.signOutEverywhere",
    rest: "POST /accounts/{email}/sign-out",
    access: "accounts",
    kind: "account",
    input: async (x) => ({ email: await freshAccount(x) }),
  },
  {
    procedure: "resolution.explain",
    rest: "GET /provider-credentials/organization/{organization_id}/resolution",
    access: "read",
    kind: "organization",
    input: (x) => ({ organization_id: orgOf(x) }),
  },
  {
    procedure: "resolution.roll",
    rest: "POST /provider-credentials/{credential_id}/roll",
    access: "edit",
    kind: "credential",
    input: async (x) => ({ credential_id: await freshCredential(x), api_key: FAKE_KEYS.anthropic() }),
  },
  {
    procedure: "accounts.resetTwoFactor",
    rest: "POST /accounts/{email}/reset-two-factor",
    access: "accounts",
    kind: "account",
    input: async (x) => ({ email: await freshAccount(x) }),
  },
];

type Expected = "unauthenticated" | "scope" | "role" | "unlimited-only" | "limited" | "outside" | "allowed";

/** The answer docs/security.md promises for a cell. */
function expected(caller: CallerSpec, access: Access, kind: TargetKind, target: Target): Expected {
  if (!caller.authenticated) return "unauthenticated";
  if (!SCOPE_ACCESS[caller.scope!].includes(access)) return "scope";
  if (caller.role && !ROLE_ACCESS[caller.role].includes(access)) return "role";
  const limited = caller.organizations !== undefined;
  if (access === "accounts" && limited) return "unlimited-only";
  if (limited && kind === "new-organization") return "limited";
  if (limited && target !== "none" && target !== "A") return "outside";
  return "allowed";
}

/** How the service words each refusal (the portal passes the service's 403 on as it is). */
const DENIAL_MESSAGES: Record<Exclude<Expected, "allowed" | "unauthenticated" | "scope">, RegExp> = {
  role: /has role/,
  "unlimited-only": /limited to no organisation/,
  limited: /a caller limited to organizations may not/,
  outside: /is not (an organization|a team|a credential|a token|an account)/,
};

/** An account's session, signed in again when it is more than 4 minutes old (sensitive actions need a sign-in within 10). */
async function freshSession(caller: CallerSpec): Promise<string> {
  if (Date.now() - caller.signedInAt! > 4 * 60_000) {
    caller.renewing ??= signIn(caller.email!).then((session) => {
      caller.session = session;
      caller.signedInAt = Date.now();
      caller.renewing = undefined;
    });
    await caller.renewing;
  }
  return caller.session!;
}

/** The headers a caller sends: its bearer token, or its session cookie (and this origin, as a browser would). */
async function auth(caller: CallerSpec): Promise<{ token: string | null; session?: string; headers: Record<string, string> }> {
  if (caller.email) return { token: null, session: await freshSession(caller), headers: { origin: portal.url } };
  return { token: caller.token ?? null, headers: {} };
}

interface Answer {
  status: number;
  /** The error's code and message (REST: the body's; tRPC: data.apiCode and message). */
  code?: string;
  message?: string;
  text: string;
}

/** The portal's last log lines, for a cell that answered 500 (which is never right). */
const portalLog = (status: number) => (status >= 500 ? `\nportal log:\n${portal.output.slice(-8).join("\n")}` : "");

const restOperations = new Map(OPERATIONS.map((o) => [o.rest, o]));

async function restCall(caller: CallerSpec, op: OperationSpec, input: Record<string, unknown>): Promise<PortalResponse> {
  const [method, template] = op.rest.split(" ");
  const rest = { ...input };
  const url = template.replace(/\{([a-z_]+)\}/g, (_, name: string) => {
    const value = String(rest[name]);
    delete rest[name];
    return encodeURIComponent(value);
  });
  const { token, session, headers } = await auth(caller);
  const query = method === "GET" || method === "DELETE";
  const search = query && Object.keys(rest).length > 0 ? `?${new URLSearchParams(rest as Record<string, string>)}` : "";
  return portal.request(method, `/api${url}${search}`, { token, session, headers, body: query ? undefined : rest });
}

const procedureType = (name: string) => (appRouter._def.procedures as unknown as Record<string, { _def: { type: string } }>)[name]._def.type;

async function trpcCall(caller: CallerSpec, op: OperationSpec, input: Record<string, unknown>): Promise<PortalResponse> {
  const { token, session, headers } = await auth(caller);
  if (procedureType(op.procedure) === "query") {
    return portal.request("GET", `/api/trpc/${op.procedure}?input=${encodeURIComponent(JSON.stringify(input))}`, { token, session, headers });
  }
  return portal.request("POST", `/api/trpc/${op.procedure}`, { token, session, headers, body: input });
}

async function answer(via: "rest" | "trpc", caller: CallerSpec, op: OperationSpec, target: Target, allowed: boolean): Promise<Answer> {
  const input = await op.input(target, allowed);
  const response = await (via === "rest" ? restCall : trpcCall)(caller, op, input);
  if (response.status < 400) return { status: response.status, text: response.text };
  const body = response.json ?? {};
  if (via === "rest") return { status: response.status, code: body.code, message: body.message, text: response.text };
  return { status: response.status, code: body.error?.data?.apiCode, message: body.error?.message, text: response.text };
}

/** A denial with the target's id taken out: what must not differ between B and a missing id. */
const template = (text: string) => text.replace(/\\?"[^"\\]*\\?"/g, '"<id>"');

/** What would show another organisation's data to a caller limited to A. */
const FOREIGN = () => [B, fixed.credB, fixed.teamB, "acct-b@example.com", "tok-b-fixed"];

async function signIn(email: string): Promise<string> {
  const { session, response } = await portal.signIn(email, PASSWORD);
  expect(session, `${email} signs in: ${response.status} ${response.text}`).toBeTruthy();
  return session!;
}

beforeAll(async () => {
  portal = await startTestPortal();
  const { credentials, organizations } = clients();
  for (const id of [A, B]) await organizations.createOrganization({ organizationId: id, name: `Organisation ${id}` });
  await organizations.createTeam({ teamId: fixed.teamA, organizationId: A, name: "Team of A" });
  await organizations.createTeam({ teamId: fixed.teamB, organizationId: B, name: "Team of B" });
  const make = async (org: string) =>
    (await credentials.createCredential({ organizationId: org, provider: Provider.ANTHROPIC, credentialName: `main of ${org}`, apiKey: FAKE_KEYS.anthropic() }))
      .credential!.credentialId;
  fixed.credA = await make(A);
  fixed.credB = await make(B);

  const { tokens, admins } = portal.service.service.parts;
  const token = async (name: string, scope: string, organizationIds?: string[]) => (await tokens.create(name, scope, "test", { organizationIds })).token;
  const account = (email: string, role: Role, orgs?: string[]) =>
    admins.create(email, PASSWORD, { actor: "test", source: null }, "password", { role, organizations: orgs });
  await account("acct-b@example.com", "viewer", [B]);
  await token("tok-b-fixed", "resolve", [B]);
  const expired = await token("expired", "admin");
  await portal.service.db.query("update api_tokens set expires_at = now() - interval '1 minute' where name = 'expired'");
  const revoked = await token("revoked", "admin");
  await tokens.revoke("revoked", "test");
  const tokensByName: Record<string, string> = {
    expired,
    revoked,
    metrics: await token("metrics", "metrics"),
    "resolve all": await token("resolve-all", "resolve"),
    "resolve [A]": await token("resolve-a", "resolve", [A]),
    "admin all": await token("admin-all", "admin"),
    "admin [A]": await token("admin-a", "admin", [A]),
  };
  for (const caller of CALLERS) {
    if (caller.email) {
      await account(caller.email, caller.role!, caller.organizations);
      caller.session = await signIn(caller.email);
      caller.signedInAt = Date.now();
    } else caller.token = tokensByName[caller.name];
  }
  // Opens every page once, so that the portal has loaded each page's code before anything else in this
  // shared working tree rebuilds portal/build under it (a page first opened after that would answer 500).
  // Its error page too (a 404 for the owner, a 403 for the editor limited to A), and the tRPC endpoint.
  for (const name of ["owner", "editor [A]"]) {
    const session = CALLERS.find((c) => c.name === name)!.session;
    for (const spec of PAGES.filter((p) => !p.skip)) {
      for (const target of ["A", "B", "missing"] as const)
        await portal.request("GET", await spec.url(target), { token: null, session, headers: { accept: "text/html" } });
    }
  }
  await portal.request("GET", `/api/trpc/organizations.list?input=${encodeURIComponent("{}")}`, { token: tokensByName["admin all"] });
}, 400_000);

afterAll(async () => {
  await portal?.close();
});

describe("the matrix covers every operation", () => {
  it("every operation of the OpenAPI document has a row here", async () => {
    const document = await portal.request("GET", "/api/openapi.json", { token: null });
    expect(document.status, document.text.slice(0, 300)).toBe(200);
    const documented = (await documentedOperations(portal)).map((o) => `${o.method} ${o.path}`);
    expect(documented.filter((o) => !restOperations.has(o))).toEqual([]);
    expect([...restOperations.keys()].filter((o) => !documented.includes(o))).toEqual([]);
  });

  it("every procedure of the tRPC router has a row here", () => {
    const procedures = Object.keys(appRouter._def.procedures);
    const covered = new Set(OPERATIONS.map((o) => o.procedure));
    expect(procedures.filter((p) => !covered.has(p))).toEqual([]);
    expect(procedures.length).toBe(OPERATIONS.length);
  });
});

describe.each(["rest", "trpc"] as const)("over %s", (via) => {
  describe.each(CALLERS.map((c) => [c.name, c] as const))("caller %s", (_name, caller) => {
    it.concurrent.each(OPERATIONS.map((o) => [o.procedure, o] as const))("%s: every target answers as documented", async (_label, op) => {
      const targets: Target[] = op.kind === "none" ? ["none"] : ["A", "B", "missing"];
      const denials = new Map<Target, string>();
      for (const target of targets) {
        const want = expected(caller, op.access, op.kind, target);
        const got = await answer(via, caller, op, target, want === "allowed");
        const cell = `${via} ${caller.name} ${op.procedure} target ${target}: expected ${want}, got ${got.status} ${got.text.slice(0, 300)}${portalLog(got.status)}`;
        expect(got.status, cell).toBeLessThan(500);
        if (want === "allowed") {
          // The policy let it through: success, or an answer about the request (never a refusal of the caller).
          expect([401, 403], cell).not.toContain(got.status);
          // A target that does not exist, asked by a caller who may see everything: 404 (a new organisation's id is created).
          if (target === "missing" && op.kind !== "new-organization" && caller.organizations === undefined) expect(got.status, cell).toBe(404);
          if (target === "A" && op.allowedOnA) {
            expect(got.status, cell).toBe(op.allowedOnA.status);
            expect(got.text, cell).toContain(op.allowedOnA.field);
          } else if (target !== "missing" && got.status >= 400) expect(got.status, cell).toBe(409);
        } else {
          expect(got.status, cell).toBe(want === "unauthenticated" ? 401 : 403);
          expect(got.code, cell).toBe(want === "unauthenticated" ? "unauthorized" : "forbidden");
          if (want !== "unauthenticated" && want !== "scope") expect(got.message, cell).toMatch(DENIAL_MESSAGES[want]);
          denials.set(target, `${got.status} ${got.code} ${template(got.message ?? "")}`);
        }
        // Zero cross-tenant reads: nothing of organisation B in a limited caller's answer.
        if (got.status < 400 && caller.organizations) for (const foreign of FOREIGN()) expect(got.text, cell).not.toContain(foreign);
      }
      // No existence oracle: B and a missing id are refused identically.
      if (denials.has("B") || denials.has("missing")) expect(denials.get("B"), `${via} ${caller.name} ${op.procedure}`).toBe(denials.get("missing"));
    });
  });
});

// ---------------------------------------------------------------- pages

/** Page paths under portal/src/routes, as templates (`/credentials/[credential_id]/edit`); the API's are left out. */
function discoverPages(dir: string, prefix = ""): string[] {
  const entries = readdirSync(dir, { withFileTypes: true });
  const found: string[] = [];
  if (entries.some((e) => e.isFile() && /^\+page(\.server)?\.(svelte|ts|js)$/.test(e.name))) found.push(prefix === "" ? "/" : prefix);
  for (const entry of entries.filter((e) => e.isDirectory())) {
    const segment = /^\(.*\)$/.test(entry.name) ? "" : `/${entry.name}`;
    found.push(...discoverPages(path.join(dir, entry.name), `${prefix}${segment}`));
  }
  return [...new Set(found)].filter((p) => p !== "/api" && !p.startsWith("/api/"));
}

/** What a page shows, and what it needs to show its forms. */
interface PageSpec {
  page: string;
  kind: TargetKind;
  /** What the page reads: a caller without it is refused (403). */
  read: Access;
  /** What its forms change: a caller without it sees the page read only (no form that changes anything). */
  write: Access | null;
  /** The URL for a target. */
  url: (target: Target) => Promise<string> | string;
  /** A page that is mostly its form (add, edit, confirm): without `write`, it says it is read only. */
  form?: true;
  /** Public pages (sign-in, sign-out) and redirects: answered alike for everyone; checked elsewhere. */
  skip?: true;
}

const PAGES: PageSpec[] = [
  { page: "/", kind: "organization", read: "read", write: "edit", url: (x) => `/?organization=${orgOf(x)}` },
  { page: "/credentials", kind: "none", read: "read", write: null, url: () => "/credentials", skip: true },
  { page: "/credentials/new", form: true, kind: "organization", read: "read", write: "edit", url: (x) => `/credentials/new?organization=${orgOf(x)}` },
  {
    page: "/credentials/[credential_id]/roll",
    form: true,
    kind: "credential",
    read: "read",
    write: "edit",
    url: (x) => `/credentials/${credentialOf(x)}/roll`,
  },
  {
    page: "/credentials/[credential_id]/edit",
    form: true,
    kind: "credential",
    read: "read",
    write: "edit",
    url: (x) => `/credentials/${credentialOf(x)}/edit`,
  },
  {
    page: "/credentials/[credential_id]/delete",
    form: true,
    kind: "credential",
    read: "read",
    write: "edit",
    url: (x) => `/credentials/${credentialOf(x)}/delete`,
  },
  // Confirming a change to several credentials: a page for those who may change them (viewers are refused).
  {
    page: "/credentials/bulk",
    form: true,
    kind: "credential",
    read: "edit",
    write: "edit",
    url: (x) => `/credentials/bulk?action=deactivate&credential_id=${credentialOf(x)}`,
  },
  { page: "/organizations", kind: "none", read: "read", write: "organizations", url: () => "/organizations" },
  // Offboarding: for those who may delete organisations.
  {
    page: "/organizations/[organization_id]/offboard",
    form: true,
    kind: "organization",
    read: "organizations",
    write: "organizations",
    url: (x) => `/organizations/${orgOf(x)}/offboard`,
  },
  { page: "/organizations/[organization_id]", kind: "organization", read: "read", write: "edit", url: (x) => `/organizations/${orgOf(x)}` },
  {
    page: "/organizations/[organization_id]/delete",
    form: true,
    kind: "organization",
    read: "read",
    write: "organizations",
    url: (x) => `/organizations/${orgOf(x)}/delete`,
  },
  {
    page: "/organizations/[organization_id]/teams/[team_id]/delete",
    form: true,
    kind: "team",
    read: "read",
    write: "edit",
    url: (x) => `/organizations/${orgOf(x)}/teams/${teamOf(x)}/delete`,
  },
  { page: "/tokens", kind: "none", read: "read", write: "tokens", url: () => "/tokens" },
  { page: "/tokens/[name]/revoke", form: true, kind: "token", read: "read", write: "tokens", url: async (x) => `/tokens/${await freshToken(x)}/revoke` },
  { page: "/tokens/[name]/rotate", form: true, kind: "token", read: "read", write: "tokens", url: async (x) => `/tokens/${await freshToken(x)}/rotate` },
  { page: "/accounts", kind: "none", read: "read", write: "accounts", url: () => "/accounts" },
  { page: "/accounts/[email]", kind: "account", read: "read", write: "accounts", url: async (x) => `/accounts/${encodeURIComponent(await freshAccount(x))}` },
  {
    page: "/accounts/[email]/remove",
    form: true,
    kind: "account",
    read: "read",
    write: "accounts",
    url: async (x) => `/accounts/${encodeURIComponent(await freshAccount(x))}/remove`,
  },
  { page: "/account", kind: "none", read: "read", write: null, url: () => "/account" },
  // Signing in again before a sensitive action: every account may.
  { page: "/reauthenticate", kind: "none", read: "read", write: null, url: () => "/reauthenticate" },
  { page: "/audit", kind: "none", read: "read", write: null, url: () => "/audit" },
  { page: "/login", kind: "none", read: "read", write: null, url: () => "/login", skip: true },
  { page: "/logout", kind: "none", read: "read", write: null, url: () => "/logout", skip: true },
];

/** Forms in a page's main part that change something (the sign-out form lives in the sidebar; filters are GET forms). */
function changingForms(html: string): string[] {
  const main = html.slice(html.indexOf('<main id="content"'));
  return [...main.matchAll(/<form\b[^>]*>/g)].map((m) => m[0]).filter((tag) => /method="post"/i.test(tag));
}

describe("every page", () => {
  const pages = PAGES.filter((p) => !p.skip);

  describe.each(CALLERS.map((c) => [c.name, c] as const))("caller %s", (_name, caller) => {
    it.concurrent.each(pages.map((p) => [p.page, p] as const))("%s: every target answers as documented", async (_label, spec) => {
      const targets: Target[] = spec.kind === "none" ? ["none"] : ["A", "B", "missing"];
      const denials = new Map<Target, string>();
      for (const target of targets) {
        const url = await spec.url(target);
        const session = caller.email ? await freshSession(caller) : undefined;
        const response = await portal.request("GET", url, { token: caller.token ?? null, session, headers: { accept: "text/html" } });
        const cell = `${caller.name} ${url}: got ${response.status} ${response.headers.get("location") ?? ""}${portalLog(response.status)}`;
        if (!session) {
          // Pages are for signed-in accounts: a bearer token opens none of them.
          expect(response.status, cell).toBe(303);
          expect(response.headers.get("location"), cell).toBe(`/login?redirectTo=${encodeURIComponent(url)}`);
          continue;
        }
        expect(response.status, cell).toBeLessThan(500);
        const want = expected(caller, spec.read, spec.kind === "new-organization" ? "organization" : spec.kind, target);
        const html = response.text;
        if (want === "allowed") {
          if (target === "missing" && spec.kind !== "organization" && spec.page !== "/") expect(response.status, cell).toBe(404);
          else if (response.status !== 404) expect(response.status, cell).toBe(200);
          if (response.status === 200) {
            const mayChange = spec.write === null || expected(caller, spec.write, spec.kind, target) === "allowed";
            if (!mayChange) expect(changingForms(html), `${cell}: a form that changes something`).toEqual([]);
            // A viewer is told on every page; anyone else where a page's form is hidden from it.
            if (caller.role === "viewer" || (!mayChange && spec.form)) expect(html, `${cell}: says it is read only`).toMatch(/read only/i);
          }
        } else {
          // A page that only names an organisation outside the caller's shows a refusal, not its data.
          expect([200, 403, 404], cell).toContain(response.status);
          if (target !== "none") denials.set(target, `${response.status} ${pageMessage(html, url)}`);
        }
        // Zero cross-tenant reads: nothing of B that the URL did not name itself.
        if (caller.organizations) {
          for (const foreign of [fixed.credB, B, "main of org-b", "Team of B", fixed.teamB, "acct-b@example.com", "tok-b-fixed"]) {
            if (!decodeURIComponent(url).includes(foreign)) expect(html, cell).not.toContain(foreign);
          }
        }
      }
      if (denials.has("B") || denials.has("missing")) expect(denials.get("B"), `${caller.name} ${spec.page}`).toBe(denials.get("missing"));
    });
  });

  it("every page under portal/src/routes has a row here", () => {
    const covered = new Set(PAGES.map((p) => p.page));
    expect(discoverPages(path.join(ROOT, "portal/src/routes")).filter((p) => !covered.has(p))).toEqual([]);
  });
});

/** The visible text of a page's main part, with the target's ids taken out. */
function pageMessage(html: string, url: string): string {
  const main = html.slice(html.indexOf('<main id="content"')).replace(/<script\b[\s\S]*?<\/script>/g, "");
  let text = main
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  for (const part of decodeURIComponent(url)
    .split(/[/?=&]/)
    .filter((p) => p.length > 3))
    text = text.split(part).join("<id>");
  return text;
}

// ---------------------------------------------------------------- coverage and the database afterwards

describe("the database afterwards", () => {
  // Runs after the matrix (vitest runs a file's describe blocks in order; the matrix's concurrent tests finish first).
  const LIMITED = "(actor ~ 'token:(admin-a|resolve-a)$' or actor like 'editor-a@%' or actor like 'viewer-a@%')";

  it("no limited caller changed anything outside organisation A, and no viewer or refused token changed anything", async () => {
    const { query } = portal.service.db;
    expect(
      await query(`select actor, action, organization_id from audit_events where ${LIMITED} and organization_id is not null and organization_id <> $1`, [A]),
    ).toEqual([]);
    expect(
      await query(
        "select actor, action from audit_events where action not like 'admin.sign_in%' and (actor like 'viewer%' or actor ~ 'token:(resolve-all|resolve-a|metrics|expired|revoked)$')",
      ),
    ).toEqual([]);
    // Changes recorded without an organisation (tokens, accounts) name their target: none of B's.
    const touched = await query(
      `select actor, action, target, credential_id from audit_events where ${LIMITED} and (target = any($1) or credential_id::text = any($1))`,
      [[...madeForB]],
    );
    expect(madeForB.size).toBeGreaterThan(50);
    expect(touched).toEqual([]);
    // What limited callers created is A's.
    expect(
      await query(
        "select name, organization_ids from api_tokens where created_by in ('token:admin-a', 'editor-a@example.com') and organization_ids <> '{org-a}'",
      ),
    ).toEqual([]);
    expect(
      await query("select id from provider_credentials where organization_id <> $1 and created_by in ('token:admin-a', 'editor-a@example.com')", [A]),
    ).toEqual([]);
  });

  it("organisation B's fixtures are as they were made", async () => {
    const { query } = portal.service.db;
    expect(await query("select version, is_active, credential_name from provider_credentials where id = $1", [fixed.credB])).toEqual([
      { version: 1, is_active: true, credential_name: "main of org-b" },
    ]);
    expect(await query("select organization_id from teams where id = $1", [fixed.teamB])).toEqual([{ organization_id: B }]);
    expect(await query("select name from api_tokens where name = 'tok-b-fixed'")).toEqual([{ name: "tok-b-fixed" }]);
    expect(await query("select disabled_at, role from admin_users where email = 'acct-b@example.com'")).toEqual([{ disabled_at: null, role: "viewer" }]);
    expect(await query("select id from organizations where id = $1", [B])).toEqual([{ id: B }]);
    // Offboarding was refused or mistyped on A and B alike: both stand, with their fixtures.
    expect(await query("select id from organizations where id = $1", [A])).toEqual([{ id: A }]);
    expect(await query("select id from provider_credentials where id = $1", [fixed.credA])).toEqual([{ id: fixed.credA }]);
  });

  it("every change made by a caller limited to A is in A, by the audit log", async () => {
    const rows = await portal.service.db.query(
      "select count(*)::int as n from audit_events where (actor like 'editor-a@%' or actor like '%token:admin-a') and organization_id = $1",
      [A],
    );
    // The matrix's allowed changes in A by the limited callers were made (and recorded), so the check above means something.
    expect(rows[0].n).toBeGreaterThan(10);
  });
});
