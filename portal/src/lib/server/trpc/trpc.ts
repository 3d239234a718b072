import { initTRPC } from "@trpc/server";
import type { OpenApiMeta } from "trpc-to-openapi";
import { ApiError, toApiError } from "../errors.js";
import { log } from "../log.js";
import { afterAuthentication } from "../token-check.js";
import type { Context } from "./context.js";

/** Procedure metadata: the REST mapping, and the status of a success (201 for creations). */
export type Meta = OpenApiMeta<{ successStatus?: 200 | 201 }>;

const t = initTRPC
  .context<Context>()
  .meta<Meta>()
  .create({
    // Never put stacks in responses, whatever NODE_ENV says.
    isDev: false,
    /** tRPC's error shape with our code, message and issues; never a cause or a stack. */
    errorFormatter({ shape, error }) {
      const api = toApiError(error);
      return {
        code: shape.code,
        message: api.message,
        data: { code: shape.data.code, apiCode: api.apiCode, httpStatus: api.status, path: shape.data.path ?? null, issues: api.issues ?? null },
      };
    },
  });

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;

/** Every failure below becomes an ApiError: service statuses, validation, bugs. */
const apiErrors = t.middleware(async ({ ctx, next }) => {
  const result = await next();
  if (result.ok) return result;
  const error = toApiError(result.error);
  if (ctx.caller?.kind === "session" && error.apiCode === "unauthorized") {
    // The account was disabled after this session was looked up: the person's to sort out, with an owner.
    if (/^account ".*" is disabled$/.test(error.message)) throw new ApiError("unauthorized", "your account is disabled; ask an owner");
    // Otherwise the service refused the portal's own token: a deployment problem, not the person's.
    log("error", "the credentials service refused SERVICE_ADMIN_TOKEN", { code: error.apiCode });
    throw new ApiError("service_unavailable", "the credentials service is unavailable; try again shortly");
  }
  // A refusal (403) is the service's rule for the signed-in account's role and organisations: passed on as it is.
  throw error;
});

/**
 * Deny by default: no caller, no call. Gives the procedure service clients that act for the caller.
 * Input is validated after this (the procedures' .input() comes later in the chain); a bearer
 * token's request refused by that validation is answered only once the token is known good.
 */
const authenticated = t.middleware(async ({ ctx, next }) => {
  const { caller } = ctx;
  if (!caller) {
    throw ctx.denial ?? new ApiError("unauthorized", 'authentication required: sign in, or send "Authorization: Bearer <admin token>"');
  }
  const service =
    caller.kind === "session"
      ? ctx.connection.asAdmin(caller.admin.email, ctx.source, caller.admin.sessionToken)
      : ctx.connection.withToken(caller.token, ctx.source);
  const result = await next({ ctx: { caller, service } });
  if (result.ok || caller.kind !== "token") return result;
  const error = toApiError(result.error);
  const answer = await afterAuthentication(ctx, error);
  if (answer !== error) throw answer;
  return result;
});

/**
 * The only procedure builder there is: every procedure is authenticated, so a
 * route that forgets authentication cannot be written.
 */
export const adminProcedure = t.procedure.use(apiErrors).use(authenticated);
