import { fail, redirect, type RequestEvent } from "@sveltejs/kit";
import { ConnectError } from "@connectrpc/connect";
import QRCode from "qrcode";
import type { Actions, PageServerLoad } from "./$types";
import { describeFailure, redirectWithFlash, field, loading } from "$lib/server/page-actions";
import { serviceConnection } from "$lib/server/service-client";
import { SESSION_COOKIE } from "$lib/server/session";

/** Everyone's own page: change the password of the signed-in account, and set up or turn off two-factor sign-in. */
export const load: PageServerLoad = async ({ locals }) => {
  const policy = await loading(() => serviceConnection().asPortal().admin.getSecurityPolicy({}));
  return {
    twoFactor: {
      enabled: locals.admin?.twoFactorEnabled === true,
      /** This account must enrol before anything else. */
      mustEnrol: locals.admin?.twoFactorEnrolmentRequired === true,
      /** Owners require it for everyone: it cannot be turned off. */
      required: policy.policy?.requireTwoFactor === true,
    },
  };
};

const OTPAUTH_PATTERN = /^otpauth:\/\/totp\/[\x21-\x7e]{1,500}$/;

/** What the enrolment step shows: the QR code (an SVG made here, as a data URL) and the secret for typing by hand. */
async function enrolment(otpauthUri: string) {
  const svg = await QRCode.toString(otpauthUri, { type: "svg", errorCorrectionLevel: "M", margin: 2 });
  const secret = new URL(otpauthUri).searchParams.get("secret") ?? "";
  return { otpauthUri, secret, qr: `data:image/svg+xml;base64,${Buffer.from(svg, "utf8").toString("base64")}` };
}

/** A two-factor refusal: never the typed code back. */
function refuseTwoFactor(status: number, message: string, extra: Record<string, unknown> = {}) {
  return fail(status, { twoFactorMessage: message, ...extra });
}

async function twoFactor(event: RequestEvent, token: string, intent: string, form: FormData) {
  const admin = serviceConnection().asPortal(event.getClientAddress()).admin;
  try {
    if (intent === "begin_two_factor") {
      const begun = await admin.beginTwoFactorEnrolment({ sessionToken: token });
      return { enrolment: await enrolment(begun.otpauthUri) };
    }
    if (intent === "confirm_two_factor") {
      const uri = field(form, "otpauth_uri");
      const code = field(form, "code").trim();
      const shown = OTPAUTH_PATTERN.test(uri) ? await enrolment(uri) : undefined;
      if (code === "") return refuseTwoFactor(400, "Enter the code your authenticator app shows.", { enrolment: shown });
      try {
        const { recoveryCodes } = await admin.confirmTwoFactorEnrolment({ sessionToken: token, code: code.slice(0, 64) });
        // Shown this once, in this response only (never in a redirect, a cookie or a URL).
        return { recoveryCodes };
      } catch (thrown) {
        if (thrown instanceof ConnectError) {
          const failure = describeFailure(thrown, ["code"]);
          if (failure.code === "bad_request") return refuseTwoFactor(400, "That code is not right: try the next one your app shows.", { enrolment: shown });
        }
        throw thrown;
      }
    }
    if (intent === "disable_two_factor") {
      const code = field(form, "code").trim();
      if (code === "") return refuseTwoFactor(400, "Enter a code from your authenticator app or a recovery code.");
      await admin.disableTwoFactor({ sessionToken: token, code: code.slice(0, 64) });
      redirectWithFlash(event, "/account", { kind: "success", message: "Two-factor sign-in is off." });
    }
    return refuseTwoFactor(400, "Unknown request.");
  } catch (thrown) {
    if (!(thrown instanceof ConnectError)) throw thrown;
    const failure = describeFailure(thrown, ["code"]);
    if (failure.status >= 500) return refuseTwoFactor(503, "The credentials service is unavailable; try again shortly.");
    if (failure.code === "too_many_requests") return refuseTwoFactor(429, "Too many failed sign-ins; try again later.");
    if (failure.code === "unauthorized") redirect(303, "/login?redirectTo=%2Faccount");
    if (failure.code === "bad_request") return refuseTwoFactor(400, "That code is not right.");
    return refuseTwoFactor(failure.status, failure.message);
  }
}

type PasswordField = "current_password" | "new_password" | "confirm_password";

/** A refusal: never the typed passwords back, only which field is at fault. */
function refuse(status: number, fieldName: PasswordField | null, message: string) {
  // A problem at a field is shown there, once: the banner only points at it.
  return fail(status, {
    message: fieldName ? "Check the highlighted field." : message,
    errors: (fieldName ? { [fieldName]: message } : {}) as Record<string, string>,
  });
}

export const actions: Actions = {
  default: async (event) => {
    const token = event.cookies.get(SESSION_COOKIE);
    if (!event.locals.admin || !token) redirect(303, "/login?redirectTo=%2Faccount");
    const form = await event.request.formData();
    const intent = field(form, "intent");
    if (intent !== "" && intent !== "password") return twoFactor(event, token, intent, form);
    const current = field(form, "current_password");
    const next = field(form, "new_password");
    if (current === "") return refuse(400, "current_password", "Enter your current password.");
    if (next === "") return refuse(400, "new_password", "Enter a new password.");
    if (next !== field(form, "confirm_password")) return refuse(400, "confirm_password", "The two new passwords differ.");
    try {
      // The session says whose password changes; the service checks the current one.
      await serviceConnection().asPortal(event.getClientAddress()).admin.changePassword({ sessionToken: token, currentPassword: current, newPassword: next });
    } catch (thrown) {
      if (!(thrown instanceof ConnectError)) throw thrown;
      const failure = describeFailure(thrown, ["current_password", "new_password"]);
      if (failure.code === "unauthorized") return refuse(400, "current_password", "The current password is wrong.");
      if (failure.status >= 500) return refuse(503, null, "The credentials service is unavailable; try again shortly.");
      const named = (Object.keys(failure.errors)[0] as PasswordField | undefined) ?? (failure.code === "bad_request" ? "new_password" : null);
      return refuse(failure.status, named, named && failure.errors[named] ? `${failure.errors[named]}` : failure.message);
    }
    redirectWithFlash(event, "/account", { kind: "success", message: "Your password was changed." });
  },
};
