"""The approval history of a session, read back from the audit log (`harness approvals`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.audit import AuditRecord
from harness.errors import HarnessError


@dataclass(frozen=True)
class ApprovalEntry:
    """One decided approval as `harness approvals` lists it."""

    approval_id: str
    session: str
    command: str
    decision: str  # allow | deny
    decider: str  # rule | known-safe | table | guardian | user
    reason: str
    feedback: str | None
    time: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.approval_id,
            "session": self.session,
            "command": self.command,
            "decision": self.decision,
            "decider": self.decider,
            "reason": self.reason,
            "feedback": self.feedback,
            "time": self.time,
        }


def approval_history(
    records: Iterable[AuditRecord], *, session: str | None = None, where: str = "the audit log"
) -> list[ApprovalEntry]:
    """One entry per decided approval, oldest first.

    Raises:
        HarnessError: `session` is in no record at all (a typo, or another log than
            `where`), so an empty history would mislead.
    """
    entries = []
    known = session is None
    for record in records:
        fields = record.fields
        if session is not None and fields.get("session") != session:
            continue
        known = True
        if record.event != "approval.decided":
            continue
        feedback = fields.get("feedback")
        entries.append(
            ApprovalEntry(
                approval_id=str(fields.get("approval_id", "")),
                session=str(fields.get("session", "")),
                command=str(fields.get("command", "")),
                decision=str(fields.get("decision", "")),
                decider=str(fields.get("decider", "")),
                reason=str(fields.get("reason", "")),
                feedback=str(feedback) if feedback else None,
                time=record.ts,
            )
        )
    if not known:
        raise HarnessError(
            f"no record of session {session!r} in {where}; `harness audit show` lists what"
            " it holds and `harness ls` the running sessions."
        )
    return entries
