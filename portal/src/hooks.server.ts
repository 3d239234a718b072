import { error, redirect, type Handle, type HandleServerError, type RequestEvent } from "@sveltejs/kit";
import { AUTHORIZATION_HEADER, bearerToken } from "@provider-credentials/wire/auth";
import { ApiError, errorResponse, toApiError } from "$lib/server/errors";
import { declaredTooLarge, refuseTooLarge } from "$lib/server/http/body";
import { secure } from "$lib/server/http/security-headers";
import { log } from "$lib/server/log";
import { serviceConnection } from "$lib/server/service-client";
import { clearedCookieOptions, lookUpSession, SESSION_COOKIE, sessionCookieOptions } from "$lib/server/session";
import type { SignedInAdmin } from "$lib/server/trpc/context";

/** Pages anyone may open; every other page needs a signed-in administrator. */
const PUBLIC_PAGES = new Set(["/login", "/logout", "/healthz"]);
/** API paths without authentication: the API's own description. */
const PUBLIC_API = new Set(["/api/openapi.json", "/api/docs"]);
/** The pages an account that must enrol a second factor may still open. */
const ENROLMENT_PAGES = new Set(["/account", "/login", "/logout", "/healthz"]);
const MUTATIONS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

const isApi = (path: string) => path === "/api" || path.startsWith("/api/");

export const handle: Handle = async ({ event, resolve }) => {
  event.locals.admin = null;
  event.locals.caller = null;
  event.locals.denial = null;
  const next = async (e: RequestEvent) => resolve(e);
  const response = isApi(event.url.pathname) ? await handleApi(event, next) : await handlePage(event, next);
  // API responses and pages carry an administrator's data: never keep them in a shared or browser cache.
  return secure(response, { noStore: true });
};

/** The administrator of the request's session cookie, renewing the cookie; null (and the cookie cleared) if none. */
async function sessionAdmin(event: RequestEvent): Promise<SignedInAdmin | null> {
  const token = event.cookies.get(SESSION_COOKIE);
  if (!token) return null;
  const admin = await lookUpSession(serviceConnection(), token);
  if (admin) event.cookies.set(SESSION_COOKIE, token, sessionCookieOptions(event.url));
  else event.cookies.delete(SESSION_COOKIE, clearedCookieOptions(event.url));
  return admin;
}

/**
 * /api: authenticate before anything else. A bearer token is forwarded as it
 * is (the service checks it); a session cookie is resolved here, and a
 * mutation made with one must come from this origin (CSRF). REST requests are
 * refused here; tRPC requests go on without a caller, so that tRPC refuses
 * them in its own error shape (what its client can read).
 */
async function handleApi(event: RequestEvent, resolve: (event: RequestEvent) => Promise<Response>): Promise<Response> {
  const { request, url } = event;
  if (PUBLIC_API.has(url.pathname) && (request.method === "GET" || request.method === "HEAD")) return resolve(event);
  if (declaredTooLarge(request)) return errorResponse(await refuseTooLarge(request));
  const isTrpc = url.pathname.startsWith("/api/trpc/");
  const deny = (error: ApiError): Promise<Response> | Response => {
    if (!isTrpc) return errorResponse(error);
    event.locals.denial = error;
    return resolve(event);
  };

  const authorization = request.headers.get(AUTHORIZATION_HEADER);
  if (authorization !== null) {
    const token = bearerToken(authorization.trim());
    if (token === undefined) return deny(new ApiError("unauthorized", 'Authorization: malformed; send "Authorization: Bearer <token>"'));
    event.locals.caller = { kind: "token", token };
    return resolve(event);
  }

  if (event.cookies.get(SESSION_COOKIE)) {
    if (MUTATIONS.has(request.method) && request.headers.get("origin") !== url.origin) {
      return deny(new ApiError("forbidden", "cross-origin request refused"));
    }
    let admin: SignedInAdmin | null;
    try {
      admin = await sessionAdmin(event);
    } catch (thrown) {
      const failure = toApiError(thrown);
      if (failure.status >= 500) log("error", "session lookup failed", { code: failure.apiCode, err: thrown });
      return deny(failure);
    }
    if (admin?.twoFactorEnrolmentRequired) {
      return deny(new ApiError("forbidden", "set up two-factor sign-in at /account first: it is required for every account"));
    }
    if (admin) {
      event.locals.admin = admin;
      event.locals.caller = { kind: "session", admin };
      return resolve(event);
    }
  }
  return deny(new ApiError("unauthorized", 'authentication required: sign in, or send "Authorization: Bearer <admin token>"'));
}

/**
 * A change to a page (a form action, sign-in, sign-out) must come from this
 * origin: cross-site form posts are refused, with or without a session (a
 * cross-site sign-in would sign the victim in as the attacker). SvelteKit's own
 * check is off (svelte.config.js) because it ran before these hooks and so
 * also refused /api calls authenticated by a bearer token; /api has its own
 * origin check for cookie-authenticated changes (handleApi).
 */
function crossSitePageChange(event: RequestEvent): Response | null {
  const { request, url } = event;
  if (!MUTATIONS.has(request.method) || request.headers.get("origin") === url.origin) return null;
  const message = `Cross-site ${request.method} form submissions are forbidden`;
  return request.headers.get("accept") === "application/json" ? Response.json({ message }, { status: 403 }) : new Response(message, { status: 403 });
}

/** Pages: resolve the session; without one, anything but the public pages goes to /login. */
async function handlePage(event: RequestEvent, resolve: (event: RequestEvent) => Promise<Response>): Promise<Response> {
  const refused = crossSitePageChange(event);
  if (refused) return refused;
  const path = event.url.pathname;
  const isPublic = PUBLIC_PAGES.has(path);
  try {
    event.locals.admin = await sessionAdmin(event);
  } catch (thrown) {
    const failure = toApiError(thrown);
    log("error", "session lookup failed", { code: failure.apiCode, err: thrown });
    if (!isPublic) error(failure.status >= 500 ? 503 : failure.status, failure.message);
  }
  if (event.locals.admin) event.locals.caller = { kind: "session", admin: event.locals.admin };
  else if (!isPublic) {
    const location = `/login?redirectTo=${encodeURIComponent(`${path}${event.url.search}`)}`;
    // A form posted by the page's script (use:enhance) reads an action result, not an HTML page.
    if (event.request.method === "POST" && event.request.headers.get("x-sveltekit-action") === "true") {
      return Response.json({ type: "redirect", status: 303, location });
    }
    redirect(303, location);
  }
  const signedIn: SignedInAdmin | null = event.locals.admin;
  if (signedIn?.twoFactorEnrolmentRequired && !ENROLMENT_PAGES.has(path)) {
    // Owners require a second factor: nothing else until the account has one.
    if (event.request.method === "POST" && event.request.headers.get("x-sveltekit-action") === "true") {
      return Response.json({ type: "redirect", status: 303, location: "/account" });
    }
    redirect(303, "/account");
  }
  return resolve(event);
}

/** Unexpected errors on pages: logged here, shown as a bare message (never a stack or a cause). */
export const handleError: HandleServerError = ({ error: thrown, event, status }) => {
  if (status >= 500) log("error", "page failed", { path: event.url.pathname, status, err: thrown });
  return { message: status === 404 ? "Not found" : "Internal error" };
};
