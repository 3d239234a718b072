"""The logic of the LiteLLM proxy integration, as plain functions (no LiteLLM import), so that it
runs and is tested without LiteLLM installed. custom_callbacks.py (the pre-call and failure
hooks) and secret_manager.py (a CustomSecretManager) are thin wrappers around it.

Configuration, from the environment:
  PROVIDER_CREDENTIALS_URL          http://host:50051 or https://host:50051 (the gRPC port)
  PROVIDER_CREDENTIALS_TOKEN        an API token of scope `resolve`
  PROVIDER_CREDENTIALS_CA_FILE      optional: the CA to trust for https://
  PROVIDER_CREDENTIALS_CERT_FILE    optional, with ..._KEY_FILE: a client certificate (mutual TLS)
  PROVIDER_CREDENTIALS_KEY_FILE
  PROVIDER_CREDENTIALS_ORGANIZATION optional: the organisation for calls whose LiteLLM key has no
                                    team and no organisation
  PROVIDER_CREDENTIALS_MAX_STALENESS_MS  optional (default 5000)
  PROVIDER_CREDENTIALS_MODEL_PROVIDERS   optional: "alias=provider,..." for model names that
                                    do not tell their provider
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Dict, Mapping, Optional, Set, Tuple

from provider_credentials import (
    InvalidArgument,
    KeyResolver,
    NoKey,
    NotFound,
    PermissionDenied,
    ProviderCredentialsError,
    TlsConfig,
    Unavailable,
)

#: Where the hook leaves the credential it used, in the request's metadata (never the key).
METADATA_CREDENTIAL_ID = "provider_credentials_credential_id"
METADATA_FAILING = "provider_credentials_failing"
#: A LiteLLM team's (or key's) metadata may name the team or organisation to resolve for.
METADATA_TEAM = "provider_credentials_team_id"
METADATA_ORGANIZATION = "provider_credentials_organization_id"

SECRET_PREFIX = "provider-credentials/"

_MODEL_PREFIXES = {
    "openai": "openai",
    "azure": None,  # Azure OpenAI keys are not OpenAI keys: not ours
    "anthropic": "anthropic",
    "gemini": "gemini",
    "fireworks_ai": "fireworks",
    "fireworks": "fireworks",
}
_MODEL_PATTERNS = (
    (re.compile(r"^(gpt-|o\d|chatgpt-|text-embedding-|dall-e|whisper|tts-|davinci|babbage|omni-moderation)"), "openai"),
    (re.compile(r"^claude"), "anthropic"),
    (re.compile(r"^gemini"), "gemini"),
    (re.compile(r"^accounts/fireworks/"), "fireworks"),
)


def provider_for_model(model: Optional[str], aliases: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The provider whose key a LiteLLM model name needs ("openai/gpt-4o", "gpt-4o",
    "claude-3-5-sonnet", "gemini/gemini-2.0-flash", "fireworks_ai/accounts/fireworks/models/..."),
    or None when the model is not one of the service's providers (the request is then left
    alone: "azure/...", "vertex_ai/...", "bedrock/...", "ollama/..." use other credentials).
    `aliases` maps the proxy's own model names (model_list's model_name) to providers."""
    if not model or not isinstance(model, str):
        return None
    if aliases and model in aliases:
        return aliases[model]
    name = model.strip().lower()
    if "/" in name and not name.startswith("accounts/"):
        return _MODEL_PREFIXES.get(name.split("/", 1)[0])
    for pattern, provider in _MODEL_PATTERNS:
        if pattern.match(name):
            return provider
    return None


def aliases_from_env(environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """PROVIDER_CREDENTIALS_MODEL_PROVIDERS="fast=anthropic,smart=openai": the proxy's model
    names whose provider the name alone does not tell."""
    pairs = (item.split("=", 1) for item in environ.get("PROVIDER_CREDENTIALS_MODEL_PROVIDERS", "").split(",") if "=" in item)
    return {alias.strip(): provider.strip().lower() for alias, provider in pairs if alias.strip() and provider.strip()}


def scope_for_caller(team_id: Optional[str], organization_id: Optional[str], metadata: Optional[Mapping[str, Any]] = None, default_organization: Optional[str] = None) -> Optional[Dict[str, str]]:
    """Whose key a call uses: the team or organisation named in the LiteLLM team's (or key's)
    metadata, else the LiteLLM team, else its organisation, else `default_organization`; as
    keyword arguments for KeyResolver.resolve. None when there is nobody to resolve for."""
    metadata = metadata or {}
    if metadata.get(METADATA_TEAM):
        return {"team_id": str(metadata[METADATA_TEAM])}
    if metadata.get(METADATA_ORGANIZATION):
        return {"organization_id": str(metadata[METADATA_ORGANIZATION])}
    if team_id:
        return {"team_id": team_id}
    if organization_id:
        return {"organization_id": organization_id}
    if default_organization:
        return {"organization_id": default_organization}
    return None


async def apply_credentials(resolver: KeyResolver, data: Dict[str, Any], scope: Optional[Mapping[str, str]], aliases: Optional[Mapping[str, str]] = None) -> bool:
    """For a proxy request `data` whose model needs one of the service's providers: sets
    data["api_key"] and data["api_base"] (when the credential has one) from the caller's
    resolution, and notes the credential in data["metadata"]. Returns whether it did. Raises the
    client's typed errors (NotFound, NoKey, PermissionDenied, Unavailable)."""
    provider = provider_for_model(data.get("model"), aliases)
    if provider is None or scope is None:
        return False
    resolution = await resolver.aresolve(provider=provider, **scope)
    data["api_key"] = resolution.api_key
    if resolution.api_base:
        data["api_base"] = resolution.api_base
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        metadata = data["metadata"] = {}
    metadata[METADATA_CREDENTIAL_ID] = resolution.credential_id
    metadata[METADATA_FAILING] = resolution.failing
    return True


def http_status_for(error: ProviderCredentialsError) -> Tuple[int, str]:
    """The HTTP status and message the proxy should answer with when no key could be had."""
    if isinstance(error, (NotFound, NoKey)):
        return 403, f"no provider key for this team or organisation: {error.message}"
    if isinstance(error, InvalidArgument):
        return 400, error.message
    if isinstance(error, (PermissionDenied, Unavailable)):
        return 503, "provider keys are unavailable; try again later"
    return 500, "provider keys could not be resolved"


_QUOTA_WORDS = ("insufficient_quota", "exceeded your current quota", "credit balance is too low", "billing", "quota")


def failure_kind(error: BaseException) -> Optional[str]:
    """The failure kind for ReportKeyFailure from a provider error LiteLLM raised (its
    `status_code`, and its message for quota), or None when the provider said nothing about the
    key (a timeout, a 5xx, a bad request)."""
    status = getattr(error, "status_code", None)
    try:
        status = int(status) if status is not None else None
    except (TypeError, ValueError):
        status = None
    text = str(error).lower()
    if status == 401:
        return "authentication"
    if status == 402 or (status in (400, 429) and any(word in text for word in _QUOTA_WORDS)):
        return "quota"
    if status == 403:
        return "permission"
    if status == 429:
        return "rate_limit"
    return None


#: Kinds worth a call to the service: the ones that count towards marking a key failing.
REPORTED_KINDS = ("authentication", "quota")


async def report_call_failure(resolver: KeyResolver, request_data: Mapping[str, Any], error: BaseException) -> Optional[str]:
    """After a failed proxy call: reports an authentication or quota failure of the credential
    the pre-call hook handed out. Returns the kind reported, or None. Never raises (a report
    that cannot be sent must not hide the provider's error)."""
    metadata = request_data.get("metadata") or {}
    credential_id = metadata.get(METADATA_CREDENTIAL_ID) if isinstance(metadata, Mapping) else None
    kind = failure_kind(error)
    if not credential_id or kind not in REPORTED_KINDS:
        return None
    try:
        await resolver.areport_failure(credential_id, kind)
    except ProviderCredentialsError:
        return None
    return kind


class SuccessReporter:
    """Collects credentials that worked after having been reported failing (or handed out
    marked failing) and reports them in one batch, so that a recovered key is used again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._suspect: Set[str] = set()
        self._recovered: Set[str] = set()

    def note_failure(self, credential_id: Optional[str]) -> None:
        if credential_id:
            with self._lock:
                self._suspect.add(credential_id)

    def note_success(self, request_data: Mapping[str, Any]) -> None:
        metadata = request_data.get("metadata") or {}
        credential_id = metadata.get(METADATA_CREDENTIAL_ID)
        if not credential_id:
            return
        with self._lock:
            if credential_id in self._suspect or metadata.get(METADATA_FAILING):
                self._suspect.discard(credential_id)
                self._recovered.add(credential_id)

    async def flush(self, resolver: KeyResolver) -> int:
        with self._lock:
            ids, self._recovered = list(self._recovered), set()
        if not ids:
            return 0
        try:
            return await resolver.areport_success(ids)
        except ProviderCredentialsError:
            with self._lock:
                self._recovered.update(ids)
            return 0


def parse_secret_name(name: str) -> Optional[Dict[str, str]]:
    """`provider-credentials/<organization>/<provider>` or
    `provider-credentials/team/<team>/<provider>` as keyword arguments for KeyResolver.resolve;
    None for any other name."""
    if not isinstance(name, str) or not name.startswith(SECRET_PREFIX):
        return None
    parts = name[len(SECRET_PREFIX) :].split("/")
    if len(parts) == 2 and all(parts):
        return {"organization_id": parts[0], "provider": parts[1]}
    if len(parts) == 3 and parts[0] == "team" and parts[1] and parts[2]:
        return {"team_id": parts[1], "provider": parts[2]}
    return None


def read_secret(resolver: KeyResolver, name: str) -> Optional[str]:
    """The key a secret name stands for; None when the name is not ours or nothing resolves."""
    request = parse_secret_name(name)
    if request is None:
        return None
    try:
        return resolver.resolve(**request).api_key
    except (NotFound, NoKey, InvalidArgument):
        return None


async def aread_secret(resolver: KeyResolver, name: str) -> Optional[str]:
    request = parse_secret_name(name)
    if request is None:
        return None
    try:
        return (await resolver.aresolve(**request)).api_key
    except (NotFound, NoKey, InvalidArgument):
        return None


_shared: Optional[KeyResolver] = None
_shared_lock = threading.Lock()


def resolver_from_env(environ: Mapping[str, str] = os.environ) -> KeyResolver:
    """One KeyResolver per process, configured from PROVIDER_CREDENTIALS_* (see the top)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            url = environ.get("PROVIDER_CREDENTIALS_URL", "")
            token = environ.get("PROVIDER_CREDENTIALS_TOKEN", "")
            if not url or not token:
                raise InvalidArgument("PROVIDER_CREDENTIALS_URL and PROVIDER_CREDENTIALS_TOKEN must be set")
            tls = None
            if environ.get("PROVIDER_CREDENTIALS_CA_FILE") or environ.get("PROVIDER_CREDENTIALS_CERT_FILE"):
                tls = TlsConfig(
                    ca=environ.get("PROVIDER_CREDENTIALS_CA_FILE") or None,
                    cert=environ.get("PROVIDER_CREDENTIALS_CERT_FILE") or None,
                    key=environ.get("PROVIDER_CREDENTIALS_KEY_FILE") or None,
                )
            staleness = int(environ.get("PROVIDER_CREDENTIALS_MAX_STALENESS_MS", "5000"))
            _shared = KeyResolver(url, token, tls=tls, max_staleness_ms=staleness)
        return _shared


def reset_shared_resolver() -> None:
    """Closes the process's KeyResolver (tests; a proxy shutting down)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
        _shared = None
