"""The egress proxy against real servers on loopback.

Every name the tests use resolves, through a `StaticResolver`, to 127.0.0.1, where
the test's own servers listen; nothing here reaches any other address.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.net import proxy as proxy_module
from harness.net.proxy import (
    Approval,
    EgressProxy,
    ProxyLimits,
    StaticResolver,
    special_address_kind,
)
from harness.policy.modes import ApprovalPolicy
from harness.policy.rules import NetworkRule, Origin

USER = Origin("user", "/home/ana/.config/harness/config.toml")
LOOPBACK = "127.0.0.1"
TEST_NAMES = [
    "allowed.test",
    "other.test",
    "denied.test",
    "unlisted.test",
    "ask.test",
    "wild.test",
    "a.wild.test",
    "b.c.wild.test",
    "x.denywins.test",
    "y.denywins.test",
    "gitrepo.test",
]
BIG = 20 * 1024 * 1024


def allow(domain: str, port: int | None = None) -> NetworkRule:
    return NetworkRule(domain, True, port, USER)


def deny(domain: str, port: int | None = None) -> NetworkRule:
    return NetworkRule(domain, False, port, USER)


BASE_RULES = [
    allow("allowed.test"),
    allow("denied.test"),
    deny("denied.test"),
    allow("gitrepo.test"),
]


def pattern(size: int) -> Iterator[bytes]:
    """Deterministic, incompressible-looking bytes, in 64 KiB blocks."""
    block = hashlib.sha256(b"seed").digest() * 2048
    sent = 0
    counter = 0
    while sent < size:
        piece = hashlib.sha256(counter.to_bytes(8, "big")).digest() + block[32:]
        piece = piece[: min(len(piece), size - sent)]
        counter += 1
        sent += len(piece)
        yield piece


def pattern_digest(size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(size):
        digest.update(piece)
    return digest.hexdigest()


# -- the origin server --------------------------------------------------------------------


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _note(self, body: bytes = b"") -> None:
        OriginHandler.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                "headers": [(k, v) for k, v in self.headers.items()],
                "body": body,
            }
        )

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                assert self.rfile.read(2) == b"\r\n"
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_HEAD(self) -> None:
        self._note()
        self._send(200, b"x" * 1234)

    def do_GET(self) -> None:
        self._note()
        if self.path == "/hello":
            self._send(200, b"hello from the origin")
        elif self.path == "/headers":
            body = json.dumps(
                {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
            ).encode()
            self._send(200, body, "application/json")
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            for part in (b"first part, ", b"second part, ", b"x" * 100_000):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Checksum: done\r\n\r\n")
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            for piece in pattern(BIG):
                self.wfile.write(piece)
        elif self.path == "/until-close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"streamed until the connection closes")
            self.close_connection = True
        elif self.path == "/no-content":
            self.send_response(204)
            self.end_headers()
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        body = self._read_body()
        self._note(body)
        answer = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        self._send(200, json.dumps(answer).encode(), "application/json")


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class TLSServer(QuietServer):
    """Handshakes in the handler thread, so a client that never does cannot stall accept."""

    context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address


@dataclass
class Servers:
    http_port: int
    https_port: int
    ca: trustme.CA


def _serve(server: socketserver.BaseServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return thread


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    ca = trustme.CA()
    cert = ca.issue_cert("allowed.test", "other.test", "a.wild.test")
    plain = QuietServer((LOOPBACK, 0), OriginHandler)
    secure = TLSServer((LOOPBACK, 0), OriginHandler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    secure.context = context
    threads = [_serve(plain), _serve(secure)]
    try:
        yield Servers(plain.server_address[1], secure.server_address[1], ca)
    finally:
        for server in (plain, secure):
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(5)


# -- the proxy, in a loop of its own ------------------------------------------------------


class Recorder:
    """The audit sink: keeps records and lets a test wait for them."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, event: str, /, **fields: Any) -> None:
        with self._cond:
            self.records.append({"event": event, **fields})
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.records) >= count, timeout), self.records
            return list(self.records)

    def last(self) -> dict[str, Any]:
        return self.wait(1)[-1]


@dataclass
class RunningProxy:
    proxy: EgressProxy
    loop: asyncio.AbstractEventLoop
    port: int
    audit: Recorder
    asked: list[tuple[str, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(10)


ProxyFactory = Callable[..., RunningProxy]


@pytest.fixture
def make_proxy() -> Iterator[ProxyFactory]:
    started: list[tuple[RunningProxy, threading.Thread]] = []

    def factory(
        rules: list[NetworkRule] | None = None,
        *,
        answers: list[Approval] | None = None,
        ask: bool = False,
        policy: ApprovalPolicy = ApprovalPolicy.ON_REQUEST,
        limits: ProxyLimits | None = None,
        resolve: dict[str, str | list[str]] | None = None,
        audit: Callable[..., object] | None = None,
    ) -> RunningProxy:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        recorder = Recorder()
        asked: list[tuple[str, int]] = []
        scripted = list(answers or [])

        async def human(host: str, port: int) -> Approval:
            asked.append((host, port))
            return scripted.pop(0)

        async def start() -> tuple[EgressProxy, int]:
            proxy = EgressProxy(
                BASE_RULES if rules is None else rules,
                resolver=StaticResolver(
                    resolve if resolve is not None else dict.fromkeys(TEST_NAMES, LOOPBACK)
                ),
                audit=audit or recorder,
                ask=human if (ask or answers is not None) else None,
                policy=policy,
                session="s-test",
                limits=limits,
            )
            _host, port = await proxy.start_on(LOOPBACK, 0)
            return proxy, port

        proxy, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        running = RunningProxy(proxy, loop, port, recorder, asked)
        started.append((running, thread))
        return running

    yield factory
    for running, thread in started:
        running.call(running.proxy.close())
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(5)
        running.loop.close()


# -- clients ------------------------------------------------------------------------------


def via(running: RunningProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(LOOPBACK, running.port, timeout=10)


def get(
    running: RunningProxy, url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = via(running)
    try:
        conn.request(method, url, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


def raw(running: RunningProxy, data: bytes, *, read_until_close: bool = True) -> bytes:
    with socket.create_connection((LOOPBACK, running.port), timeout=10) as sock:
        sock.sendall(data)
        if not read_until_close:
            return sock.recv(65536)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def tls_client(servers: Servers) -> ssl.SSLContext:
    context = ssl.create_default_context()
    servers.ca.configure_trust(context)
    return context


@contextlib.contextmanager
def https_through(
    running: RunningProxy, servers: Servers, timeout: float = 10
) -> Iterator[http.client.HTTPSConnection]:
    """An HTTPS client for allowed.test whose requests go through the proxy's CONNECT."""
    conn = http.client.HTTPSConnection(
        LOOPBACK, running.port, timeout=timeout, context=tls_client(servers)
    )
    conn.set_tunnel("allowed.test", servers.https_port)
    try:
        yield conn
    finally:
        conn.close()


def connect_tunnel(running: RunningProxy, target: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((LOOPBACK, running.port), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return sock, answer


# -- plain HTTP ---------------------------------------------------------------------------


def test_allowed_get_goes_through(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    status, body, _ = get(running, f"http://allowed.test:{servers.http_port}/hello")
    assert (status, body) == (200, b"hello from the origin")


def test_request_is_rewritten_and_hop_by_hop_headers_stripped(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    running = make_proxy()
    status, body, _ = get(
        running,
        f"http://Allowed.TEST.:{servers.http_port}/headers",
        headers={
            "Host": "evil.test",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "Connection": "X-Private, keep-alive",
            "X-Private": "dropped because Connection names it",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "X-Kept": "yes",
        },
    )
    assert status == 200
    seen = json.loads(body)
    names = {name.lower(): value for name, value in seen["headers"]}
    assert seen["path"] == "/headers"
    assert names["host"] == f"allowed.test:{servers.http_port}"
    assert names["x-kept"] == "yes"
    for gone in ("proxy-authorization", "proxy-connection", "x-private", "keep-alive", "te"):
        assert gone not in names


def test_not_listed_is_403_with_how_to_allow(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    status, body, response = get(running, f"http://unlisted.test:{servers.http_port}/hello")
    assert status == 403
    text = body.decode()
    assert f"no rule allows unlisted.test:{servers.http_port}" in text
    assert "`--allow-domain unlisted.test`" in text
    assert '`[[network]] domain = "unlisted.test"`' in text
    assert response.getheader("X-Harness-Proxy") == "refused"


def test_denied_test_is_403_naming_the_rule(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    status, body, _ = get(running, f"http://denied.test:{servers.http_port}/hello")
    assert status == 403
    assert (
        "denied by deny rule 'denied.test' from user (/home/ana/.config/harness/config.toml)"
        in body.decode()
    )


def test_ip_literal_refused_unless_listed(make_proxy: ProxyFactory, servers: Servers) -> None:
    refused = make_proxy([allow("*.test"), allow("allowed.test")])
    for host in (LOOPBACK, "127.1", "2130706433"):
        status, body, _ = get(refused, f"http://{host}:{servers.http_port}/hello")
        assert status == 403, host
        assert f"no rule allows 127.0.0.1:{servers.http_port}" in body.decode()
    listed = make_proxy([allow(LOOPBACK)])
    status, body, _ = get(listed, f"http://{LOOPBACK}:{servers.http_port}/hello")
    assert (status, body) == (200, b"hello from the origin")


def test_ipv6_literal_refused(make_proxy: ProxyFactory) -> None:
    running = make_proxy()
    status, body, _ = get(running, "http://[::1]:1/")
    assert status == 403
    assert "no rule allows [::1]:1" in body.decode()


def test_name_resolving_to_loopback_needs_an_exact_rule(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    url = f"http://a.wild.test:{servers.http_port}/hello"
    wildcard_only = make_proxy([allow("*.wild.test")])
    status, body, _ = get(wildcard_only, url)
    assert status == 403
    text = body.decode()
    assert "a.wild.test resolves to 127.0.0.1, a loopback address" in text
    assert "a wildcard is not enough" in text
    exact = make_proxy([allow("*.wild.test"), allow("a.wild.test")])
    assert get(exact, url)[0] == 200


def test_any_private_address_in_the_answer_refuses(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    # The public address comes first; the private one in the same answer still refuses.
    running = make_proxy(
        [allow("*.wild.test"), allow("93.184.216.34")],
        resolve={"a.wild.test": ["93.184.216.34", "10.1.2.3"]},
    )
    status, body, _ = get(running, f"http://a.wild.test:{servers.http_port}/hello")
    assert status == 403
    assert "resolves to 10.1.2.3, a private address" in body.decode()


def test_wildcard_allows_subdomains_when_the_address_is_listed(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    running = make_proxy([allow("*.wild.test"), allow(LOOPBACK)])
    for host in ("a.wild.test", "b.c.wild.test"):
        assert get(running, f"http://{host}:{servers.http_port}/hello")[0] == 200
    status, body, _ = get(running, f"http://wild.test:{servers.http_port}/hello")
    assert status == 403
    assert f"no rule allows wild.test:{servers.http_port}" in body.decode()


def test_deny_wins_over_a_more_specific_allow(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy([allow("x.denywins.test"), deny("*.denywins.test"), allow(LOOPBACK)])
    status, body, _ = get(running, f"http://x.denywins.test:{servers.http_port}/hello")
    assert status == 403
    assert "denied by deny rule '*.denywins.test'" in body.decode()


def test_deny_rule_on_the_resolved_address(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy([allow("allowed.test"), deny(LOOPBACK)])
    status, body, _ = get(running, f"http://allowed.test:{servers.http_port}/hello")
    assert status == 403
    assert "resolves to 127.0.0.1, which deny rule '127.0.0.1'" in body.decode()


def test_port_rule(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy([allow("allowed.test", servers.http_port)])
    assert get(running, f"http://allowed.test:{servers.http_port}/hello")[0] == 200
    assert get(running, f"http://allowed.test:{servers.https_port}/hello")[0] == 403


def test_unresolvable_name_is_502(make_proxy: ProxyFactory) -> None:
    running = make_proxy([allow("nowhere.test")])
    status, body, _ = get(running, "http://nowhere.test/")
    assert status == 502
    assert "nowhere.test cannot be resolved" in body.decode()


def test_connection_refused_is_502(make_proxy: ProxyFactory) -> None:
    with socket.socket() as unused:
        unused.bind((LOOPBACK, 0))
        port = unused.getsockname()[1]
    running = make_proxy()
    status, body, _ = get(running, f"http://allowed.test:{port}/")
    assert status == 502
    assert "cannot connect" in body.decode()


def test_keep_alive_carries_several_requests(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy([allow("allowed.test"), allow("other.test")])
    conn = via(running)
    try:
        for host in ("allowed.test", "allowed.test", "other.test", "allowed.test"):
            conn.request("GET", f"http://{host}:{servers.http_port}/hello")
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == b"hello from the origin"
        sock = conn.sock
        conn.request("GET", f"http://allowed.test:{servers.http_port}/no-content")
        response = conn.getresponse()
        assert response.status == 204
        response.read()
        conn.request("HEAD", f"http://allowed.test:{servers.http_port}/x")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") == "1234"
        assert response.read() == b""
        assert conn.sock is sock  # one client connection throughout
    finally:
        conn.close()
    assert len(running.audit.wait(6)) == 6


class DropSecondRequest(socketserver.BaseRequestHandler):
    """Answers the first request of a connection and drops the connection on the second,
    as an origin does when its keep-alive timeout strikes just as a request arrives."""

    connections = 0

    def handle(self) -> None:
        DropSecondRequest.connections += 1
        data = b""
        for index in range(2):
            while b"\r\n\r\n" not in data:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                data += chunk
            data = data.split(b"\r\n\r\n", 1)[1]
            if index == 1:
                return
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_a_dropped_idle_origin_connection_is_retried_once(make_proxy: ProxyFactory) -> None:
    DropSecondRequest.connections = 0
    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), DropSecondRequest)
    server.daemon_threads = True
    thread = _serve(server)
    try:
        running = make_proxy()
        conn = via(running)
        try:
            for _ in range(3):
                conn.request("GET", f"http://allowed.test:{server.server_address[1]}/")
                assert conn.getresponse().read() == b"ok"
        finally:
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert DropSecondRequest.connections == 3
    assert [r["status"] for r in running.audit.wait(3)] == [200, 200, 200]


def test_response_until_close(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    status, body, response = get(running, f"http://allowed.test:{servers.http_port}/until-close")
    assert (status, body) == (200, b"streamed until the connection closes")
    assert response.getheader("Connection") == "close"


def test_chunked_request_and_response(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    parts = [b"alpha" * 1000, b"", b"beta" * 70_000, b"gamma"]
    conn = via(running)
    try:
        conn.request(
            "POST",
            f"http://allowed.test:{servers.http_port}/upload",
            body=iter(parts),
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 200
        whole = b"".join(parts)
        assert json.loads(response.read()) == {
            "length": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest(),
        }
        conn.request("GET", f"http://allowed.test:{servers.http_port}/chunked")
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"first part, second part, " + b"x" * 100_000
    finally:
        conn.close()


def test_content_length_post(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    body = os.urandom(3 * 1024 * 1024 + 7)
    conn = via(running)
    try:
        conn.request("POST", f"http://allowed.test:{servers.http_port}/upload", body=body)
        response = conn.getresponse()
        assert json.loads(response.read())["sha256"] == hashlib.sha256(body).hexdigest()
    finally:
        conn.close()
    record = running.audit.last()
    assert record["bytes_up"] > len(body)


@pytest.fixture(params=["splice", "copy"])
def relay_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the kernel splice path and with the user-space copy path."""
    if request.param == "copy":
        monkeypatch.setattr(proxy_module, "_splice_works", False)
    return str(request.param)


def read_all_hashed(response: http.client.HTTPResponse) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    while chunk := response.read(1024 * 1024):
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


def test_20_mb_download_arrives_intact(
    make_proxy: ProxyFactory, servers: Servers, relay_mode: str
) -> None:
    running = make_proxy()
    conn = via(running)
    try:
        conn.request("GET", f"http://allowed.test:{servers.http_port}/big")
        response = conn.getresponse()
        assert response.status == 200
        total, digest = read_all_hashed(response)
        # The connection is still good for another request after the bulk one.
        conn.request("GET", f"http://allowed.test:{servers.http_port}/hello")
        assert conn.getresponse().read() == b"hello from the origin"
    finally:
        conn.close()
    assert total == BIG
    assert digest == pattern_digest(BIG)
    record = running.audit.wait(2)[0]
    assert record["bytes_down"] > BIG
    assert record["status"] == 200


def test_20_mb_download_through_a_tunnel(
    make_proxy: ProxyFactory, servers: Servers, relay_mode: str
) -> None:
    running = make_proxy()
    with https_through(running, servers, timeout=20) as conn:
        conn.request("GET", "/big")
        total, digest = read_all_hashed(conn.getresponse())
    assert (total, digest) == (BIG, pattern_digest(BIG))
    assert running.audit.last()["bytes_down"] > BIG


def test_expect_100_continue(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    body = b"y" * 100_000
    with socket.create_connection((LOOPBACK, running.port), timeout=10) as sock:
        sock.sendall(
            f"POST http://allowed.test:{servers.http_port}/upload HTTP/1.1\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        answer = b""
        while b"}" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["length"] == len(body)


def test_pipelined_requests(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    one = f"GET http://allowed.test:{servers.http_port}/hello HTTP/1.1\r\n\r\n".encode()
    last = (
        f"GET http://allowed.test:{servers.http_port}/hello HTTP/1.1\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = raw(running, one + one + last)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert answer.count(b"hello from the origin") == 3


def test_http_1_0_client(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    answer = raw(
        running, f"GET http://allowed.test:{servers.http_port}/hello HTTP/1.0\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close\r\n" in answer
    assert answer.endswith(b"hello from the origin")
    assert OriginHandler.seen[-1]["version"] == "HTTP/1.0"


def test_refused_upload_is_answered_not_reset(make_proxy: ProxyFactory) -> None:
    running = make_proxy()
    with socket.create_connection((LOOPBACK, running.port), timeout=10) as sock:
        sock.sendall(b"POST http://unlisted.test/ HTTP/1.1\r\nContent-Length: 300000\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.sendall(b"u" * 300_000)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")


# -- malformed requests -------------------------------------------------------------------

MALFORMED = [
    b"HELLO\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX A: 1\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX-A : 1\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\nHost: x\n\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    b"GET  http://allowed.test/ HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1 extra\r\n\r\n",
    b"GET http://allowed.test/a b HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test/\xff HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test/ HTTQ/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    b"GET https://allowed.test/ HTTP/1.1\r\n\r\n",
    b"GET http://user:pw@allowed.test/ HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test:99999/ HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test:8x/ HTTP/1.1\r\n\r\n",
    b"GET http://::1/ HTTP/1.1\r\n\r\n",
    b"GET http://[::1/ HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test/#frag HTTP/1.1\r\n\r\n",
    b"GET http://%61llowed.test/ HTTP/1.1\r\n\r\n",
    b"GET http:/// HTTP/1.1\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"CONNECT allowed.test HTTP/1.1\r\n\r\n",
    b"CONNECT allowed.test:443 HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
    b"CONNECT [::1]x:443 HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\n" + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET http://allowed.test/" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\n"
    + b"".join(b"X-C%d: %s\r\n" % (i, b"c" * 7000) for i in range(10))
    + b"\r\n",
]


@pytest.mark.parametrize("request_bytes", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_requests_get_400_and_the_server_goes_on(
    make_proxy: ProxyFactory, servers: Servers, request_bytes: bytes
) -> None:
    running = make_proxy()
    answer = raw(running, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
    record = running.audit.wait(1)[0]
    assert record["allowed"] is False
    assert record["status"] == 400
    assert get(running, f"http://allowed.test:{servers.http_port}/hello")[0] == 200


def test_other_versions_get_505(make_proxy: ProxyFactory) -> None:
    running = make_proxy()
    assert raw(running, b"GET http://allowed.test/ HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")


def test_unknown_transfer_coding_gets_501(make_proxy: ProxyFactory) -> None:
    running = make_proxy()
    answer = raw(
        running,
        b"POST http://allowed.test/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 501 ")


def test_endless_head_is_cut_at_the_limit(make_proxy: ProxyFactory) -> None:
    running = make_proxy()
    with socket.create_connection((LOOPBACK, running.port), timeout=10) as sock:
        sock.sendall(b"GET http://allowed.test/ HTTP/1.1\r\n")
        answer = b""
        try:
            for _ in range(200):
                sock.sendall(b"X-Filler: " + b"f" * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"larger than 65536 bytes" in answer


def test_slow_head_times_out(make_proxy: ProxyFactory) -> None:
    running = make_proxy(limits=ProxyLimits(header_timeout=0.3))
    with socket.create_connection((LOOPBACK, running.port), timeout=10) as sock:
        sock.sendall(b"GET http://allowed.test/ HTTP/1.1\r\nX-Slow: ")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_idle_client_is_closed_quietly(make_proxy: ProxyFactory) -> None:
    running = make_proxy(limits=ProxyLimits(keepalive_timeout=0.2))
    with socket.create_connection((LOOPBACK, running.port), timeout=10) as sock:
        assert sock.recv(100) == b""
    time.sleep(0.1)
    assert running.audit.records == []


def test_malformed_chunked_body_is_400(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    answer = raw(
        running,
        f"POST http://allowed.test:{servers.http_port}/upload HTTP/1.1\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    record = running.audit.wait(1)[0]
    assert "invalid chunk size" in record["error"]


def test_too_many_connections_get_503(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(limits=ProxyLimits(max_connections=2))
    held = [socket.create_connection((LOOPBACK, running.port)) for _ in range(2)]
    try:
        answer = raw(running, b"GET http://allowed.test/ HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while running.proxy._connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert get(running, f"http://allowed.test:{servers.http_port}/hello")[0] == 200


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_request_parser_only_rejects(data: bytes) -> None:
    head = data if data.endswith(b"\r\n") else data + b"\r\n"
    with contextlib.suppress(proxy_module._Malformed, proxy_module._HttpError):
        proxy_module._parse_request(head, ProxyLimits())


# -- CONNECT and TLS ----------------------------------------------------------------------


def test_https_through_connect(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    with https_through(running, servers) as conn:
        conn.request("GET", "/hello")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello from the origin")
        conn.request("POST", "/upload", body=b"z" * 500_000)
        assert json.loads(conn.getresponse().read())["length"] == 500_000
    record = running.audit.last()
    assert record["method"] == "CONNECT"
    assert record["allowed"] is True
    assert record["status"] == 200
    assert record["bytes_up"] > 500_000
    assert record["bytes_down"] > 0
    assert record["error"] is None


def test_connect_refused_before_the_tunnel(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    for host, expected in (
        ("unlisted.test", f"no rule allows unlisted.test:{servers.https_port}"),
        ("denied.test", "denied by deny rule 'denied.test'"),
        (LOOPBACK, f"no rule allows 127.0.0.1:{servers.https_port}"),
    ):
        sock, answer = connect_tunnel(running, f"{host}:{servers.https_port}")
        with sock:
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
        whole = (answer + rest).decode()
        assert whole.startswith("HTTP/1.1 403 Forbidden\r\n")
        assert expected in whole


def test_sni_mismatch_closes_the_tunnel(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    sock, answer = connect_tunnel(running, f"allowed.test:{servers.https_port}")
    assert answer.startswith(b"HTTP/1.1 200 ")
    with sock, pytest.raises((ssl.SSLError, OSError)):
        tls = tls_client(servers).wrap_socket(sock, server_hostname="other.test")
        tls.close()
    record = running.audit.last()
    assert record["allowed"] is False
    assert record["host"] == "allowed.test"
    assert "the SNI 'other.test' does not match the CONNECT host 'allowed.test'" in record["reason"]
    assert record["bytes_up"] == 0


def test_sni_matches_case_insensitively(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    sock, answer = connect_tunnel(running, f"ALLOWED.test:{servers.https_port}")
    assert answer.startswith(b"HTTP/1.1 200 ")
    context = tls_client(servers)
    with context.wrap_socket(sock, server_hostname="allowed.TEST") as tls:
        tls.sendall(b"GET /hello HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.endswith(b"hello from the origin")


def test_no_sni_is_refused_for_a_name(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    sock, answer = connect_tunnel(running, f"allowed.test:{servers.https_port}")
    assert answer.startswith(b"HTTP/1.1 200 ")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with sock, pytest.raises((ssl.SSLError, OSError)):
        tls = context.wrap_socket(sock)  # no server_hostname: no SNI
        tls.close()
    assert "has no SNI" in running.audit.last()["reason"]


def test_non_tls_after_connect_is_closed(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy()
    sock, answer = connect_tunnel(running, f"allowed.test:{servers.http_port}")
    assert answer.startswith(b"HTTP/1.1 200 ")
    with sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        assert sock.recv(65536) == b""
    record = running.audit.last()
    assert record["allowed"] is False
    assert "not a TLS handshake" in record["reason"]


def test_client_hello_split_across_reads(make_proxy: ProxyFactory, servers: Servers) -> None:
    """The ClientHello arrives a few bytes at a time; the tunnel still works."""
    running = make_proxy()
    sock, answer = connect_tunnel(running, f"allowed.test:{servers.https_port}")
    assert answer.startswith(b"HTTP/1.1 200 ")
    context = tls_client(servers)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="allowed.test")
    with sock:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        for start in range(0, len(hello), 7):
            sock.sendall(hello[start : start + 7])
            time.sleep(0.001)
        while True:
            data = sock.recv(65536)
            assert data
            incoming.write(data)
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
        sock.sendall(outgoing.read())
    assert tls.version() is not None


@functools.cache
def client_hello(server_hostname: str | None) -> bytes:
    context = ssl.create_default_context()
    if server_hostname is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_client_hello_parser_waits_for_every_byte() -> None:
    hello = client_hello("Allowed.Test")
    for cut in range(len(hello)):
        assert proxy_module._parse_client_hello(hello[:cut], 65536) is None
    # The raw SNI; the proxy compares it in canonical form.
    assert proxy_module._parse_client_hello(hello, 65536) == (len(hello), "Allowed.Test")
    assert proxy_module._parse_client_hello(client_hello(None), 65536) == (
        len(client_hello(None)),
        None,
    )


def test_client_hello_split_over_records() -> None:
    """The same handshake message fragmented into 100-byte TLS records."""
    hello = client_hello("allowed.test")
    message = hello[5:]
    records = b"".join(
        b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
        for part in (message[i : i + 100] for i in range(0, len(message), 100))
    )
    assert proxy_module._parse_client_hello(records, 65536) == (len(records), "allowed.test")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a TLS handshake"),
        (b"\x16\x02\x00\x00\x05hello", "record version"),
        (b"\x16\x03\x01\x00\x00", "a TLS record of 0 bytes"),
        (b"\x16\x03\x01\x48\x01" + b"\x00" * 18433, "a TLS record of 18433 bytes"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
        (b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", "truncated"),
    ],
)
def test_client_hello_parser_refuses(data: bytes, problem: str) -> None:
    with pytest.raises(proxy_module._NotTLS, match=problem):
        proxy_module._parse_client_hello(data, 65536)


def test_client_hello_size_is_bounded() -> None:
    hello = client_hello("allowed.test")
    assert len(hello) > 300
    with pytest.raises(proxy_module._NotTLS, match="larger than 300 bytes"):
        proxy_module._parse_client_hello(hello, 300)
    with pytest.raises(proxy_module._NotTLS, match="larger than 300 bytes"):
        proxy_module._parse_client_hello(hello[:301], 300)


def test_duplicate_sni_extension_is_refused() -> None:
    hello = client_hello("allowed.test")
    body = hello[9:]
    # Find the server_name extension and append a second copy naming another host.
    name = b"other.test"
    extra = (
        b"\x00\x00"
        + (len(name) + 5).to_bytes(2, "big")
        + (len(name) + 3).to_bytes(2, "big")
        + b"\x00"
        + len(name).to_bytes(2, "big")
        + name
    )
    cursor = 2 + 32
    cursor += 1 + body[cursor]
    cursor += 2 + int.from_bytes(body[cursor : cursor + 2], "big")
    cursor += 1 + body[cursor]
    ext_len = int.from_bytes(body[cursor : cursor + 2], "big")
    new_body = (
        body[:cursor] + (ext_len + len(extra)).to_bytes(2, "big") + body[cursor + 2 :] + extra
    )
    message = b"\x01" + len(new_body).to_bytes(3, "big") + new_body
    record = b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message
    with pytest.raises(proxy_module._NotTLS, match="appears twice"):
        proxy_module._parse_client_hello(record, 65536)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_client_hello_parser_only_refuses(data: bytes) -> None:
    with contextlib.suppress(proxy_module._NotTLS):
        proxy_module._parse_client_hello(data, 65536)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_client_hello_parser_survives_one_flipped_byte(position: int, value: int) -> None:
    hello = bytearray(client_hello("allowed.test"))
    hello[position % len(hello)] = value
    with contextlib.suppress(proxy_module._NotTLS):
        proxy_module._parse_client_hello(bytes(hello), 65536)


# -- the audit record ---------------------------------------------------------------------


def test_every_request_has_one_record_with_the_fields(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    running = make_proxy()
    get(running, f"http://allowed.test:{servers.http_port}/hello")
    get(running, f"http://unlisted.test:{servers.http_port}/hello")
    get(running, f"http://denied.test:{servers.http_port}/hello")
    raw(running, b"BROKEN\r\n\r\n")
    records = running.audit.wait(4)
    time.sleep(0.1)
    assert len(running.audit.records) == 4
    keys = {
        "event", "session", "method", "host", "port", "allowed", "rule", "reason",
        "bytes_up", "bytes_down", "duration_ms", "status", "error",
    }  # fmt: skip
    assert all(set(r) == keys for r in records)
    ok, unlisted, denied, broken = records
    assert ok["event"] == "network.request"
    assert ok["session"] == "s-test"
    assert (ok["method"], ok["host"], ok["port"]) == ("GET", "allowed.test", servers.http_port)
    assert ok["allowed"] is True
    assert ok["rule"] == (
        "allow rule 'allowed.test' from user (/home/ana/.config/harness/config.toml)"
    )
    assert ok["status"] == 200
    assert ok["bytes_up"] > 0
    assert ok["bytes_down"] > len(b"hello from the origin")
    assert ok["duration_ms"] >= 0
    assert unlisted["allowed"] is False
    assert unlisted["rule"] is None
    assert unlisted["reason"] == f"no rule allows unlisted.test:{servers.http_port}"
    assert (unlisted["status"], unlisted["bytes_up"], unlisted["bytes_down"]) == (403, 0, 0)
    assert denied["rule"].startswith("deny rule 'denied.test'")
    assert denied["status"] == 403
    assert broken["status"] == 400
    assert broken["host"] == ""


def test_real_audit_log(make_proxy: ProxyFactory, servers: Servers, tmp_path: Path) -> None:
    from harness.audit import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    running = make_proxy(audit=log.append)
    get(running, f"http://allowed.test:{servers.http_port}/hello")
    get(running, f"http://unlisted.test:{servers.http_port}/hello")
    running.call(running.proxy.close())
    records = list(log.records())
    assert [r.fields["allowed"] for r in records] == [True, False]
    assert log.verify().ok


def test_an_audit_failure_refuses_what_follows(make_proxy: ProxyFactory, servers: Servers) -> None:
    def broken(event: str, /, **fields: object) -> None:
        raise OSError("disk full")

    running = make_proxy(audit=broken)
    assert get(running, f"http://allowed.test:{servers.http_port}/hello")[0] == 200
    deadline = time.monotonic() + 5
    while running.proxy.audit_failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    status, body, _ = get(running, f"http://allowed.test:{servers.http_port}/hello")
    assert status == 503
    assert "disk full" in body.decode()


# -- approvals ----------------------------------------------------------------------------

ASK_RULES = [allow(LOOPBACK)]


def test_allow_once_admits_one_request(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(ASK_RULES, answers=[Approval.ALLOW_ONCE, Approval.DENY])
    url = f"http://ask.test:{servers.http_port}/hello"
    assert get(running, url)[0] == 200
    status, body, _ = get(running, url)
    assert status == 403
    assert f"ask.test:{servers.http_port} was denied when asked" in body.decode()
    assert running.asked == [("ask.test", servers.http_port)] * 2
    first, second = running.audit.wait(2)
    assert first["allowed"] is True
    assert first["reason"] == f"ask.test:{servers.http_port} allowed once when asked"
    assert second["allowed"] is False


def test_allow_once_covers_one_request_on_a_kept_connection(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    running = make_proxy(ASK_RULES, answers=[Approval.ALLOW_ONCE, Approval.DENY])
    conn = via(running)
    try:
        conn.request("GET", f"http://ask.test:{servers.http_port}/hello")
        assert conn.getresponse().read() == b"hello from the origin"
        conn.request("GET", f"http://ask.test:{servers.http_port}/hello")
        assert conn.getresponse().status == 403
    finally:
        conn.close()


def test_allow_for_session_admits_later_requests(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    running = make_proxy(ASK_RULES, answers=[Approval.ALLOW_SESSION])
    url = f"http://ask.test:{servers.http_port}/hello"
    for _ in range(3):
        assert get(running, url)[0] == 200
    assert running.asked == [("ask.test", servers.http_port)]
    assert ("ask.test", servers.http_port) in running.proxy.session_allowed
    assert running.audit.wait(3)[-1]["reason"].endswith("allowed for this session when asked")


def test_concurrent_requests_ask_once(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(ASK_RULES, answers=[Approval.ALLOW_SESSION])
    url = f"http://ask.test:{servers.http_port}/hello"
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(get(running, url)[0])) for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 5
    assert len(running.asked) == 1
    assert running.proxy._ask_locks == {}


def test_deny_answer_refuses(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(ASK_RULES, answers=[Approval.DENY])
    status, body, _ = get(running, f"http://ask.test:{servers.http_port}/hello")
    assert status == 403
    assert "allow it with `--allow-domain ask.test`" in body.decode()


def test_no_callback_refuses(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(ASK_RULES)
    status, body, _ = get(running, f"http://ask.test:{servers.http_port}/hello")
    assert status == 403
    assert f"no rule allows ask.test:{servers.http_port}" in body.decode()


def test_policy_never_does_not_ask(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(ASK_RULES, answers=[Approval.ALLOW_SESSION], policy=ApprovalPolicy.NEVER)
    assert get(running, f"http://ask.test:{servers.http_port}/hello")[0] == 403
    assert running.asked == []


def test_rules_are_never_overridden_by_asking(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy([*BASE_RULES, allow("127.0.0.1")], answers=[Approval.ALLOW_SESSION])
    assert get(running, f"http://denied.test:{servers.http_port}/hello")[0] == 403
    assert get(running, f"http://127.0.0.2:{servers.http_port}/hello")[0] == 403
    assert running.asked == []


def test_an_approved_name_still_gets_the_rebinding_check(
    make_proxy: ProxyFactory, servers: Servers
) -> None:
    running = make_proxy([], answers=[Approval.ALLOW_SESSION])
    status, body, _ = get(running, f"http://ask.test:{servers.http_port}/hello")
    assert status == 403
    assert "resolves to 127.0.0.1, a loopback address" in body.decode()


def test_approval_via_connect(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(ASK_RULES, answers=[Approval.DENY])
    sock, answer = connect_tunnel(running, f"ask.test:{servers.https_port}")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert running.asked == [("ask.test", servers.https_port)]


def test_approval_timeout_denies(make_proxy: ProxyFactory, servers: Servers) -> None:
    running = make_proxy(ASK_RULES, limits=ProxyLimits(approval_timeout=0.2), ask=True)

    async def never(host: str, port: int) -> Approval:
        await asyncio.sleep(60)
        return Approval.ALLOW_SESSION

    running.proxy._ask = never
    assert get(running, f"http://ask.test:{servers.http_port}/hello")[0] == 403


# -- git ----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_clone_over_http_through_the_proxy(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.test",
    }

    def git(*args: str, cwd: Path = tmp_path, extra: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env={**env, **(extra or {})}, capture_output=True,
            text=True, check=False, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    for index in range(20):
        (work / f"file{index}.txt").write_text(f"content {index}\n" * 100)
    (work / "blob.bin").write_bytes(os.urandom(300_000))
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    served = tmp_path / "served"
    served.mkdir()
    git("clone", "-q", "--bare", str(work), str(served / "repo.git"))
    git("update-server-info", cwd=served / "repo.git")

    handler = _directory_handler(served)
    server = QuietServer((LOOPBACK, 0), handler)
    thread = _serve(server)
    try:
        running = make_proxy()
        port = server.server_address[1]
        proxy_env = {"http_proxy": running.url, "HTTP_PROXY": running.url, "no_proxy": ""}
        git(
            "clone", "-q", f"http://gitrepo.test:{port}/repo.git", str(tmp_path / "clone"),
            extra=proxy_env,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert git("log", "--format=%s", cwd=tmp_path / "clone").strip() == "first"
    assert (tmp_path / "clone" / "blob.bin").read_bytes() == (work / "blob.bin").read_bytes()
    records = running.audit.records
    assert records
    assert all(r["host"] == "gitrepo.test" and r["allowed"] for r in records)


def _directory_handler(root: Path) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# -- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (CGNAT, 100.64.0.0/10)"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private (unique local)"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::ffff:127.0.0.1", "loopback (inside ::ffff:7f00:1)"),
        ("::ffff:10.0.0.1", "private (inside ::ffff:a00:1)"),
        ("2002:a00:1::", "private (inside 2002:a00:1::)"),
        ("64:ff9b::a00:1", "private (inside 64:ff9b::a00:1)"),
        ("192.0.2.1", "special-purpose (not global)"),
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("8.8.8.8", None),
    ],
)
def test_special_address_kinds(address: str, kind: str | None) -> None:
    import ipaddress

    assert special_address_kind(ipaddress.ip_address(address)) == kind


def test_close_leaves_no_listener(make_proxy: ProxyFactory) -> None:
    running = make_proxy()
    running.call(running.proxy.close())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, running.port), timeout=2).close()


def test_serve_on_a_given_socket(servers: Servers) -> None:
    async def scenario() -> bytes:
        proxy = EgressProxy(
            [allow("allowed.test")],
            resolver=StaticResolver({"allowed.test": LOOPBACK}),
            session="s",
        )
        listener = socket.socket()
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]
        serving = asyncio.create_task(proxy.serve(listener))
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(
            f"GET http://allowed.test:{servers.http_port}/hello HTTP/1.1\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        await proxy.close()
        await serving
        assert listener.fileno() == -1
        return data

    assert asyncio.run(scenario()).endswith(b"hello from the origin")
