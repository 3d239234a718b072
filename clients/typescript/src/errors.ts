import { Code, ConnectError } from "@connectrpc/connect";

/** Every error the resolver throws: the gRPC code and the service's message (never a key). */
export class KeyResolverError extends Error {
  override name = "KeyResolverError";

  constructor(
    message: string,
    /** The gRPC status code (`Code` of @connectrpc/connect). */
    readonly code: Code,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The organisation or team does not exist (NOT_FOUND). */
export class NotFoundError extends KeyResolverError {
  override name = "NotFoundError";
}

/** The organisation has no active credential for the provider and the service has no fallback for it (FAILED_PRECONDITION). */
export class NoKeyError extends KeyResolverError {
  override name = "NoKeyError";
}

/** The token may not do this, or not for this organisation (PERMISSION_DENIED). */
export class PermissionDeniedError extends KeyResolverError {
  override name = "PermissionDeniedError";
}

/** The token is missing, unknown, expired or revoked (UNAUTHENTICATED). */
export class UnauthenticatedError extends KeyResolverError {
  override name = "UnauthenticatedError";
}

/** The service cannot be reached or cannot answer now (UNAVAILABLE, DEADLINE_EXCEEDED, a connection error): try again. */
export class UnavailableError extends KeyResolverError {
  override name = "UnavailableError";
}

/** The request was refused as malformed (INVALID_ARGUMENT): the message names the field. */
export class InvalidArgumentError extends KeyResolverError {
  override name = "InvalidArgumentError";
}

/** The typed error for a failed call. */
export function resolverError(error: unknown): KeyResolverError {
  if (error instanceof KeyResolverError) return error;
  const e = ConnectError.from(error);
  const message = e.rawMessage;
  switch (e.code) {
    case Code.NotFound:
      return new NotFoundError(message, e.code, { cause: e });
    case Code.FailedPrecondition:
      return new NoKeyError(message, e.code, { cause: e });
    case Code.PermissionDenied:
      return new PermissionDeniedError(message, e.code, { cause: e });
    case Code.Unauthenticated:
      return new UnauthenticatedError(message, e.code, { cause: e });
    case Code.InvalidArgument:
      return new InvalidArgumentError(message, e.code, { cause: e });
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.ResourceExhausted:
    case Code.Aborted:
    case Code.Canceled:
    case Code.Unknown:
      return new UnavailableError(message, e.code, { cause: e });
    default:
      // The connection itself failed (refused, reset, a TLS handshake that did not pass): the service cannot be reached.
      if (isSystemError(e.cause)) return new UnavailableError(`cannot reach the service: ${message}`, e.code, { cause: e });
      return new KeyResolverError(message, e.code, { cause: e });
  }
}

function isSystemError(cause: unknown): boolean {
  return cause instanceof Error && typeof (cause as { code?: unknown }).code === "string";
}
