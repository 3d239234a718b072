import { Code, ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "./errors.js";
import type { ServiceConnection } from "./service-client.js";
import type { AccountRole, SignedInAdmin } from "./trpc/context.js";

/** The session cookie: an opaque id that only the service can resolve. */
export const SESSION_COOKIE = "pc_session";

/** 12 hours, the service's idle expiry; the cookie is renewed whenever the session is used. */
export const SESSION_MAX_AGE_SECONDS = 12 * 60 * 60;

export interface CookieOptions {
  path: string;
  httpOnly: boolean;
  sameSite: "lax";
  secure: boolean;
  maxAge?: number;
}

/** HttpOnly, SameSite=Lax, Secure when the portal is reached over https. */
export function sessionCookieOptions(url: URL): CookieOptions & { maxAge: number } {
  return { path: "/", httpOnly: true, sameSite: "lax", secure: url.protocol === "https:", maxAge: SESSION_MAX_AGE_SECONDS };
}

export function clearedCookieOptions(url: URL): CookieOptions {
  return { path: "/", httpOnly: true, sameSite: "lax", secure: url.protocol === "https:" };
}

/**
 * The role the service reports, for showing buttons only. An unknown or
 * missing role shows the least (a viewer's pages); the service decides anyway.
 */
export function accountRole(role: string): AccountRole {
  return role === "owner" || role === "editor" ? role : "viewer";
}

/**
 * Between the password and the code of a two-factor sign-in: the service's second_factor_token (never the
 * password), HttpOnly, for /login only, as long as the token lasts (5 minutes).
 */
export const SECOND_FACTOR_COOKIE = "pc_second_factor";

export function secondFactorCookieOptions(url: URL): CookieOptions & { maxAge: number } {
  return { path: "/login", httpOnly: true, sameSite: "lax", secure: url.protocol === "https:", maxAge: 5 * 60 };
}

/** Session ids are 256 random bits in base64url; anything else is not looked up. */
const SESSION_TOKEN_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;

/**
 * The administrator of a live session (AdminService.GetSession, which also
 * extends its idle expiry), or null when the session is unknown, expired or
 * revoked. A service outage throws an ApiError (503).
 */
export async function lookUpSession(connection: ServiceConnection, token: string): Promise<SignedInAdmin | null> {
  if (!SESSION_TOKEN_PATTERN.test(token)) return null;
  try {
    const { admin, twoFactorEnrolmentRequired } = await connection.asPortal().admin.getSession({ sessionToken: token });
    if (!admin) return null;
    return {
      adminId: admin.adminId,
      email: admin.email,
      role: accountRole(admin.role),
      organizationIds: [...admin.organizationIds],
      twoFactorEnabled: admin.twoFactorEnabled,
      twoFactorEnrolmentRequired,
      sessionToken: token,
    };
  } catch (error) {
    if (error instanceof ConnectError && (error.code === Code.Unauthenticated || error.code === Code.NotFound)) return null;
    throw error instanceof ConnectError ? fromConnectError(error) : error;
  }
}

/** Candidates are resolved against this origin; only "the same origin or not" matters, so any origin would do. */
const HERE = "http://portal.invalid";
const MAX_TARGET_LENGTH = 2048;
/** How many rounds of percent-decoding a target must survive (a proxy or a later hop may decode it again). */
const DECODE_ROUNDS = 3;

/** The URL a browser reaches from `candidate` on this site, or null when that is another origin or a path a browser would read as one (`//host`). */
function landsHere(candidate: string): URL | null {
  let url: URL;
  try {
    url = new URL(candidate, HERE);
  } catch {
    return null;
  }
  return url.origin === HERE && !url.pathname.startsWith("//") ? url : null;
}

/**
 * Where to go after signing in, and where a form's Cancel link and post-submit
 * redirect go back to: only a path on this site (`/x?y#z`), else `/`. Never
 * another origin, whether written directly (`//evil`, `/\evil`, `https:`,
 * `javascript:`), hidden by characters browsers drop (`/<TAB>/evil`), made by
 * dot segments (`/..//evil`, `/%2e%2e//evil` both resolve to `//evil`), or by
 * percent-encoding that a later decode turns into one (`/%2f%2fevil`,
 * `/%252e%252e//evil`); never back to /login or /logout.
 */
export function safeRedirectTarget(value: string | null | undefined): string {
  if (typeof value !== "string" || value === "" || value.length > MAX_TARGET_LENGTH) return "/";
  // A path, as typed: control characters (browsers drop tabs and newlines) and "\" (read as "/") are refused outright.
  const hasControl = [...value].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
  if (!value.startsWith("/") || value.includes("\\") || hasControl) return "/";
  const url = landsHere(value);
  if (!url) return "/";
  const target = `${url.pathname}${url.search}${url.hash}`;
  // What is sent must itself resolve to the same place (dot segments are already gone from it).
  if (landsHere(target)?.href !== url.href) return "/";
  let path = url.pathname;
  for (let round = 0; round < DECODE_ROUNDS; round++) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return "/";
    }
    if (decoded === path) break;
    const decodedUrl = landsHere(decoded);
    if (!decodedUrl) return "/";
    path = decodedUrl.pathname;
  }
  if ([url.pathname, path].some((p) => p === "/login" || p === "/logout")) return "/";
  return target;
}
