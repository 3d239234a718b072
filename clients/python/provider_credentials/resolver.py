"""KeyResolver: ResolveKey answers from memory, kept right by the WatchResolutions change stream.

Caching guarantee: an answer is cached in memory and dropped when the change stream says that
the organisation's (or team's) resolutions for its provider may have changed. While the stream
is down (not yet connected, broken, refused, or silent for longer than `heartbeat_timeout_ms`),
cached answers are served for at most `max_staleness_ms` after the last message the stream
delivered; after that every call asks the service (0: never serve a cached answer while the
stream is down). The stream reconnects with back-off and its resume token; when the service
cannot tell what was missed, every cached answer is dropped, and when it refuses the token, at
once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections import OrderedDict, deque
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

import grpc

from ._gen import credentials_pb2 as pb
from ._gen import credentials_pb2_grpc as pb_grpc
from .errors import Closed, InvalidArgument, ProviderCredentialsError, from_rpc_error

__all__ = ["KeyResolver", "Resolution", "ReportResult", "Change", "TlsConfig", "PROVIDERS", "FAILURE_KINDS"]

log = logging.getLogger("provider_credentials")

#: Provider names accepted by `resolve` (also the enum names, e.g. "PROVIDER_OPENAI", or numbers).
PROVIDERS = {
    "openai": pb.PROVIDER_OPENAI,
    "anthropic": pb.PROVIDER_ANTHROPIC,
    "gemini": pb.PROVIDER_GEMINI,
    "fireworks": pb.PROVIDER_FIREWORKS,
}
_PROVIDER_NAMES = {value: name for name, value in PROVIDERS.items()}

#: Failure kinds accepted by `report_failure` (also the enum names, e.g. "FAILURE_KIND_QUOTA").
FAILURE_KINDS = {
    "authentication": pb.FAILURE_KIND_AUTHENTICATION,
    "permission": pb.FAILURE_KIND_PERMISSION,
    "rate_limit": pb.FAILURE_KIND_RATE_LIMIT,
    "quota": pb.FAILURE_KIND_QUOTA,
    "other": pb.FAILURE_KIND_OTHER,
}

# (epoch, everything, organization, team, provider, credential)
_Invalidation = Tuple[int, bool, Optional[str], Optional[str], Optional[int], Optional[str]]
_RECENT_INVALIDATIONS = 1024

_SOURCES = {pb.KEY_SOURCE_ORGANIZATION: "organization", pb.KEY_SOURCE_ENVIRONMENT: "environment"}
_MAX_SUCCESS_BATCH = 1000


class Resolution:
    """One ResolveKey answer. Immutable; `api_key` never appears in repr() or str()."""

    __slots__ = ("api_key", "api_base", "credential_id", "source", "failing", "organization_id", "provider")

    api_key: str
    #: The endpoint to call instead of the provider's default, or None.
    api_base: Optional[str]
    #: The credential handed out, or None when the key came from the service's environment.
    credential_id: Optional[str]
    #: "organization" or "environment".
    source: str
    #: True when the only active credential is marked failing and was handed out anyway.
    failing: bool
    organization_id: str
    #: "openai", "anthropic", "gemini" or "fireworks".
    provider: str

    def __init__(self, *, api_key: str, api_base: Optional[str], credential_id: Optional[str], source: str, failing: bool, organization_id: str, provider: str) -> None:
        for name, value in (
            ("api_key", api_key),
            ("api_base", api_base),
            ("credential_id", credential_id),
            ("source", source),
            ("failing", failing),
            ("organization_id", organization_id),
            ("provider", provider),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Resolution is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Resolution is immutable")

    def __repr__(self) -> str:
        return (
            f"Resolution(provider={self.provider!r}, source={self.source!r}, credential_id={self.credential_id!r}, "
            f"api_base={self.api_base!r}, failing={self.failing!r}, organization_id={self.organization_id!r}, api_key=<hidden>)"
        )

    __str__ = __repr__

    def __reduce__(self) -> None:  # a key has no business being pickled to disk or a queue
        raise TypeError("a Resolution carries a provider key and cannot be pickled")


_REASONS = {
    pb.CHANGE_REASON_UNSPECIFIED: "unspecified",
    pb.CHANGE_REASON_CREDENTIAL: "credential",
    pb.CHANGE_REASON_SELECTION_STRATEGY: "selection_strategy",
    pb.CHANGE_REASON_KEY_HEALTH: "key_health",
    pb.CHANGE_REASON_ORGANIZATION: "organization",
    pb.CHANGE_REASON_TEAM: "team",
    pb.CHANGE_REASON_ALL: "all",
}


class Change(NamedTuple):
    """A change the stream reported (passed to `on_change`). Never carries a key."""

    #: "credential", "selection_strategy", "key_health", "organization", "team", "all" or "unspecified".
    reason: str
    #: Every resolution may have changed.
    all: bool
    organization_id: Optional[str]
    #: "openai", ... when only that provider's resolutions changed.
    provider: Optional[str]
    team_id: Optional[str]


class ReportResult:
    """ReportKeyFailure's answer."""

    __slots__ = ("failure_streak", "failing")

    def __init__(self, failure_streak: int, failing: bool) -> None:
        self.failure_streak = failure_streak
        self.failing = failing

    def __repr__(self) -> str:
        return f"ReportResult(failure_streak={self.failure_streak}, failing={self.failing})"


def _read(value: Union[None, bytes, str, os.PathLike]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    with open(text, "rb") as handle:
        return handle.read()


class TlsConfig:
    """TLS to the service: `ca` to trust (default: the system's roots), and `cert` and `key` for
    mutual TLS. Each is PEM bytes, PEM text, or a file path."""

    def __init__(self, ca=None, cert=None, key=None, server_name: Optional[str] = None) -> None:
        if (cert is None) != (key is None):
            raise InvalidArgument("tls: give both cert and key for mutual TLS, or neither")
        self.ca = _read(ca)
        self.cert = _read(cert)
        self.key = _read(key)
        self.server_name = server_name

    def __repr__(self) -> str:
        return f"TlsConfig(ca={'set' if self.ca else None}, cert={'set' if self.cert else None}, key={'<hidden>' if self.key else None})"

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)


def _provider(provider: Union[str, int]) -> int:
    if isinstance(provider, int) and not isinstance(provider, bool):
        if provider in _PROVIDER_NAMES:
            return provider
    elif isinstance(provider, str):
        name = provider.strip().lower()
        if name.startswith("provider_"):
            name = name[len("provider_") :]
        if name in PROVIDERS:
            return PROVIDERS[name]
    raise InvalidArgument(f"provider: must be one of {', '.join(PROVIDERS)}, not {provider!r}")


def _failure_kind(kind: Union[str, int]) -> int:
    if isinstance(kind, int) and not isinstance(kind, bool):
        if kind in FAILURE_KINDS.values():
            return kind
    elif isinstance(kind, str):
        name = kind.strip().lower()
        if name.startswith("failure_kind_"):
            name = name[len("failure_kind_") :]
        if name in FAILURE_KINDS:
            return FAILURE_KINDS[name]
    raise InvalidArgument(f"kind: must be one of {', '.join(FAILURE_KINDS)}, not {kind!r}")


def _target(url: str) -> Tuple[str, Optional[bool]]:
    """The gRPC target for `url`, and whether its scheme asks for TLS (None: not said)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidArgument("url: is required, e.g. http://127.0.0.1:50051 or https://credentials.internal:50051")
    url = url.strip()
    for scheme, tls in (("https://", True), ("http://", False)):
        if url.lower().startswith(scheme):
            rest = url[len(scheme) :].rstrip("/")
            if not rest or "/" in rest:
                raise InvalidArgument(f"url: must be {scheme}host:port with no path")
            return rest, tls
    if "://" in url and not url.startswith("dns:") and not url.startswith("unix:"):
        raise InvalidArgument("url: the scheme must be http:// (cleartext HTTP/2) or https:// (TLS)")
    return url, None


# A cache key: (kind, id, provider), kind "o" (organisation) or "t" (team).
_Key = Tuple[str, str, int]


class _Entry:
    __slots__ = ("resolution", "asked_at")

    def __init__(self, resolution: Resolution, asked_at: float) -> None:
        self.resolution = resolution
        self.asked_at = asked_at


class KeyResolver:
    """Resolves provider keys for organisations and teams, from memory when it can.

    `url`: `http://host:port` (cleartext HTTP/2), `https://host:port` (TLS), or a bare gRPC
    target. `token`: an API token of scope `resolve` (or `admin`). `tls`: None (by the URL's
    scheme), True (the system's roots), False, a TlsConfig, or grpc.ChannelCredentials.
    `max_entries`: answers kept (least recently used dropped first). `max_staleness_ms`: how long
    a cached answer may be served while the change stream is down (0: never). `watch`: False to
    run without the change stream (every cached answer then lives `max_staleness_ms`).
    `organization_ids`: watch only these organisations' changes, and cache only their answers
    (others always ask the service); default: every organisation the token may see. `on_change`: called (on the stream's thread, after the cache applied it) with
    each Change the stream reports. Thread-safe: share one per process.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        tls: Union[None, bool, TlsConfig, grpc.ChannelCredentials] = None,
        max_entries: int = 10_000,
        max_staleness_ms: int = 5_000,
        timeout_ms: int = 5_000,
        heartbeat_timeout_ms: int = 6_000,
        reconnect_min_ms: int = 100,
        reconnect_max_ms: int = 5_000,
        watch: bool = True,
        organization_ids: Optional[Iterable[str]] = None,
        on_change: Optional[Callable[[Change], None]] = None,
        channel_options: Optional[List[Tuple[str, object]]] = None,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise InvalidArgument("token: is required (an API token of scope resolve)")
        if not isinstance(max_entries, int) or max_entries < 1:
            raise InvalidArgument("max_entries: must be a positive integer")
        if not isinstance(max_staleness_ms, (int, float)) or max_staleness_ms < 0:
            raise InvalidArgument("max_staleness_ms: must be 0 or more")
        if timeout_ms <= 0 or heartbeat_timeout_ms <= 0 or reconnect_min_ms <= 0 or reconnect_max_ms < reconnect_min_ms:
            raise InvalidArgument("timeout_ms, heartbeat_timeout_ms, reconnect_min_ms, reconnect_max_ms: must be positive, min <= max")
        target, scheme_tls = _target(url)
        self._target = target
        self._metadata = (("authorization", f"Bearer {token.strip()}"),)
        self._max_entries = max_entries
        self._max_staleness = max_staleness_ms / 1000.0
        self._timeout = timeout_ms / 1000.0
        self._heartbeat_timeout = heartbeat_timeout_ms / 1000.0
        self._reconnect_min = reconnect_min_ms / 1000.0
        self._reconnect_max = reconnect_max_ms / 1000.0
        self._organization_ids = sorted(set(organization_ids or []))
        self._watched = frozenset(self._organization_ids)
        self._on_change = on_change

        options = [
            ("grpc.primary_user_agent", "provider-credentials-python/0.1"),
            # Reconnect within seconds after a restart, not grpc's two minutes.
            # (Not grpc.min_reconnect_backoff_ms: it is also the connection attempt's timeout.)
            ("grpc.initial_reconnect_backoff_ms", reconnect_min_ms),
            ("grpc.max_reconnect_backoff_ms", reconnect_max_ms),
            # After a failed connection grpc looks the name up again, by default at most every 30 s
            # (with every call failing meanwhile): a replica that restarted would be unreachable that long.
            ("grpc.dns_min_time_between_resolutions_ms", reconnect_min_ms),
        ]
        use_tls = scheme_tls if tls is None else tls
        if isinstance(use_tls, TlsConfig) and use_tls.server_name:
            options.append(("grpc.ssl_target_name_override", use_tls.server_name))
        options.extend(channel_options or [])
        if isinstance(use_tls, grpc.ChannelCredentials):
            self._channel = grpc.secure_channel(target, use_tls, options=options)
        elif isinstance(use_tls, TlsConfig):
            self._channel = grpc.secure_channel(target, use_tls.credentials(), options=options)
        elif use_tls:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.CredentialServiceStub(self._channel)

        self._lock = threading.Lock()
        self._cache: "OrderedDict[_Key, _Entry]" = OrderedDict()
        self._by_organization: Dict[str, Set[_Key]] = {}
        self._by_team: Dict[str, Set[_Key]] = {}
        # Bumped by every invalidation, which is also logged: an answer asked for before an
        # invalidation that covers it is not stored after it (it may predate the change).
        self._epoch = 0
        self._recent: "deque[_Invalidation]" = deque(maxlen=_RECENT_INVALIDATIONS)
        # The stream: live after its snapshot until it fails; `_synced_at` is when its last message came.
        self._live = False
        self._synced_at = float("-inf")
        self._resume_token = ""
        self._call = None
        self._call_started_at = 0.0
        self._stream_error: Optional[str] = None
        self._closed = threading.Event()
        self._stats = {"hits": 0, "misses": 0, "invalidations": 0, "reconnects": 0}
        self._threads: List[threading.Thread] = []
        self._watching = watch
        if watch:
            for name, run in (("watch", self._watch_loop), ("watchdog", self._watchdog_loop)):
                thread = threading.Thread(target=run, name=f"provider-credentials-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)

    # -- public API -------------------------------------------------------------------------------

    def resolve(self, *, organization_id: Optional[str] = None, team_id: Optional[str] = None, provider: Union[str, int] = "openai") -> Resolution:
        """The key for an organisation's (or a team's) call to `provider`: from memory when the
        cached answer is current, else from the service. Raises NotFound, NoKey,
        PermissionDenied, Unavailable, InvalidArgument."""
        key = self._key(organization_id, team_id, provider)
        hit = self._cached(key)
        if hit is not None:
            return hit
        return self._fetch(key)

    async def aresolve(self, *, organization_id: Optional[str] = None, team_id: Optional[str] = None, provider: Union[str, int] = "openai") -> Resolution:
        """`resolve` for asyncio: a cached answer at once, a call to the service in a worker thread."""
        key = self._key(organization_id, team_id, provider)
        hit = self._cached(key)
        if hit is not None:
            return hit
        return await asyncio.get_running_loop().run_in_executor(None, self._fetch, key)

    def report_failure(self, credential_id: str, kind: Union[str, int]) -> ReportResult:
        """Reports that a call made with the credential failed: kind "authentication" (HTTP 401)
        or "quota" (out of credit) count towards marking it failing; "permission", "rate_limit"
        and "other" are recorded only."""
        if not isinstance(credential_id, str) or not credential_id:
            raise InvalidArgument("credential_id: is required")
        request = pb.ReportKeyFailureRequest(credential_id=credential_id, kind=_failure_kind(kind))
        response = self._unary(self._stub.ReportKeyFailure, request)
        if response.failing:
            # Marked failing: the next call should get another credential, whatever the stream says.
            self._drop_credential(credential_id)
        return ReportResult(response.failure_streak, response.failing)

    async def areport_failure(self, credential_id: str, kind: Union[str, int]) -> ReportResult:
        return await asyncio.get_running_loop().run_in_executor(None, self.report_failure, credential_id, kind)

    def report_success(self, credential_ids: Iterable[str]) -> int:
        """Reports that calls made with these credentials succeeded (resets their failure streaks,
        clears the failing mark); sent in batches of 1000. Returns how many recovered."""
        ids = [i for i in dict.fromkeys(credential_ids) if i]
        recovered = 0
        for start in range(0, len(ids), _MAX_SUCCESS_BATCH):
            request = pb.ReportKeySuccessRequest(credential_ids=ids[start : start + _MAX_SUCCESS_BATCH])
            recovered += self._unary(self._stub.ReportKeySuccess, request).recovered
        return recovered

    async def areport_success(self, credential_ids: Iterable[str]) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self.report_success, list(credential_ids))

    def invalidate(self) -> None:
        """Drops every cached answer."""
        with self._lock:
            self._clear_locked()

    @property
    def stream_live(self) -> bool:
        """Whether the change stream is connected, past its snapshot, and not silent for too long."""
        return self._live and time.monotonic() - self._synced_at <= self._heartbeat_timeout

    def stats(self) -> Dict[str, object]:
        """Counters for monitoring: cache hits and misses, invalidations, reconnects, entries,
        whether the stream is live and its last error (a gRPC code name)."""
        with self._lock:
            return dict(self._stats, entries=len(self._cache), stream_live=self.stream_live, stream_error=self._stream_error)

    def wait_until_live(self, timeout: float = 5.0) -> bool:
        """Blocks until the change stream is live (or `timeout` seconds pass); returns whether it is."""
        deadline = time.monotonic() + timeout
        while not self.stream_live:
            if time.monotonic() >= deadline or self._closed.is_set():
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stops the change stream and closes the connection. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            call = self._call
            self._live = False
            self._clear_locked()
        if call is not None:
            call.cancel()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        self._channel.close()

    def __enter__(self) -> "KeyResolver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "KeyResolver":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __repr__(self) -> str:
        return f"KeyResolver(target={self._target!r}, stream_live={self.stream_live}, entries={len(self._cache)})"

    # -- the cache --------------------------------------------------------------------------------

    @staticmethod
    def _key(organization_id: Optional[str], team_id: Optional[str], provider: Union[str, int]) -> _Key:
        if (organization_id is None) == (team_id is None):
            raise InvalidArgument("organization_id: give exactly one of organization_id and team_id")
        scope = organization_id if organization_id is not None else team_id
        if not isinstance(scope, str) or not scope:
            field = "organization_id" if organization_id is not None else "team_id"
            raise InvalidArgument(f"{field}: must be a non-empty string")
        return ("o" if organization_id is not None else "t", scope, _provider(provider))

    def _cached(self, key: _Key) -> Optional[Resolution]:
        if self._closed.is_set():
            raise Closed("the KeyResolver is closed")
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                self._stats["misses"] += 1
                return None
            now = time.monotonic()
            synced = self._synced_at
            if not (self._live and now - synced <= self._heartbeat_timeout):
                # The stream is down: serve for at most max_staleness after its last message (a change
                # may have been missed since then), however recently the answer was asked for.
                # Without a stream, each answer lives max_staleness from when it was asked for.
                if now - (synced if self._watching else entry.asked_at) > self._max_staleness:
                    self._stats["misses"] += 1
                    return None
            self._cache.move_to_end(key)
            self._stats["hits"] += 1
            return entry.resolution

    def _fetch(self, key: _Key) -> Resolution:
        kind, scope, provider = key
        with self._lock:
            epoch = self._epoch
        asked_at = time.monotonic()
        request = pb.ResolveKeyRequest(provider=provider)
        if kind == "o":
            request.organization_id = scope
        else:
            request.team_id = scope
        response = self._unary(self._stub.ResolveKey, request)
        resolution = Resolution(
            api_key=response.api_key,
            api_base=response.api_base if response.HasField("api_base") and response.api_base else None,
            credential_id=response.credential_id if response.HasField("credential_id") else None,
            source=_SOURCES.get(response.source, "unknown"),
            failing=response.failing,
            organization_id=response.organization_id,
            provider=_PROVIDER_NAMES[provider],
        )
        with self._lock:
            # Not stored when something that covers it changed while we asked: it may predate the change.
            # An organisation the stream does not watch is never cached: nothing would say when it changed.
            watched = not self._watched or response.organization_id in self._watched
            if watched and not self._closed.is_set() and not self._invalidated_since_locked(epoch, key, resolution):
                self._store_locked(key, _Entry(resolution, asked_at), response.organization_id)
        return resolution

    def _invalidated_since_locked(self, epoch: int, key: _Key, resolution: Resolution) -> bool:
        if self._epoch == epoch:
            return False
        if not self._recent or self._recent[0][0] > epoch + 1:
            return True  # the log no longer reaches back that far
        for at, everything, organization, team, provider, credential in reversed(self._recent):
            if at <= epoch:
                break
            if everything or (credential is not None and credential == resolution.credential_id):
                return True
            if organization == resolution.organization_id and (provider is None or provider == key[2]):
                return True
            if team is not None and key[0] == "t" and key[1] == team:
                return True
        return False

    def _log_invalidation_locked(self, everything: bool = False, organization: Optional[str] = None, team: Optional[str] = None, provider: Optional[int] = None, credential: Optional[str] = None) -> None:
        self._epoch += 1
        self._stats["invalidations"] += 1
        self._recent.append((self._epoch, everything, organization, team, provider, credential))

    def _store_locked(self, key: _Key, entry: _Entry, organization_id: str) -> None:
        self._remove_locked([key])
        self._cache[key] = entry
        self._by_organization.setdefault(organization_id, set()).add(key)
        if key[0] == "t":
            self._by_team.setdefault(key[1], set()).add(key)
        while len(self._cache) > self._max_entries:
            self._remove_locked([next(iter(self._cache))])

    def _remove_locked(self, keys: Iterable[_Key]) -> None:
        for key in list(keys):
            entry = self._cache.pop(key, None)
            if entry is None:
                continue
            for index, name in ((self._by_organization, entry.resolution.organization_id), (self._by_team, key[1] if key[0] == "t" else None)):
                bucket = index.get(name) if name is not None else None
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del index[name]

    def _clear_locked(self) -> None:
        self._log_invalidation_locked(everything=True)
        self._cache.clear()
        self._by_organization.clear()
        self._by_team.clear()

    def _drop_credential(self, credential_id: str) -> None:
        with self._lock:
            self._log_invalidation_locked(credential=credential_id)
            self._remove_locked([k for k, e in self._cache.items() if e.resolution.credential_id == credential_id])

    def _apply_change(self, change: "pb.ResolutionChange") -> None:
        with self._lock:
            if change.all or change.reason == pb.CHANGE_REASON_ALL or (not change.organization_id and not change.team_id):
                self._clear_locked()
                return
            provider = change.provider if change.HasField("provider") and change.provider else None
            team = change.team_id if change.HasField("team_id") and change.team_id else None
            doomed: Set[_Key] = set()
            if team is not None:
                # A team's change (its deletion) alters only that team's resolutions.
                self._log_invalidation_locked(team=team, provider=provider)
                doomed.update(self._by_team.get(team, ()))
            else:
                self._log_invalidation_locked(organization=change.organization_id, provider=provider)
                doomed.update(self._by_organization.get(change.organization_id, ()))
            if provider is not None:
                doomed = {k for k in doomed if k[2] == provider}
            self._remove_locked(doomed)

    # -- calls --------------------------------------------------------------------------------------

    def _unary(self, method, request):
        if self._closed.is_set():
            raise Closed("the KeyResolver is closed")
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        except ValueError as error:  # grpc raises ValueError on a closed channel
            if self._closed.is_set():
                raise Closed("the KeyResolver is closed") from None
            raise ProviderCredentialsError(str(error)) from None

    # -- the change stream ----------------------------------------------------------------------

    def _mark_down(self) -> None:
        with self._lock:
            # `_synced_at` stays the time of the last message: changes after it may have been missed.
            self._live = False
            self._call = None

    def _watch_loop(self) -> None:
        delay = self._reconnect_min
        while not self._closed.is_set():
            request = pb.WatchResolutionsRequest(resume_token=self._resume_token, organization_ids=self._organization_ids)
            try:
                call = self._stub.WatchResolutions(request, metadata=self._metadata)
            except ValueError:  # closed channel
                break
            with self._lock:
                if self._closed.is_set():
                    call.cancel()
                    break
                self._call = call
                self._call_started_at = time.monotonic()
            try:
                for message in call:
                    now = time.monotonic()
                    event = message.WhichOneof("event")
                    with self._lock:
                        if event == "snapshot":
                            if not message.snapshot.resumed:
                                self._clear_locked()
                            self._live = True
                            self._stream_error = None
                        self._synced_at = now
                        if message.resume_token:
                            self._resume_token = message.resume_token
                    if event == "change":
                        self._apply_change(message.change)
                        if self._on_change is not None:
                            self._notify(message.change)
                    elif event == "snapshot":
                        delay = self._reconnect_min
                        log.debug("provider-credentials: change stream live (resumed=%s)", message.snapshot.resumed)
                # The service ended the stream without an error: reconnect at once.
                self._stream_error = "ENDED"
            except grpc.RpcError as error:
                code = error.code()
                previous, self._stream_error = self._stream_error, code.name if code is not None else "UNKNOWN"
                if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    # The token was revoked, expired or narrowed: nothing it fetched is served any more.
                    with self._lock:
                        self._clear_locked()
                # Once per state change, not once per retry.
                if not self._closed.is_set() and (self._live or previous != self._stream_error):
                    log.info("provider-credentials: change stream down (%s); cached answers served for at most %d ms", self._stream_error, int(self._max_staleness * 1000))
            finally:
                self._mark_down()
            if self._closed.is_set():
                break
            self._stats["reconnects"] += 1
            self._closed.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._reconnect_max)

    def _notify(self, change: "pb.ResolutionChange") -> None:
        provider = change.provider if change.HasField("provider") and change.provider else None
        try:
            self._on_change(  # type: ignore[misc]
                Change(
                    reason=_REASONS.get(change.reason, "unspecified"),
                    all=change.all or change.reason == pb.CHANGE_REASON_ALL,
                    organization_id=change.organization_id or None,
                    provider=_PROVIDER_NAMES.get(provider) if provider is not None else None,
                    team_id=change.team_id if change.HasField("team_id") and change.team_id else None,
                )
            )
        except Exception:  # noqa: BLE001 - a caller's callback must not stop the stream
            log.exception("provider-credentials: on_change callback failed")

    def _watchdog_loop(self) -> None:
        """Cancels a stream that went silent (no heartbeat) so that the loop reconnects."""
        interval = max(0.05, self._heartbeat_timeout / 4)
        while not self._closed.wait(interval):
            with self._lock:
                call = self._call
                last = self._synced_at if self._live else self._call_started_at
            if call is not None and time.monotonic() - last > self._heartbeat_timeout:
                log.info("provider-credentials: change stream silent for %d ms; reconnecting", int(self._heartbeat_timeout * 1000))
                self._mark_down()
                call.cancel()

