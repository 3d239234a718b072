import { ConnectError } from "@connectrpc/connect";
import { ApiError, fromConnectError, isConnectError, toApiError } from "./errors.js";
import type { Caller, Context } from "./trpc/context.js";

/**
 * Authentication before validation, for bearer tokens. The portal forwards a
 * bearer token to the service, which checks it on the call the request makes.
 * A request that the portal refuses itself (bad input, a wrong content type, an
 * unknown route, a body too large) makes no such call, so before the portal
 * answers one of its own refusals the token is checked: a token the service
 * does not accept gets its 401 (a `resolve` one its 403) and never learns how
 * its request would have been judged. A request that reached the service was
 * authenticated there first, and requests that succeed always reach it, so
 * honest calls cost nothing extra.
 */

/** One check per request (its caller object), however many layers ask. */
const checks = new WeakMap<Caller, Promise<ApiError | null>>();

/** null when the service accepts the token for admin calls, else the refusal (401, 403, or 503 when it cannot say). */
async function refusalOf(context: Pick<Context, "connection" | "source">, token: string): Promise<ApiError | null> {
  try {
    // A read that every admin-scope token may make, writes nothing and is audited nowhere.
    await context.connection.withToken(token, context.source).admin.listApiTokens({});
    return null;
  } catch (thrown) {
    const refusal = thrown instanceof ConnectError ? fromConnectError(thrown) : toApiError(thrown);
    // The service's message names the call made here, not the caller's: say what the caller can act on.
    if (refusal.apiCode === "forbidden") return new ApiError("forbidden", 'this token may not use the API: it needs the "admin" scope', { cause: thrown });
    return refusal;
  }
}

/**
 * The error to answer a request with: `error` itself, unless the request came
 * with a bearer token that the service does not accept, in which case that refusal.
 */
export async function afterAuthentication(context: Pick<Context, "caller" | "connection" | "source">, error: ApiError): Promise<ApiError> {
  const { caller } = context;
  if (caller?.kind !== "token") return error;
  // Refusals about the caller, failures of the portal or the service, and answers the service gave (it authenticated first) stand.
  if (error.status === 401 || error.status === 403 || error.status >= 500 || isConnectError(error.cause)) return error;
  let check = checks.get(caller);
  if (!check) {
    check = refusalOf(context, caller.token);
    checks.set(caller, check);
  }
  return (await check) ?? error;
}
