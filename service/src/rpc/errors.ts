import { Code, ConnectError } from "@connectrpc/connect";
import { isDatabaseUnavailable } from "../db/errors.js";
import { ServiceError, type ErrorKind } from "../errors.js";
import type { Logger } from "../logger.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "@provider-credentials/wire/gen/google/rpc/error_details_pb";

/** google.rpc.ErrorInfo's domain for every error this service raises. */
export const ERROR_DOMAIN = "provider-credentials";

type Detail = NonNullable<ConstructorParameters<typeof ConnectError>[3]>[number];

/**
 * A domain error as data, in the status details (grpc-status-details-bin): ErrorInfo always (the
 * reason, and the field at fault in its metadata), BadRequest for bad input, RetryInfo when the
 * caller may try again later. Callers read these instead of the message.
 */
function errorDetails(error: ServiceError): Detail[] {
  const details: Detail[] = [
    { desc: ErrorInfoSchema, value: { reason: error.reason, domain: ERROR_DOMAIN, metadata: error.field === undefined ? {} : { field: error.field } } },
  ];
  if (error.kind === "invalid_argument" && error.field !== undefined) {
    details.push({ desc: BadRequestSchema, value: { fieldViolations: [{ field: error.field, description: error.description }] } });
  }
  if (error.retryAfterSeconds !== undefined) {
    details.push({ desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(error.retryAfterSeconds) } } });
  }
  return details;
}

const CODES: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  aborted: Code.Aborted,
  data_loss: Code.DataLoss,
  unavailable: Code.Unavailable,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  resource_exhausted: Code.ResourceExhausted,
};

/**
 * The one place where errors become gRPC statuses. Domain errors keep their
 * message; a database outage is UNAVAILABLE; anything else is logged and
 * answered with a bare "internal error", never its message or stack.
 */
export function toConnectError(error: unknown, logger: Logger, procedure: string): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof ServiceError) {
    const metadata = error.retryAfterSeconds === undefined ? undefined : { "retry-after": String(error.retryAfterSeconds) };
    return new ConnectError(error.message, CODES[error.kind], metadata, errorDetails(error));
  }
  if (isDatabaseUnavailable(error)) {
    logger.warn({ err: error, procedure }, "database unavailable");
    return new ConnectError("the credentials database is unavailable; try again shortly", Code.Unavailable);
  }
  // The logger's error serializer strips SQL and parameters from database errors.
  logger.error({ err: error, procedure }, "internal error");
  return new ConnectError("internal error", Code.Internal);
}
