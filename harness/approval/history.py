"""The approval history of a session, read back from the audit log (`harness approvals`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.audit import AuditRecord


@dataclass(frozen=True)
class ApprovalEntry:
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
    records: Iterable[AuditRecord], *, session: str | None = None
) -> list[ApprovalEntry]:
    """One entry per decided approval, oldest first."""
    entries = []
    for record in records:
        if record.event != "approval.decided":
            continue
        fields = record.fields
        if session is not None and fields.get("session") != session:
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
    return entries
