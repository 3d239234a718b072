"""The LiteLLM examples (examples/litellm) against the running service: the pre-call hook's and
the secret manager's logic, and their classes on a stand-in base (LiteLLM is not installed here)."""

from __future__ import annotations

import asyncio
import os
import sys
import types
import unittest

from provider_credentials import KeyResolver, NoKey
from provider_credentials._gen import credentials_pb2 as pb

from .support import SEED, Admin, env

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "litellm"))

import provider_credentials_litellm as logic  # noqa: E402
from custom_callbacks import ProviderCredentialsHook  # noqa: E402
from secret_manager import ProviderCredentialsSecretManager  # noqa: E402


class ProviderError(Exception):
    """Like LiteLLM's exceptions: a message and a status_code."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def caller(team_id=None, org_id=None, team_metadata=None):
    """What LiteLLM passes as user_api_key_dict (UserAPIKeyAuth): the attributes the hook reads."""
    return types.SimpleNamespace(team_id=team_id, org_id=org_id, team_metadata=team_metadata, metadata={})


class LiteLLMTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.admin = Admin()
        cls.keys = KeyResolver(env("PC_URL"), env("PC_RESOLVE_TOKEN"), watch=False, max_staleness_ms=0)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.keys.close()
        cls.admin.close()

    def test_provider_for_model(self) -> None:
        cases = {
            "openai/gpt-4o": "openai",
            "gpt-4o-mini": "openai",
            "o3-mini": "openai",
            "text-embedding-3-small": "openai",
            "anthropic/claude-3-5-sonnet-latest": "anthropic",
            "claude-3-haiku": "anthropic",
            "gemini/gemini-2.0-flash": "gemini",
            "gemini-1.5-pro": "gemini",
            "fireworks_ai/accounts/fireworks/models/llama-v3-70b": "fireworks",
            "accounts/fireworks/models/llama-v3-70b": "fireworks",
            "azure/gpt-4o": None,
            "vertex_ai/gemini-pro": None,
            "bedrock/anthropic.claude-3": None,
            "ollama/llama3": None,
            "my-alias": None,
            "": None,
        }
        self.assertEqual({m: logic.provider_for_model(m) for m in cases}, cases)
        self.assertEqual(logic.provider_for_model("my-alias", {"my-alias": "anthropic"}), "anthropic")
        self.assertEqual(logic.aliases_from_env({"PROVIDER_CREDENTIALS_MODEL_PROVIDERS": "fast=Anthropic, smart=openai,bad"}), {"fast": "anthropic", "smart": "openai"})

    def test_pre_call_hook_sets_the_teams_key_and_api_base(self) -> None:
        hook = ProviderCredentialsHook(resolver=self.keys, default_organization="", aliases={})
        data = {"model": "openai/gpt-4o", "messages": [], "metadata": {"user": "u1"}}
        out = asyncio.run(hook.async_pre_call_hook(caller(team_id=SEED["team_id"]), None, data, "completion"))
        self.assertEqual(out["api_key"], SEED["openai_key"])
        self.assertEqual(out["api_base"], SEED["api_base"])
        self.assertEqual(out["metadata"], {"user": "u1", logic.METADATA_CREDENTIAL_ID: SEED["openai_credential_id"], logic.METADATA_FAILING: False})
        # By organisation, by metadata naming it, and the default organisation.
        for who in (caller(org_id=SEED["organization_id"]), caller(team_id="litellm-uuid", team_metadata={logic.METADATA_ORGANIZATION: SEED["organization_id"]})):
            data = {"model": "gpt-4o"}
            asyncio.run(hook.async_pre_call_hook(who, None, data, "completion"))
            self.assertEqual(data["api_key"], SEED["openai_key"])
        defaulted = ProviderCredentialsHook(resolver=self.keys, default_organization=SEED["organization_id"], aliases={})
        data = {"model": "claude-3-5-sonnet"}
        asyncio.run(defaulted.async_pre_call_hook(caller(), None, data, "completion"))
        self.assertEqual(data["api_key"], env("PC_FALLBACK_KEY"))
        self.assertNotIn("api_base", data)

    def test_pre_call_hook_leaves_other_models_and_refuses_without_a_key(self) -> None:
        hook = ProviderCredentialsHook(resolver=self.keys, default_organization="", aliases={})
        data = {"model": "azure/gpt-4o", "api_key": "caller's own"}
        asyncio.run(hook.async_pre_call_hook(caller(team_id=SEED["team_id"]), None, data, "completion"))
        self.assertEqual(data, {"model": "azure/gpt-4o", "api_key": "caller's own"})
        data = {"model": "gpt-4o"}
        asyncio.run(hook.async_pre_call_hook(caller(), None, data, "completion"))
        self.assertEqual(data, {"model": "gpt-4o"}, "nobody to resolve for: left alone")
        with self.assertRaises(NoKey) as caught:
            asyncio.run(hook.async_pre_call_hook(caller(org_id=SEED["organization_id"]), None, {"model": "gemini/gemini-2.0-flash"}, "completion"))
        self.assertEqual(logic.http_status_for(caught.exception)[0], 403)

    def test_failure_kinds(self) -> None:
        cases = [
            (ProviderError("Incorrect API key provided", 401), "authentication"),
            (ProviderError("You exceeded your current quota (insufficient_quota)", 429), "quota"),
            (ProviderError("Your credit balance is too low", 400), "quota"),
            (ProviderError("payment required", 402), "quota"),
            (ProviderError("Rate limit reached", 429), "rate_limit"),
            (ProviderError("model not allowed", 403), "permission"),
            (ProviderError("overloaded", 529), None),
            (TimeoutError("timed out"), None),
        ]
        self.assertEqual([logic.failure_kind(e) for e, _ in cases], [k for _, k in cases])

    def test_failure_hook_reports_authentication_and_quota_only(self) -> None:
        org = self.admin.new_org()
        older_id, older_key = self.admin.add_key(org)
        newer_id, _ = self.admin.add_key(org)
        hook = ProviderCredentialsHook(resolver=self.keys, default_organization="", aliases={})

        async def failed_call(error: Exception) -> None:
            data = {"model": "gpt-4o"}
            await hook.async_pre_call_hook(caller(org_id=org), None, data, "completion")
            self.assertEqual(data["metadata"][logic.METADATA_CREDENTIAL_ID], newer_id)
            await hook.async_post_call_failure_hook(data, error, caller(org_id=org))

        # Rate limits are not reported; two authentication failures and a quota failure mark it failing.
        for error in (ProviderError("Rate limit reached", 429), ProviderError("bad key", 401), ProviderError("bad key", 401), ProviderError("insufficient_quota", 429)):
            asyncio.run(failed_call(error))
        data = {"model": "gpt-4o"}
        asyncio.run(hook.async_pre_call_hook(caller(org_id=org), None, data, "completion"))
        self.assertEqual((data["api_key"], data["metadata"][logic.METADATA_CREDENTIAL_ID]), (older_key, older_id))
        # The failing key works again (say, the provider's outage ended): reported once, used again.
        recovered = {"model": "gpt-4o", "metadata": {logic.METADATA_CREDENTIAL_ID: newer_id}}
        asyncio.run(hook.async_post_call_success_hook(recovered, caller(org_id=org), object()))
        data = {"model": "gpt-4o"}
        asyncio.run(hook.async_pre_call_hook(caller(org_id=org), None, data, "completion"))
        self.assertEqual(data["metadata"][logic.METADATA_CREDENTIAL_ID], newer_id)

    def test_secret_names(self) -> None:
        self.assertEqual(logic.parse_secret_name("provider-credentials/acme/openai"), {"organization_id": "acme", "provider": "openai"})
        self.assertEqual(logic.parse_secret_name("provider-credentials/team/platform/anthropic"), {"team_id": "platform", "provider": "anthropic"})
        for name in ("OPENAI_API_KEY", "provider-credentials/acme", "provider-credentials//openai", "provider-credentials/a/b/c", "provider-credentials/team//openai"):
            self.assertIsNone(logic.parse_secret_name(name), name)

    def test_secret_manager_reads_keys(self) -> None:
        manager = ProviderCredentialsSecretManager(resolver=self.keys)
        org, team = SEED["organization_id"], SEED["team_id"]
        self.assertEqual(manager.sync_read_secret(f"provider-credentials/{org}/openai"), SEED["openai_key"])
        self.assertEqual(asyncio.run(manager.async_read_secret(f"provider-credentials/team/{team}/openai")), SEED["openai_key"])
        self.assertEqual(manager.sync_read_secret(f"provider-credentials/{org}/anthropic"), env("PC_FALLBACK_KEY"))
        # Nothing to hand out, or not ours: None (LiteLLM then reports the secret missing), or the environment.
        self.assertIsNone(manager.sync_read_secret(f"provider-credentials/{org}/gemini"))
        self.assertIsNone(manager.sync_read_secret("provider-credentials/py-nobody/openai"))
        self.assertIsNone(manager.sync_read_secret(f"provider-credentials/{org}/mistral"))
        self.assertEqual(manager.sync_read_secret("PC_FALLBACK_KEY"), env("PC_FALLBACK_KEY"))
        # A deactivated key is gone at the next read.
        org2 = self.admin.new_org()
        credential_id, key = self.admin.add_key(org2)
        self.assertEqual(manager.sync_read_secret(f"provider-credentials/{org2}/openai"), key)
        self.admin.call(self.admin.credentials.DeactivateCredential, pb.DeactivateCredentialRequest(credential_id=credential_id))
        self.assertIsNone(manager.sync_read_secret(f"provider-credentials/{org2}/openai"))


if __name__ == "__main__":
    unittest.main()
