"""The egress proxy: the only way out of an `allowlist` sandbox.

Host side, asyncio, one instance per session. It serves on a listening socket the
caller opened inside the session's network namespace (`serve`), so the sandbox
reaches it at a loopback address of its own and no host port is exposed.

It speaks two things:

- HTTP/1.1 forward proxying of absolute-form requests (`GET http://host/path`),
  rewritten to origin-form, hop-by-hop and `Proxy-*` headers stripped, `Host`
  regenerated from the request target, bodies streamed both ways
  (Content-Length or chunked), keep-alive towards the client, and towards the
  origin while requests go to the same host and port;
- `CONNECT host:port` tunnels that carry TLS and nothing else.

Every request passes these checks, in order; the first that fails answers it:

1. the request is parsed strictly: bounded line and head sizes, CRLF line ends,
   no obsolete line folding, one framing (Content-Length or chunked, never both),
   `http` absolute-form or CONNECT authority-form only, no userinfo. Anything
   else is a 400;
2. the host and port against the `[[network]]` rules (`rules.decide`); a deny
   rule wins. An IP literal passes only when a rule names that exact address;
3. a name no rule covers goes to the approval callback (`ask`) unless the policy
   is `never` or there is no callback: allow once, allow for the session
   (remembered for this host and port while the proxy lives), or deny;
4. the name is resolved on the host (never inside the sandbox). When any address
   it resolves to is loopback, private (RFC 1918, ULA), shared (100.64/10),
   link-local, multicast, unspecified, reserved or otherwise not global, the
   request is refused unless an allow rule names exactly that host (a wildcard is
   not enough) or that address: DNS-rebinding protection. An address a deny rule
   names is always refused;
5. the proxy connects to an address it checked: it never resolves again;
6. CONNECT only: after `200`, the client's first bytes must be a TLS ClientHello
   whose SNI equals the CONNECT host; no SNI is refused when the CONNECT host is
   a name. A mismatch or anything not TLS closes the tunnel.

A refusal is `403 Forbidden` (before any tunnel is set up) whose text body names
the rule and says how to allow the host. Every request, allowed or refused,
ends in exactly one audit record, `network.request`, with the fields `session,
method, host, port, allowed, rule, reason, bytes_up, bytes_down, duration_ms,
status, error`. `bytes_up` counts what the proxy sent to the origin (request head
and body, or tunnel bytes), `bytes_down` what it relayed back from the origin;
the proxy's own error responses are not counted. Records are written in order
by one worker thread, so a slow log (fsync) never stalls the relay; when the log
cannot be written, the proxy refuses every later request with 503 (fail closed).

Bulk bytes move socket -> pipe -> socket with `splice(2)` on Linux, so they never
enter Python (see `_pump`); small ones through one small buffer. A request without
a body that meets an origin connection which closed while idle is sent once more
on a new connection.

Known limits: what is inside a TLS tunnel is not inspected, so an HTTP `Host`
header inside it may name another site on the same server (domain fronting); the
address is still one that was checked. A ClientHello using Encrypted Client Hello
carries the public name in its outer SNI, which will not match and is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import ipaddress
import logging
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from harness.net.rules import (
    Host,
    IPAddress,
    address_denied,
    address_listed,
    decide,
    is_listed_exactly,
    normalize_host,
    parse_host,
)
from harness.policy.modes import ApprovalPolicy
from harness.policy.rules import NetworkRule

_log = logging.getLogger(__name__)

AUDIT_EVENT = "network.request"


class Approval(enum.Enum):
    """A human's answer for a host no rule covers."""

    ALLOW_ONCE = "allow-once"
    ALLOW_SESSION = "allow-session"
    DENY = "deny"


Asker = Callable[[str, int], Awaitable[Approval]]
"""Asked with the canonical host name and the port; may take as long as a human does."""

AuditSink = Callable[..., object]
"""Called as `audit("network.request", **fields)`, e.g. `AuditLog.append`."""


class Resolver(Protocol):
    """Turns a host name into the addresses the proxy may connect to."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Numeric addresses for `host`; raise OSError or TimeoutError when there are none."""
        ...


class SystemResolver:
    """The host's resolver (`getaddrinfo` in a thread), bounded by a timeout."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        addresses: list[str] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                address = str(sockaddr[0])
                if address not in addresses:
                    addresses.append(address)
        return addresses


class StaticResolver:
    """A fixed table of names to addresses, for tests and benchmarks.

    Keys are normalised like hosts (case, trailing dot, IDNA); a name not in the
    table does not resolve.
    """

    def __init__(self, mapping: Mapping[str, str | Sequence[str]]) -> None:
        self._table = {
            normalize_host(name): [value] if isinstance(value, str) else list(value)
            for name, value in mapping.items()
        }

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            return list(self._table[normalize_host(host)])
        except (KeyError, ValueError):
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the static table") from None


@dataclass(frozen=True)
class ProxyLimits:
    """Sizes (bytes) and timeouts (seconds) that bound what one client can make the proxy do."""

    max_line: int = 8 * 1024
    """The request line, one header line, or one chunk-size line."""
    max_head: int = 64 * 1024
    """A request or response head, or a chunked body's trailer section."""
    max_headers: int = 128
    max_client_hello: int = 64 * 1024
    """The TLS records carrying the ClientHello."""
    max_connections: int = 512
    buffer_size: int = 1024 * 1024
    """The most a relay moves at once, per direction: the pipe `splice` moves data
    through (kernel memory, only while data is in flight), or the user-space buffer
    where `splice` is unavailable (grown from 64 KiB as a transfer proves bulky)."""
    header_timeout: float = 30.0
    """For a whole request head, once its first byte arrived."""
    keepalive_timeout: float = 120.0
    """Between two requests on one client connection."""
    connect_timeout: float = 15.0
    hello_timeout: float = 30.0
    """For the ClientHello after a CONNECT was answered."""
    idle_timeout: float = 600.0
    """No byte either way while a request or tunnel is in progress."""
    approval_timeout: float = 600.0
    """For the human to answer; no answer is a denial."""


class EgressProxy:
    """One session's egress proxy; see the module docstring for what it checks.

    Args:
        rules: the session's `[[network]]` rules.
        resolver: how names are resolved on the host (default `SystemResolver`).
        audit: receives one `network.request` record per request. It is called
            from one worker thread, one record at a time, in order.
        ask: the approval callback for a host no rule covers; None refuses.
        policy: `never` refuses without asking; the others ask when `ask` is given.
        session: the session id written in every audit record.
        limits: sizes and timeouts.
    """

    def __init__(
        self,
        rules: Sequence[NetworkRule],
        *,
        resolver: Resolver | None = None,
        audit: AuditSink | None = None,
        ask: Asker | None = None,
        policy: ApprovalPolicy = ApprovalPolicy.ON_REQUEST,
        session: str = "",
        limits: ProxyLimits | None = None,
    ) -> None:
        self._rules = tuple(rules)
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self._audit = audit
        self._ask = ask
        self._policy = policy
        self._session = session
        self._limits = limits if limits is not None else ProxyLimits()
        self._session_allowed: set[tuple[str, int]] = set()
        self._ask_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._ask_waiting: dict[tuple[str, int], int] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self._acceptors: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._stopped: asyncio.Event | None = None
        self._closing = False
        self._audit_pool: ThreadPoolExecutor | None = None
        self._audit_failure: str | None = None

    @property
    def session_allowed(self) -> frozenset[tuple[str, int]]:
        """(host, port) pairs a human allowed for the rest of the session."""
        return frozenset(self._session_allowed)

    @property
    def audit_failure(self) -> str | None:
        """Why the audit log could not be written, once that happened (then all is refused)."""
        return self._audit_failure

    async def serve(self, sock: socket.socket) -> None:
        """Serve on a listening socket until `close`; the proxy owns and closes it."""
        if self._closing:
            sock.close()
            return
        sock.setblocking(False)
        stopped = self._stopped_event()
        loop = asyncio.get_running_loop()
        acceptor = loop.create_task(self._accept_loop(sock))
        self._acceptors.add(acceptor)
        waiter = loop.create_task(stopped.wait())
        try:
            await asyncio.wait({acceptor, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acceptor
            self._acceptors.discard(acceptor)
            sock.close()

    async def start_on(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on `host:port` and serve in the background; returns the bound address."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        task = asyncio.get_running_loop().create_task(self.serve(sock))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop accepting, cut every connection, and write the remaining audit records."""
        self._closing = True
        self._stopped_event().set()
        for task in (*self._acceptors, *self._connections):
            task.cancel()
        pending = [*self._acceptors, *self._connections, *self._background]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        pool, self._audit_pool = self._audit_pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)

    # -- accepting ---------------------------------------------------------------------

    def _stopped_event(self) -> asyncio.Event:
        if self._stopped is None:
            self._stopped = asyncio.Event()
        return self._stopped

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _peer = await loop.sock_accept(sock)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    _log.warning("egress proxy cannot accept: %s; retrying", exc)
                    await asyncio.sleep(0.1)
                    continue
                raise
            conn.setblocking(False)
            _nodelay(conn)
            if len(self._connections) >= self._limits.max_connections:
                with contextlib.suppress(OSError):
                    conn.send(_plain_response(503, "too many connections to the egress proxy\n"))
                conn.close()
                continue
            task = loop.create_task(self._serve_client(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    # -- one client connection ---------------------------------------------------------

    async def _serve_client(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        client = _Stream(sock, loop)
        link = _Link()
        try:
            while True:
                started = loop.time()
                try:
                    head = await self._read_request_head(client)
                except _Malformed as exc:
                    record = _Record(started, method="")
                    record.reason = f"malformed request: {exc}"
                    await self._answer_error(client, record, 400, record.reason)
                    return
                except TimeoutError:
                    if client.buf:
                        record = _Record(started, method="")
                        record.reason = "the request head did not arrive in time"
                        await self._answer_error(client, record, 408, record.reason)
                    return
                if head is None:
                    return
                if not await self._handle(client, head, link, loop.time()):
                    return
        except (OSError, _Eof):
            pass
        except Exception:  # one broken connection must never stop the proxy
            _log.exception("egress proxy: unexpected error on a client connection")
        finally:
            link.close()
            client.close()

    async def _read_request_head(self, client: _Stream) -> bytes | None:
        limits = self._limits
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(limits.keepalive_timeout) as deadline:
            if not client.buf and not await client.fill():
                return None
            deadline.reschedule(loop.time() + limits.header_timeout)
            return await client.read_head(limits.max_head)

    async def _handle(self, client: _Stream, head: bytes, link: _Link, started: float) -> bool:
        """Answer one request; True when the client connection may carry another."""
        record = _Record(started, method="")
        try:
            request = _parse_request(head, self._limits)
        except _Malformed as exc:
            record.method = _method_of(head)
            record.reason = f"malformed request: {exc}"
            await self._answer_error(client, record, 400, record.reason)
            return False
        except _HttpError as exc:
            record.method = _method_of(head)
            record.reason = exc.message
            await self._answer_error(client, record, exc.status, exc.message)
            return False
        record.method = request.method
        record.host = request.host.name
        record.port = request.port
        if self._audit_failure is not None:
            record.reason = f"the audit log cannot be written ({self._audit_failure})"
            await self._answer_error(client, record, 503, record.reason)
            return False
        grant = await self._authorise(request)
        if isinstance(grant, _Refusal):
            record.reason = grant.reason
            record.rule = grant.rule
            body = f"{grant.reason}\n{grant.hint}\n" if grant.hint else f"{grant.reason}\n"
            await self._answer_error(client, record, grant.status, body)
            return False
        record.allowed = True
        record.reason = grant.reason
        record.rule = grant.rule
        if request.method == "CONNECT":
            link.close()
            try:
                await self._tunnel(client, request, grant, record)
            finally:
                self._emit(record)
            return False
        try:
            return await self._forward(client, request, grant, link, record)
        finally:
            self._emit(record)

    # -- the checks --------------------------------------------------------------------

    async def _authorise(self, request: _Request) -> _Grant | _Refusal:
        host, port = request.host, request.port
        where = f"{host.display}:{port}"
        decision = decide(host.name, port, self._rules)
        rule = decision.rule
        reason = decision.reason
        if not decision.allowed:
            if rule is not None:
                return _Refusal(
                    403,
                    reason,
                    rule,
                    "a deny rule wins over every allow rule: remove or change it "
                    f"({rule.origin}) to allow {host.name}",
                )
            if host.ip is not None:
                return _Refusal(
                    403,
                    f"{reason}: an IP address is reachable only when a rule names that exact address",
                    None,
                    _how_to_allow(host.name),
                )
            answer = await self._ask_human(host.name, port)
            if answer is None:
                return _Refusal(403, reason, None, _how_to_allow(host.name))
            if answer is Approval.DENY:
                return _Refusal(
                    403, f"{where} was denied when asked", None, _how_to_allow(host.name)
                )
            reason = (
                f"{where} allowed for this session when asked"
                if answer is Approval.ALLOW_SESSION
                else f"{where} allowed once when asked"
            )
        if host.ip is not None:
            return _Grant((host.ip,), rule, reason)
        try:
            found = await self._resolver.resolve(host.name, port)
        except Exception as exc:  # any resolver failure is a failed request, not a crash
            return _Refusal(
                502, f"{reason}, but {host.name} cannot be resolved: {_describe(exc)}", rule, ""
            )
        if not found:
            return _Refusal(502, f"{reason}, but {host.name} resolves to no address", rule, "")
        exact = is_listed_exactly(host.name, self._rules)
        addresses: list[IPAddress] = []
        for text in found:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                return _Refusal(
                    502, f"the resolver gave {text!r} for {host.name}, not an address", rule, ""
                )
            denied = address_denied(str(address), self._rules, port)
            if denied is not None:
                return _Refusal(
                    403,
                    f"{host.name} resolves to {address}, which {denied.describe()} names",
                    denied,
                    "a deny rule wins over every allow rule: remove or change it "
                    f"({denied.origin}) to allow this address",
                )
            kind = special_address_kind(address)
            if (
                kind is not None
                and not exact
                and not address_listed(str(address), self._rules, port)
            ):
                return _Refusal(
                    403,
                    f"{host.name} resolves to {address}, a {kind} address; a name may reach such an "
                    "address only when a rule names exactly that host (a wildcard is not enough) "
                    "or that address",
                    rule,
                    _how_to_allow(host.name) + f", or one for the address {address}",
                )
            addresses.append(address)
        return _Grant(tuple(addresses), rule, reason)

    async def _ask_human(self, host: str, port: int) -> Approval | None:
        """The human's answer, or None when nobody may or can be asked."""
        key = (host, port)
        if key in self._session_allowed:
            return Approval.ALLOW_SESSION
        if self._policy is ApprovalPolicy.NEVER or self._ask is None:
            return None
        # Requests for the same host and port wait for one answer at a time, so an
        # "allow for the session" answer spares the others the question.
        lock = self._ask_locks.setdefault(key, asyncio.Lock())
        self._ask_waiting[key] = self._ask_waiting.get(key, 0) + 1
        try:
            async with lock:
                if key in self._session_allowed:
                    return Approval.ALLOW_SESSION
                answer = await self._ask_once(self._ask, host, port)
                if answer is Approval.ALLOW_SESSION:
                    self._session_allowed.add(key)
                return answer
        finally:
            self._ask_waiting[key] -= 1
            if not self._ask_waiting[key]:
                del self._ask_waiting[key]
                del self._ask_locks[key]

    async def _ask_once(self, ask: Asker, host: str, port: int) -> Approval:
        try:
            async with asyncio.timeout(self._limits.approval_timeout):
                answer: object = await ask(host, port)
        except TimeoutError:
            _log.info("egress proxy: no answer about %s:%s in time; denied", host, port)
            return Approval.DENY
        except Exception:
            _log.exception("egress proxy: the approval callback failed; denied")
            return Approval.DENY
        return answer if isinstance(answer, Approval) else Approval.DENY

    async def _connect(self, grant: _Grant, port: int) -> socket.socket:
        """A connection to the first checked address that answers.

        Raises:
            _HttpError: 502 when none does, 504 when they time out.
        """
        loop = asyncio.get_running_loop()
        failures: list[str] = []
        timeouts = 0
        for address in grant.addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self._limits.connect_timeout):
                    await loop.sock_connect(sock, (str(address), port))
            except TimeoutError:
                sock.close()
                timeouts += 1
                failures.append(f"{address}: timed out")
                continue
            except OSError as exc:
                sock.close()
                failures.append(f"{address}: {_describe(exc)}")
                continue
            except BaseException:
                sock.close()
                raise
            _nodelay(sock)
            return sock
        status = 504 if timeouts == len(failures) else 502
        raise _HttpError(status, f"cannot connect to port {port}: {'; '.join(failures)}")

    # -- HTTP forwarding ---------------------------------------------------------------

    async def _forward(
        self, client: _Stream, request: _Request, grant: _Grant, link: _Link, record: _Record
    ) -> bool:
        """Relay one request and its response; True when the client connection goes on."""
        loop = asyncio.get_running_loop()
        key = (request.host.name, request.port)
        for attempt in (1, 2):
            reused = link.stream is not None and link.key == key and link.alive()
            if not reused:
                link.close()
                try:
                    sock = await self._connect(grant, request.port)
                except _HttpError as exc:
                    record.error = exc.message
                    await self._answer_error(client, record, exc.status, exc.message, emit=False)
                    return False
                link.stream, link.key = _Stream(sock, loop), key
            assert link.stream is not None  # noqa: S101 - for mypy: set just above
            try:
                response, keep_client = await self._exchange(client, link.stream, request, record)
            except _Failed as failed:
                link.close()
                # An idle origin connection may close just as a request goes out; a
                # request without a body is sent again once, on a new connection.
                if (
                    attempt == 1
                    and reused
                    and failed.retriable
                    and request.framing is _Framing.NONE
                ):
                    record.bytes_up = 0
                    continue
                status, message = self._failure(failed.cause)
                record.error = message
                if not record.responded and not client.closed:
                    await self._answer_error(client, record, status, message, emit=False)
                return False
            if response is None or not response.reusable or not request.reusable_upstream:
                link.close()
            return keep_client
        return False

    async def _exchange(
        self, client: _Stream, upstream: _Stream, request: _Request, record: _Record
    ) -> tuple[_Response | None, bool]:
        """Send the request, relay the response; the response (None when the origin
        connection cannot be reused) and whether the client connection goes on.

        Raises:
            _Failed: wrapping what went wrong.
        """
        loop = asyncio.get_running_loop()
        idle = _Idle(loop, self._limits.idle_timeout)
        upload: asyncio.Task[None] | None = None
        response: _Response | None = None
        try:
            async with asyncio.timeout(self._limits.idle_timeout) as deadline:
                idle.deadline = deadline
                # A head goes out with the part of a Content-Length body already
                # read, in one send: a small request or response costs one syscall.
                early = _take(client, request.length)  # empty unless Content-Length
                body_left = request.length - len(early)
                head = request.upstream_head() + early
                await upstream.send(head)
                record.bytes_up += len(head)
                if request.framing is _Framing.CHUNKED or body_left:
                    upload = loop.create_task(
                        self._upload(client, upstream, request.framing, body_left, record, idle)
                    )
                response = await self._read_response(client, upstream, request, record)
                keep_client = request.keep_alive and response.framing is not _Framing.UNTIL_CLOSE
                out = response.client_head(keep_client)
                length_left = response.length
                if response.framing is _Framing.LENGTH:
                    early = _take(upstream, length_left)
                    out += early
                    length_left -= len(early)
                    record.bytes_down += len(early)
                await client.send(out)
                record.responded = True
                record.status = response.status
                await _relay_body(
                    upstream,
                    client,
                    response.framing,
                    length_left,
                    self._limits,
                    idle,
                    record,
                    downstream=True,
                )
                if upload is not None:
                    if not upload.done():
                        # The origin answered before the request body ended: the rest
                        # of it cannot be framed, so neither connection is reused.
                        return None, False
                    await upload
                return response, keep_client
        except (_Malformed, _HttpError, _Eof, OSError, TimeoutError) as exc:
            cause: BaseException = exc
            if upload is not None and upload.done() and not upload.cancelled():
                cause = upload.exception() or exc
            nothing_back = response is None and record.bytes_down == 0
            retriable = nothing_back and isinstance(
                cause, _Eof | _OriginClosed | ConnectionResetError | BrokenPipeError
            )
            raise _Failed(cause, retriable=retriable) from exc
        finally:
            if upload is not None and not upload.done():
                upload.cancel()
                with contextlib.suppress(BaseException):
                    await upload

    def _failure(self, exc: BaseException) -> tuple[int, str]:
        """The status and text for a request that failed part way."""
        if isinstance(exc, _Malformed):
            return (400 if exc.client_side else 502), str(exc)
        if isinstance(exc, _HttpError):
            return exc.status, exc.message
        if isinstance(exc, TimeoutError):
            return 504, f"nothing moved for {self._limits.idle_timeout:g} s"
        if isinstance(exc, OSError):
            return 502, f"the connection failed: {_describe(exc)}"
        return 502, str(exc) or type(exc).__name__

    async def _upload(
        self,
        client: _Stream,
        upstream: _Stream,
        framing: _Framing,
        length: int,
        record: _Record,
        idle: _Idle,
    ) -> None:
        try:
            await _relay_body(
                client,
                upstream,
                framing,
                length,
                self._limits,
                idle,
                record,
                downstream=False,
            )
        except BaseException:
            # Wake the response reader: the request can no longer complete.
            with contextlib.suppress(OSError):
                upstream.sock.shutdown(socket.SHUT_RDWR)
            raise

    async def _read_response(
        self, client: _Stream, upstream: _Stream, request: _Request, record: _Record
    ) -> _Response:
        while True:
            try:
                head = await upstream.read_head(self._limits.max_head)
            except _Malformed as exc:
                raise _Malformed(
                    f"the origin sent a malformed response: {exc}", client_side=False
                ) from None
            if head is None:
                raise _OriginClosed(502, "the origin closed the connection without a response")
            response = _parse_response(head, request, self._limits)
            record.bytes_down += len(head) + 2
            if response.status == 101:
                raise _HttpError(
                    502, "the origin switched protocols, which the proxy does not relay"
                )
            if response.status >= 200:
                return response
            if request.version == "HTTP/1.1":
                await client.send(response.client_head(keep_alive=True))

    # -- CONNECT -----------------------------------------------------------------------

    async def _tunnel(
        self, client: _Stream, request: _Request, grant: _Grant, record: _Record
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = await self._connect(grant, request.port)
        except _HttpError as exc:
            record.error = exc.message
            await self._answer_error(client, record, exc.status, exc.message, emit=False)
            return
        upstream = _Stream(sock, loop)
        try:
            await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            record.status = 200
            record.responded = True
            try:
                async with asyncio.timeout(self._limits.hello_timeout):
                    sni = await _read_client_hello(client, self._limits.max_client_hello)
            except _NotTLS as exc:
                record.allowed = False
                record.reason = f"tunnel closed: {exc}"
                return
            except TimeoutError:
                record.allowed = False
                record.reason = "tunnel closed: no TLS ClientHello arrived in time"
                return
            problem = _sni_problem(sni, request.host)
            if problem is not None:
                record.allowed = False
                record.reason = f"tunnel closed: {problem}"
                return
            idle = _Idle(loop, self._limits.idle_timeout)
            first = bytes(client.buf)
            client.buf.clear()
            async with asyncio.timeout(self._limits.idle_timeout) as deadline:
                idle.deadline = deadline
                await upstream.send(first)
                record.bytes_up += len(first)
                await _relay_both_ways(client, upstream, self._limits.buffer_size, idle, record)
        except TimeoutError:
            record.error = f"nothing moved for {self._limits.idle_timeout:g} s"
        except (OSError, _Eof) as exc:
            record.error = _describe(exc) if isinstance(exc, OSError) else str(exc)
        finally:
            upstream.close()

    # -- answers and records -----------------------------------------------------------

    async def _answer_error(
        self, client: _Stream, record: _Record, status: int, text: str, *, emit: bool = True
    ) -> None:
        record.status = status
        body = text if text.endswith("\n") else text + "\n"
        try:
            await client.send(_plain_response(status, body))
            await client.finish()
        except (OSError, _Eof):
            pass
        finally:
            if emit:
                self._emit(record)

    def _emit(self, record: _Record) -> None:
        if self._audit is None:
            return
        loop = asyncio.get_running_loop()
        fields: dict[str, object] = {
            "session": self._session,
            "method": record.method,
            "host": record.host,
            "port": record.port,
            "allowed": record.allowed,
            "rule": record.rule.describe() if record.rule is not None else None,
            "reason": record.reason,
            "bytes_up": record.bytes_up,
            "bytes_down": record.bytes_down,
            "duration_ms": round((loop.time() - record.started) * 1000, 3),
            "status": record.status,
            "error": record.error,
        }
        if self._audit_pool is None:
            self._audit_pool = ThreadPoolExecutor(1, thread_name_prefix="harness-proxy-audit")
        self._audit_pool.submit(self._write_audit, fields)

    def _write_audit(self, fields: dict[str, object]) -> None:
        assert self._audit is not None  # noqa: S101 - only submitted when set
        try:
            self._audit(AUDIT_EVENT, **fields)
        except Exception as exc:
            self._audit_failure = str(exc) or type(exc).__name__
            _log.exception("egress proxy: cannot write the audit record; refusing from now on")


# -- addresses ---------------------------------------------------------------------------

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_RFC1918 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)
_ULA = ipaddress.IPv6Network("fc00::/7")


def special_address_kind(address: IPAddress) -> str | None:
    """What makes an address one a name may not silently resolve to, or None when global.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged
    by the IPv4 address too.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.append(address.teredo[1])
        if any(address in net for net in _NAT64):
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for inner in embedded:
            kind = special_address_kind(inner)
            if kind is not None:
                return f"{kind} (inside {address})"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address):
        if address in _CGNAT:
            return "shared (CGNAT, 100.64.0.0/10)"
        if any(address in net for net in _RFC1918):
            return "private"
    elif address in _ULA:
        return "private (unique local)"
    if address.is_reserved:
        return "reserved"
    if address.is_private or not address.is_global:
        return "special-purpose (not global)"
    return None


# -- HTTP messages -----------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
"""Never forwarded as received; framing (length, chunked) and Host are regenerated."""

_BARE_LF = re.compile(rb"(?<!\r)\n")
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TARGET = frozenset(range(0x21, 0x7F))
_BAD_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x1f\x7f \t])?)[ \t]*"
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class _Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


class _Malformed(Exception):
    """A message that breaks the grammar or a limit."""

    def __init__(self, message: str, *, client_side: bool = True) -> None:
        super().__init__(message)
        self.client_side = client_side


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _OriginClosed(_HttpError):
    """The origin closed the connection before any response."""


class _Failed(Exception):
    """A request that failed part way, and whether sending it again is safe."""

    def __init__(self, cause: BaseException, *, retriable: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.retriable = retriable


class _Eof(Exception):
    """The peer closed the connection in the middle of a message."""


class _NotTLS(Exception):
    pass


@dataclass
class _Record:
    """What the audit record of one proxied request will say."""

    started: float
    method: str
    host: str = ""
    port: int = 0
    allowed: bool = False
    rule: NetworkRule | None = None
    reason: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    status: int | None = None
    error: str | None = None
    responded: bool = False


@dataclass(frozen=True)
class _Grant:
    """A destination allowed, with the addresses checked for it."""

    addresses: tuple[IPAddress, ...]
    rule: NetworkRule | None
    reason: str


@dataclass(frozen=True)
class _Refusal:
    """A destination refused: the 403 (or other status) to send, and why."""

    status: int
    reason: str
    rule: NetworkRule | None
    hint: str


@dataclass(frozen=True)
class _Request:
    """A parsed request head from the sandbox."""

    method: str
    host: Host
    port: int
    path: str
    version: str
    headers: tuple[tuple[str, str], ...]
    framing: _Framing
    length: int
    keep_alive: bool

    @property
    def reusable_upstream(self) -> bool:
        return self.version == "HTTP/1.1"

    def upstream_head(self) -> bytes:
        authority = self.host.display if self.port == 80 else f"{self.host.display}:{self.port}"
        lines = [f"{self.method} {self.path} {self.version}", f"Host: {authority}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if self.framing is _Framing.LENGTH:
            lines.append(f"Content-Length: {self.length}")
        elif self.framing is _Framing.CHUNKED:
            lines.append("Transfer-Encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class _Response:
    """A parsed response head from the origin."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    framing: _Framing
    length: int
    reusable: bool

    def client_head(self, keep_alive: bool) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}".rstrip()]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if self.framing is _Framing.LENGTH:
            lines.append(f"Content-Length: {self.length}")
        elif self.framing is _Framing.CHUNKED:
            lines.append("Transfer-Encoding: chunked")
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _split_head(
    head: bytes, limits: ProxyLimits, *, client_side: bool
) -> tuple[bytes, list[tuple[str, str]]]:
    """The start line and the header fields of a head that ends with CRLF."""
    lines = head.split(b"\r\n")
    if lines[-1] != b"":
        raise _Malformed("the head does not end with CRLF", client_side=client_side)
    lines.pop()
    if len(lines) - 1 > limits.max_headers:
        raise _Malformed(f"more than {limits.max_headers} header fields", client_side=client_side)
    fields: list[tuple[str, str]] = []
    start = lines[0]
    if len(start) > limits.max_line:
        raise _Malformed(f"a line longer than {limits.max_line} bytes", client_side=client_side)
    if _BAD_CHAR.search(start):
        raise _Malformed("a control character, bare CR or LF", client_side=client_side)
    for line in lines[1:]:
        match = _FIELD.fullmatch(line)
        if match is None or len(line) > limits.max_line:
            raise _Malformed(_field_problem(line, limits), client_side=client_side)
        fields.append((match[1].decode("ascii"), match[2].decode("latin-1")))
    return lines[0], fields


def _field_problem(line: bytes, limits: ProxyLimits) -> str:
    """Why a header line does not parse (the slow path, for the message only)."""
    if len(line) > limits.max_line:
        return f"a line longer than {limits.max_line} bytes"
    name, colon, value = line.partition(b":")
    if not colon:
        return "a header line without ':'"
    if name[:1] in (b" ", b"\t"):
        return "obsolete line folding"
    if not name or not set(name) <= _TOKEN:
        return f"an invalid header name {name[:40]!r}"
    del value
    return f"a control character, bare CR or LF in header {name.decode('ascii')!r}"


def _tokens(fields: Sequence[tuple[str, str]], name: str) -> list[str]:
    found: list[str] = []
    for field_name, value in fields:
        if field_name.lower() == name:
            found.extend(t.strip().lower() for t in value.split(",") if t.strip())
    return found


def _values(fields: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [value for field_name, value in fields if field_name.lower() == name]


def _forwardable(fields: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    named = set(_tokens(fields, "connection")) - {"content-length", "transfer-encoding"}
    return tuple(
        (name, value)
        for name, value in fields
        if (lower := name.lower()) not in _HOP_BY_HOP
        and not lower.startswith("proxy-")
        and lower not in named
    )


def _content_length(values: Sequence[str], *, client_side: bool) -> int:
    numbers = {v.strip() for value in values for v in value.split(",")}
    if len(numbers) != 1:
        raise _Malformed("conflicting Content-Length values", client_side=client_side)
    (text,) = numbers
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise _Malformed(f"an invalid Content-Length {text[:20]!r}", client_side=client_side)
    return int(text)


def _method_of(head: bytes) -> str:
    method = head.split(b" ", 1)[0][:32]
    return method.decode("ascii") if set(method) <= _TOKEN else ""


def _parse_request(head: bytes, limits: ProxyLimits) -> _Request:
    start, fields = _split_head(head, limits, client_side=True)
    parts = start.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise _Malformed("the request line is not 'METHOD TARGET HTTP/1.1'")
    raw_method, raw_target, raw_version = parts
    if not set(raw_method) <= _TOKEN:
        raise _Malformed("an invalid method")
    if not set(raw_target) <= _TARGET:
        raise _Malformed("the request target has spaces, controls or non-ASCII bytes")
    method = raw_method.decode("ascii")
    target = raw_target.decode("ascii")
    version = raw_version.decode("ascii", "replace")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if len(version) == 8 and version.startswith("HTTP/") and version[5::2].isdigit():
            raise _HttpError(505, f"{version} is not supported; use HTTP/1.1")
        raise _Malformed("an invalid HTTP version")
    if method == "CONNECT":
        host, port = _parse_authority(target, default_port=None)
        if _values(fields, "content-length") or _values(fields, "transfer-encoding"):
            raise _Malformed("a CONNECT request with a body")
        return _Request(method, host, port, "", version, (), _Framing.NONE, 0, False)
    lowered = target[:8].lower()
    if lowered.startswith("https://"):
        raise _HttpError(
            400, "the proxy does not originate TLS: send https:// requests through CONNECT"
        )
    if not lowered.startswith("http://"):
        raise _HttpError(
            400,
            "this is a forward proxy: the request target must be an absolute http:// URL "
            "(or CONNECT host:port)",
        )
    rest = target[7:]
    if "#" in rest:
        raise _Malformed("a fragment in the request target")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise _Malformed("user information in the request target")
    if not path.startswith("/"):
        path = "/" + path
    host, port = _parse_authority(authority, default_port=80)
    te = _tokens(fields, "transfer-encoding")
    lengths = _values(fields, "content-length")
    if te:
        if lengths:
            raise _Malformed("both Transfer-Encoding and Content-Length")
        if version == "HTTP/1.0":
            raise _Malformed("Transfer-Encoding in an HTTP/1.0 request")
        if te != ["chunked"]:
            raise _HttpError(
                501, f"transfer coding {', '.join(te)!r} is not supported; use chunked"
            )
        framing, length = _Framing.CHUNKED, 0
    elif lengths:
        length = _content_length(lengths, client_side=True)
        framing = _Framing.LENGTH
    else:
        framing, length = _Framing.NONE, 0
    connection = _tokens(fields, "connection")
    keep_alive = version == "HTTP/1.1" and "close" not in connection
    return _Request(
        method, host, port, path, version, _forwardable(fields), framing, length, keep_alive
    )


def _parse_authority(authority: str, *, default_port: int | None) -> tuple[Host, int]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _Malformed("an unclosed '[' in the host")
        host_text, rest = authority[: close + 1], authority[close + 1 :]
        if rest and not rest.startswith(":"):
            raise _Malformed("text after the IPv6 address")
        port_text = rest[1:] if rest else None
    else:
        host_text, colon, port_text_raw = authority.partition(":")
        if ":" in port_text_raw:
            raise _Malformed("an IPv6 address must be in brackets")
        port_text = port_text_raw if colon else None
    if port_text is None:
        if default_port is None:
            raise _Malformed("CONNECT needs host:port")
        port = default_port
    else:
        if not port_text.isdigit() or len(port_text) > 5:
            raise _Malformed(f"an invalid port {port_text[:8]!r}")
        port = int(port_text)
        if not 0 < port < 65536:
            raise _Malformed(f"port {port} is out of range")
    if not host_text:
        raise _Malformed("no host")
    try:
        host = parse_host(host_text)
    except ValueError as exc:
        raise _Malformed(f"an invalid host {host_text[:80]!r}: {exc}") from None
    return host, port


def _parse_response(head: bytes, request: _Request, limits: ProxyLimits) -> _Response:
    start, fields = _split_head(head, limits, client_side=False)
    version, _, rest = start.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise _Malformed("the origin's status line is not 'HTTP/1.1 NNN reason'", client_side=False)
    status = int(code)
    if status < 100:
        raise _Malformed(f"status {status} is not a valid status", client_side=False)
    if _BAD_CHAR.search(reason):
        raise _Malformed("a control character in the origin's reason phrase", client_side=False)
    te = _tokens(fields, "transfer-encoding")
    lengths = _values(fields, "content-length")
    kept = list(_forwardable(fields))
    length = 0
    if request.method == "HEAD" or status < 200 or status in (204, 304):
        framing = _Framing.NONE
        if lengths and status != 204:
            with contextlib.suppress(_Malformed):
                kept.append(("Content-Length", str(_content_length(lengths, client_side=False))))
    elif te:
        if lengths:
            raise _Malformed(
                "the origin sent both Transfer-Encoding and Content-Length", client_side=False
            )
        if te != ["chunked"]:
            raise _HttpError(
                502,
                f"the origin used transfer coding {', '.join(te)!r}, which the proxy does not relay",
            )
        framing = _Framing.CHUNKED
    elif lengths:
        length = _content_length(lengths, client_side=False)
        framing = _Framing.LENGTH
    else:
        framing = _Framing.UNTIL_CLOSE
    reusable = (
        version == b"HTTP/1.1"
        and "close" not in _tokens(fields, "connection")
        and framing is not _Framing.UNTIL_CLOSE
    )
    return _Response(status, reason.decode("latin-1"), tuple(kept), framing, length, reusable)


def _plain_response(status: int, body: str) -> bytes:
    data = body.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Connection: close\r\n"
        f"X-Harness-Proxy: {'refused' if status == 403 else 'error'}\r\n\r\n"
    )
    return head.encode("ascii") + data


def _how_to_allow(name: str) -> str:
    return f'allow it with `--allow-domain {name}` or a `[[network]] domain = "{name}"` entry'


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- sockets -----------------------------------------------------------------------------


class _Stream:
    """A non-blocking socket with a read buffer for parsing; bulk data bypasses the buffer."""

    __slots__ = ("buf", "closed", "loop", "sock")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.loop = loop
        self.buf = bytearray()
        self.closed = False

    async def fill(self, size: int = 64 * 1024) -> int:
        data = await self.loop.sock_recv(self.sock, size)
        self.buf += data
        return len(data)

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def read_head(self, max_head: int) -> bytes | None:
        """A message head up to and including its last header's CRLF; None on a clean EOF."""
        searched = 0
        while True:
            while self.buf[:2] == b"\r\n":
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n", max(0, searched - 3))
            if end >= 0:
                if end + 4 > max_head:
                    raise _Malformed(f"a head larger than {max_head} bytes")
                head = bytes(self.buf[: end + 2])
                del self.buf[: end + 4]
                return head
            if len(self.buf) >= max_head:
                raise _Malformed(f"a head larger than {max_head} bytes")
            if _BARE_LF.search(self.buf, max(0, searched - 1)):
                raise _Malformed("a line ending in a bare LF (lines must end with CRLF)")
            searched = len(self.buf)
            if not await self.fill():
                if self.buf:
                    raise _Malformed("the connection closed in the middle of a head")
                return None

    async def read_line(self, max_line: int) -> bytes:
        """One CRLF-terminated line, without the CRLF."""
        searched = 0
        while True:
            end = self.buf.find(b"\r\n", max(0, searched - 1))
            if end >= 0:
                if end > max_line:
                    raise _Malformed(f"a line longer than {max_line} bytes")
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                if b"\r" in line or b"\n" in line:
                    raise _Malformed("a bare CR or LF")
                return line
            if len(self.buf) > max_line:
                raise _Malformed(f"a line longer than {max_line} bytes")
            searched = len(self.buf)
            if not await self.fill():
                raise _Eof("the connection closed in the middle of a message")

    async def finish(self) -> None:
        """Half-close, then briefly swallow what the peer still sends, so it reads our answer."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                drained = 0
                while drained < 1024 * 1024:
                    data = await self.loop.sock_recv(self.sock, 64 * 1024)
                    if not data:
                        break
                    drained += len(data)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class _Link:
    """The origin connection a client connection keeps between requests."""

    def __init__(self) -> None:
        self.stream: _Stream | None = None
        self.key: tuple[str, int] | None = None

    def alive(self) -> bool:
        """Whether the idle origin connection is still open and has sent nothing unasked."""
        if self.stream is None or self.stream.buf:
            return False
        try:
            data = self.stream.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        del data
        return False

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.stream = None
        self.key = None


class _Idle:
    """Pushes a shared deadline forward while bytes move (at most once a second)."""

    __slots__ = ("deadline", "last", "loop", "seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self.last = loop.time()
        self.deadline: asyncio.Timeout | None = None

    def touch(self) -> None:
        now = self.loop.time()
        if now - self.last > 1.0:
            self.last = now
            if self.deadline is not None:
                self.deadline.reschedule(now + self.seconds)


async def _relay_body(
    src: _Stream,
    dst: _Stream,
    framing: _Framing,
    length: int,
    limits: ProxyLimits,
    idle: _Idle,
    record: _Record,
    *,
    downstream: bool,
) -> None:
    """Copy one message body from `src` to `dst`, framing unchanged."""
    client_side = not downstream

    def count(n: int) -> None:
        if downstream:
            record.bytes_down += n
        else:
            record.bytes_up += n

    if framing is _Framing.NONE:
        return
    if framing is _Framing.LENGTH:
        await _relay_exactly(src, dst, length, limits.buffer_size, idle, count)
        return
    if framing is _Framing.UNTIL_CLOSE:
        await _relay_to_eof(src, dst, limits.buffer_size, idle, count)
        return
    while True:
        try:
            line = await src.read_line(limits.max_line)
        except _Malformed as exc:
            raise _Malformed(f"a malformed chunk: {exc}", client_side=client_side) from None
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if (
            not size_text
            or len(size_text) > 15
            or not all(c in b"0123456789abcdefABCDEF" for c in size_text)
        ):
            raise _Malformed(f"an invalid chunk size {size_text[:20]!r}", client_side=client_side)
        if _BAD_CHAR.search(line):
            raise _Malformed("a control character in a chunk extension", client_side=client_side)
        size = int(size_text, 16)
        out = line + b"\r\n"
        await dst.send(out)
        count(len(out))
        if size == 0:
            break
        await _relay_exactly(src, dst, size, limits.buffer_size, idle, count)
        while len(src.buf) < 2:
            if not await src.fill():
                raise _Eof("the connection closed in the middle of a chunk")
        if src.buf[:2] != b"\r\n":
            raise _Malformed("a chunk that does not end with CRLF", client_side=client_side)
        del src.buf[:2]
        await dst.send(b"\r\n")
        count(2)
    trailer = 0
    while True:
        try:
            line = await src.read_line(limits.max_line)
        except _Malformed as exc:
            raise _Malformed(f"a malformed trailer: {exc}", client_side=client_side) from None
        trailer += len(line) + 2
        if trailer > limits.max_head:
            raise _Malformed(
                "a trailer section larger than the head limit", client_side=client_side
            )
        if line and (line[:1] in (b" ", b"\t") or b":" not in line or _BAD_CHAR.search(line)):
            raise _Malformed("a malformed trailer field", client_side=client_side)
        await dst.send(line + b"\r\n")
        count(len(line) + 2)
        if not line:
            return


async def _relay_exactly(
    src: _Stream,
    dst: _Stream,
    length: int,
    buffer_size: int,
    idle: _Idle,
    count: Callable[[int], None],
) -> None:
    remaining = length - await _flush_buffered(src, dst, length, count)
    if (
        remaining
        and await _pump(src.sock, dst.sock, remaining, buffer_size, idle, count) < remaining
    ):
        raise _Eof("the connection closed before the end of the body")


async def _relay_to_eof(
    src: _Stream, dst: _Stream, buffer_size: int, idle: _Idle, count: Callable[[int], None]
) -> None:
    await _flush_buffered(src, dst, None, count)
    await _pump(src.sock, dst.sock, None, buffer_size, idle, count)


def _take(src: _Stream, limit: int) -> bytes:
    """Up to `limit` bytes that parsing already read past a head."""
    data = bytes(src.buf[:limit])
    del src.buf[:limit]
    return data


async def _flush_buffered(
    src: _Stream, dst: _Stream, limit: int | None, count: Callable[[int], None]
) -> int:
    """Send on what parsing already read past a head; returns how much."""
    take = len(src.buf) if limit is None else min(limit, len(src.buf))
    if take:
        data = bytes(src.buf[:take])
        del src.buf[:take]
        await dst.send(data)
        count(take)
    return take


async def _relay_both_ways(
    client: _Stream, upstream: _Stream, buffer_size: int, idle: _Idle, record: _Record
) -> None:
    """Relay both ways until both sides have finished sending (or one fails)."""
    loop = client.loop

    def up(n: int) -> None:
        record.bytes_up += n

    def down(n: int) -> None:
        record.bytes_down += n

    async def one_way(src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
        await _pump(src, dst, None, buffer_size, idle, count)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    tasks = {
        loop.create_task(one_way(client.sock, upstream.sock, up)),
        loop.create_task(one_way(upstream.sock, client.sock, down)),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_SPLICE_MIN = 64 * 1024
"""The copy buffer's first size, and the least a transfer must have left to splice."""
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_PIPE_BUDGET = 8
"""Splice pipes open at once, per process. A pipe's capacity counts against a per-user
limit (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default) past which every new
pipe of that user is shrunk to a page or two; 8 of 1 MiB stay far below it."""
_splice_works = sys.platform == "linux" and hasattr(os, "splice")
_pipes_open = 0


async def _pump(
    src: socket.socket,
    dst: socket.socket,
    limit: int | None,
    buffer_size: int,
    idle: _Idle,
    count: Callable[[int], None],
) -> int:
    """Move up to `limit` bytes (None: until EOF) from `src` to `dst`; returns how many.

    Bytes first go through a small user-space buffer. Once a read fills it (a bulk
    transfer), they go socket -> pipe -> socket with `splice` on Linux, never entering
    Python, until the source has nothing more to give right away; then the pipe is
    closed again. Without `splice`, or when the pipe budget is spent, the buffer
    doubles instead, up to `buffer_size`.
    """
    loop = asyncio.get_running_loop()
    moved = 0
    size = min(_SPLICE_MIN, buffer_size)
    buffer = bytearray(size)
    view = memoryview(buffer)
    try:
        while limit is None or moved < limit:
            want = size if limit is None else min(size, limit - moved)
            n = await loop.sock_recv_into(src, view[:want])
            if not n:
                return moved
            await loop.sock_sendall(dst, view[:n])
            moved += n
            idle.touch()
            left = None if limit is None else limit - moved
            if n < size or (left is not None and left < _SPLICE_MIN):
                continue
            pipe = _Pipe.open(buffer_size)
            if pipe is None:
                if size < buffer_size:
                    size = min(size * 2, buffer_size)
                    view.release()
                    buffer = bytearray(size)
                    view = memoryview(buffer)
                continue
            with pipe:
                while left is None or left > 0:
                    got = await pipe.move(
                        src, dst, buffer_size if left is None else min(buffer_size, left)
                    )
                    if got is None:
                        break
                    if not got:
                        return moved
                    moved += got
                    idle.touch()
                    if left is not None:
                        left -= got
        return moved
    finally:
        count(moved)


class _Pipe:
    """A non-blocking pipe that `splice` moves socket data through, inside the kernel."""

    __slots__ = ("read_fd", "write_fd")

    def __init__(self, size: int) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, size)

    @classmethod
    def open(cls, size: int) -> _Pipe | None:
        """A pipe, or None when `splice` does not work here or the budget is spent."""
        global _pipes_open  # noqa: PLW0603 - a per-process budget
        if not _splice_works or _pipes_open >= _PIPE_BUDGET:
            return None
        try:
            pipe = cls(size)
        except OSError:
            return None
        _pipes_open += 1
        return pipe

    def __enter__(self) -> _Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        global _pipes_open  # noqa: PLW0603
        _pipes_open -= 1
        os.close(self.read_fd)
        os.close(self.write_fd)

    async def move(self, src: socket.socket, dst: socket.socket, want: int) -> int | None:
        """Up to `want` bytes from `src` to `dst`: 0 at EOF, None when `src` has none ready."""
        global _splice_works  # noqa: PLW0603 - learnt once per process
        try:
            n = os.splice(src.fileno(), self.write_fd, want, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                _splice_works = False
                return None
            raise
        pending = n
        loop = asyncio.get_running_loop()
        while pending:
            try:
                pending -= os.splice(self.read_fd, dst.fileno(), pending, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await _wait_writable(loop, dst)
        return n


async def _wait_writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    fd = sock.fileno()
    loop.add_writer(fd, wake)
    try:
        await future
    finally:
        loop.remove_writer(fd)


# -- TLS ---------------------------------------------------------------------------------

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_HOST_NAME = 0
_MAX_RECORD = 2**14


async def _read_client_hello(client: _Stream, limit: int) -> str | None:
    """Wait for the whole ClientHello in `client.buf` (left there for relaying); its SNI."""
    while True:
        result = _parse_client_hello(bytes(client.buf), limit)
        if result is not None:
            return result[1]
        if not await client.fill():
            raise _NotTLS("the client closed the tunnel before completing a TLS ClientHello")


def _parse_client_hello(data: bytes, limit: int) -> tuple[int, str | None] | None:
    """(bytes used, SNI) once `data` holds a whole ClientHello; None when more is needed.

    Raises:
        _NotTLS: the data is not a TLS ClientHello, or breaks its grammar or `limit`.
    """
    position = 0
    handshake = bytearray()
    while True:
        if len(data) - position < 5:
            _check_size(len(data), limit)
            return None
        content_type, major, minor = data[position], data[position + 1], data[position + 2]
        if content_type != _HANDSHAKE:
            raise _NotTLS("the first bytes after CONNECT are not a TLS handshake record")
        if major != 3 or minor > 4:
            raise _NotTLS(f"TLS record version {major}.{minor} is not one the proxy knows")
        length = int.from_bytes(data[position + 3 : position + 5], "big")
        if length == 0 or length > _MAX_RECORD:
            raise _NotTLS(f"a TLS record of {length} bytes")
        end = position + 5 + length
        _check_size(end, limit)
        if len(data) < end:
            return None
        handshake += data[position + 5 : end]
        position = end
        if len(handshake) < 4:
            continue
        if handshake[0] != _CLIENT_HELLO:
            raise _NotTLS("the first TLS handshake message is not a ClientHello")
        size = int.from_bytes(handshake[1:4], "big")
        _check_size(size + 4, limit)
        if len(handshake) < size + 4:
            continue
        if len(handshake) > size + 4:
            raise _NotTLS("data after the ClientHello in its handshake records")
        return position, _server_name(bytes(handshake[4:]))


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise _NotTLS(f"the ClientHello is larger than {limit} bytes")


class _Cursor:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _NotTLS("a truncated ClientHello")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def _server_name(body: bytes) -> str | None:
    hello = _Cursor(body)
    hello.take(2 + 32)  # legacy_version, random
    if len(hello.vector(1)) > 32:
        raise _NotTLS("a session id longer than 32 bytes")
    suites = hello.vector(2)
    if not suites or len(suites) % 2:
        raise _NotTLS("an invalid cipher suite list")
    if not hello.vector(1):
        raise _NotTLS("no compression methods")
    if hello.at_end():
        return None
    extensions = _Cursor(hello.vector(2))
    if not hello.at_end():
        raise _NotTLS("data after the ClientHello extensions")
    seen: set[int] = set()
    name: str | None = None
    while not extensions.at_end():
        kind = extensions.number(2)
        payload = extensions.vector(2)
        if kind in seen:
            raise _NotTLS(f"TLS extension {kind} appears twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _host_name(payload)
    return name


def _host_name(payload: bytes) -> str:
    outer = _Cursor(payload)
    names = _Cursor(outer.vector(2))
    if not outer.at_end() or names.at_end():
        raise _NotTLS("a malformed server_name extension")
    found: str | None = None
    while not names.at_end():
        kind = names.number(1)
        value = names.vector(2)
        if kind != _HOST_NAME:
            continue
        if found is not None:
            raise _NotTLS("two host names in the server_name extension")
        if not value or not value.isascii():
            raise _NotTLS("an empty or non-ASCII SNI host name")
        found = value.decode("ascii")
    if found is None:
        raise _NotTLS("a server_name extension without a host name")
    return found


def _sni_problem(sni: str | None, host: Host) -> str | None:
    if sni is None:
        if host.ip is None:
            return f"the TLS ClientHello has no SNI, and the CONNECT host {host.name} is a name"
        return None
    try:
        named = parse_host(sni)
    except ValueError:
        return f"the SNI {sni[:100]!r} is not a valid host name"
    if named.name != host.name:
        return f"the SNI {named.name!r} does not match the CONNECT host {host.name!r}"
    return None
