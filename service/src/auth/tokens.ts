import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { TokenScope } from "../db/entities.js";

export { TOKEN_SCOPES } from "@provider-credentials/wire/auth";
const TOKEN_PREFIX = "pct_";

/** A new API token: a recognisable prefix and 256 random bits. Shown once, stored only as its hash. */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString("base64url");
}

/** What generateToken makes: `pct_` and 43 base64url characters. Anything else is refused before any database statement. */
const TOKEN_SHAPE = /^pct_[A-Za-z0-9_-]{43}$/;

export function isTokenShaped(token: string): boolean {
  return TOKEN_SHAPE.test(token);
}

/** How many characters of the secret after `pct_` a token's visible prefix shows. */
export const TOKEN_PREFIX_SECRET_CHARACTERS = 6;

/** The visible prefix stored for a token: `pct_` and the first six characters of its secret. */
export function tokenPrefix(token: string): string {
  return token.slice(0, TOKEN_PREFIX.length + TOKEN_PREFIX_SECRET_CHARACTERS);
}

const DURATION_UNITS_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * A duration such as `30m`, `12h` or `90d` in milliseconds; undefined when `text` is not one
 * (a whole number of at most 6 digits, greater than 0, then m, h or d).
 */
export function parseDuration(text: string): number | undefined {
  const match = /^([0-9]{1,6})([mhd])$/.exec(text.trim());
  if (!match) return undefined;
  const count = Number(match[1]);
  return count > 0 ? count * DURATION_UNITS_MS[match[2] as keyof typeof DURATION_UNITS_MS] : undefined;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, "hex");
  const y = Buffer.from(b, "hex");
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A portal account's role: owner (everything), editor (organisations' credentials, teams, strategies), viewer (read only). */
export type AccountRole = "owner" | "editor" | "viewer";

/** The organisations a caller may act on; null: every organisation. */
export type OrganizationLimit = ReadonlySet<string> | null;

/** A token as authentication finds it. */
export interface TokenGrant {
  name: string;
  scope: TokenScope;
  /** The token's organisations; null: every organisation. */
  organizations: OrganizationLimit;
}

/** A portal account as the policy needs it: looked up (and cached briefly) when an admin token's actor header names it. */
export interface AccountGrant {
  email: string;
  role: AccountRole;
  /** null: every organisation. */
  organizations: OrganizationLimit;
  disabled: boolean;
  /** The security policy requires a second factor and the account has none: refused everything until it enrols (through the portal's own calls). */
  mustEnrol?: boolean;
}

/** Looks up the portal account an actor header names; undefined when the actor is not an account. */
export interface AccountDirectory {
  account(email: string): AccountGrant | undefined | Promise<AccountGrant | undefined>;
  /** How long ago (ms) the session `token` of the account `email` last proved who it is; null when it is no live session of that account. */
  sessionAuthenticationAge?(token: string, email: string): Promise<number | null>;
}

/** Who is calling: set once per call by the auth interceptor. */
export interface Principal {
  /** The token's name, or "service-admin-token" for SERVICE_ADMIN_TOKEN. */
  tokenName: string;
  scope: TokenScope;
  /** What audit records and created_by/updated_by name: the token, or the administrator an admin token acts for. */
  actor: string;
  /** When `actor` is an administrator an admin token named (the actor header): that token, "token:<name>"; else null. Audit rows record both. */
  via: string | null;
  /** The caller's address. */
  source: string | null;
  /** Organisations the caller may act on (null: all): the token's, narrowed to the account's when the token acts for a portal account. */
  organizations: OrganizationLimit;
  /** The role of the portal account an admin token acts for; null when the token acts alone (its scope decides). */
  role: AccountRole | null;
  /**
   * For a token acting for a portal account that named its session (SESSION_HEADER): how long ago (ms) that
   * session last proved who the account is, or null when it is no live session of the account. Absent when no
   * session was named. Read only by the sensitive actions (policy.requireRecentSignIn).
   */
  authenticationAge?: () => Promise<number | null>;
}
