"""Live stdio for a sandbox's main process or an exec, shared by the engine backends."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from harness.backends.stream import Terminal, on_resize, pump, raw_mode

Resize = Callable[[int, int], None]


def _resize_now(terminal: Terminal, resize: Resize) -> None:
    size = terminal.size()
    if size is not None:
        with contextlib.suppress(Exception):
            resize(*size)


def attach_stream(
    stream: socket.socket,
    *,
    start: Callable[[], None],
    resize: Resize,
    tty: bool,
    stdin: bool,
    terminal: Terminal | None = None,
) -> None:
    """Attached before start, so not one byte of output is lost; then pump until the process ends."""
    terminal = terminal or Terminal()
    try:
        with raw_mode(terminal.stdin) if tty else contextlib.nullcontext():
            start()
            if tty:
                _resize_now(terminal, resize)
            with (
                on_resize(lambda: _resize_now(terminal, resize))
                if tty
                else contextlib.nullcontext()
            ):
                pump(stream, terminal, tty_mode=tty, forward_stdin=stdin)
    finally:
        stream.close()
