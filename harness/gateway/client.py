"""The host side's blocking client of a gateway's control socket (exec, MCP, the network daemon)."""

from __future__ import annotations

import socket
from typing import Any

from harness.errors import BackendError
from harness.gateway.protocol import encode, receive


def ask(control: str, message: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """One question to a gateway's control socket; the answer as JSON."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(control)
        sock.sendall(encode(message))
        return receive(sock)
    except (OSError, ValueError) as exc:
        raise BackendError(f"the session's gateway did not answer ({exc})") from None
    finally:
        sock.close()
