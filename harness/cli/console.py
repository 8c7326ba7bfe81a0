"""Asking the human on the host terminal (the full approval console grows from here)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TextIO

from harness.approval.broker import Answer, Choice, PendingApproval

CHOICES = {
    "a": Choice.APPROVE_ONCE,
    "s": Choice.APPROVE_SESSION,
    "d": Choice.DENY,
    "f": Choice.DENY,
}


def has_terminal() -> bool:
    """A human can be asked: standard input and output are a terminal."""
    return sys.stdin.isatty() and sys.stdout.isatty()


class TerminalAsker:
    """Shows one pending request and reads the answer from the controlling terminal."""

    def __init__(self, stream: TextIO | None = None, answers: TextIO | None = None) -> None:
        self.stream = stream
        self.answers = answers

    def _io(self) -> tuple[TextIO, TextIO, bool]:
        if self.stream is not None and self.answers is not None:
            return self.stream, self.answers, False
        # two handles: a terminal is not seekable, so one text stream for both ways fails
        out = Path("/dev/tty").open("w", encoding="utf-8")  # noqa: SIM115 - closed in __call__
        answers = Path("/dev/tty").open(encoding="utf-8")  # noqa: SIM115 - closed in __call__
        return out, answers, True

    def __call__(self, pending: PendingApproval) -> Answer:
        out, answers, close = self._io()
        try:
            verdict = pending.verdict
            request = pending.request
            lines = [
                "",
                f"harness: approval needed  [{pending.approval_id}]",
                f"  command: {request.parsed.source}",
                f"  cwd:     {request.cwd}",
                f"  why:     {verdict.reason}",
            ]
            if verdict.risk is not None:
                lines.append(f"  risk:    {verdict.risk.rationale}")
            if request.justification:
                lines.append(f"  asked:   {request.justification}")
            out.write("\n".join(lines) + "\n")
            while True:
                out.write(
                    "  [a]pprove once, approve for this [s]ession, [d]eny, deny with [f]eedback: "
                )
                out.flush()
                reply = answers.readline()
                if not reply:
                    return Answer(Choice.DENY, "no answer (end of input)")
                key = reply.strip().lower()[:1]
                if key in CHOICES:
                    feedback = None
                    if key == "f":
                        out.write("  feedback: ")
                        out.flush()
                        feedback = answers.readline().strip() or None
                    return Answer(CHOICES[key], feedback)
        finally:
            if close:
                for handle in (out, answers):
                    with contextlib.suppress(OSError):
                        handle.close()


def terminal_asker() -> TerminalAsker | None:
    if not has_terminal() or not Path("/dev/tty").exists():
        return None
    return TerminalAsker()
