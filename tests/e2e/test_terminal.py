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
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


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
        self.cursor = 0  # expect() searches what came after its last match

    def expect(self, pattern: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern.encode())
        while time.monotonic() < deadline:
            match = regex.search(
                ANSI.sub(b"", self.output), self.cursor
            )  # colours are not the text
            if match:
                self.cursor = match.end()
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
    term.expect(r"# ")  # the prompt: typing earlier would be typeahead bash may drop
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
    denied.expect(r"command\s+touch made")
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


STAND_IN = """
import os, subprocess, sys

def sh(command):
    result = subprocess.run([os.environ["SHELL"], "-c", command], capture_output=True, text=True)
    print(f"[{command}] rc={result.returncode} out={result.stdout.strip()!r} err={result.stderr.strip()!r}", flush=True)

sh("ls probe.py")
sh("git push --force origin main")
for attempt in range(3):
    # a route lookup sends no packet: it only needs a network, which the sandbox does not have
    sh("ip route get 192.0.2.1")
print("stand-in done", flush=True)
"""


def test_agent_stand_in_through_the_console(
    engine: str, term_env: dict[str, str], workspace: Path, containers
) -> None:  # type: ignore[no-untyped-def]
    (workspace / "stand_in.py").write_text(STAND_IN)
    config = Path(term_env["XDG_CONFIG_HOME"]) / "harness" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[[prefix_rules]]\npattern = "git push --force"\naction = "prompt"\n')
    term = Terminal(
        [HARNESS, "up", "--backend", engine, "--profile", "auto", "--", "python3", "stand_in.py"],
        workspace,
        term_env,
    )
    term.expect(
        r"\[ls probe.py\] rc=0 out='probe.py'"
    )  # known-safe and inside the sandbox: no prompt

    term.expect(r"approval needed: command")
    term.expect(r"git push --force origin main")
    term.expect(r"\[f\]eedback: ")
    term.send("f\r")
    term.expect(r"feedback: ")
    term.send("use a branch\r")
    term.expect(r"\[git push --force origin main\] rc=126 .*use a branch")

    for answer in ("a", "s"):  # once, then for the session
        term.expect(r"approval needed: escalation")
        term.expect(r"ip route get 192.0.2.1")
        before = len(term.output)
        term.expect(r"\[f\]eedback: ")
        term.send(f"{answer}\r")
        term.expect(r"\[ip route get 192.0.2.1\] rc=0 out='192.0.2.1 via ")
        assert b"approval needed" not in term.output[before:]
    before = len(term.output)
    term.expect(r"stand-in done")
    third = term.output[before:]
    assert b"approval needed" not in third  # "for the session" let the third through unasked
    assert term.wait() == 0
    assert containers(engine) == []


def test_every_line_of_the_interactive_shell_is_approved(
    engine: str, term_env: dict[str, str], workspace: Path
) -> None:
    config = Path(term_env["XDG_CONFIG_HOME"]) / "harness" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[[prefix_rules]]\npattern = "touch"\naction = "prompt"\n')
    term = Terminal([HARNESS, "up", "--backend", engine, "--profile", "auto"], workspace, term_env)
    term.expect(r"# ")
    term.send("echo hello-$((40+2))\r")
    term.expect(r"hello-42")  # on-request: runs without a question
    term.expect(r"# ")
    term.send("echo before; touch blocked-file; echo after\r")
    term.expect(r"approval needed: command")
    term.expect(r"touch blocked-file")
    term.expect(r"\[f\]eedback: ")
    term.send("d\r")
    term.expect(r"denied")
    term.expect(r"# ")
    term.send("ls\r")
    term.expect(r"# ")
    term.send("exit\r")
    assert term.wait() == 0
    assert not (workspace / "blocked-file").exists()
    shown = ANSI.sub(b"", term.output).decode(errors="replace")
    assert (
        "before" not in shown.split("touch blocked-file")[-1].split("denied")[0]
    )  # nothing of the line ran
