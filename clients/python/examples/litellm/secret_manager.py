"""A LiteLLM CustomSecretManager that reads provider keys from the Provider Credentials service.
Secret names: `provider-credentials/<organization>/<provider>` and
`provider-credentials/team/<team>/<provider>`; any other name is read from the environment.

Enable in the proxy's config.yaml:

    general_settings:
      key_management_system: custom
      key_management_settings:
        custom_secret_manager: secret_manager.ProviderCredentialsSecretManager
    model_list:
      - model_name: gpt-4o
        litellm_params:
          model: openai/gpt-4o
          api_key: os.environ/provider-credentials/acme/openai

LiteLLM reads such a secret when it loads the model list and may keep it: a key replaced or
deactivated in the service is only picked up when LiteLLM reads the secret again. The pre-call
hook (custom_callbacks.py) resolves on every request and follows changes at once: prefer it.
LiteLLM's documentation lists secret managers among its Enterprise features.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from provider_credentials_litellm import aread_secret, parse_secret_name, read_secret, resolver_from_env

try:
    from litellm.integrations.custom_secret_manager import CustomSecretManager
except ImportError:  # pragma: no cover - exercised where LiteLLM is absent (this repository's CI)
    class CustomSecretManager:  # type: ignore[no-redef]
        def __init__(self, secret_manager_name: Optional[str] = None, **kwargs: Any) -> None:
            self.secret_manager_name = secret_manager_name


class ProviderCredentialsSecretManager(CustomSecretManager):
    def __init__(self, resolver=None) -> None:
        super().__init__(secret_manager_name="provider_credentials")
        self._resolver = resolver

    @property
    def resolver(self):
        if self._resolver is None:
            self._resolver = resolver_from_env()
        return self._resolver

    async def async_read_secret(self, secret_name: str, optional_params: Optional[dict] = None, timeout: Any = None) -> Optional[str]:
        if parse_secret_name(secret_name) is None:
            return os.environ.get(secret_name)
        return await aread_secret(self.resolver, secret_name)

    def sync_read_secret(self, secret_name: str, optional_params: Optional[dict] = None, timeout: Any = None) -> Optional[str]:
        if parse_secret_name(secret_name) is None:
            return os.environ.get(secret_name)
        return read_secret(self.resolver, secret_name)
