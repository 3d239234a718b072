import { Code, ConnectError, type ContextValues, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import type { TokenStore } from "../auth/token-store.js";
import type { AccountDirectory, AccountGrant, AccountRole, OrganizationLimit } from "../auth/tokens.js";
import { checkCall, checkScope, intersect, needsRecentSignIn, requireRecentSignIn, type TargetPolicy } from "../auth/policy.js";
import type { Logger } from "../logger.js";
import { principalKey, sourceKey, type CallPrincipal } from "./context.js";
import { toConnectError } from "./errors.js";
import { HealthService } from "./health.js";
import { looksLikeProviderKey } from "../credentials/validation.js";
import {
  ACTOR_HEADER,
  ACTOR_PATTERN,
  AUTHORIZATION_HEADER,
  bearerToken as bearerOf,
  SESSION_HEADER,
  SESSION_PATTERN,
  SOURCE_HEADER,
  SOURCE_PATTERN,
  type TokenScope,
} from "@provider-credentials/wire/auth";

/**
 * The authenticated caller. `actor` and `source` are worked out when first
 * read (by handlers that audit): ResolveKey never reads them, and the caller's
 * address may not even be looked up (see the grpc-js server's `addressKey`).
 */
class AuthenticatedPrincipal implements CallPrincipal {
  constructor(
    readonly tokenName: string,
    readonly scope: TokenScope,
    /** An admin token's claimed actor (validated), else null. */
    private readonly claimedActor: string | null,
    /** An admin token's forwarded source (validated), else null. */
    private readonly forwardedSource: string | null,
    private readonly values: ContextValues,
    readonly organizations: OrganizationLimit,
    readonly role: AccountRole | null,
    readonly targets: TargetPolicy,
    /** For a token acting for an account that named its session: how long ago the session last proved who it is. */
    readonly authenticationAge?: () => Promise<number | null>,
  ) {}

  get actor(): string {
    return this.claimedActor ?? `token:${this.tokenName}`;
  }

  get via(): string | null {
    return this.claimedActor === null ? null : `token:${this.tokenName}`;
  }

  get source(): string | null {
    return this.forwardedSource ?? this.values.get(sourceKey);
  }
}

/** A token as authentication finds it; `organizations` missing: every organisation. */
type Token = { name: string; scope: TokenScope; organizations?: OrganizationLimit };

/** The token in an authorization header; UNAUTHENTICATED when there is none. */
function bearerToken(authorization: string | null): string {
  const token = bearerOf(authorization);
  if (token === undefined) throw new ConnectError('missing or malformed authorization header; send "authorization: Bearer <token>"', Code.Unauthenticated);
  return token;
}

/** A known token (UNAUTHENTICATED otherwise) whose scope allows the method (PERMISSION_DENIED otherwise). */
function permitted(token: Token | undefined, method: DescMethod | string): Token {
  if (!token) throw new ConnectError("invalid or revoked token", Code.Unauthenticated);
  checkScope(token.name, token.scope, method);
  return token;
}

/**
 * The same rule for a call that does not pass through the Connect interceptors (reflection on the
 * grpc-js port): resolves when the authorization header's token may call the method, else rejects
 * with the ConnectError the interceptor would raise.
 */
export function tokenCheck(tokens: TokenStore): (authorization: string | null, method: string) => Promise<void> {
  return async (authorization, method) => {
    const secret = bearerToken(authorization);
    permitted(tokens.cached(secret) ?? (await tokens.authenticate(secret)), method);
  };
}

type Request = UnaryRequest | StreamRequest;

/**
 * Checks what the token may call, and records who calls in the request's context values. When an
 * admin token's actor header names a portal account, the account's role and organisations apply
 * too (waiting for the directory only then).
 */
function authorize(req: Request, found: Token | undefined, accounts: AccountDirectory | undefined, targets: TargetPolicy): Request | Promise<Request> {
  const token = permitted(found, req.method);
  let actor: string | null = null;
  let source: string | null = null;
  let session: string | null = null;
  if (token.scope === "admin") {
    const claimed = req.header.get(ACTOR_HEADER);
    if (claimed !== null) {
      if (!ACTOR_PATTERN.test(claimed)) throw new ConnectError(`${ACTOR_HEADER}: must be 1-128 printable ASCII characters`, Code.InvalidArgument);
      // Stored in audit rows and created_by/updated_by, and shown: never a key pasted into the wrong place.
      if (looksLikeProviderKey(claimed))
        throw new ConnectError(`${ACTOR_HEADER}: looks like a provider API key (the value is not repeated here)`, Code.InvalidArgument);
      actor = claimed;
    }
    const forwarded = req.header.get(SOURCE_HEADER);
    if (forwarded !== null && SOURCE_PATTERN.test(forwarded)) source = forwarded;
    const named = req.header.get(SESSION_HEADER);
    if (named !== null) {
      if (!SESSION_PATTERN.test(named))
        throw new ConnectError(`${SESSION_HEADER}: must be a portal session id (43 base64url characters)`, Code.InvalidArgument);
      session = named;
    }
  }
  if (actor !== null && accounts !== undefined) {
    const account = accounts.account(actor);
    if (account instanceof Promise) return account.then((found) => admit(req, token, actor, source, found, targets, session, accounts));
    return admit(req, token, actor, source, account, targets, session, accounts);
  }
  return admit(req, token, actor, source, undefined, targets, null, accounts);
}

/**
 * The caller's rights (the token's, narrowed by the account it acts for), checked against the method and recorded.
 * A sensitive method made for an account also needs its session's recent sign-in (waiting for the store only then).
 */
function admit(
  req: Request,
  token: Token,
  actor: string | null,
  source: string | null,
  account: AccountGrant | undefined,
  targets: TargetPolicy,
  session: string | null,
  accounts: AccountDirectory | undefined,
): Request | Promise<Request> {
  // An actor that is no account (an automation's label) keeps the token's own rights.
  if (account?.disabled) throw new ConnectError(`account "${account.email}" is disabled`, Code.Unauthenticated);
  const tokenOrganizations = token.organizations ?? null;
  const organizations = account ? intersect(tokenOrganizations, account.organizations) : tokenOrganizations;
  const role = account?.role ?? null;
  const name = account?.email ?? actor;
  checkCall({ tokenName: token.name, scope: token.scope, account: name, role, organizations, mustEnrol: account?.mustEnrol === true }, req.method);
  const lookUp = account && session !== null ? accounts?.sessionAuthenticationAge?.bind(accounts) : undefined;
  const authenticationAge = account && session !== null && lookUp ? () => lookUp(session, account.email) : undefined;
  const principal = new AuthenticatedPrincipal(
    token.name,
    token.scope,
    account ? account.email : actor,
    source,
    req.contextValues,
    organizations,
    role,
    targets,
    authenticationAge,
  );
  req.contextValues.set(principalKey, principal);
  if (account && needsRecentSignIn(req.method)) return requireRecentSignIn(principal, req.method.name).then(() => req);
  return req;
}

/**
 * Authentication and authorisation: every procedure except health needs a
 * bearer token; deny by default (auth/policy.ts decides). A token this replica
 * looked up recently is checked without waiting for anything (no promise of
 * its own on the hot path); an admin token acting for a portal account waits
 * for the account directory (which caches briefly).
 */
export function authInterceptor(tokens: TokenStore, accounts: AccountDirectory | undefined, targets: TargetPolicy): Interceptor {
  return (next) => (req) => {
    try {
      if (req.service.typeName === HealthService.typeName) return next(req);
      const secret = bearerToken(req.header.get(AUTHORIZATION_HEADER));
      const cached = tokens.cached(secret);
      if (cached) {
        const authorized = authorize(req, cached, accounts, targets);
        return authorized instanceof Promise ? authorized.then(next) : next(authorized);
      }
      return tokens
        .authenticate(secret)
        .then((token) => authorize(req, token, accounts, targets))
        .then(next);
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

/** Maps every error thrown below it to a gRPC status, in one place. */
export function errorInterceptor(logger: Logger): Interceptor {
  // No async function and no named closure per call: each costs more than the rest of this interceptor.
  const mapped = (error: unknown, req: UnaryRequest | StreamRequest) => toConnectError(error, logger, `${req.service.typeName}/${req.method.name}`);
  return (next) => (req) => {
    let response: ReturnType<typeof next>;
    try {
      response = next(req);
    } catch (error) {
      return Promise.reject(mapped(error, req));
    }
    return response.then(undefined, (error: unknown) => {
      throw mapped(error, req);
    });
  };
}
