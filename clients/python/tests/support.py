"""What the Python client's tests share: the running service (from environment variables set by
test/integration/client-python.test.ts), administrator calls to set data up, fake keys, and a TCP
proxy that can cut the connection between a client and the service."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import socket
import threading
import time
import unittest
from typing import Callable, List, Optional

import grpc

from provider_credentials._gen import credentials_pb2 as pb
from provider_credentials._gen import credentials_pb2_grpc as pb_grpc


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise unittest.SkipTest(f"{name} is not set: run these tests through test/integration/client-python.test.ts")
    return value


URL = os.environ.get("PC_URL", "")
ADMIN_TOKEN = os.environ.get("PC_ADMIN_TOKEN", "")
RESOLVE_TOKEN = os.environ.get("PC_RESOLVE_TOKEN", "")
SEED = json.loads(os.environ.get("PC_SEED", "{}"))


def target(url: str) -> str:
    return url.split("://", 1)[-1]


def fake_openai_key() -> str:
    return "sk-proj-" + secrets.token_urlsafe(24)


def fake_anthropic_key() -> str:
    return "sk-ant-api03-" + secrets.token_urlsafe(24)


_seq = [0]


def unique(label: str) -> str:
    _seq[0] += 1
    return f"py-{label}-{_seq[0]}-{secrets.token_hex(3)}"


class Admin:
    """Administrator calls straight to the service (never through a proxy)."""

    def __init__(self) -> None:
        self.channel = grpc.insecure_channel(target(env("PC_URL")))
        self.credentials = pb_grpc.CredentialServiceStub(self.channel)
        self.organizations = pb_grpc.OrganizationServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {env('PC_ADMIN_TOKEN')}"),)

    def close(self) -> None:
        self.channel.close()

    def call(self, method: Callable, request):
        return method(request, metadata=self.metadata, timeout=10)

    def new_org(self) -> str:
        org = unique("org")
        self.call(self.organizations.CreateOrganization, pb.CreateOrganizationRequest(organization_id=org, name=org))
        return org

    def new_team(self, org: str) -> str:
        team = unique("team")
        self.call(self.organizations.CreateTeam, pb.CreateTeamRequest(team_id=team, organization_id=org, name=team))
        return team

    def add_key(self, org: str, key: Optional[str] = None, provider: int = pb.PROVIDER_OPENAI, api_base: Optional[str] = None, name: Optional[str] = None) -> "tuple[str, str]":
        key = key or (fake_anthropic_key() if provider == pb.PROVIDER_ANTHROPIC else fake_openai_key())
        request = pb.CreateCredentialRequest(organization_id=org, provider=provider, credential_name=name or unique("cred"), api_key=key)
        if api_base is not None:
            request.api_base = api_base
        created = self.call(self.credentials.CreateCredential, request)
        return created.credential.credential_id, key


class Proxy:
    """A TCP proxy on a free loopback port to `upstream` ("host:port"). `block()` cuts every
    connection and refuses new ones until `unblock()`."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.blocked = False
        self.sockets: List[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def retarget(self, upstream: str) -> None:
        """New connections go to `upstream` ("host:port"); open ones are cut."""
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cut()

    def cut(self) -> None:
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def block(self) -> None:
        self.blocked = True
        self.cut()

    def unblock(self) -> None:
        self.blocked = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.server.close()


def eventually(check: Callable[[], bool], timeout: float = 3.0, interval: float = 0.01) -> bool:
    """Polls `check` until it is true or `timeout` seconds pass; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class CapturedLogs:
    """Everything logged by the client (logger provider_credentials, every level) while in use."""

    def __enter__(self) -> "CapturedLogs":
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.logger = logging.getLogger("provider_credentials")
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    @property
    def text(self) -> str:
        return self.stream.getvalue()


def _string_field(number: int, value: str) -> bytes:
    data = value.encode()
    length, out = len(data), bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(out) + data


def _first_string(message: bytes) -> str:
    """Field 1 of a message whose first field is a string (CreateApiTokenResponse.token)."""
    assert message[0] == 0x0A, "field 1 must come first"
    length, shift, i = 0, 0, 1
    while True:
        byte = message[i]
        length |= (byte & 0x7F) << shift
        i += 1
        shift += 7
        if not byte & 0x80:
            break
    return message[i : i + length].decode()


def _admin_call(admin: Admin, method: str, request: bytes) -> bytes:
    """An AdminService call (proto/admin.proto) without generated code: the client ships only
    credentials.proto's, and these tests need just two messages with string fields."""
    call = admin.channel.unary_unary(f"/credentials.v1.AdminService/{method}", request_serializer=None, response_deserializer=None)
    return call(request, metadata=admin.metadata, timeout=10)


def create_resolve_token(admin: Admin, name: str) -> str:
    return _first_string(_admin_call(admin, "CreateApiToken", _string_field(1, name) + _string_field(2, "resolve")))


def revoke_token(admin: Admin, name: str) -> None:
    _admin_call(admin, "RevokeApiToken", _string_field(1, name))
