"""KeyResolver.resolve, report_failure and report_success against the running service: every
resolution case, the typed errors, thread and asyncio use, and that a key is never shown."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
import unittest
import uuid

from provider_credentials import (
    Closed,
    InvalidArgument,
    KeyResolver,
    NoKey,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from provider_credentials._gen import credentials_pb2 as pb

from .support import SEED, Admin, CapturedLogs, env


def resolver(**options) -> KeyResolver:
    """Without the change stream and with no staleness: every call asks the service, so these
    tests see the service's answers whatever the stream does (tests/test_stream.py covers it)."""
    options.setdefault("watch", False)
    options.setdefault("max_staleness_ms", 0)
    return KeyResolver(env("PC_URL"), env("PC_RESOLVE_TOKEN"), **options)


class ResolveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.admin = Admin()
        cls.keys = resolver()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.keys.close()
        cls.admin.close()

    def test_organization(self) -> None:
        r = self.keys.resolve(organization_id=SEED["organization_id"], provider="openai")
        self.assertEqual(r.api_key, SEED["openai_key"])
        self.assertEqual(r.api_base, SEED["api_base"])
        self.assertEqual(r.credential_id, SEED["openai_credential_id"])
        self.assertEqual(r.source, "organization")
        self.assertFalse(r.failing)
        self.assertEqual(r.organization_id, SEED["organization_id"])
        self.assertEqual(r.provider, "openai")

    def test_team(self) -> None:
        r = self.keys.resolve(team_id=SEED["team_id"], provider="PROVIDER_OPENAI")
        self.assertEqual((r.api_key, r.credential_id, r.organization_id), (SEED["openai_key"], SEED["openai_credential_id"], SEED["organization_id"]))

    def test_environment_fallback(self) -> None:
        r = self.keys.resolve(organization_id=SEED["organization_id"], provider="anthropic")
        self.assertEqual(r.api_key, env("PC_FALLBACK_KEY"))
        self.assertEqual(r.source, "environment")
        self.assertIsNone(r.credential_id)
        self.assertIsNone(r.api_base)

    def test_no_key(self) -> None:
        with self.assertRaises(NoKey) as caught:
            self.keys.resolve(organization_id=SEED["organization_id"], provider="gemini")
        self.assertEqual(caught.exception.code.name, "FAILED_PRECONDITION")

    def test_unknown_organization_and_team(self) -> None:
        with self.assertRaises(NotFound) as caught:
            self.keys.resolve(organization_id="py-no-such-org", provider="openai")
        self.assertIn("py-no-such-org", str(caught.exception))
        with self.assertRaises(NotFound):
            self.keys.resolve(team_id="py-no-such-team", provider="openai")

    def test_failing_credential_and_reports(self) -> None:
        org = self.admin.new_org()
        older_id, older_key = self.admin.add_key(org)
        newer_id, newer_key = self.admin.add_key(org)
        self.assertEqual(self.keys.resolve(organization_id=org, provider="openai").credential_id, newer_id)
        # Rate limits are recorded only; authentication and quota failures count, the third marks it failing.
        self.assertEqual(self.keys.report_failure(newer_id, "rate_limit").failure_streak, 0)
        streaks = [self.keys.report_failure(newer_id, kind) for kind in ("authentication", "FAILURE_KIND_AUTHENTICATION", pb.FAILURE_KIND_QUOTA)]
        self.assertEqual([(s.failure_streak, s.failing) for s in streaks], [(1, False), (2, False), (3, True)])
        # Skipped while a healthy one exists.
        r = self.keys.resolve(organization_id=org, provider="openai")
        self.assertEqual((r.credential_id, r.api_key, r.failing), (older_id, older_key, False))
        # The only active credential: handed out anyway, marked failing.
        self.admin.call(self.admin.credentials.DeactivateCredential, pb.DeactivateCredentialRequest(credential_id=older_id))
        r = self.keys.resolve(organization_id=org, provider="openai")
        self.assertEqual((r.credential_id, r.api_key, r.failing), (newer_id, newer_key, True))
        # A success clears the mark; duplicates and unknown ids are ignored.
        self.assertEqual(self.keys.report_success([newer_id, newer_id, str(uuid.uuid4())]), 1)
        r = self.keys.resolve(organization_id=org, provider="openai")
        self.assertEqual((r.credential_id, r.failing), (newer_id, False))
        self.assertEqual(self.keys.report_success([]), 0)

    def test_report_errors(self) -> None:
        with self.assertRaises(NotFound):
            self.keys.report_failure(str(uuid.uuid4()), "authentication")
        with self.assertRaises(InvalidArgument) as caught:
            self.keys.report_failure(SEED["openai_credential_id"], "teapot")
        self.assertTrue(str(caught.exception).startswith("kind: "))
        with self.assertRaises(InvalidArgument):
            self.keys.report_failure("", "quota")

    def test_bad_input_is_refused_before_calling(self) -> None:
        for kwargs, field in (
            ({"organization_id": "a", "team_id": "b"}, "organization_id"),
            ({}, "organization_id"),
            ({"organization_id": ""}, "organization_id"),
            ({"organization_id": "acme", "provider": "mistral"}, "provider"),
            ({"organization_id": "acme", "provider": 0}, "provider"),
        ):
            with self.assertRaises(InvalidArgument) as caught:
                self.keys.resolve(**kwargs)
            self.assertTrue(str(caught.exception).startswith(f"{field}: "), str(caught.exception))
        for url in ("", "ftp://127.0.0.1:1", "http://127.0.0.1:1/path"):
            with self.assertRaises(InvalidArgument):
                KeyResolver(url, "pct_x", watch=False)
        with self.assertRaises(InvalidArgument):
            KeyResolver(env("PC_URL"), "", watch=False)

    def test_service_rejects_bad_input_with_the_field(self) -> None:
        with self.assertRaises(InvalidArgument) as caught:
            self.keys.resolve(organization_id="not an id!", provider="openai")
        self.assertTrue(str(caught.exception).startswith("organization_id: "), str(caught.exception))

    def test_bad_token_is_permission_denied(self) -> None:
        with KeyResolver(env("PC_URL"), "pct_" + "x" * 43, watch=False, max_staleness_ms=0) as keys:
            with self.assertRaises(PermissionDenied):
                keys.resolve(organization_id=SEED["organization_id"], provider="openai")
            with self.assertRaises(PermissionDenied):
                keys.report_success([SEED["openai_credential_id"]])

    def test_unreachable_service_is_unavailable(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with KeyResolver(f"http://127.0.0.1:{port}", "pct_x", watch=False, timeout_ms=1500) as keys:
            started = time.monotonic()
            with self.assertRaises(Unavailable):
                keys.resolve(organization_id="acme", provider="openai")
            self.assertLess(time.monotonic() - started, 10)

    def test_a_key_is_never_shown(self) -> None:
        with CapturedLogs() as logs:
            r = self.keys.resolve(organization_id=SEED["organization_id"], provider="openai")
            key = r.api_key
            for text in (repr(r), str(r), f"{r}", repr(self.keys), str(self.keys.stats()), repr([r])):
                self.assertNotIn(key, text)
                self.assertNotIn(key[-8:], text)
            self.assertIn("api_key=<hidden>", repr(r))
            with self.assertRaises(TypeError):
                pickle.dumps(r)
            with self.assertRaises(AttributeError):
                r.api_key = "changed"  # type: ignore[misc]
            with self.assertRaises(TypeError):
                vars(r)
        self.assertNotIn(key, logs.text)

    def test_threads_share_one_resolver(self) -> None:
        errors: list = []
        seen: set = set()

        def work() -> None:
            try:
                for _ in range(50):
                    seen.add(self.keys.resolve(team_id=SEED["team_id"], provider="openai").credential_id)
            except Exception as error:  # noqa: BLE001 - collected for the assertion
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(seen, {SEED["openai_credential_id"]})

    def test_asyncio(self) -> None:
        async def main() -> None:
            async with KeyResolver(env("PC_URL"), env("PC_RESOLVE_TOKEN"), watch=False, max_staleness_ms=0) as keys:
                results = await asyncio.gather(*(keys.aresolve(organization_id=SEED["organization_id"], provider="openai") for _ in range(20)))
                self.assertEqual({r.api_key for r in results}, {SEED["openai_key"]})
                with self.assertRaises(NoKey):
                    await keys.aresolve(organization_id=SEED["organization_id"], provider="gemini")
                self.assertEqual(await keys.areport_success([SEED["openai_credential_id"]]), 0)
                with self.assertRaises(NotFound):
                    await keys.areport_failure(str(uuid.uuid4()), "quota")

        asyncio.run(main())

    def test_without_the_stream_an_answer_lives_max_staleness(self) -> None:
        org = self.admin.new_org()
        credential_id, key = self.admin.add_key(org)
        with KeyResolver(env("PC_URL"), env("PC_RESOLVE_TOKEN"), watch=False, max_staleness_ms=400) as keys:
            self.assertEqual(keys.resolve(organization_id=org, provider="openai").api_key, key)
            self.admin.call(self.admin.credentials.DeactivateCredential, pb.DeactivateCredentialRequest(credential_id=credential_id))
            before = keys.stats()["hits"]
            # Within the limit: the cached answer (no stream to say otherwise).
            self.assertEqual(keys.resolve(organization_id=org, provider="openai").api_key, key)
            self.assertEqual(keys.stats()["hits"], before + 1)
            time.sleep(0.5)
            # Past it: the service's answer.
            with self.assertRaises(NoKey):
                keys.resolve(organization_id=org, provider="openai")

    def test_max_entries(self) -> None:
        with KeyResolver(env("PC_URL"), env("PC_RESOLVE_TOKEN"), watch=False, max_staleness_ms=60_000, max_entries=2) as keys:
            for provider in ("openai", "anthropic"):
                keys.resolve(organization_id=SEED["organization_id"], provider=provider)
            keys.resolve(team_id=SEED["team_id"], provider="openai")
            self.assertEqual(keys.stats()["entries"], 2)

    def test_closed(self) -> None:
        keys = resolver()
        keys.close()
        keys.close()
        with self.assertRaises(Closed):
            keys.resolve(organization_id=SEED["organization_id"], provider="openai")


if __name__ == "__main__":
    unittest.main()
