import { Code, ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "./errors.js";
import type { ServiceConnection } from "./service-client.js";
import type { SignedInAdmin } from "./trpc/context.js";

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
    const { admin } = await connection.asPortal().admin.getSession({ sessionToken: token });
    if (!admin) return null;
    return { adminId: admin.adminId, email: admin.email };
  } catch (error) {
    if (error instanceof ConnectError && (error.code === Code.Unauthenticated || error.code === Code.NotFound)) return null;
    throw error instanceof ConnectError ? fromConnectError(error) : error;
  }
}

/**
 * Where to go after signing in: only a path on this site (`/x?y`), never
 * another origin (`//evil`, `/\evil`, `https://...`), never back to /login.
 */
export function safeRedirectTarget(value: string | null | undefined): string {
  if (!value || value.length > 2048) return "/";
  const hasControl = [...value].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
  if (!value.startsWith("/") || value.startsWith("//") || value.includes("\\") || hasControl) return "/";
  let url: URL;
  try {
    url = new URL(value, "http://portal.invalid");
  } catch {
    return "/";
  }
  if (url.origin !== "http://portal.invalid") return "/";
  if (url.pathname === "/login" || url.pathname === "/logout") return "/";
  return `${url.pathname}${url.search}${url.hash}`;
}
