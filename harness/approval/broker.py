"""Approval IDs, the human, the session cache and the audit trail around `evaluate`.

Every request gets its own approval ID. A human's answer applies to that ID
only; "approve for this session" remembers the exact normalised command, cwd
and escalation, never a category. Without a human to ask, anything that needs
one is denied, with the reason.
"""

from __future__ import annotations

import enum
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from harness.approval.engine import (
    ApprovalRequest,
    Decider,
    Decision,
    PolicyContext,
    Verdict,
    evaluate,
    pattern_key,
)


class Choice(enum.Enum):
    APPROVE_ONCE = "approve-once"
    APPROVE_SESSION = "approve-session"
    DENY = "deny"


@dataclass(frozen=True)
class Answer:
    """A human's answer to one pending approval."""

    choice: Choice
    feedback: str | None = None


@dataclass(frozen=True)
class PendingApproval:
    """What the human is shown: the ID, the request and the engine's assessment."""

    approval_id: str
    session: str
    request: ApprovalRequest
    verdict: Verdict

    def question(self) -> dict[str, object]:
        """The question as a console renders it (and as the gateway sends it to one)."""
        risk = self.verdict.risk
        return {
            "id": self.approval_id,
            "kind": "command",
            "command": self.request.parsed.source,
            "cwd": self.request.cwd,
            "reason": self.verdict.reason,
            "risk": risk.level.value if risk else None,
            "rationale": risk.rationale if risk else None,
            "justification": self.request.justification,
            "escalate": self.request.wants_escalation,
        }


# The human: returns their answer, or None when nobody can be asked right now
# (no terminal, no console attached, no MCP client) so that the request is denied.
Asker = Callable[[PendingApproval], Answer | None]


class AuditSink(Protocol):
    def append(self, event: str, /, **fields: object) -> object: ...


@dataclass(frozen=True)
class Outcome:
    """The final word on one request."""

    approval_id: str
    allowed: bool
    decision: Decision
    decider: Decider
    reason: str
    verdict: Verdict
    feedback: str | None = None

    def denial_message(self) -> str:
        """What a requester sees on stderr when it is refused."""
        text = f"harness: denied ({self.decider.value}): {self.reason}"
        if self.feedback:
            text += f"\nharness: feedback from the reviewer: {self.feedback}"
        return text


@dataclass
class _SessionMemory:
    """What "approve for this session" remembers: exact requests and established patterns."""

    approved_ids: dict[tuple[str, str, bool], str] = field(default_factory=dict)
    patterns: set[str] = field(default_factory=set)


class ApprovalBroker:
    """Decides requests for one session: engine, then cache, then the human."""

    def __init__(
        self,
        context: PolicyContext,
        *,
        session: str,
        asker: Asker | None = None,
        audit: AuditSink | None = None,
        no_human_reason: str = "no terminal or client to ask",
    ) -> None:
        self.context = context
        self.session = session
        self.asker = asker
        self.audit = audit
        self.no_human_reason = no_human_reason
        self._memory = _SessionMemory()
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._salt = os.urandom(3).hex()  # secrets.token_hex without importing random

    def _new_id(self) -> str:
        with self._lock:
            number = next(self._counter)
        return f"{self.session}-{number}-{self._salt}"

    def established(self, request: ApprovalRequest) -> bool:
        """Every command's program and subcommand was approved by a human in this session."""
        keys = [pattern_key(c) for c in request.parsed.commands]
        with self._lock:
            return all(k is not None and k in self._memory.patterns for k in keys)

    def submit(self, request: ApprovalRequest) -> Outcome:
        """Decide one request, asking the human when the engine says so."""
        approval_id = self._new_id()
        command_text = request.parsed.source
        self._record(
            "approval.requested",
            approval_id=approval_id,
            command=command_text,
            cwd=request.cwd,
            escalate=request.wants_escalation,
            justification=request.justification,
        )
        started = time.monotonic()
        verdict = evaluate(request, self.context, established=self.established)
        outcome = self._resolve(approval_id, request, verdict)
        self._record(
            "approval.decided",
            approval_id=approval_id,
            command=command_text,
            decision="allow" if outcome.allowed else "deny",
            engine_decision=verdict.decision.value,
            decider=outcome.decider.value,
            reason=outcome.reason,
            rule=verdict.rule.pattern if verdict.rule else None,
            rule_source=str(verdict.rule.origin) if verdict.rule else None,
            risk=verdict.risk.level.value if verdict.risk else None,
            feedback=outcome.feedback,
            decided_in_ms=round((time.monotonic() - started) * 1000, 3),
        )
        return outcome

    def _resolve(self, approval_id: str, request: ApprovalRequest, verdict: Verdict) -> Outcome:
        if verdict.decision is Decision.ALLOW:
            return Outcome(
                approval_id, True, Decision.ALLOW, verdict.decider, verdict.reason, verdict
            )
        if verdict.decision is Decision.FORBIDDEN:
            return Outcome(
                approval_id, False, Decision.FORBIDDEN, verdict.decider, verdict.reason, verdict
            )
        key = request.cache_key()
        with self._lock:
            earlier = self._memory.approved_ids.get(key)
        if earlier is not None:
            return Outcome(
                approval_id,
                True,
                Decision.ALLOW,
                Decider.USER,
                f"approved for this session earlier ({earlier})",
                verdict,
            )
        answer = None
        if self.asker is not None:
            answer = self.asker(PendingApproval(approval_id, self.session, request, verdict))
        if answer is None:
            return Outcome(
                approval_id,
                False,
                Decision.PROMPT,
                verdict.decider,
                f"{verdict.reason}; it needs approval and there is {self.no_human_reason}, so it is denied",
                verdict,
            )
        if answer.choice is Choice.DENY:
            return Outcome(
                approval_id,
                False,
                Decision.PROMPT,
                Decider.USER,
                "denied by the user",
                verdict,
                answer.feedback,
            )
        if answer.choice is Choice.APPROVE_SESSION:
            with self._lock:
                self._memory.approved_ids[key] = approval_id
        with self._lock:
            for command in request.parsed.commands:
                pattern = pattern_key(command)
                if pattern is not None:
                    self._memory.patterns.add(pattern)
        scope = "for this session" if answer.choice is Choice.APPROVE_SESSION else "once"
        return Outcome(
            approval_id,
            True,
            Decision.ALLOW,
            Decider.USER,
            f"approved {scope} by the user ({approval_id})",
            verdict,
            answer.feedback,
        )

    def _record(self, event: str, **fields: object) -> None:
        if self.audit is not None:
            self.audit.append(event, session=self.session, **fields)
