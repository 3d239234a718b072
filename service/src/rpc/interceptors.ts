import { Code, ConnectError, type ContextValues, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import type { TokenStore } from "../auth/token-store.js";
import type { Principal } from "../auth/tokens.js";
import type { Logger } from "../logger.js";
import { principalKey, sourceKey } from "./context.js";
import { toConnectError } from "./errors.js";
import { HealthService } from "./health.js";
import { looksLikeProviderKey } from "../credentials/validation.js";
import {
  ACTOR_HEADER,
  ACTOR_PATTERN,
  AUTHORIZATION_HEADER,
  bearerToken as bearerOf,
  SOURCE_HEADER,
  SOURCE_PATTERN,
  type TokenScope,
} from "@provider-credentials/wire/auth";
import { CredentialService } from "@provider-credentials/wire/gen/credentials_pb";

/** Calls a `resolve` token may make; everything else needs `admin` (a `metrics` token may call none). */
const RESOLVE_SCOPE_METHODS: ReadonlySet<DescMethod> = new Set([
  CredentialService.method.resolveKey,
  CredentialService.method.reportKeyFailure,
  CredentialService.method.reportKeySuccess,
]);

/**
 * The authenticated caller. `actor` and `source` are worked out when first
 * read (by handlers that audit): ResolveKey never reads them, and the caller's
 * address may not even be looked up (see the grpc-js server's `addressKey`).
 */
class CallPrincipal implements Principal {
  constructor(
    readonly tokenName: string,
    readonly scope: TokenScope,
    /** An admin token's claimed actor (validated), else null. */
    private readonly claimedActor: string | null,
    /** An admin token's forwarded source (validated), else null. */
    private readonly forwardedSource: string | null,
    private readonly values: ContextValues,
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

type Token = { name: string; scope: TokenScope };

/** The token in an authorization header; UNAUTHENTICATED when there is none. */
function bearerToken(authorization: string | null): string {
  const token = bearerOf(authorization);
  if (token === undefined) throw new ConnectError('missing or malformed authorization header; send "authorization: Bearer <token>"', Code.Unauthenticated);
  return token;
}

/** A known token (UNAUTHENTICATED otherwise) that may call the method (PERMISSION_DENIED otherwise). */
function permitted(token: Token | undefined, method: DescMethod | string): Token {
  if (!token) throw new ConnectError("invalid or revoked token", Code.Unauthenticated);
  if (token.scope !== "admin" && !(token.scope === "resolve" && typeof method !== "string" && RESOLVE_SCOPE_METHODS.has(method))) {
    const name = typeof method === "string" ? method : method.name;
    throw new ConnectError(`token "${token.name}" has scope "${token.scope}", which may not call ${name}`, Code.PermissionDenied);
  }
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

/** Checks what the token may call, and records who calls in the request's context values. */
function authorize(req: UnaryRequest | StreamRequest, found: Token | undefined): UnaryRequest | StreamRequest {
  const token = permitted(found, req.method);
  let actor: string | null = null;
  let source: string | null = null;
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
  }
  req.contextValues.set(principalKey, new CallPrincipal(token.name, token.scope, actor, source, req.contextValues));
  return req;
}

/**
 * Authentication and authorisation: every procedure except health needs a
 * bearer token; deny by default. A token this replica looked up recently is
 * checked without waiting for anything (no promise of its own on the hot path).
 */
export function authInterceptor(tokens: TokenStore): Interceptor {
  return (next) => (req) => {
    try {
      if (req.service.typeName === HealthService.typeName) return next(req);
      const secret = bearerToken(req.header.get(AUTHORIZATION_HEADER));
      const cached = tokens.cached(secret);
      if (cached) return next(authorize(req, cached));
      return tokens.authenticate(secret).then((token) => next(authorize(req, token)));
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
