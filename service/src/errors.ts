/**
 * Domain errors. Services throw these; one function (rpc/errors.ts) maps them
 * to gRPC status codes, and the portal maps those codes to HTTP.
 */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "aborted"
  | "data_loss"
  | "unavailable"
  | "unauthenticated"
  | "permission_denied"
  | "resource_exhausted";

export class ServiceError extends Error {
  override readonly name = "ServiceError";
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** The request field at fault, for invalid_argument. */
    readonly field?: string,
    /** For resource_exhausted: when the caller may try again. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** Bad input: the message starts with the field's name. */
export function invalid(field: string, problem: string): ServiceError {
  return new ServiceError("invalid_argument", `${field}: ${problem}`, field);
}
