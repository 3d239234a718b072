"""Typed errors of the Provider Credentials client.

Every error carries the gRPC status code and the service's message. Neither ever contains a
provider key: the service never puts one in an error, and the client adds none.
"""

from __future__ import annotations

from typing import Optional

import grpc


class ProviderCredentialsError(Exception):
    """A call to the Provider Credentials service failed."""

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return f"{type(self).__name__}(code={code!r}, message={self.message!r})"


class NotFound(ProviderCredentialsError):
    """The organisation, team or credential does not exist (NOT_FOUND)."""


class NoKey(ProviderCredentialsError):
    """No active credential and no environment fallback for the provider (FAILED_PRECONDITION)."""


class PermissionDenied(ProviderCredentialsError):
    """The token is missing, unknown, expired, revoked, of the wrong scope, or limited to other
    organisations (PERMISSION_DENIED or UNAUTHENTICATED)."""


class Unavailable(ProviderCredentialsError):
    """The service could not be reached in time (UNAVAILABLE, DEADLINE_EXCEEDED), and no cached
    answer was recent enough to be served instead."""


class InvalidArgument(ProviderCredentialsError, ValueError):
    """Bad input; the message starts with the field at fault (INVALID_ARGUMENT, or refused by the
    client before calling)."""


class Closed(ProviderCredentialsError):
    """The resolver was closed."""


_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: NoKey,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
}


def from_rpc_error(error: grpc.RpcError) -> ProviderCredentialsError:
    """The typed error for a failed call."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    message = details or (code.name if code is not None else "call failed")
    return _BY_CODE.get(code, ProviderCredentialsError)(message, code)
