"""Messages between the sandbox (harness-sh), the host tools and a session's gateway.

Every message is a 4-byte big-endian length and a UTF-8 JSON object, at most
64 KiB. Parsing is strict: unknown operations, wrong types, missing fields
and oversized or malformed messages are errors, never guesses.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the host tools that only send messages need no asyncio (~25 ms)
    import asyncio
    import socket

MAX_MESSAGE = 64 * 1024
MAX_ARGV = 4096
MAX_TEXT = 32 * 1024
HEAD = struct.Struct(">I")
# after an approved escalation the gateway streams the command's output in frames
FRAME = struct.Struct(">BI")
STDOUT, STDERR, EXIT = 2, 3, 4


class ProtocolError(ValueError):
    """A message that does not follow the protocol."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError("message too large")
    return HEAD.pack(len(data)) + data


async def read_message(reader: asyncio.StreamReader, *, timeout: float) -> dict[str, Any]:
    """One message, or ProtocolError (bad framing, too large, too slow, not a JSON object)."""
    import asyncio

    try:
        async with asyncio.timeout(timeout):  # one deadline for the whole message
            length = _length(await reader.readexactly(HEAD.size))
            body = await reader.readexactly(length)
    except TimeoutError:
        raise ProtocolError("too slow: the message did not arrive in time") from None
    except (asyncio.IncompleteReadError, ConnectionError):
        raise ProtocolError("the connection closed in the middle of a message") from None
    return _decode(body)


def receive(sock: socket.socket) -> dict[str, Any]:
    """One message from a blocking socket (the host's clients of a gateway).

    Raises:
        OSError: the connection closed first.
        ProtocolError: too large, or not a UTF-8 JSON object.
    """
    length = _length(_receive_exactly(sock, HEAD.size))
    return _decode(_receive_exactly(sock, length))


def _length(head: bytes) -> int:
    (length,) = HEAD.unpack(head)
    if length > MAX_MESSAGE:
        raise ProtocolError(f"message of {length} bytes is over the {MAX_MESSAGE}-byte limit")
    return int(length)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the connection closed in the middle of a message")
        data += chunk
    return data


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("not UTF-8 JSON") from None
    except RecursionError:  # `[[[[...]]]]` 64 KiB deep
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


@dataclass(frozen=True)
class CommandRequest:
    """A request to run a command, validated."""

    argv: tuple[str, ...] | None
    shell: str | None
    cwd: str
    escalate: bool
    justification: str | None
    after_denial: bool

    @classmethod
    def parse(cls, message: dict[str, Any]) -> CommandRequest:
        argv = message.get("argv")
        shell = message.get("shell")
        if (argv is None) == (shell is None):
            raise ProtocolError("give exactly one of argv and shell")
        if argv is not None and (
            not isinstance(argv, list)
            or not argv
            or len(argv) > MAX_ARGV
            or not all(isinstance(a, str) and "\x00" not in a for a in argv)
        ):
            raise ProtocolError("argv must be a non-empty list of strings without NUL")
        if shell is not None and (
            not isinstance(shell, str) or not shell or len(shell) > MAX_TEXT or "\x00" in shell
        ):
            raise ProtocolError("shell must be a non-empty string without NUL")
        cwd = message.get("cwd", "/")
        if not isinstance(cwd, str) or not cwd.startswith("/") or "\x00" in cwd or len(cwd) > 4096:
            raise ProtocolError("cwd must be an absolute path")
        justification = message.get("justification")
        if justification is not None and (
            not isinstance(justification, str) or len(justification) > MAX_TEXT
        ):
            raise ProtocolError("justification must be a string")
        flags = {key: message.get(key, False) for key in ("escalate", "after_denial")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ProtocolError("escalate and after_denial must be booleans")
        return cls(
            tuple(argv) if argv is not None else None,
            shell,
            cwd,
            flags["escalate"],
            justification,
            flags["after_denial"],
        )
