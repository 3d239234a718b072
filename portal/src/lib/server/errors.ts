import { Code, ConnectError } from "@connectrpc/connect";
import { TRPCError } from "@trpc/server";
import type { TRPC_ERROR_CODE_KEY } from "@trpc/server/rpc";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "@provider-credentials/wire/gen/google/rpc/error_details_pb";
import { maskKeys } from "@provider-credentials/wire/masking";

/**
 * API errors: the one place where failures become HTTP statuses and JSON
 * bodies, for REST, tRPC and the hooks alike. A body is always
 * `{"code", "message"}` (plus `issues` for bad input); the message names the
 * field at fault and never carries a stack, a driver message or an address.
 */

/** Every `code` an API error can carry, with its HTTP status and the tRPC code of that status. */
const KINDS = {
  bad_request: { status: 400, trpc: "BAD_REQUEST" },
  unauthorized: { status: 401, trpc: "UNAUTHORIZED" },
  forbidden: { status: 403, trpc: "FORBIDDEN" },
  not_found: { status: 404, trpc: "NOT_FOUND" },
  method_not_allowed: { status: 405, trpc: "METHOD_NOT_SUPPORTED" },
  already_exists: { status: 409, trpc: "CONFLICT" },
  stale_version: { status: 409, trpc: "CONFLICT" },
  failed_precondition: { status: 409, trpc: "CONFLICT" },
  /** A sensitive action for a signed-in account whose sign-in is older than 10 minutes: confirm at /reauthenticate, then repeat it. */
  reauthentication_required: { status: 409, trpc: "CONFLICT" },
  payload_too_large: { status: 413, trpc: "PAYLOAD_TOO_LARGE" },
  unsupported_media_type: { status: 415, trpc: "UNSUPPORTED_MEDIA_TYPE" },
  too_many_requests: { status: 429, trpc: "TOO_MANY_REQUESTS" },
  client_closed_request: { status: 499, trpc: "CLIENT_CLOSED_REQUEST" },
  internal_error: { status: 500, trpc: "INTERNAL_SERVER_ERROR" },
  not_implemented: { status: 501, trpc: "NOT_IMPLEMENTED" },
  bad_gateway: { status: 502, trpc: "BAD_GATEWAY" },
  service_unavailable: { status: 503, trpc: "SERVICE_UNAVAILABLE" },
  gateway_timeout: { status: 504, trpc: "GATEWAY_TIMEOUT" },
} as const satisfies Record<string, { status: number; trpc: TRPC_ERROR_CODE_KEY }>;

export type ApiErrorCode = keyof typeof KINDS;

/** gRPC status of the credentials service → API error. */
const FROM_GRPC: Record<Code, ApiErrorCode> = {
  [Code.Canceled]: "client_closed_request",
  [Code.Unknown]: "bad_gateway",
  [Code.InvalidArgument]: "bad_request",
  [Code.DeadlineExceeded]: "gateway_timeout",
  [Code.NotFound]: "not_found",
  [Code.AlreadyExists]: "already_exists",
  [Code.PermissionDenied]: "forbidden",
  [Code.ResourceExhausted]: "too_many_requests",
  [Code.FailedPrecondition]: "failed_precondition",
  [Code.Aborted]: "stale_version",
  [Code.OutOfRange]: "bad_request",
  [Code.Unimplemented]: "not_implemented",
  [Code.Internal]: "internal_error",
  [Code.Unavailable]: "service_unavailable",
  [Code.DataLoss]: "internal_error",
  [Code.Unauthenticated]: "unauthorized",
};

/** Codes whose service message is written for the caller and may be passed on; the rest get a fixed text. */
const SERVICE_MESSAGE_SHOWN = new Set<Code>([
  Code.InvalidArgument,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.ResourceExhausted,
  Code.FailedPrecondition,
  Code.Aborted,
  Code.OutOfRange,
  Code.Unauthenticated,
]);

const FIXED_MESSAGES: Partial<Record<ApiErrorCode, string>> = {
  internal_error: "internal error",
  bad_gateway: "the credentials service failed to answer",
  service_unavailable: "the credentials service is unavailable; try again shortly",
  gateway_timeout: "the credentials service did not answer in time; try again shortly",
  not_implemented: "the credentials service does not support this operation yet",
  client_closed_request: "the request was cancelled",
};

/** google.rpc.ErrorInfo reason of a sensitive action that needs a recent sign-in (the service's auth/policy.ts). */
export const REAUTHENTICATION_REASON = "REAUTHENTICATION_REQUIRED";
/** The portal page where a signed-in account confirms who it is again. */
export const REAUTHENTICATE_PATH = "/reauthenticate";

/** The service's field names where the REST API names them differently. */
const FIELD_NAMES: Record<string, string> = { page_token: "cursor", page_size: "limit", "organizations.organization_ids": "organization_ids" };

export interface ApiIssue {
  /** The field at fault, dotted (`api_key`), or `body` for the request as a whole. */
  path: string;
  message: string;
}

export interface ApiErrorBody {
  code: ApiErrorCode;
  message: string;
  issues?: ApiIssue[];
}

export class ApiError extends TRPCError {
  readonly apiCode: ApiErrorCode;
  readonly status: number;
  readonly issues: ApiIssue[] | undefined;
  /** For 429: how long to wait, in seconds (the Retry-After header). */
  readonly retryAfterSeconds: number | undefined;
  /** The field a refusal other than bad input is about (a duplicate name, a stale version), and what to show at it; not in the body. */
  readonly field: { path: string; message: string } | undefined;

  constructor(
    apiCode: ApiErrorCode,
    message: string,
    options: { issues?: ApiIssue[]; retryAfterSeconds?: number; field?: { path: string; message: string }; cause?: unknown } = {},
  ) {
    // Messages repeat what the caller sent (an unknown field's name, a path): never a key sent in the wrong place.
    super({ code: KINDS[apiCode].trpc, message: maskKeys(message), cause: options.cause instanceof Error ? options.cause : undefined });
    this.apiCode = apiCode;
    this.status = KINDS[apiCode].status;
    this.issues = options.issues?.map((issue) => ({ path: maskKeys(issue.path), message: maskKeys(issue.message) }));
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.field = options.field && { path: options.field.path, message: maskKeys(options.field.message) };
  }

  get body(): ApiErrorBody {
    return { code: this.apiCode, message: this.message, ...(this.issues ? { issues: this.issues } : {}) };
  }

  /** Headers that go with the error response. */
  get headers(): Record<string, string> {
    return this.retryAfterSeconds !== undefined ? { "retry-after": String(this.retryAfterSeconds) } : {};
  }

  /** Bad input in one field: `field: problem`. */
  static invalid(field: string, problem: string): ApiError {
    return new ApiError("bad_request", `${field}: ${problem}`, { issues: [{ path: field, message: problem }] });
  }
}

export function isConnectError(error: unknown): error is ConnectError {
  return error instanceof ConnectError;
}

function renameField(field: string): string {
  return FIELD_NAMES[field] ?? field;
}

/** How long the service asks the caller to wait (google.rpc.RetryInfo), in whole seconds, if it says. */
export function retryAfterOf(error: ConnectError): number | undefined {
  const delay = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
  if (delay === undefined || delay.seconds < 0n || delay.seconds > 10_000_000n) return undefined;
  return Math.max(1, Number(delay.seconds) + (delay.nanos > 0 ? 1 : 0));
}

function isConnectionFailure(cause: unknown): boolean {
  const code = (cause as { code?: unknown } | undefined)?.code;
  return (
    typeof code === "string" &&
    (/^ERR_(SSL|TLS)_/.test(code) || ["ECONNREFUSED", "ECONNRESET", "EPIPE", "ERR_HTTP2_GOAWAY_SESSION", "ERR_HTTP2_STREAM_CANCEL"].includes(code))
  );
}

/** A failed call to the credentials service → API error. */
export function fromConnectError(error: ConnectError): ApiError {
  // The connection itself failed (TLS refused, reset): the service is unreachable, whatever code the client library chose.
  if (isConnectionFailure(error.cause)) {
    return new ApiError("service_unavailable", FIXED_MESSAGES.service_unavailable!, { cause: error });
  }
  const apiCode = FROM_GRPC[error.code] ?? "bad_gateway";
  if (!SERVICE_MESSAGE_SHOWN.has(error.code)) {
    return new ApiError(apiCode, FIXED_MESSAGES[apiCode] ?? "internal error", { cause: error });
  }
  // The service's errors carry what is wrong as data (google.rpc details); the message is for people.
  let message = error.rawMessage;
  let issues: ApiIssue[] | undefined;
  const violations = error.findDetails(BadRequestSchema).flatMap((detail) => detail.fieldViolations);
  if (violations.length > 0) {
    issues = violations.map((v) => ({ path: renameField(v.field), message: v.description }));
    message = `${issues[0].path}: ${issues[0].message}`;
  }
  let field: { path: string; message: string } | undefined;
  const info = error.findDetails(ErrorInfoSchema)[0];
  if (error.code === Code.FailedPrecondition && info?.reason === REAUTHENTICATION_REASON) {
    return new ApiError("reauthentication_required", `${message} (in the portal: ${REAUTHENTICATE_PATH})`, { cause: error });
  }
  const named = info?.metadata.field;
  if (named !== undefined && issues === undefined) {
    const prefix = `${named}: `;
    field = { path: renameField(named), message: message.startsWith(prefix) ? message.slice(prefix.length) : message };
  }
  const retryAfterSeconds = error.code === Code.ResourceExhausted ? retryAfterOf(error) : undefined;
  return new ApiError(apiCode, message, { issues, field, retryAfterSeconds, cause: error });
}

interface ZodLikeIssue {
  code: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
}

function isZodError(error: unknown): error is { issues: ZodLikeIssue[] } {
  return (
    typeof error === "object" && error !== null && (error as { name?: unknown }).name === "ZodError" && Array.isArray((error as { issues?: unknown }).issues)
  );
}

/** zod issues → API issues, one per field, worded for people. */
export function issuesFromZod(issues: ZodLikeIssue[]): ApiIssue[] {
  const out: ApiIssue[] = [];
  for (const issue of issues) {
    const base = issue.path.map(String);
    if (issue.code === "unrecognized_keys" && issue.keys) {
      for (const key of issue.keys) out.push({ path: [...base, key].join("."), message: "unknown field" });
      continue;
    }
    let message = issue.message;
    if (issue.code === "invalid_type" && /received undefined$/.test(message)) message = "is required";
    else message = message.replace(/^Invalid input: /, "");
    out.push({ path: base.length > 0 ? base.join(".") : "body", message });
  }
  return out;
}

export function validationError(issues: ApiIssue[]): ApiError {
  const first = issues[0] ?? { path: "body", message: "is invalid" };
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? "s" : ""})` : "";
  return new ApiError("bad_request", `${first.path}: ${first.message}${more}`, { issues });
}

const FROM_TRPC = Object.fromEntries(
  (Object.entries(KINDS) as Array<[ApiErrorCode, { trpc: TRPC_ERROR_CODE_KEY }]>).reverse().map(([apiCode, kind]) => [kind.trpc, apiCode]),
) as Partial<Record<TRPC_ERROR_CODE_KEY, ApiErrorCode>>;
FROM_TRPC.CONFLICT = "already_exists";
FROM_TRPC.PARSE_ERROR = "bad_request";

/** Anything thrown while serving an API call → the error the caller sees. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (isConnectError(error)) return fromConnectError(error);
  if (error instanceof TRPCError) {
    if (error.cause instanceof ApiError) return error.cause;
    if (isConnectError(error.cause)) return fromConnectError(error.cause);
    if (isZodError(error.cause)) return validationError(issuesFromZod(error.cause.issues));
    if (error.code === "PARSE_ERROR") return new ApiError("bad_request", "body: is not valid JSON");
    const apiCode = FROM_TRPC[error.code] ?? "internal_error";
    if (apiCode === "internal_error") return new ApiError("internal_error", "internal error", { cause: error.cause ?? error });
    return new ApiError(apiCode, FIXED_MESSAGES[apiCode] ?? error.message, { cause: error });
  }
  return new ApiError("internal_error", "internal error", { cause: error });
}

/** A JSON error response (REST and the hooks). */
export function errorResponse(error: ApiError, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(error.body), {
    status: error.status,
    headers: { "content-type": "application/json", ...error.headers, ...headers },
  });
}
