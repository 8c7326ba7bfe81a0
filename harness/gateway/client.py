"""The host side's blocking client of a gateway's control socket (exec, MCP, the network daemon)."""

from __future__ import annotations

import json
import socket
from typing import Any

from harness.errors import BackendError
from harness.gateway.protocol import HEAD, MAX_MESSAGE, encode


def ask(control: str, message: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """One question to a gateway's control socket; the answer as JSON."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(control)
        sock.sendall(encode(message))
        head = _read_exact(sock, HEAD.size)
        (length,) = HEAD.unpack(head)
        if length > MAX_MESSAGE:
            raise BackendError("the gateway sent an oversized answer")
        answer = json.loads(_read_exact(sock, length))
    except (OSError, ValueError) as exc:
        raise BackendError(f"the session's gateway did not answer ({exc})") from None
    finally:
        sock.close()
    if not isinstance(answer, dict):
        raise BackendError("the session's gateway sent a malformed answer")
    return answer


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data
