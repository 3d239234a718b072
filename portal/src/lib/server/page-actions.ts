import { error, fail, isRedirect, redirect, type RequestEvent } from "@sveltejs/kit";
import { REAUTHENTICATE_PATH, toApiError, type ApiErrorCode } from "./errors.js";
import { log } from "./log.js";
import { serviceConnection } from "./service-client.js";
import { safeRedirectTarget } from "./session.js";
import { createContextInner } from "./trpc/context.js";
import { createCaller } from "./trpc/routers/_app.js";

/**
 * What the pages' loads and form actions share: they call the tRPC procedures
 * in this process (no HTTP hop) as the signed-in administrator, so that the
 * service records the person in created_by, updated_by and the audit log.
 */

/**
 * The tRPC caller acting for the request's signed-in administrator. A sensitive action refused for want of a
 * recent sign-in sends the browser to /reauthenticate (and back to this page afterwards): see askingAgain.
 */
export function callerFor(event: Pick<RequestEvent, "locals" | "url" | "getClientAddress">) {
  const admin = event.locals.admin;
  if (!admin) redirect(303, `/login?redirectTo=${encodeURIComponent(`${event.url.pathname}${event.url.search}`)}`);
  const caller = createCaller(createContextInner({ caller: { kind: "session", admin }, connection: serviceConnection(), source: event.getClientAddress() }));
  return askingAgain(caller, reauthenticateLocation(event.url));
}

/** The service's clients acting for the request's signed-in administrator (for the few calls no procedure makes), asking again like callerFor. */
export function serviceFor(event: Pick<RequestEvent, "locals" | "url" | "getClientAddress">) {
  const admin = event.locals.admin;
  if (!admin) redirect(303, `/login?redirectTo=${encodeURIComponent(`${event.url.pathname}${event.url.search}`)}`);
  return askingAgain(serviceConnection().asAdmin(admin.email, event.getClientAddress(), admin.sessionToken), reauthenticateLocation(event.url));
}

/**
 * Where a signed-in account confirms who it is again, coming back afterwards to the page the request came from
 * (its path and query, without a form action's `?/name`).
 */
export function reauthenticateLocation(url: URL): string {
  const query = new URLSearchParams(url.search);
  for (const key of [...query.keys()]) if (key.startsWith("/")) query.delete(key);
  const search = query.toString();
  const next = safeRedirectTarget(`${url.pathname}${search === "" ? "" : `?${search}`}`);
  return `${REAUTHENTICATE_PATH}?next=${encodeURIComponent(next)}`;
}

/**
 * `calls` (a tRPC caller, or service clients) whose failures for want of a recent sign-in become a redirect to
 * `location` (303; for a form posted by script, an action result that navigates there), with or without
 * JavaScript: every page's loads and actions get it from callerFor, none handles it itself. describeFailure
 * passes the redirect on.
 */
function askingAgain<T extends object>(calls: T, location: string): T {
  return new Proxy(calls, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      // Procedures and client methods are functions (tRPC's router paths too), reached through objects (a service's client).
      if (typeof value !== "function" && (typeof value !== "object" || value === null || value instanceof Promise)) return value;
      // A proxy must give back a read-only, non-configurable property as it is.
      const own = Reflect.getOwnPropertyDescriptor(target, property);
      if (own && !own.configurable && own.writable === false) return value;
      return askingAgain(value, location);
    },
    apply(target, thisArg, args) {
      const result: unknown = Reflect.apply(target as (...a: unknown[]) => unknown, thisArg, args);
      if (!(result instanceof Promise)) return result;
      return result.catch((thrown: unknown) => {
        if (toApiError(thrown).apiCode === "reauthentication_required") redirect(303, location);
        throw thrown;
      });
    },
  });
}

export type PageCaller = ReturnType<typeof callerFor>;

/** A failed call as a form shows it: the whole message, and the part for each field it names. */
export interface Failure {
  status: number;
  code: ApiErrorCode;
  message: string;
  /** Field name → the problem, for the fields of the form that the error names. */
  errors: Record<string, string>;
}

/** How the pages name the fields the service's and the API's messages name by their wire names. */
const FIELD_WORDS: Record<string, string> = {
  api_key: "API key",
  api_base: "API base URL",
  credential_name: "credential name",
  credential_id: "credential",
  credential_ids: "credentials",
  organization_id: "organization ID",
  organization_ids: "organizations",
  confirm_organization_id: "organization ID",
  team_id: "team ID",
  expected_version: "version",
  overlap_seconds: "overlap",
  previous_valid_until: "previous secret's end",
  expires_at: "expiry",
  expires_in_days: "expiry",
  page_token: "page",
  cursor: "page",
};

/**
 * A message for people: the wire names of fields (`api_key`, `credential_name`) in words, and a leading
 * `field: ` as its name with a capital ("API key: …").
 */
export function inWords(message: string): string {
  const named = /^([a-z][a-z0-9]*(?:[._][a-z0-9]+)+|[a-z]+): /.exec(message);
  let text = message;
  if (named) {
    const words = FIELD_WORDS[named[1]] ?? named[1].replace(/[._]/g, " ");
    text = `${words.charAt(0).toUpperCase()}${words.slice(1)}: ${message.slice(named[0].length)}`;
  }
  return text.replace(/\b[a-z]+(?:_[a-z]+)+\b/g, (name) => FIELD_WORDS[name] ?? name);
}

/** What a form's banner says when the problems are at its fields (each shown once, there). */
export function checkFields(errors: Record<string, string>): string {
  const n = Object.keys(errors).length;
  return n === 1 ? "Check the highlighted field." : `Check the ${n} highlighted fields.`;
}

/**
 * Anything a procedure threw → a Failure. Bad input carries `issues` with the
 * field's path; other refusals (a duplicate name, a stale version) name their
 * field in the error's details (ApiError.field).
 */
export function describeFailure(thrown: unknown, fields: readonly string[] = []): Failure {
  // A sensitive action that needs a recent sign-in (askingAgain): the redirect to /reauthenticate goes on.
  if (isRedirect(thrown)) throw thrown;
  const error = toApiError(thrown);
  if (error.status >= 500) log("error", "page action failed", { code: error.apiCode, err: error.cause ?? thrown });
  const errors: Record<string, string> = {};
  for (const issue of error.issues ?? []) {
    if (fields.includes(issue.path) && errors[issue.path] === undefined) errors[issue.path] = inWords(issue.message);
  }
  if (Object.keys(errors).length === 0 && error.field && fields.includes(error.field.path)) errors[error.field.path] = inWords(error.field.message);
  return { status: error.status, code: error.apiCode, message: inWords(error.message), errors };
}

// ---------------------------------------------------------------- feedback after a redirect

/**
 * Feedback that survives the redirect after a form post (post/redirect/get,
 * with or without JavaScript): a short-lived cookie, read once by the next
 * page. It carries a sentence for people, never key material.
 */
const FLASH_COOKIE = "pc_flash";
const FLASH_MAX_LENGTH = 1000;

export interface Flash {
  kind: "success" | "error";
  message: string;
}

type CookieEvent = Pick<RequestEvent, "cookies" | "url">;

function flashCookieOptions(url: URL) {
  return { path: "/", httpOnly: true, sameSite: "lax" as const, secure: url.protocol === "https:" };
}

export function setFlash(event: CookieEvent, flash: Flash): void {
  const value = JSON.stringify({ kind: flash.kind, message: flash.message.slice(0, FLASH_MAX_LENGTH) });
  event.cookies.set(FLASH_COOKIE, value, { ...flashCookieOptions(event.url), maxAge: 60 });
}

/** The pending feedback, if any; it is shown once. */
export function takeFlash(event: CookieEvent): Flash | null {
  const raw = event.cookies.get(FLASH_COOKIE);
  if (raw === undefined) return null;
  event.cookies.delete(FLASH_COOKIE, flashCookieOptions(event.url));
  try {
    const value: unknown = JSON.parse(raw);
    if (typeof value !== "object" || value === null) return null;
    const { kind, message } = value as Record<string, unknown>;
    if ((kind !== "success" && kind !== "error") || typeof message !== "string") return null;
    return { kind, message: message.slice(0, FLASH_MAX_LENGTH) };
  } catch {
    return null;
  }
}

/** Sets the feedback and goes back to where the form was (a path on this site only). */
export function redirectWithFlash(event: CookieEvent, to: string, flash: Flash): never {
  setFlash(event, flash);
  redirect(303, safeRedirectTarget(to));
}

// ---------------------------------------------------------------- form fields

/** A text field of a form ("" when absent or a file). */
export function field(form: FormData, name: string): string {
  const value = form.get(name);
  return typeof value === "string" ? value : "";
}

/** Whether a checkbox was ticked (a browser sends it only then). */
export function checkbox(form: FormData, name: string): boolean {
  return form.has(name);
}

/**
 * A weight field (0-1000, SELECTION_STRATEGY_WEIGHTED) as typed: empty means
 * "not given" (the service's default on create, unchanged on update).
 */
export function weightField(text: string): { ok: true; value: number | undefined } | { ok: false; problem: string } {
  if (text === "") return { ok: true, value: undefined };
  const value = Number(text);
  if (!/^\d{1,4}$/.test(text) || value > 1000) return { ok: false, problem: "must be a whole number from 0 to 1000" };
  return { ok: true, value };
}

/** Where a form came from (its hidden `returnTo`), or `fallback`. */
export function returnTo(form: FormData, fallback: string): string {
  const value = field(form, "returnTo");
  return value === "" ? fallback : safeRedirectTarget(value);
}

/** Where a page was opened from (its `returnTo` query parameter, a path on this site only), or `fallback`. */
export function returnToParam(url: URL, fallback: string): string {
  const value = url.searchParams.get("returnTo");
  return value ? safeRedirectTarget(value) : fallback;
}

/** A refused form: its status, and what the form shows again (the values, the banner's message, each named field's problem). */
export function refuseForm<V>(thrown: unknown, fields: readonly string[], values: V) {
  const failure = describeFailure(thrown, fields);
  // A problem at a field is shown there, once: the banner only points at it.
  const atFields = Object.keys(failure.errors).length > 0;
  return fail(failure.status, { values, message: atFields ? checkFields(failure.errors) : failure.message, errors: failure.errors });
}

/** Makes a change; null when it was made, else the service's reason (for the feedback after the redirect). */
export async function refusalOf(change: () => Promise<unknown>): Promise<string | null> {
  try {
    await change();
    return null;
  } catch (thrown) {
    return describeFailure(thrown).message;
  }
}

// ---------------------------------------------------------------- paging from the URL

/** A cursor from the URL, if it looks like one (the service checks it properly). */
export function cursorParam(url: URL): string | undefined {
  const value = url.searchParams.get("cursor");
  return value && /^[A-Za-z0-9_-]{1,2048}$/.test(value) ? value : undefined;
}

/** The 1-based page number shown next to cursor paging (display only). */
export function pageNumberParam(url: URL): number {
  const n = Number(url.searchParams.get("page"));
  return Number.isInteger(n) && n >= 1 && n <= 1_000_000 ? n : 1;
}

/** A load that cannot get its data: the error page, with the service's message (503 for an outage). */
export function loadFailed(thrown: unknown): never {
  const failure = describeFailure(thrown);
  error(failure.status >= 500 ? 503 : failure.status, failure.status >= 500 ? "The credentials service is unavailable; try again shortly." : failure.message);
}

/** The data a load waits for; when it cannot be had, the error page (loadFailed). */
export async function loading<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (thrown) {
    loadFailed(thrown);
  }
}

/**
 * The credential a page about one credential shows (nothing of its key but
 * the hint) and where its Cancel goes back to: the `returnTo` parameter, else
 * the list of the credential's organisation.
 */
export async function loadCredentialPage(event: Pick<RequestEvent, "locals" | "url" | "getClientAddress">, credentialId: string) {
  const credential = await loading(() => callerFor(event).credentials.get({ credential_id: credentialId }));
  return {
    credential: {
      credential_id: credential.credential_id,
      organization_id: credential.organization_id,
      provider: credential.provider,
      credential_name: credential.credential_name,
      api_base: credential.api_base,
      is_active: credential.is_active,
      key_hint: credential.key_hint,
      version: credential.version,
      weight: credential.weight,
      updated_at: credential.updated_at,
      updated_by: credential.updated_by,
    },
    returnTo: returnToParam(event.url, `/?organization=${encodeURIComponent(credential.organization_id)}`),
  };
}
