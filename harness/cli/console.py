"""The approval console on the host terminal.

`TerminalAsker` asks one question in-process (`harness run`). `GatewayConsole`
attaches to a session's gateway and answers whatever is pending there, by
approval ID: commands from harness-sh and host tools, and domains from the
egress proxy. While an agent runs attached to the terminal, the console takes
the terminal over between the agent's output (see agent_client.Interrupt).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from harness.approval.broker import Answer, Choice, PendingApproval

CHOICES = {
    "a": Choice.APPROVE_ONCE,
    "s": Choice.APPROVE_SESSION,
    "d": Choice.DENY,
    "f": Choice.DENY,
}
# Whole replies only: a reply that merely starts with "s" ("sure", "stop") must not
# approve for the session.
REPLIES = {
    **{key: key for key in CHOICES},
    "approve": "a",
    "allow": "a",
    "once": "a",
    "session": "s",
    "deny": "d",
    "no": "d",
    "feedback": "f",
}


def has_terminal() -> bool:
    """A human can be asked: standard input and output are a terminal."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _tty_streams() -> tuple[TextIO, TextIO]:
    # two handles: a terminal is not seekable, so one text stream for both ways fails
    out = Path("/dev/tty").open("w", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    answers = Path("/dev/tty").open(encoding="utf-8")  # noqa: SIM115 - closed by the caller
    return out, answers


def render_question(out: TextIO, question: dict[str, Any]) -> None:
    """One pending request, readable in a plain 80×24 terminal (rich, no mouse, no colours needed)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    # Every value is plain Text: a command containing "[red]" or "[/]" must be shown as it is,
    # never interpreted as markup that could hide part of it from the human.
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [("command", question.get("command")), ("cwd", question.get("cwd"))]
    if question.get("risk"):
        rows.append(("risk", f"{question['risk']}: {question.get('rationale') or ''}"))
    rows += [("why", question.get("reason")), ("asked", question.get("justification"))]
    for label, value in rows:
        if value:
            table.add_row(Text(label), Text(str(value)))
    kind = (
        "network access"
        if question.get("kind") == "network"
        else ("escalation" if question.get("escalate") else "command")
    )
    console = Console(file=out, width=80, highlight=False, force_terminal=out.isatty())
    title = Text(f"approval needed: {kind}  [{question['id']}]")
    console.print(Panel(table, title=title, title_align="left"))


def prompt_choice(out: TextIO, answers: TextIO, question: dict[str, Any]) -> Answer:
    """Ask until the human gives one of the choices; end of input is a denial."""
    network = question.get("kind") == "network"
    menu = (
        "  [a]llow once, allow this domain for the [s]ession, [d]eny: "
        if network
        else "  [a]pprove once, approve for this [s]ession, [d]eny, deny with [f]eedback: "
    )
    while True:
        out.write(menu)
        out.flush()
        reply = answers.readline()
        if not reply:
            return Answer(Choice.DENY, "no answer (end of input)")
        key = REPLIES.get(reply.strip().lower())
        if key is not None and not (network and key == "f"):
            feedback = None
            if key == "f":
                out.write("  feedback: ")
                out.flush()
                feedback = answers.readline().strip() or None
            return Answer(CHOICES[key], feedback)


class TerminalAsker:
    """Shows one pending request in this process and reads the answer from the terminal."""

    def __init__(self, stream: TextIO | None = None, answers: TextIO | None = None) -> None:
        self.stream = stream
        self.answers = answers

    def __call__(self, pending: PendingApproval) -> Answer:
        if self.stream is not None and self.answers is not None:
            out, answers, close = self.stream, self.answers, False
        else:
            (out, answers), close = _tty_streams(), True
        try:
            question = pending.question()
            render_question(out, question)
            return prompt_choice(out, answers, question)
        finally:
            if close:
                for handle in (out, answers):
                    with contextlib.suppress(OSError):
                        handle.close()


def terminal_asker() -> TerminalAsker | None:
    if not has_terminal() or not Path("/dev/tty").exists():
        return None
    return TerminalAsker()


class GatewayConsole:
    """Attached to a session's gateway: every pending question is shown here and answered by ID."""

    def __init__(self, control: str, token: str) -> None:
        from harness.gateway.protocol import encode

        self._encode = encode
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(control)
        self.sock.sendall(encode({"op": "console", "token": token}))
        self.questions: queue.Queue[dict[str, Any]] = queue.Queue()
        self.resolved: set[str] = set()
        self._read, self._wake = os.pipe()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._receive, daemon=True)
        self._reader.start()

    @property
    def fd(self) -> int:
        return self._read

    def _receive(self) -> None:
        from harness.gateway.protocol import receive

        with contextlib.suppress(OSError, ValueError):
            while True:
                message = receive(self.sock)
                if message.get("type") == "pending":
                    self.questions.put(message)
                    os.write(self._wake, b"!")
                elif message.get("type") == "resolved":
                    with self._lock:
                        self.resolved.add(str(message.get("id")))

    def handle(self) -> None:
        """Answer everything pending, oldest first; called with the terminal in normal mode."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 4096)
        out, answers = _tty_streams()
        try:
            while True:
                try:
                    question = self.questions.get_nowait()
                except queue.Empty:
                    return
                with self._lock:
                    if question["id"] in self.resolved:
                        continue  # answered elsewhere, or given up on, meanwhile
                out.write("\r\n")
                render_question(out, question)
                answer = prompt_choice(out, answers, question)
                self.sock.sendall(
                    self._encode(
                        {
                            "type": "answer",
                            "id": question["id"],
                            "choice": answer.choice.value,
                            "feedback": answer.feedback,
                        }
                    )
                )
        finally:
            for handle in (out, answers):
                with contextlib.suppress(OSError):
                    handle.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for fd in (self._read, self._wake):
            with contextlib.suppress(OSError):
                os.close(fd)
