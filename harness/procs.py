"""Processes harness starts and records: identity that survives pid reuse, and stopping.

A pid alone can be recycled; (pid, start time) cannot. Every record of a
process harness owns (session owners, the podman service) keeps both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessId:
    """A process that cannot be confused with a later one reusing its pid."""

    pid: int
    start_time: int  # clock ticks since boot (/proc/PID/stat field 22)

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    @classmethod
    def current(cls) -> ProcessId:
        found = cls.of(os.getpid())
        assert found is not None  # noqa: S101 - our own /proc entry always exists
        return found

    def alive(self) -> bool:
        return start_time(self.pid) == self.start_time

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: object) -> ProcessId | None:
        if (
            isinstance(data, dict)
            and isinstance(data.get("pid"), int)
            and isinstance(data.get("start_time"), int)
        ):
            return cls(data["pid"], data["start_time"])
        return None

    def label(self) -> str:
        return f"{self.pid}:{self.start_time}"

    @classmethod
    def from_label(cls, text: str) -> ProcessId | None:
        pid, _, start = text.partition(":")
        if pid.isdigit() and start.isdigit():
            return cls(int(pid), int(start))
        return None


def start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def stop(process: ProcessId, *, grace: float = 5.0) -> bool:
    """SIGTERM, wait, then SIGKILL the whole process group; True when it is gone."""
    if not process.alive():
        return True
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(process.pid, sig)
            except ProcessLookupError:
                return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not process.alive():
                return True
            _reap(process.pid)
            time.sleep(0.05)
    return not process.alive()


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def spawn_detached(argv: list[str], *, stdout: int, stderr: int) -> int:
    """Start a helper that outlives us, in its own session, stdin from /dev/null; return its pid.

    posix_spawn, not subprocess.Popen: a Popen object for a process we never wait for
    makes Python warn at exit, and these processes are meant to outlive this one.
    """
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, stdout, 1),
                (os.POSIX_SPAWN_DUP2, stderr, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(devnull)


@contextlib.contextmanager
def handling(
    signals: Iterable[signal.Signals], handler: Callable[[int, Any], None]
) -> Iterator[None]:
    """Install `handler` for `signals` for the duration; restore after.

    Python allows signal handlers only in the main thread; elsewhere (the MCP server
    runs sessions from a worker thread) this does nothing and the process's own
    handlers stay in charge.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
