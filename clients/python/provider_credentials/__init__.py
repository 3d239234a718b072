"""Python client of the Provider Credentials service.

    from provider_credentials import KeyResolver

    with KeyResolver("http://127.0.0.1:50051", token) as keys:
        r = keys.resolve(organization_id="acme", provider="openai")
        # r.api_key, r.api_base, r.credential_id, r.source, r.failing
        keys.report_failure(r.credential_id, "authentication")

See docs/integrate.md in the repository.
"""

from .errors import Closed, InvalidArgument, NoKey, NotFound, PermissionDenied, ProviderCredentialsError, Unavailable
from .resolver import FAILURE_KINDS, PROVIDERS, Change, KeyResolver, ReportResult, Resolution, TlsConfig

__version__ = "0.1.0"

__all__ = [
    "KeyResolver",
    "Resolution",
    "ReportResult",
    "Change",
    "TlsConfig",
    "PROVIDERS",
    "FAILURE_KINDS",
    "ProviderCredentialsError",
    "NotFound",
    "NoKey",
    "PermissionDenied",
    "Unavailable",
    "InvalidArgument",
    "Closed",
]
