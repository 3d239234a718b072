"""The cache and the change stream (WatchResolutions) against the running service: answers come
from memory, every kind of change drops the answers it can alter (and only those), and while the
stream is down a cached answer is served for at most max_staleness_ms."""

from __future__ import annotations

import time
import unittest

from provider_credentials import Change, KeyResolver, NoKey, NotFound, PermissionDenied, Unavailable
from provider_credentials._gen import credentials_pb2 as pb

from .support import Admin, Proxy, create_resolve_token, env, eventually, revoke_token, target, unique

# How long a change may take to reach the client: a correctness bound, not a performance figure.
CHANGE_SEEN_WITHIN = 5.0


class StreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.admin = Admin()
        cls.events: "list[Change]" = []
        cls.keys = KeyResolver(env("PC_URL"), env("PC_RESOLVE_TOKEN"), max_staleness_ms=0, reconnect_max_ms=500, on_change=cls.events.append)
        if not cls.keys.wait_until_live(10):
            stats = cls.keys.stats()
            cls.keys.close()
            raise AssertionError(f"the change stream did not come up: {stats['stream_error']}")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.keys.close()
        cls.admin.close()

    def hits(self) -> int:
        return int(self.keys.stats()["hits"])

    def wait_event(self, since: int = 0, **fields) -> Change:
        """The first change the stream reported with these fields, from the `since`-th on (waiting for it)."""

        def found():
            return next((e for e in list(self.events)[since:] if all(getattr(e, k) == v for k, v in fields.items())), None)

        self.assertTrue(eventually(lambda: found() is not None, CHANGE_SEEN_WITHIN), f"no change {fields} reached the client")
        return found()  # type: ignore[return-value]

    def barrier(self) -> None:
        """Returns once every change made before it has reached the client: the stream delivers
        changes in order, so when a new one arrives, the earlier ones have."""
        org = self.admin.new_org()
        self.admin.add_key(org)
        self.wait_event(organization_id=org)

    def assert_cached(self, **scope) -> "object":
        """Resolves until an answer comes from memory. (An answer asked for while a change that
        covers it was on its way is not kept: the change set up just before may arrive after.)"""
        answer = self.keys.resolve(**scope)
        for _ in range(100):
            before = self.hits()
            again = self.keys.resolve(**scope)
            if self.hits() == before + 1:
                self.assertIs(again, answer)
                return again
            answer = again
            time.sleep(0.01)
        self.fail("the answer never came from memory")

    def assert_becomes(self, predicate, **scope) -> None:
        """The resolution (or its error) satisfies `predicate` within CHANGE_SEEN_WITHIN."""

        def check() -> bool:
            try:
                return bool(predicate(self.keys.resolve(**scope)))
            except Exception as error:  # noqa: BLE001 - errors are answers too
                return bool(predicate(error))

        self.assertTrue(eventually(check, CHANGE_SEEN_WITHIN), "the change never reached the client")

    def deactivate(self, credential_id: str) -> None:
        self.admin.call(self.admin.credentials.DeactivateCredential, pb.DeactivateCredentialRequest(credential_id=credential_id))

    def test_answers_come_from_memory(self) -> None:
        org = self.admin.new_org()
        self.admin.add_key(org)
        r = self.assert_cached(organization_id=org, provider="openai")
        self.assertEqual(r.source, "organization")
        self.assertTrue(self.keys.stream_live)

    def test_deactivated_credential(self) -> None:
        org = self.admin.new_org()
        credential_id, _ = self.admin.add_key(org)
        self.assert_cached(organization_id=org, provider="openai")
        self.deactivate(credential_id)
        self.assert_becomes(lambda r: isinstance(r, NoKey), organization_id=org, provider="openai")
        change = self.wait_event(organization_id=org, reason="credential")
        self.assertEqual((change.provider, change.all, change.team_id), ("openai", False, None))
        self.assertNotIn("sk-", repr(self.events))
        # Activated again: back.
        self.admin.call(self.admin.credentials.ActivateCredential, pb.ActivateCredentialRequest(credential_id=credential_id))
        self.assert_becomes(lambda r: getattr(r, "credential_id", None) == credential_id, organization_id=org, provider="openai")

    def test_new_credential_updated_api_base_and_deleted_credential(self) -> None:
        org = self.admin.new_org()
        team = self.admin.new_team(org)
        first_id, _ = self.admin.add_key(org)
        self.assert_cached(team_id=team, provider="openai")
        second_id, second_key = self.admin.add_key(org)
        self.assert_becomes(lambda r: getattr(r, "api_key", None) == second_key, team_id=team, provider="openai")
        self.assert_cached(team_id=team, provider="openai")
        self.admin.call(
            self.admin.credentials.UpdateCredential,
            pb.UpdateCredentialRequest(credential_id=second_id, api_key=second_key, api_base="https://gateway.example.test/v1"),
        )
        self.assert_becomes(lambda r: getattr(r, "api_base", None) == "https://gateway.example.test/v1", team_id=team, provider="openai")
        self.admin.call(self.admin.credentials.DeleteCredential, pb.DeleteCredentialRequest(credential_id=second_id))
        self.assert_becomes(lambda r: getattr(r, "credential_id", None) == first_id, team_id=team, provider="openai")

    def test_key_marked_failing_elsewhere(self) -> None:
        org = self.admin.new_org()
        older_id, _ = self.admin.add_key(org)
        newer_id, _ = self.admin.add_key(org)
        self.assertEqual(self.assert_cached(organization_id=org, provider="openai").credential_id, newer_id)
        # Another caller reports the failures (straight to the service, not through this client).
        for _ in range(3):
            self.admin.call(self.admin.credentials.ReportKeyFailure, pb.ReportKeyFailureRequest(credential_id=newer_id, kind=pb.FAILURE_KIND_AUTHENTICATION))
        self.assert_becomes(lambda r: getattr(r, "credential_id", None) == older_id, organization_id=org, provider="openai")
        self.wait_event(reason="key_health", organization_id=org)
        self.admin.call(self.admin.credentials.ReportKeySuccess, pb.ReportKeySuccessRequest(credential_ids=[newer_id]))
        self.assert_becomes(lambda r: getattr(r, "credential_id", None) == newer_id, organization_id=org, provider="openai")

    def test_selection_strategy_drops_that_provider_only(self) -> None:
        org = self.admin.new_org()
        self.admin.add_key(org)
        self.admin.add_key(org, provider=pb.PROVIDER_ANTHROPIC)
        self.barrier()
        self.assert_cached(organization_id=org, provider="openai")
        self.assert_cached(organization_id=org, provider="anthropic")
        self.admin.call(
            self.admin.credentials.SetSelectionStrategy,
            pb.SetSelectionStrategyRequest(organization_id=org, provider=pb.PROVIDER_OPENAI, strategy=pb.SELECTION_STRATEGY_ROUND_ROBIN),
        )
        self.wait_event(reason="selection_strategy", organization_id=org, provider="openai")
        before = self.hits()
        self.keys.resolve(organization_id=org, provider="anthropic")
        self.assertEqual(self.hits(), before + 1, "another provider's answer stays cached")
        self.keys.resolve(organization_id=org, provider="openai")
        self.assertEqual(self.hits(), before + 1, "the provider's answer was dropped")

    def test_team_deleted(self) -> None:
        org = self.admin.new_org()
        team = self.admin.new_team(org)
        self.admin.add_key(org)
        self.assert_cached(team_id=team, provider="openai")
        self.assert_cached(organization_id=org, provider="openai")
        self.admin.call(self.admin.organizations.DeleteTeam, pb.DeleteTeamRequest(team_id=team))
        self.assert_becomes(lambda r: isinstance(r, NotFound), team_id=team, provider="openai")
        self.assertEqual(self.wait_event(team_id=team).reason, "team")

    def test_rolled_credential_and_deleted_organization(self) -> None:
        org = self.admin.new_org()
        credential_id, _ = self.admin.add_key(org)
        self.assert_cached(organization_id=org, provider="openai")
        new_key = "sk-proj-rolled-" + unique("k")
        self.admin.call(self.admin.credentials.RollCredential, pb.RollCredentialRequest(credential_id=credential_id, api_key=new_key))
        self.assert_becomes(lambda r: getattr(r, "api_key", None) == new_key, organization_id=org, provider="openai")
        # An organisation with nothing left, whose answers came from the environment fallback.
        empty = self.admin.new_org()
        self.assertEqual(self.assert_cached(organization_id=empty, provider="anthropic").source, "environment")
        self.admin.call(self.admin.organizations.DeleteOrganization, pb.DeleteOrganizationRequest(organization_id=empty))
        self.assert_becomes(lambda r: isinstance(r, NotFound), organization_id=empty, provider="anthropic")
        self.wait_event(reason="organization", organization_id=empty)

    def test_other_organizations_changes_leave_answers_cached(self) -> None:
        org = self.admin.new_org()
        other = self.admin.new_org()
        self.admin.add_key(org)
        other_id, _ = self.admin.add_key(other)
        self.barrier()
        self.assert_cached(organization_id=org, provider="openai")
        self.assert_cached(organization_id=other, provider="openai")
        seen = len(self.events)
        self.deactivate(other_id)
        self.wait_event(seen, reason="credential", organization_id=other)
        before = self.hits()
        self.keys.resolve(organization_id=org, provider="openai")
        self.assertEqual(self.hits(), before + 1)
        with self.assertRaises(NoKey):
            self.keys.resolve(organization_id=other, provider="openai")

    def test_watching_some_organizations_caches_only_theirs(self) -> None:
        org = self.admin.new_org()
        other = self.admin.new_org()
        self.admin.add_key(org)
        self.admin.add_key(other)
        with KeyResolver(env("PC_URL"), env("PC_RESOLVE_TOKEN"), organization_ids=[org], max_staleness_ms=0) as keys:
            self.assertTrue(keys.wait_until_live(10))
            for _ in range(3):
                keys.resolve(organization_id=other, provider="openai")
            self.assertEqual(keys.stats()["hits"], 0, "an unwatched organisation is never served from memory")
            self.assertTrue(eventually(lambda: (keys.resolve(organization_id=org, provider="openai"), keys.stats()["hits"])[1] > 0, 3))

class StreamLossTest(unittest.TestCase):
    """Through a TCP proxy that can cut the client off the service."""

    def setUp(self) -> None:
        self.admin = Admin()
        self.proxy = Proxy(target(env("PC_URL")))

    def tearDown(self) -> None:
        self.proxy.close()
        self.admin.close()

    def live_resolver(self, token: str = "", **options) -> KeyResolver:
        options.setdefault("reconnect_min_ms", 50)
        options.setdefault("reconnect_max_ms", 300)
        options.setdefault("timeout_ms", 2000)
        keys = KeyResolver(self.proxy.url, token or env("PC_RESOLVE_TOKEN"), **options)
        self.addCleanup(keys.close)
        self.assertTrue(keys.wait_until_live(10), f"the change stream did not come up: {keys.stats()['stream_error']}")
        return keys

    def test_stale_limit_while_the_stream_is_down(self) -> None:
        org = self.admin.new_org()
        credential_id, key = self.admin.add_key(org)
        seen = []
        keys = self.live_resolver(max_staleness_ms=2000, on_change=seen.append)
        self.assertEqual(keys.resolve(organization_id=org, provider="openai").api_key, key)
        # A change elsewhere, so that the stream's last message is known to be after `heard_after`.
        heard_after = time.monotonic()
        other = self.admin.new_org()
        self.admin.add_key(other)
        self.assertTrue(eventually(lambda: any(c.organization_id == other for c in seen), 5))
        self.proxy.block()
        broke_at = time.monotonic()
        # The key is deactivated while the client cannot hear of it.
        self.deactivate(credential_id)
        self.assertTrue(eventually(lambda: not keys.stream_live, 3))
        # Within max_staleness_ms of the stream's last message the cached answer may still be served...
        if time.monotonic() - heard_after < 1.9:  # (a machine too busy to get here in time proves nothing)
            hits = keys.stats()["hits"]
            served = keys.resolve(organization_id=org, provider="openai")
            self.assertEqual((served.api_key, keys.stats()["hits"]), (key, hits + 1))
        # ...never after: then every call asks the service, which cannot be reached.
        time.sleep(max(0.0, 2.05 - (time.monotonic() - broke_at)))
        with self.assertRaises(Unavailable):
            keys.resolve(organization_id=org, provider="openai")
        # Back: the stream resumes (or starts afresh) and the answer is the service's.
        self.proxy.unblock()
        self.assertTrue(keys.wait_until_live(10), keys.stats())
        with self.assertRaises(NoKey):
            keys.resolve(organization_id=org, provider="openai")
        self.assertGreaterEqual(keys.stats()["reconnects"], 1)

    def deactivate(self, credential_id: str) -> None:
        self.admin.call(self.admin.credentials.DeactivateCredential, pb.DeactivateCredentialRequest(credential_id=credential_id))

    def test_zero_staleness_never_serves_from_memory_while_down(self) -> None:
        org = self.admin.new_org()
        self.admin.add_key(org)
        keys = self.live_resolver(max_staleness_ms=0)
        keys.resolve(organization_id=org, provider="openai")
        self.proxy.block()
        self.assertTrue(eventually(lambda: not keys.stream_live, 3))
        with self.assertRaises(Unavailable):
            keys.resolve(organization_id=org, provider="openai")

    def test_connection_cut_reconnects_and_hears_later_changes(self) -> None:
        org = self.admin.new_org()
        credential_id, _ = self.admin.add_key(org)
        keys = self.live_resolver(max_staleness_ms=60_000)
        keys.resolve(organization_id=org, provider="openai")
        self.proxy.cut()
        self.assertTrue(eventually(lambda: keys.stats()["reconnects"] >= 1 and keys.stream_live, 10))
        self.deactivate(credential_id)

        def gone() -> bool:
            try:
                keys.resolve(organization_id=org, provider="openai")
            except NoKey:
                return True
            return False

        self.assertTrue(eventually(gone, CHANGE_SEEN_WITHIN))

    def test_another_replica_cannot_resume_so_everything_is_dropped(self) -> None:
        org = self.admin.new_org()
        credential_id, key = self.admin.add_key(org)
        keys = self.live_resolver(max_staleness_ms=60_000)
        self.assertEqual(keys.resolve(organization_id=org, provider="openai").api_key, key)
        # The connection moves to another replica (as after a restart behind a load balancer):
        # its resume token means nothing there, so every cached answer goes.
        reconnects = keys.stats()["reconnects"]
        self.proxy.retarget(target(env("PC_REPLICA_URL")))
        self.assertTrue(eventually(lambda: keys.stats()["reconnects"] > reconnects and keys.stream_live, 10), keys.stats())
        self.assertEqual(keys.stats()["entries"], 0)
        self.assertEqual(keys.resolve(organization_id=org, provider="openai").api_key, key)
        # A change made through the first replica reaches the client through the second.
        self.deactivate(credential_id)

        def gone() -> bool:
            try:
                keys.resolve(organization_id=org, provider="openai")
            except NoKey:
                return True
            return False

        self.assertTrue(eventually(gone, CHANGE_SEEN_WITHIN))

    def test_token_revoked_while_connected(self) -> None:
        org = self.admin.new_org()
        self.admin.add_key(org)
        name = unique("tok")
        keys = self.live_resolver(create_resolve_token(self.admin, name), max_staleness_ms=300)
        keys.resolve(organization_id=org, provider="openai")
        revoke_token(self.admin, name)

        def refused() -> bool:
            try:
                keys.resolve(organization_id=org, provider="openai")
            except PermissionDenied:
                return True
            return False

        # The stream ends, the cached answer outlives it by at most 300 ms, then the service refuses.
        self.assertTrue(eventually(refused, CHANGE_SEEN_WITHIN))
        self.assertFalse(keys.stream_live)
        self.assertIn(keys.stats()["stream_error"], ("PERMISSION_DENIED", "UNAUTHENTICATED"))


if __name__ == "__main__":
    unittest.main()
