import { Code, ConnectError } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import { LRUCache } from "lru-cache";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { CredentialService, OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";
import type { TokenScope } from "../db/entities.js";
import { ServiceError } from "../errors.js";
import { teamLinkKey, type ResolutionCache } from "../credentials/resolution-cache.js";
import type { AccountRole, OrganizationLimit, Principal } from "./tokens.js";

/**
 * The one access rule of the service: who (token scope, account role, organisations) may make
 * which call on which organisation's objects. The auth interceptor applies `checkCall` to every
 * call; handlers apply the target checks below once they know the target. docs/security.md
 * documents the same table.
 */

/** What a call does, as the rule sees it. */
export type Access =
  /** ResolveKey: hands out a key. */
  | "resolve"
  /** ReportKeyFailure, ReportKeySuccess: the gateway's health reports. */
  | "report"
  /** Reads of organisations, teams, credentials (never keys), strategies, tokens, accounts, the audit log. */
  | "read"
  /** Changes to credentials, teams and selection strategies; provider checks. */
  | "edit"
  /** Creating and deleting organisations. */
  | "organizations"
  /** Creating, rotating and revoking API tokens. */
  | "tokens"
  /** Creating, changing and removing portal accounts. */
  | "accounts"
  /** The portal's own calls (sign-in, sessions, password changes). */
  | "portal";

const C = CredentialService.method;
const O = OrganizationService.method;
const A = AdminService.method;

/** Every RPC of the product's services and what it does. A method not here is refused (deny by default). */
export const METHOD_ACCESS: ReadonlyMap<DescMethod, Access> = new Map<DescMethod, Access>([
  [C.resolveKey, "resolve"],
  [C.reportKeyFailure, "report"],
  [C.reportKeySuccess, "report"],
  [C.getCredential, "read"],
  [C.listCredentials, "read"],
  [C.listSelectionStrategies, "read"],
  [C.createCredential, "edit"],
  [C.updateCredential, "edit"],
  [C.activateCredential, "edit"],
  [C.deactivateCredential, "edit"],
  [C.deleteCredential, "edit"],
  [C.verifyCredential, "edit"],
  [C.setSelectionStrategy, "edit"],
  [C.rollCredential, "edit"],
  [C.explainResolution, "read"],
  [C.searchCredentials, "read"],
  [C.listUncoveredOrganizations, "read"],
  [C.batchCredentialAction, "edit"],
  [C.watchResolutions, "resolve"],
  [O.getOrganization, "read"],
  [O.listOrganizations, "read"],
  [O.listTeams, "read"],
  [O.createTeam, "edit"],
  [O.deleteTeam, "edit"],
  [O.createOrganization, "organizations"],
  [O.deleteOrganization, "organizations"],
  [A.signIn, "portal"],
  [A.getSession, "portal"],
  [A.signOut, "portal"],
  [A.changePassword, "portal"],
  [A.completeSignIn, "portal"],
  [A.beginTwoFactorEnrolment, "portal"],
  [A.confirmTwoFactorEnrolment, "portal"],
  [A.disableTwoFactor, "portal"],
  [A.getSecurityPolicy, "read"],
  [A.setSecurityPolicy, "accounts"],
  [A.listAdmins, "read"],
  [A.listApiTokens, "read"],
  [A.listAuditEvents, "read"],
  [A.createApiToken, "tokens"],
  [A.rotateApiToken, "tokens"],
  [A.revokeApiToken, "tokens"],
  [A.createAdmin, "accounts"],
  [A.updateAdmin, "accounts"],
  [A.deleteAdmin, "accounts"],
  [A.revokeAdminSessions, "accounts"],
  [A.resetTwoFactor, "accounts"],
  [A.reauthenticate, "portal"],
]);

/** The same table by service and method name: a method descriptor may reach the interceptor as another object of the same RPC. */
const ACCESS_BY_NAME: ReadonlyMap<string, ReadonlyMap<string, Access>> = (() => {
  const byName = new Map<string, Map<string, Access>>();
  for (const [method, access] of METHOD_ACCESS) {
    const service = byName.get(method.parent.typeName) ?? new Map<string, Access>();
    service.set(method.name, access);
    byName.set(method.parent.typeName, service);
  }
  return byName;
})();

const PRODUCT_SERVICES: ReadonlySet<string> = new Set([CredentialService.typeName, OrganizationService.typeName, AdminService.typeName]);

/** Whether a method (or a path naming one) is one of the product's services'. A bare name is taken to be one when any of them has it. */
function isProductMethod(method: DescMethod | string): boolean {
  if (typeof method !== "string") return PRODUCT_SERVICES.has(method.parent.typeName);
  const path = method.startsWith("/") ? method.slice(1) : method;
  const slash = path.lastIndexOf("/");
  if (slash >= 0) return PRODUCT_SERVICES.has(path.slice(0, slash));
  return [CredentialService, OrganizationService, AdminService].some((service) => service.methods.some((m) => m.name === path));
}

/**
 * The table by a path or method name alone (`credentials.v1.CredentialService/ResolveKey`, or
 * `ResolveKey`), for checks made before the descriptor is known (authentication before the body is
 * read). A name two services share with different access is left out (refused to all but admin).
 */
function accessOfName(name: string): Access | undefined {
  const path = name.startsWith("/") ? name.slice(1) : name;
  const slash = path.lastIndexOf("/");
  if (slash >= 0) return ACCESS_BY_NAME.get(path.slice(0, slash))?.get(path.slice(slash + 1));
  return ACCESS_BY_BARE_NAME.get(path);
}

const ACCESS_BY_BARE_NAME: ReadonlyMap<string, Access> = (() => {
  const byName = new Map<string, Access>();
  const ambiguous = new Set<string>();
  for (const [method, access] of METHOD_ACCESS) {
    const known = byName.get(method.name);
    if (known !== undefined && known !== access) ambiguous.add(method.name);
    byName.set(method.name, access);
  }
  for (const name of ambiguous) byName.delete(name);
  return byName;
})();

/** Descriptors seen so far, by identity: after the first call of an RPC, one Map look-up and no string built. */
const seen = new Map<DescMethod, Access | undefined>(METHOD_ACCESS);

/** What a method does; undefined: not an RPC of the product's services (refused). */
export function accessOf(method: DescMethod): Access | undefined {
  const known = seen.get(method);
  if (known !== undefined || seen.has(method)) return known;
  const access = ACCESS_BY_NAME.get(method.parent.typeName)?.get(method.name);
  if (seen.size < 1_000) seen.set(method, access);
  return access;
}

const ALL: readonly Access[] = ["resolve", "report", "read", "edit", "organizations", "tokens", "accounts", "portal"];

/** What a token acting alone may do, by scope. */
export const SCOPE_ACCESS: Readonly<Record<TokenScope, ReadonlySet<Access>>> = {
  resolve: new Set<Access>(["resolve", "report"]),
  metrics: new Set<Access>(),
  admin: new Set<Access>(ALL),
};

/** What an admin token acting for a portal account may do, by the account's role. */
export const ROLE_ACCESS: Readonly<Record<AccountRole, ReadonlySet<Access>>> = {
  owner: new Set<Access>(ALL.filter((a) => a !== "portal")),
  editor: new Set<Access>(["read", "edit", "report"]),
  viewer: new Set<Access>(["read"]),
};

/** Access that only a caller limited to no organisation has. */
const UNLIMITED_ONLY: ReadonlySet<Access> = new Set<Access>(["portal", "accounts"]);

/** The caller as checkCall needs it. */
export interface Caller {
  tokenName: string;
  scope: TokenScope;
  /** The portal account the token acts for, when it acts for one. */
  account: string | null;
  role: AccountRole | null;
  organizations: OrganizationLimit;
  /** The account must enrol a second factor first (the security policy requires one and it has none). */
  mustEnrol?: boolean;
}

const methodName = (method: DescMethod | string) => (typeof method === "string" ? method : method.name);

/**
 * Server reflection (v1; v1alpha too on the gRPC port): it answers the public schema (the proto
 * files) and nothing of any organisation, so any valid token may call it, and `grpcurl` or
 * `buf curl` work with the resolve token a gateway already has.
 */
const REFLECTION_SERVICES: ReadonlySet<string> = new Set(["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
const REFLECTION_METHOD = "ServerReflectionInfo";

function isReflection(method: DescMethod | string): boolean {
  if (typeof method !== "string") return REFLECTION_SERVICES.has(method.parent.typeName);
  const path = method.startsWith("/") ? method.slice(1) : method;
  const slash = path.lastIndexOf("/");
  if (slash < 0) return path === REFLECTION_METHOD;
  return REFLECTION_SERVICES.has(path.slice(0, slash)) && path.slice(slash + 1) === REFLECTION_METHOD;
}

/**
 * Whether the token's scope lets it call the method at all (PERMISSION_DENIED otherwise). Checked
 * before anything is looked up for the caller. A method given by name that is none of the product's
 * RPCs needs an admin token, except reflection, which any token may call.
 */
export function checkScope(tokenName: string, scope: TokenScope, method: DescMethod | string): void {
  const access = typeof method === "string" ? accessOfName(method) : accessOf(method);
  // Not in the table: another service's (reflection: any token; others: admin tokens), or a product RPC nobody may call.
  const allowed = access === undefined ? !isProductMethod(method) && (scope === "admin" || isReflection(method)) : SCOPE_ACCESS[scope].has(access);
  if (!allowed) {
    throw new ConnectError(`token "${tokenName}" has scope "${scope}", which may not call ${methodName(method)}`, Code.PermissionDenied);
  }
}

/** Whether the caller (scope already checked) may call the method: its account's role, and what needs an unlimited caller. */
export function checkCall(caller: Caller, method: DescMethod): void {
  if (caller.mustEnrol) {
    // Owners require a second factor: the account may only enrol (and sign out), through the portal's own calls.
    throw new ServiceError(
      "failed_precondition",
      `account "${caller.account}" must set up two-factor sign-in first (owners require it for every account)`,
      undefined,
      undefined,
      "TWO_FACTOR_ENROLMENT_REQUIRED",
    );
  }
  const access = accessOf(method);
  if (access === undefined) {
    // Reflection (the schema, nothing of any organisation): any token, checked by checkScope.
    if (!isProductMethod(method)) return;
    throw new ConnectError(`${method.name} is not open to any caller`, Code.PermissionDenied);
  }
  if (caller.role !== null && !ROLE_ACCESS[caller.role].has(access)) {
    throw new ConnectError(`account "${caller.account}" has role "${caller.role}", which may not call ${method.name}`, Code.PermissionDenied);
  }
  if (access === "portal" && (caller.role !== null || caller.organizations !== null)) {
    throw new ConnectError(
      `${method.name} is for the admin portal: it needs an admin token limited to no organisation and acting for no account`,
      Code.PermissionDenied,
    );
  }
  if (UNLIMITED_ONLY.has(access) && caller.organizations !== null) {
    throw new ConnectError(`${method.name} needs a caller limited to no organisation`, Code.PermissionDenied);
  }
}

// ---------------------------------------------------------------- recent sign-in for sensitive actions

/** How long a portal session's sign-in (or AdminService.Reauthenticate) lets its account make sensitive actions. */
export const REAUTHENTICATION_WINDOW_MS = 10 * 60 * 1000;
/** The reason (google.rpc.ErrorInfo) of a sensitive action refused for want of a recent sign-in. */
export const REAUTHENTICATION_REASON = "REAUTHENTICATION_REQUIRED";
/** The header naming the portal session, as the messages name it (the wire package's SESSION_HEADER). */
const SESSION_HEADER_NAME = "x-provider-credentials-session";

/**
 * The RPCs that are sensitive whatever they carry: made for a portal account, they need a sign-in within
 * REAUTHENTICATION_WINDOW_MS (the auth interceptor checks). A change of a key's api_base is sensitive too:
 * the handlers check it with requireRecentSignInForApiBase, as only they know the value before.
 */
export const RECENT_SIGN_IN_METHODS: readonly DescMethod[] = [
  A.createApiToken,
  A.rotateApiToken,
  A.createAdmin,
  A.updateAdmin,
  A.deleteAdmin,
  A.revokeAdminSessions,
  A.resetTwoFactor,
  A.setSecurityPolicy,
];
const RECENT_SIGN_IN_NAMES: ReadonlySet<string> = new Set(RECENT_SIGN_IN_METHODS.map((m) => `${m.parent.typeName}/${m.name}`));

/** Whether a method is one of RECENT_SIGN_IN_METHODS (by name: the descriptor may be another object of the same RPC). */
export function needsRecentSignIn(method: DescMethod): boolean {
  return RECENT_SIGN_IN_NAMES.has(`${method.parent.typeName}/${method.name}`);
}

/** A sensitive action refused for want of a recent sign-in: FAILED_PRECONDITION, reason REAUTHENTICATION_REQUIRED. */
function reauthenticationRequired(message: string): ServiceError {
  return new ServiceError("failed_precondition", message, undefined, undefined, REAUTHENTICATION_REASON);
}

/**
 * Refuses a sensitive action (`what`, e.g. "CreateApiToken") made for a portal account whose session did not
 * prove who it is (sign-in, or Reauthenticate) within REAUTHENTICATION_WINDOW_MS, or that names no live session
 * of the account. A token acting alone (REST or gRPC with its own token, the CLI's) has no sign-in: not subject.
 */
export async function requireRecentSignIn(principal: Pick<Principal, "role" | "actor" | "authenticationAge">, what: string): Promise<void> {
  if (principal.role === null) return;
  const minutes = REAUTHENTICATION_WINDOW_MS / 60_000;
  if (principal.authenticationAge === undefined) {
    throw reauthenticationRequired(
      `${what} needs a sign-in of account "${principal.actor}" within the last ${minutes} minutes, and the call names no session of it (${SESSION_HEADER_NAME})`,
    );
  }
  const age = await principal.authenticationAge();
  if (age === null) {
    throw reauthenticationRequired(`${what} needs a recent sign-in, and the session named is no live session of account "${principal.actor}": sign in again`);
  }
  if (age > REAUTHENTICATION_WINDOW_MS) {
    throw reauthenticationRequired(
      `${what} needs a sign-in within the last ${minutes} minutes: confirm your password (or a code of your authenticator app) again, then repeat it`,
    );
  }
}

/**
 * For the handlers that may change a key's api_base (CreateCredential, UpdateCredential, RollCredential): refuses,
 * as requireRecentSignIn, when `after` is given and differs from `before` (undefined or null for a new key: any
 * api_base given is then a change; clearing one is a change too). Nothing to wait for when the api_base does not change or the caller acts for no account.
 */
export function requireRecentSignInForApiBase(
  principal: Pick<Principal, "role" | "actor" | "authenticationAge">,
  before: string | null | undefined,
  after: string | null | undefined,
): Promise<void> | undefined {
  // "" and null both mean the provider's default address.
  if (principal.role === null || after === undefined || (after || null) === (before || null)) return undefined;
  return requireRecentSignIn(principal, "changing a key's api_base");
}

/** The organisations a token acting for an account may act on: both lists' common part (null: all). */
export function intersect(a: OrganizationLimit, b: OrganizationLimit): OrganizationLimit {
  if (a === null) return b;
  if (b === null) return a;
  const both = new Set<string>();
  for (const id of a) if (b.has(id)) both.add(id);
  return both;
}

/** The reason every target refusal carries (google.rpc.ErrorInfo). */
export const OUTSIDE_REASON = "OUTSIDE_CALLER_ORGANIZATIONS";

/**
 * The refusal of a target outside the caller's organisations: the same status and message whether
 * or not it exists, so that a limited caller learns nothing about other organisations.
 */
export function outside(field: string, kind: "organization" | "team" | "credential" | "token" | "account", id: string): ServiceError {
  const what =
    kind === "organization"
      ? "an organization this caller may access"
      : kind === "token"
        ? "a token this caller may manage"
        : kind === "account"
          ? "an account this caller may manage"
          : `a ${kind} of an organization this caller may access`;
  return new ServiceError("permission_denied", `${field}: "${id}" is not ${what}`, field, undefined, OUTSIDE_REASON);
}

/** Refuses an organisation outside the caller's (no look-up: a set membership test). */
export function requireOrganization(principal: Principal, id: string, field = "organization_id"): void {
  const limit = principal.organizations;
  if (limit !== null && !limit.has(id)) throw outside(field, "organization", id);
}

/** Refuses creating an organisation for a caller limited to some. */
export function requireUnlimited(principal: Principal, field: string, what: string): void {
  if (principal.organizations !== null) {
    throw new ServiceError("permission_denied", `${field}: a caller limited to organizations may not ${what}`, field, undefined, "CALLER_LIMITED");
  }
}

/** Whether a caller limited to `limit` may see an object limited to `organizationIds` (empty or null: every organisation). */
export function withinLimit(limit: OrganizationLimit, organizationIds: readonly string[] | null | undefined): boolean {
  if (limit === null) return true;
  if (!organizationIds || organizationIds.length === 0) return false;
  return organizationIds.every((id) => limit.has(id));
}

/**
 * A new token's organisations: a limited caller must limit it to some of its own (the first one
 * outside is refused as `outside`, whether or not it exists).
 */
export function requireTokenOrganizations(principal: Principal, organizationIds: readonly string[]): void {
  const limit = principal.organizations;
  if (limit === null) return;
  if (organizationIds.length === 0) {
    throw new ServiceError(
      "permission_denied",
      "organization_ids: a caller limited to organizations must limit the token to some of them",
      "organization_ids",
      undefined,
      "CALLER_LIMITED",
    );
  }
  organizationIds.forEach((id, i) => {
    if (!limit.has(id)) throw outside(`organization_ids[${i}]`, "organization", id);
  });
}

/** How the policy finds the organisation of a credential or a team (the stores' read paths). */
export interface TargetLookups {
  /** The organisation of each credential that exists, by id (ids are valid UUIDs). */
  credentialOrganizations(ids: readonly string[]): Promise<ReadonlyMap<string, string>>;
  /** The organisation of the team, or undefined when there is no such team. */
  teamOrganization(id: string): Promise<string | undefined>;
}

/** Credential organisations kept per replica (a credential never changes organisation, and its id is never reused). */
export const CREDENTIAL_ORGANIZATION_CACHE_MAX = 100_000;

/**
 * The organisation of a credential or team a call names, looked up once per call and only for a
 * limited caller (an unlimited one costs nothing). A credential's organisation is cached here; a
 * team's comes from the resolution cache's team links (invalidated when the team is deleted).
 */
export class TargetPolicy {
  private readonly credentialOrganizations = new LRUCache<string, string>({ max: CREDENTIAL_ORGANIZATION_CACHE_MAX });

  constructor(
    private readonly lookups: TargetLookups,
    private readonly cache?: ResolutionCache,
  ) {}

  /** Refuses a credential outside the caller's organisations (or that does not exist, the same way). */
  credential(principal: Principal, id: string, field = "credential_id"): void | Promise<void> {
    return this.credentials(principal, [id], () => field);
  }

  /** Refuses when any of the credentials is outside the caller's organisations: the first such one is named. */
  credentials(principal: Principal, ids: readonly string[], field: (index: number) => string): void | Promise<void> {
    const limit = principal.organizations;
    if (limit === null) return;
    const missing = ids.filter((id) => !this.credentialOrganizations.has(id));
    const check = () => {
      ids.forEach((id, i) => {
        const organization = this.credentialOrganizations.get(id);
        if (organization === undefined || !limit.has(organization)) throw outside(field(i), "credential", id);
      });
    };
    if (missing.length === 0) return check();
    return this.lookups.credentialOrganizations([...new Set(missing)]).then((found) => {
      for (const [id, organization] of found) this.credentialOrganizations.set(id, organization);
      check();
    });
  }

  /** Refuses a team outside the caller's organisations (or that does not exist, the same way). */
  team(principal: Principal, id: string, field = "team_id"): void | Promise<void> {
    const limit = principal.organizations;
    if (limit === null) return;
    const linked = this.cache?.organizationOf(teamLinkKey(id));
    if (linked !== undefined) {
      if (!limit.has(linked)) throw outside(field, "team", id);
      return;
    }
    const generation = this.cache?.generation ?? 0;
    return this.lookups.teamOrganization(id).then((organization) => {
      if (organization === undefined || !limit.has(organization)) throw outside(field, "team", id);
      // Shared with ResolveKey by team: dropped when the team is deleted (and not stored if anything changed meanwhile).
      this.cache?.set(teamLinkKey(id), { organizationId: organization, strategy: "newest", candidates: [] }, generation);
    });
  }
}

const policies = new WeakMap<object, TargetPolicy>();

/** One TargetPolicy per replica (both ports share it, and so its cache), over the stores' look-ups. */
export function targetPolicyFor(
  credentials: { organizationsOf(ids: readonly string[]): Promise<ReadonlyMap<string, string>> },
  organizations: { teamOrganization(id: string): Promise<string | undefined> },
  cache?: ResolutionCache,
): TargetPolicy {
  let policy = policies.get(credentials);
  if (!policy) {
    policy = new TargetPolicy(
      { credentialOrganizations: (ids) => credentials.organizationsOf(ids), teamOrganization: (id) => organizations.teamOrganization(id) },
      cache,
    );
    policies.set(credentials, policy);
  }
  return policy;
}
