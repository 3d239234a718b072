import { fail, redirect } from "@sveltejs/kit";
import { ConnectError } from "@connectrpc/connect";
import type { Actions, PageServerLoad } from "./$types";
import { fromConnectError } from "$lib/server/errors";
import { log } from "$lib/server/log";
import { serviceConnection } from "$lib/server/service-client";
import {
  clearedCookieOptions,
  SECOND_FACTOR_COOKIE,
  secondFactorCookieOptions,
  SESSION_COOKIE,
  safeRedirectTarget,
  sessionCookieOptions,
} from "$lib/server/session";

export const load: PageServerLoad = ({ locals, url, cookies }) => {
  const redirectTo = safeRedirectTarget(url.searchParams.get("redirectTo"));
  if (locals.admin) redirect(303, redirectTo);
  // "Start again" from the code step forgets the second-factor token.
  if (url.searchParams.has("restart")) cookies.delete(SECOND_FACTOR_COOKIE, { ...clearedCookieOptions(url), path: "/login" });
  const codeStep = !url.searchParams.has("restart") && /^[A-Za-z0-9_-]{43}$/.test(cookies.get(SECOND_FACTOR_COOKIE) ?? "");
  return { redirectTo, codeStep };
};

function minutes(seconds: number): string {
  const n = Math.max(1, Math.ceil(seconds / 60));
  return `${n} minute${n === 1 ? "" : "s"}`;
}

type SignInEvent = Parameters<Actions[string]>[0];

/** The second step: the code (or a recovery code) for the second-factor token kept in its cookie. */
async function completeSignIn(event: SignInEvent, form: FormData) {
  const { request, cookies, url } = event;
  const code = String(form.get("code") ?? "").trim();
  const redirectTo = safeRedirectTarget(String(form.get("redirectTo") ?? url.searchParams.get("redirectTo") ?? "/"));
  const secondFactorToken = cookies.get(SECOND_FACTOR_COOKIE) ?? "";
  if (secondFactorToken === "")
    return fail(400, { step: "password" as const, email: "", error: "Your sign-in took too long; enter your email and password again." });
  if (code === "") return fail(400, { step: "code" as const, email: "", error: "Enter the code from your authenticator app." });
  let sessionToken: string;
  try {
    const response = await serviceConnection()
      .asPortal()
      .admin.completeSignIn({
        secondFactorToken,
        code: code.slice(0, 64),
        source: event.getClientAddress(),
        userAgent: request.headers.get("user-agent") ?? "",
      });
    sessionToken = response.sessionToken;
  } catch (thrown) {
    if (!(thrown instanceof ConnectError)) throw thrown;
    const failure = fromConnectError(thrown);
    switch (failure.apiCode) {
      case "unauthorized":
        if (!/invalid or expired code/i.test(thrown.rawMessage)) {
          log("error", "the credentials service refused SERVICE_ADMIN_TOKEN at sign-in", { code: failure.apiCode });
        }
        return fail(401, { step: "code" as const, email: "", error: "Invalid or expired code. If it keeps failing, start again." });
      case "too_many_requests": {
        const wait = failure.retryAfterSeconds ?? 15 * 60;
        event.setHeaders({ "retry-after": String(wait) });
        return fail(429, { step: "code" as const, email: "", error: `Too many failed sign-ins; try again in ${minutes(wait)}.` });
      }
      case "bad_request":
        return fail(400, { step: "code" as const, email: "", error: failure.message });
      default:
        log("error", "sign-in failed", { code: failure.apiCode, err: thrown });
        return fail(failure.status >= 500 ? 503 : failure.status, {
          step: "code" as const,
          email: "",
          error: "Sign-in is unavailable right now; try again shortly.",
        });
    }
  }
  cookies.delete(SECOND_FACTOR_COOKIE, { ...clearedCookieOptions(url), path: "/login" });
  cookies.set(SESSION_COOKIE, sessionToken, sessionCookieOptions(url));
  redirect(303, redirectTo);
}

export const actions: Actions = {
  default: async (event) => {
    const { request, cookies, url } = event;
    const form = await request.formData();
    if (form.has("code")) return completeSignIn(event, form);
    const email = String(form.get("email") ?? "").trim();
    // Give the typed email back to the form only when it looks like one: a key or password pasted
    // into the wrong field must not come back in the page.
    const shownEmail = /^[\x21-\x3f\x41-\x7e]{1,64}@[\x21-\x3f\x41-\x7e]{1,189}$/.test(email) && email.length <= 128 ? email : "";
    const password = String(form.get("password") ?? "");
    const redirectTo = safeRedirectTarget(String(form.get("redirectTo") ?? url.searchParams.get("redirectTo") ?? "/"));
    if (email === "" || password === "") {
      return fail(400, { email: shownEmail, error: email === "" ? "Enter your email address." : "Enter your password." });
    }

    let sessionToken: string;
    try {
      const response = await serviceConnection()
        .asPortal()
        .admin.signIn({ email, password, source: event.getClientAddress(), userAgent: request.headers.get("user-agent") ?? "" });
      if (response.secondFactorToken !== "") {
        // The password was right; the code comes next. Only the service's token is kept (never the password).
        cookies.set(SECOND_FACTOR_COOKIE, response.secondFactorToken, secondFactorCookieOptions(url));
        return { step: "code" as const, email: "", error: "" };
      }
      sessionToken = response.sessionToken;
    } catch (thrown) {
      if (!(thrown instanceof ConnectError)) throw thrown;
      const failure = fromConnectError(thrown);
      switch (failure.apiCode) {
        case "unauthorized":
          if (!/invalid email or password/i.test(thrown.rawMessage)) {
            log("error", "the credentials service refused SERVICE_ADMIN_TOKEN at sign-in", { code: failure.apiCode });
          }
          return fail(401, { email: shownEmail, error: "Invalid email or password." });
        case "too_many_requests": {
          const wait = failure.retryAfterSeconds ?? 15 * 60;
          event.setHeaders({ "retry-after": String(wait) });
          return fail(429, { email: shownEmail, error: `Too many failed sign-ins; try again in ${minutes(wait)}.` });
        }
        case "bad_request":
          return fail(400, { email: shownEmail, error: failure.message });
        default:
          log("error", "sign-in failed", { code: failure.apiCode, err: thrown });
          return fail(failure.status >= 500 ? 503 : failure.status, { email: shownEmail, error: "Sign-in is unavailable right now; try again shortly." });
      }
    }
    cookies.set(SESSION_COOKIE, sessionToken, sessionCookieOptions(url));
    redirect(303, redirectTo);
  },
};
