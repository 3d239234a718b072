// How a caller authenticates to the credentials service, and how an admin-scope caller (the
// portal) names the person and the address it acts for: the header names, token scopes and the
// bearer grammar, written once for the service (which checks them) and the portal (which sends
// them, and accepts the same bearer grammar on its REST API).

/** Token scopes: `resolve` may call ResolveKey and report on keys only; `admin` may call every RPC; `metrics` may only scrape METRICS_PORT. */
export const TOKEN_SCOPES = ["resolve", "admin", "metrics"] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

export function isTokenScope(value: string): value is TokenScope {
  return (TOKEN_SCOPES as readonly string[]).includes(value);
}

/** The header carrying `Bearer <token>` (lower case, as HTTP/2 and gRPC metadata name headers). */
export const AUTHORIZATION_HEADER = "authorization";

/** Header an admin-scope caller (the portal) sets to name the administrator it acts for. */
export const ACTOR_HEADER = "x-provider-credentials-actor";
/** An actor: 1-128 printable ASCII characters, spaces included; another value is refused. */
export const ACTOR_PATTERN = /^[\x20-\x7e]{1,128}$/;

/**
 * Header an admin-scope caller (the portal) sets, beside ACTOR_HEADER, to the session id of the
 * account it acts for: sensitive actions need that session's last sign-in (or Reauthenticate) to be
 * recent, and the session must be live and the actor's.
 */
export const SESSION_HEADER = "x-provider-credentials-session";
/** A session id as the service makes them: 43 base64url characters (256 bits). */
export const SESSION_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/** Header an admin-scope caller (the portal) sets to pass on its own client's address for the audit log. */
export const SOURCE_HEADER = "x-provider-credentials-source";
/** A forwarded source: 1-128 printable ASCII characters without spaces; another value is ignored. */
export const SOURCE_PATTERN = /^[\x21-\x7e]{1,128}$/;

/** `Bearer <token>`: the scheme in any case, one or more spaces, 1-512 printable ASCII characters. */
const BEARER = /^Bearer +([\x21-\x7e]{1,512})$/i;

/** The token of an authorization header's value, or undefined when it is missing or not `Bearer <token>`. */
export function bearerToken(authorization: string | null | undefined): string | undefined {
  return BEARER.exec(authorization ?? "")?.[1];
}

/** The authorization header's value for a token. */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}
