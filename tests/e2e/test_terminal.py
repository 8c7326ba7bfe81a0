"""harness in a real terminal (a pseudo-terminal): interactive shells and approval prompts."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

HARNESS = str(Path(sys.executable).with_name("harness"))


class Terminal:
    """harness running on the slave side of a pty; we type on the master side."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:
            fcntl.ioctl(
                0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0)
            )  # an 80×24 terminal
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.pid, self.fd = pid, fd
        self.output = b""

    def expect(self, pattern: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern.encode())
        while time.monotonic() < deadline:
            match = regex.search(self.output)
            if match:
                return match.group(0).decode(errors="replace")
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.output += chunk
        raise AssertionError(
            f"{pattern!r} not seen; the terminal showed:\n{self.output.decode(errors='replace')[-3000:]}"
        )

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self._drain()
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self._drain()
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("harness did not exit")

    def _drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk


@pytest.fixture
def term_env(harness_env: dict[str, str]) -> dict[str, str]:
    return {**harness_env, "TERM": "xterm", "COLUMNS": "80", "LINES": "24"}


def test_up_gives_an_interactive_shell(
    engine: str, term_env: dict[str, str], workspace: Path, containers
) -> None:  # type: ignore[no-untyped-def]
    term = Terminal([HARNESS, "up", "--backend", engine, "-a", "never"], workspace, term_env)
    term.expect(r"session [0-9a-f]{10}")
    term.expect(r"ws# ")  # the prompt: typing earlier would be typeahead bash may drop
    term.send("echo marker-$((40+2)); tty\r")
    term.expect(r"marker-42")
    term.expect(r"/dev/pts/\d+")  # a real terminal inside, too
    term.send("stty size\r")
    term.expect(r"24 80")
    term.send("exit 7\r")
    assert term.wait() == 7
    assert containers(engine) == []


def test_approval_prompt_on_the_terminal(
    engine: str, term_env: dict[str, str], workspace: Path
) -> None:
    denied = Terminal(
        [HARNESS, "run", "--backend", engine, "-a", "untrusted", "--", "touch", "made"],
        workspace,
        term_env,
    )
    denied.expect(r"approval needed")
    denied.expect(r"command: touch made")
    denied.expect(r"\[f\]eedback")
    denied.send("f\r")
    denied.expect(r"feedback:")
    denied.send("use a branch\r")
    assert denied.wait() == 126
    assert b"use a branch" in denied.output
    assert not (workspace / "made").exists()

    approved = Terminal(
        [HARNESS, "run", "--backend", engine, "-a", "untrusted", "--", "touch", "made"],
        workspace,
        term_env,
    )
    approved.expect(r"approval needed")
    approved.send("a\r")
    assert approved.wait() == 0
    assert (workspace / "made").exists()
