"""The host side of the in-sandbox agent (sandbox_agent.py): a faster `exec`.

The agent's socket lives in the sandbox's own /run. The host opens it through
/proc/PID/root of the sandbox's main process, one path component at a time
with O_NOFOLLOW, and connects through /proc/self/fd: a link planted by the
sandbox (say, to the engine's socket) can never redirect the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import stat
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from harness.backends.stream import Terminal, cooked, on_resize, raw_mode
from harness.errors import BackendError
from harness.procs import ProcessId, handling

AGENT_SOURCE = Path(__file__).resolve().parents[1] / "sandbox_agent.py"
SOCKET_IN_SANDBOX = ("run", "harness", "agent.sock")

REQUEST, STDIN, STDOUT, STDERR, EXIT, EOF, RESIZE, SIGNAL, ERROR = range(9)
HEAD = struct.Struct(">BI")
MAX_FRAME = 1 << 20


class AgentUnavailable(BackendError):
    """The agent cannot be reached; the engine's exec is used instead."""


class Interrupt(Protocol):
    """Something that needs the terminal while a command runs (the approval console).

    When `fd` is readable the pump stops relaying, hands the terminal over in normal
    (cooked) mode to `handle()`, then resumes; output waits in the socket meanwhile.
    """

    @property
    def fd(self) -> int: ...

    def handle(self) -> None: ...


def open_agent(sandbox: ProcessId) -> socket.socket:
    """Connect to the agent of the sandbox whose main process is `sandbox`."""
    if not sandbox.alive():
        raise AgentUnavailable("the sandbox's main process is gone")
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptors: list[int] = []
    try:
        # /proc/PID/root is the kernel's own link to the sandbox's root: the one link we follow
        current = os.open(f"/proc/{sandbox.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        descriptors.append(current)
        for part in SOCKET_IN_SANDBOX[:-1]:
            current = os.open(part, flags | os.O_DIRECTORY, dir_fd=current)
            descriptors.append(current)
        final = os.open(SOCKET_IN_SANDBOX[-1], flags, dir_fd=current)
        descriptors.append(final)
        if not stat.S_ISSOCK(os.fstat(final).st_mode):
            raise AgentUnavailable("the agent's socket is not a socket")
        if not sandbox.alive():  # the pid was reused while we walked: not our sandbox
            raise AgentUnavailable("the sandbox's main process is gone")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(f"/proc/self/fd/{final}")
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise AgentUnavailable(f"the agent is not reachable ({exc.strerror or exc})") from None
    finally:
        for fd in descriptors:
            os.close(fd)


def agent_ready(sandbox: ProcessId) -> bool:
    try:
        open_agent(sandbox).close()
    except AgentUnavailable:
        return False
    return True


def _send(sock: socket.socket, kind: int, payload: bytes = b"") -> None:
    sock.sendall(HEAD.pack(kind, len(payload)) + payload)


class _Frames:
    """Reassembles frames from the agent's byte stream."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self.buffer += data
        while len(self.buffer) >= HEAD.size:
            kind, length = HEAD.unpack(self.buffer[: HEAD.size])
            if length > MAX_FRAME:
                raise BackendError("the agent sent an oversized frame")
            if len(self.buffer) < HEAD.size + length:
                return
            payload = self.buffer[HEAD.size : HEAD.size + length]
            self.buffer = self.buffer[HEAD.size + length :]
            yield kind, payload


def run_via_agent(
    sandbox: ProcessId,
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    tty: bool,
    stdin: bool,
    terminal: Terminal | None = None,
    interrupt: Interrupt | None = None,
) -> int:
    """Run one command through the agent with live stdio; return its exit code."""
    term = terminal or Terminal()
    sock = open_agent(sandbox)
    size = term.size() if tty else None
    request = {
        "argv": list(argv),
        "cwd": cwd,
        "env": dict(env),
        "tty": tty,
        "stdin": stdin,
        "rows": size[0] if size else None,
        "cols": size[1] if size else None,
    }
    try:
        _send(sock, REQUEST, json.dumps(request).encode())

        def resize() -> None:
            current = term.size()
            if current is not None:
                with contextlib.suppress(OSError):
                    _send(sock, RESIZE, struct.pack(">HH", *current))

        def forward_signal(signum: int, _frame: object) -> None:
            with contextlib.suppress(OSError):
                _send(sock, SIGNAL, bytes([signum]))

        with contextlib.ExitStack() as stack:
            if tty:
                stack.enter_context(raw_mode(term.stdin))
                stack.enter_context(on_resize(resize))
            else:
                stack.enter_context(handling((signal.SIGINT, signal.SIGTERM), forward_signal))
            return _pump(sock, term, forward_stdin=stdin, interrupt=interrupt, raw=tty)
    finally:
        sock.close()


def _pump(
    sock: socket.socket,
    term: Terminal,
    *,
    forward_stdin: bool,
    interrupt: Interrupt | None = None,
    raw: bool = False,
) -> int:
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "agent")
    if interrupt is not None:
        selector.register(interrupt.fd, selectors.EVENT_READ, "interrupt")
    if forward_stdin:
        try:
            selector.register(term.stdin, selectors.EVENT_READ, "stdin")
        except (ValueError, PermissionError, OSError):
            _send_all_stdin(sock, term.stdin)
    frames = _Frames()
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "interrupt" and interrupt is not None:
                    with cooked(term.stdin) if raw else contextlib.nullcontext():
                        interrupt.handle()
                    break  # the other events may be stale after the pause: select again
                if key.data == "stdin":
                    data = os.read(term.stdin, 65536)
                    if data:
                        _send(sock, STDIN, data)
                    else:
                        selector.unregister(term.stdin)
                        _send(sock, EOF)
                    continue
                data = sock.recv(65536)
                if not data:
                    raise BackendError("the agent closed the connection before the command ended")
                for kind, payload in frames.feed(data):
                    if kind == STDOUT:
                        _write(term.stdout, payload)
                    elif kind == STDERR:
                        _write(term.stderr, payload)
                    elif kind == EXIT:
                        code = json.loads(payload).get("code")
                        return int(code) if isinstance(code, int) and 0 <= code <= 255 else 125
                    elif kind == ERROR:
                        raise BackendError(
                            f"the agent could not run the command: {payload.decode(errors='replace')}"
                        )
    finally:
        selector.close()


def _send_all_stdin(sock: socket.socket, fd: int) -> None:
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        _send(sock, STDIN, data)
    _send(sock, EOF)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
