"""A small HTTP/1.1 client for the Docker and Podman APIs over a unix socket.

Why not the SDKs on this path: importing docker-py or podman-py costs
120-160 ms, more than a third of `docker run --rm IMAGE true` on this machine,
and `harness run`/`exec` must stay within 1.3x of the raw engine. The SDKs
still serve the cold paths (image builds, doctor). This client does plain
requests, JSON bodies, chunked responses, and hijacked streams (attach/exec).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from harness.errors import BackendError, BackendUnavailable

MAX_RESPONSE = 64 * 1024 * 1024


class EngineAPIError(BackendError):
    """The engine answered with an error status."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path} failed with HTTP {status}: {message}")
        self.status = status
        self.engine_message = message

    @property
    def transient(self) -> bool:
        # 5xx from a busy daemon, or a conflict while a container is being removed
        return self.status in (500, 502, 503, 504)


@dataclass(frozen=True)
class Response:
    """An engine's answer to one request, read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class EngineAPI:
    """One engine endpoint (a unix socket path) and an API prefix ("" or "/v4.0.0/libpod")."""

    def __init__(
        self, socket_path: str, *, fix_command: str, name: str, timeout: float = 120.0
    ) -> None:
        self.socket_path = socket_path
        self.fix_command = fix_command
        self.name = name
        self.timeout = timeout

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise BackendUnavailable(
                f"the {self.name} engine is not reachable at {self.socket_path} ({exc.strerror or exc}); "
                f"start it with `{self.fix_command}`, or choose another with --backend."
            ) from None
        return sock

    @staticmethod
    def _request_bytes(
        method: str, path: str, query: Mapping[str, Any] | None, body: Any, extra: Mapping[str, str]
    ) -> bytes:
        target = quote(path, safe="/:@?=&")
        if query:
            pairs = {
                k: (json.dumps(v) if isinstance(v, (dict, list)) else _scalar(v))
                for k, v in query.items()
                if v is not None
            }
            target += "?" + urlencode(pairs)
        payload = b""
        headers = {"Host": "engine", "User-Agent": "harness", **extra}
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(payload))
        head = (
            f"{method} {target} HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        )
        return head.encode("latin-1") + payload

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200, 201, 204, 304),
    ) -> Response:
        """One request on a fresh connection; raises EngineAPIError outside `ok`."""
        sock = self._connect(self.timeout if timeout is None else timeout)
        try:
            sock.sendall(self._request_bytes(method, path, query, body, {"Connection": "close"}))
            reader = sock.makefile("rb")
            status, headers = _read_head(reader)
            data = _read_body(reader, headers)
        except OSError as exc:
            raise BackendError(
                f"{self.name} engine connection failed during {method} {path}: {exc}"
            ) from None
        finally:
            sock.close()
        if status not in ok:
            raise EngineAPIError(method, path, status, _error_message(data))
        return Response(status, headers, data)

    def peer_pid(self) -> int | None:
        """The pid of the process serving the socket (SO_PEERCRED), to read its limits."""
        import struct

        try:
            sock = self._connect(2.0)
        except BackendError:
            return None
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        finally:
            sock.close()
        pid, _, _ = struct.unpack("3i", creds)
        return pid or None

    def hijack(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None
    ) -> socket.socket:
        """Start a streaming request (attach, exec start) and return the raw socket after the headers."""
        sock = self._connect(None)
        try:
            sock.sendall(
                self._request_bytes(
                    method, path, query, body, {"Connection": "Upgrade", "Upgrade": "tcp"}
                )
            )
            status, _, rest = _read_head_raw(sock)
        except OSError as exc:
            sock.close()
            raise BackendError(
                f"{self.name} engine connection failed during {method} {path}: {exc}"
            ) from None
        if status not in (101, 200):
            sock.close()
            raise EngineAPIError(method, path, status, _error_message(rest))
        if rest:
            return _PrefixedSocket(sock, rest)  # type: ignore[return-value]
        return sock


class _PrefixedSocket:
    """A socket whose first bytes were already read while parsing the headers."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        self._sock = sock
        self._prefix = prefix

    def recv(self, size: int) -> bytes:
        if self._prefix:
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_head(reader: Any) -> tuple[int, dict[str, str]]:
    status_line = reader.readline(65536)
    if not status_line:
        raise OSError("the engine closed the connection without answering")
    parts = status_line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers


def _read_head_raw(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read exactly the response head from a socket we will keep using raw."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("the engine closed the connection without answering")
        data += chunk
        if len(data) > 65536:
            raise OSError("response head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if status not in (101, 200) and headers.get("content-length"):
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(length - len(rest))
            if not chunk:
                break
            rest += chunk
    return status, headers, rest


def _read_body(reader: Any, headers: Mapping[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size_line = reader.readline(65536)
            if not size_line:
                break
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                reader.readline(65536)
                break
            out += reader.read(size)
            reader.readline(65536)
            if len(out) > MAX_RESPONSE:
                raise OSError("response too large")
        return bytes(out)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_RESPONSE:
            raise OSError("response too large")
        return bytes(reader.read(length))
    return bytes(reader.read(MAX_RESPONSE))


def _error_message(data: bytes) -> str:
    try:
        payload = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace").strip()[:500]
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("cause") or payload)[:500]
    return str(payload)[:500]
