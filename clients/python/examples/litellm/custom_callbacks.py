"""LiteLLM proxy hooks: every request for an OpenAI, Anthropic, Gemini or Fireworks model gets the
calling team's (or organisation's) provider key from the Provider Credentials service, and
authentication and quota failures are reported back so that a failing key stops being handed out.

Enable in the proxy's config.yaml (this file and provider_credentials_litellm.py beside it, the
provider_credentials package importable):

    litellm_settings:
      callbacks: custom_callbacks.proxy_handler_instance

Resolutions come from memory (a microsecond) and follow changes within the change stream's
delay; see docs/integrate.md. LiteLLM is not installed where this repository's tests run: the
logic is tested through provider_credentials_litellm.py and this class with a stand-in base.
"""

from __future__ import annotations

from typing import Any, Optional

from provider_credentials import ProviderCredentialsError

from provider_credentials_litellm import (
    SuccessReporter,
    aliases_from_env,
    apply_credentials,
    http_status_for,
    report_call_failure,
    resolver_from_env,
    scope_for_caller,
    METADATA_CREDENTIAL_ID,
)

try:  # LiteLLM's base class when LiteLLM is there
    from litellm.integrations.custom_logger import CustomLogger
except ImportError:  # pragma: no cover - exercised where LiteLLM is absent (this repository's CI)
    CustomLogger = object  # type: ignore[misc,assignment]

try:
    from fastapi import HTTPException
except ImportError:  # pragma: no cover
    HTTPException = None  # type: ignore[misc,assignment]


class ProviderCredentialsHook(CustomLogger):  # type: ignore[misc,valid-type]
    def __init__(self, resolver=None, default_organization: Optional[str] = None, aliases=None) -> None:
        if CustomLogger is not object:
            super().__init__()
        self._resolver = resolver
        self._default_organization = default_organization
        self._aliases = aliases
        self.successes = SuccessReporter()

    @property
    def resolver(self):
        if self._resolver is None:
            self._resolver = resolver_from_env()
        return self._resolver

    def _defaults(self) -> None:
        import os

        if self._default_organization is None:
            self._default_organization = os.environ.get("PROVIDER_CREDENTIALS_ORGANIZATION") or ""
        if self._aliases is None:
            self._aliases = aliases_from_env()

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        self._defaults()
        metadata = dict(getattr(user_api_key_dict, "team_metadata", None) or {})
        metadata.update(getattr(user_api_key_dict, "metadata", None) or {})
        scope = scope_for_caller(
            getattr(user_api_key_dict, "team_id", None),
            getattr(user_api_key_dict, "org_id", None),
            metadata,
            self._default_organization or None,
        )
        try:
            await apply_credentials(self.resolver, data, scope, self._aliases)
        except ProviderCredentialsError as error:
            status, message = http_status_for(error)
            if HTTPException is not None:
                raise HTTPException(status_code=status, detail={"error": message}) from None
            raise
        return data

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception, user_api_key_dict: Any, traceback_str: Optional[str] = None) -> None:
        kind = await report_call_failure(self.resolver, request_data, original_exception)
        if kind is not None:
            self.successes.note_failure((request_data.get("metadata") or {}).get(METADATA_CREDENTIAL_ID))

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any, response: Any) -> Any:
        self.successes.note_success(data)
        await self.successes.flush(self.resolver)
        return response


proxy_handler_instance = ProviderCredentialsHook()
