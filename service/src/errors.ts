import { maskKeys } from "@provider-credentials/wire/masking";

export { maskKeys };

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
  /** A stable UPPER_SNAKE_CASE cause for programs (google.rpc.ErrorInfo's reason): the kind's, unless a more precise one is given. */
  readonly reason: string;

  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** The request field at fault (the message then starts with `field: `). */
    readonly field?: string,
    /** For resource_exhausted: when the caller may try again. */
    readonly retryAfterSeconds?: number,
    reason?: string,
  ) {
    // Messages repeat what the caller sent (`organization "..." not found`): never a key sent in the wrong field.
    super(maskKeys(message));
    this.reason = reason ?? kind.toUpperCase();
  }

  /** What is wrong with `field`, without the field's name in front. */
  get description(): string {
    const prefix = `${this.field}: `;
    return this.field !== undefined && this.message.startsWith(prefix) ? this.message.slice(prefix.length) : this.message;
  }
}

/** Bad input: the message starts with the field's name. */
export function invalid(field: string, problem: string): ServiceError {
  return new ServiceError("invalid_argument", `${field}: ${problem}`, field);
}
