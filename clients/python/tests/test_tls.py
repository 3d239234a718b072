"""KeyResolver over TLS (trusting a private CA) and mutual TLS (with a client certificate)."""

from __future__ import annotations

import unittest

import grpc

from provider_credentials import KeyResolver, NotFound, TlsConfig, Unavailable
from provider_credentials._gen import credentials_pb2 as pb
from provider_credentials._gen import credentials_pb2_grpc as pb_grpc

from .support import env, fake_openai_key, target, unique


def seed(url: str, admin_token: str, credentials: grpc.ChannelCredentials) -> "tuple[str, str]":
    """An organisation with an OpenAI key, made over TLS with the admin token."""
    with grpc.secure_channel(target(url), credentials) as channel:
        metadata = (("authorization", f"Bearer {admin_token}"),)
        org, key = unique("tls-org"), fake_openai_key()
        pb_grpc.OrganizationServiceStub(channel).CreateOrganization(pb.CreateOrganizationRequest(organization_id=org, name=org), metadata=metadata, timeout=10)
        pb_grpc.CredentialServiceStub(channel).CreateCredential(
            pb.CreateCredentialRequest(organization_id=org, provider=pb.PROVIDER_OPENAI, credential_name="tls", api_key=key), metadata=metadata, timeout=10
        )
        return org, key


def ca() -> bytes:
    with open(env("PC_TLS_CA"), "rb") as handle:
        return handle.read()


class TlsTest(unittest.TestCase):
    def test_resolves_over_tls_trusting_the_ca(self) -> None:
        url, token = env("PC_TLS_URL"), env("PC_TLS_ADMIN_TOKEN")
        org, key = seed(url, token, grpc.ssl_channel_credentials(ca()))
        with KeyResolver(url, token, tls=TlsConfig(ca=env("PC_TLS_CA"))) as keys:
            self.assertEqual(keys.resolve(organization_id=org, provider="openai").api_key, key)
            self.assertTrue(keys.wait_until_live(10), keys.stats()["stream_error"])

    def test_refuses_cleartext_and_an_untrusted_certificate(self) -> None:
        url, token = env("PC_TLS_URL"), env("PC_TLS_ADMIN_TOKEN")
        for options in ({"tls": False}, {}):  # cleartext; TLS trusting only the system's roots
            with KeyResolver(url, token, watch=False, timeout_ms=3000, **options) as keys:
                with self.assertRaises(Unavailable):
                    keys.resolve(organization_id="any", provider="openai")

    def test_resolves_over_mutual_tls_with_a_client_certificate(self) -> None:
        url, token = env("PC_MTLS_URL"), env("PC_MTLS_ADMIN_TOKEN")
        tls = TlsConfig(ca=env("PC_TLS_CA"), cert=env("PC_CLIENT_CERT"), key=env("PC_CLIENT_KEY"))
        org, key = seed(url, token, tls.credentials())
        with KeyResolver(url, token, tls=tls) as keys:
            self.assertEqual(keys.resolve(organization_id=org, provider="openai").api_key, key)
            with self.assertRaises(NotFound):
                keys.resolve(organization_id="py-tls-nobody", provider="openai")
            self.assertTrue(keys.wait_until_live(10), keys.stats()["stream_error"])

    def test_mutual_tls_refuses_a_client_without_a_certificate(self) -> None:
        with KeyResolver(env("PC_MTLS_URL"), env("PC_MTLS_ADMIN_TOKEN"), tls=TlsConfig(ca=env("PC_TLS_CA")), watch=False, timeout_ms=3000) as keys:
            with self.assertRaises(Unavailable):
                keys.resolve(organization_id="any", provider="openai")
        with self.assertRaises(ValueError):
            TlsConfig(ca=env("PC_TLS_CA"), cert=env("PC_CLIENT_CERT"))


if __name__ == "__main__":
    unittest.main()
