import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { TokenStore } from "../auth/token-store.js";
import type { Principal } from "../auth/tokens.js";
import type { Logger } from "../logger.js";
import { principalKey, sourceKey } from "./context.js";
import { toConnectError } from "./errors.js";
import { HealthService } from "./health.js";
import { CredentialService } from "../gen/credentials_pb.js";

/** Header an admin-scope caller (the portal) sets to name the administrator it acts for. */
export const ACTOR_HEADER = "x-provider-credentials-actor";
/** Header an admin-scope caller (the portal) sets to pass on its own client's address for the audit log. */
export const SOURCE_HEADER = "x-provider-credentials-source";
const SOURCE_PATTERN = /^[\x21-\x7e]{1,128}$/;
const ACTOR_PATTERN = /^[\x20-\x7e]{1,128}$/;

/** Calls a `resolve` token may make; everything else needs `admin`. */
const RESOLVE_SCOPE_PROCEDURES = new Set(
  ["ResolveKey", "ReportKeyFailure", "ReportKeySuccess"].map((method) => `${CredentialService.typeName}/${method}`),
);

/**
 * Authentication and authorisation: every procedure except health needs a
 * bearer token; deny by default.
 */
export function authInterceptor(tokens: TokenStore): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName === HealthService.typeName) return next(req);
    const header = req.header.get("authorization") ?? "";
    const match = /^Bearer +([\x21-\x7e]{1,512})$/i.exec(header);
    if (!match) {
      throw new ConnectError('missing or malformed authorization header; send "authorization: Bearer <token>"', Code.Unauthenticated);
    }
    const token = await tokens.authenticate(match[1]);
    if (!token) throw new ConnectError("invalid or revoked token", Code.Unauthenticated);
    const procedure = `${req.service.typeName}/${req.method.name}`;
    if (token.scope !== "admin" && !RESOLVE_SCOPE_PROCEDURES.has(procedure)) {
      throw new ConnectError(`token "${token.name}" has scope "${token.scope}", which may not call ${req.method.name}`, Code.PermissionDenied);
    }
    let actor = `token:${token.name}`;
    const claimed = req.header.get(ACTOR_HEADER);
    if (claimed !== null && token.scope === "admin") {
      if (!ACTOR_PATTERN.test(claimed)) throw new ConnectError(`${ACTOR_HEADER}: must be 1-128 printable ASCII characters`, Code.InvalidArgument);
      actor = claimed;
    }
    let source = req.contextValues.get(sourceKey);
    const forwarded = req.header.get(SOURCE_HEADER);
    if (forwarded !== null && token.scope === "admin" && SOURCE_PATTERN.test(forwarded)) source = forwarded;
    const principal: Principal = { tokenName: token.name, scope: token.scope, actor, source };
    req.contextValues.set(principalKey, principal);
    return next(req);
  };
}

/** Maps every error thrown below it to a gRPC status, in one place. */
export function errorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (error) {
      throw toConnectError(error, logger, `${req.service.typeName}/${req.method.name}`);
    }
  };
}
