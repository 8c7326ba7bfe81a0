"""Pump bytes between this terminal and a hijacked engine stream (attach, exec).

With a TTY the stream is raw in both directions; without one the engine
multiplexes stdout and stderr in frames (8-byte header: stream, 0, 0, 0,
big-endian length). Standard input is forwarded until it ends, then the write
half is shut so the process inside sees end-of-file.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass

CHUNK = 65536


@dataclass
class Terminal:
    """The local side: file descriptors for stdin/stdout/stderr."""

    stdin: int = 0
    stdout: int = 1
    stderr: int = 2

    @property
    def is_tty(self) -> bool:
        return os.isatty(self.stdin) and os.isatty(self.stdout)

    def size(self) -> tuple[int, int] | None:
        try:
            columns, lines = os.get_terminal_size(self.stdout)
        except OSError:
            return None
        return lines, columns


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put a terminal in raw mode (keys go to the sandbox, ^C included) and always restore it."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def cooked(fd: int) -> Iterator[None]:
    """Normal line-editing mode for a moment (a question inside a raw session), then raw again."""
    if not os.isatty(fd):
        yield
        return
    raw = termios.tcgetattr(fd)
    cooked_mode = termios.tcgetattr(fd)
    cooked_mode[3] |= termios.ECHO | termios.ICANON | termios.ISIG  # lflag
    cooked_mode[1] |= termios.OPOST  # oflag: \n becomes \r\n again
    cooked_mode[0] |= termios.ICRNL  # iflag: Enter is a newline
    try:
        termios.tcsetattr(fd, termios.TCSADRAIN, cooked_mode)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, raw)


@contextlib.contextmanager
def on_resize(callback: Callable[[], None]) -> Iterator[None]:
    from harness.procs import handling

    with handling((signal.SIGWINCH,), lambda *_: callback()):
        yield


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Demuxer:
    """Splits the engine's multiplexed frames into stdout and stderr."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 8:
            kind, length = struct.unpack(">BxxxL", self.buffer[:8])
            if len(self.buffer) < 8 + length:
                return
            payload, self.buffer = self.buffer[8 : 8 + length], self.buffer[8 + length :]
            fd = self.terminal.stderr if kind == 2 else self.terminal.stdout
            _write_all(fd, payload)


def pump(
    stream: socket.socket,
    terminal: Terminal,
    *,
    tty_mode: bool,
    forward_stdin: bool,
) -> None:
    """Copy until the engine closes the stream."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ, "remote")
    stdin_fd = terminal.stdin
    if forward_stdin:
        try:
            selector.register(stdin_fd, selectors.EVENT_READ, "local")
        except (ValueError, PermissionError, OSError):
            # a regular file or /dev/null cannot be polled: send it all now
            _send_file(stream, stdin_fd)
            forward_stdin = False
    demux = None if tty_mode else _Demuxer(terminal)
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "remote":
                    try:
                        data = stream.recv(CHUNK)
                    except (ConnectionResetError, OSError):
                        data = b""
                    if not data:
                        if demux is not None and demux.buffer:
                            demux.feed(b"")
                        return
                    if demux is None:
                        _write_all(terminal.stdout, data)
                    else:
                        demux.feed(data)
                else:
                    data = os.read(stdin_fd, CHUNK)
                    if not data:
                        selector.unregister(stdin_fd)
                        _shutdown_write(stream)
                    else:
                        stream.sendall(data)
    finally:
        selector.close()


def _send_file(stream: socket.socket, fd: int) -> None:
    while True:
        data = os.read(fd, CHUNK)
        if not data:
            break
        stream.sendall(data)
    _shutdown_write(stream)


def _shutdown_write(stream: socket.socket) -> None:
    with contextlib.suppress(OSError):
        stream.shutdown(socket.SHUT_WR)


def stdin_is_usable(fd: int = 0) -> bool:
    """True when there is a standard input worth forwarding (not closed)."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
