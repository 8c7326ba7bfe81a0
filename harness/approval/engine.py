"""The decision engine: one request in, allow / prompt / forbidden out.

Order, as in DESIGN.md: parse → prefix rules (forbidden > prompt; admin rules
first) → escalation → allow rules and known-safe reads → the policy × mode
table → guardian risk. `evaluate` is pure: it asks no human and writes no
log; the broker does both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.approval.known_safe import is_known_safe
from harness.approval.rules import Match, allowing_rule, strictest_hit
from harness.approval.shell import ParsedCommand, SimpleCommand, parse_argv, parse_shell
from harness.policy.modes import ApprovalPolicy, RuleAction, SandboxMode
from harness.policy.rules import PrefixRule

if (
    TYPE_CHECKING
):  # the guardian is imported only when it is used: it is big, and exec is a hot path
    from harness.approval.guardian import RiskAssessment
    from harness.config.settings import Settings


class Decision(enum.Enum):
    ALLOW = "allow"
    PROMPT = "prompt"
    FORBIDDEN = "forbidden"


class Decider(enum.Enum):
    RULE = "rule"
    KNOWN_SAFE = "known-safe"
    TABLE = "table"
    GUARDIAN = "guardian"
    USER = "user"


@dataclass(frozen=True)
class ApprovalRequest:
    """What a requester wants to run.

    Attributes:
        parsed: the parsed command.
        cwd: where it would run.
        escalate: it asks for more than the session's sandbox allows.
        justification: why, in the requester's words (shown to the human).
        after_sandbox_denial: a retry of a command the sandbox refused.
    """

    parsed: ParsedCommand
    cwd: str
    escalate: bool = False
    justification: str | None = None
    after_sandbox_denial: bool = False

    @classmethod
    def for_argv(
        cls,
        argv: Sequence[str],
        cwd: str,
        *,
        escalate: bool = False,
        justification: str | None = None,
    ) -> ApprovalRequest:
        return cls(parse_argv(argv, cwd), cwd, escalate=escalate, justification=justification)

    @classmethod
    def for_shell(
        cls, source: str, cwd: str, *, escalate: bool = False, justification: str | None = None
    ) -> ApprovalRequest:
        return cls(parse_shell(source, cwd), cwd, escalate=escalate, justification=justification)

    @property
    def wants_escalation(self) -> bool:
        return self.escalate or self.after_sandbox_denial

    def cache_key(self) -> tuple[str, str, bool]:
        """What "approve for this session" remembers: the exact command, cwd and escalation."""
        return (normalized_text(self.parsed), self.cwd, self.wants_escalation)


def normalized_text(parsed: ParsedCommand) -> str:
    """The request as one canonical line: wrappers, base names, exact words."""
    parts = []
    for command in parsed.commands:
        words = [w.value if w.is_literal else f"<{w.kind.value}:{w.raw}>" for w in command.words]
        if words and command.words[0].is_literal:
            words[0] = command.name or words[0]
        prefix = "".join(f"{w} " for w in command.wrappers)
        parts.append(prefix + "\x1f".join(words))
    return "\x1e".join(parts)


def pattern_key(command: SimpleCommand) -> str | None:
    """Program and subcommand (`git commit`, `pytest`): what "established" compares."""
    argv = command.argv
    if argv is None:
        return None
    key = [argv[0]]
    for word in argv[1:]:
        if word.startswith("-") or "/" in word or "." in word:
            break
        key.append(word)
        break
    return " ".join(key)


@dataclass(frozen=True)
class PolicyContext:
    """Everything the engine needs to decide, as plain values."""

    policy: ApprovalPolicy
    mode: SandboxMode
    rules: tuple[PrefixRule, ...] = ()
    workspace: str = "/"
    smart_approvals: bool = False
    reviewer: tuple[str, ...] | None = None
    reviewer_timeout: float = 30.0

    @classmethod
    def for_settings(cls, settings: Settings) -> PolicyContext:
        return cls(
            policy=settings.approval_policy,
            mode=settings.sandbox_mode,
            rules=settings.prefix_rules,
            workspace=str(settings.workspace),
            smart_approvals=settings.smart_approvals,
            reviewer=settings.guardian_command,
            reviewer_timeout=settings.guardian_timeout,
        )


@dataclass(frozen=True)
class Verdict:
    """The engine's answer before any human is asked."""

    decision: Decision
    decider: Decider
    reason: str
    rule: PrefixRule | None = None
    risk: RiskAssessment | None = None
    commands: tuple[SimpleCommand, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, object]:
        return {
            "decision": self.decision.value,
            "decider": self.decider.value,
            "reason": self.reason,
            "rule": None
            if self.rule is None
            else {
                "pattern": self.rule.pattern,
                "action": self.rule.action.value,
                "layer": self.rule.origin.layer,
                "file": self.rule.origin.path,
            },
            "risk": None if self.risk is None else self.risk.level.value,
            "rationale": None if self.risk is None else self.risk.rationale,
        }


Established = Callable[[ApprovalRequest], bool]


def evaluate(
    request: ApprovalRequest,
    context: PolicyContext,
    *,
    established: Established | None = None,
    with_risk: bool = False,
) -> Verdict:
    """Decide a request without asking anyone.

    The guardian's risk is computed when smart approvals are on, or when `with_risk`
    asks for it for display (`policy check`).
    """
    parsed = request.parsed
    commands = parsed.commands
    if not commands:
        return Verdict(Decision.FORBIDDEN, Decider.TABLE, "the command is empty")
    verdict = _rules_and_table(request, context)
    if not (context.smart_approvals or with_risk):
        return _with(verdict, risk=None, commands=commands)
    from harness.approval.guardian import assess

    risk = assess(
        parsed, cwd=request.cwd, workspace=context.workspace, escalate=request.wants_escalation
    )
    if verdict.decision is Decision.FORBIDDEN or not context.smart_approvals:
        return _with(verdict, risk=risk, commands=commands)
    return _guardian(request, context, verdict, risk, established)


def _rules_and_table(request: ApprovalRequest, context: PolicyContext) -> Verdict:
    parsed = request.parsed
    policy = context.policy
    hit = strictest_hit(context.rules, parsed.commands)
    if hit is not None:
        rule = hit.rule
        doubt = ""
        if hit.match is Match.POSSIBLE:
            why = "; ".join(hit.command.uncertain or parsed.reasons()) or "some words are not known"
            doubt = (
                f": `{hit.command.display()}` cannot be analysed with certainty ({why}) "
                "and may run what the rule names; spell it out without that construct"
            )
        if rule.action is RuleAction.FORBIDDEN:
            return Verdict(
                Decision.FORBIDDEN, Decider.RULE, f"forbidden by {rule.describe()}{doubt}", rule
            )
        if policy is ApprovalPolicy.NEVER:
            return Verdict(
                Decision.FORBIDDEN,
                Decider.RULE,
                f"{rule.describe()} requires approval, "
                f"and approval policy `never` asks no one{doubt}",
                rule,
            )
        return Verdict(
            Decision.PROMPT, Decider.RULE, f"{rule.describe()} requires approval{doubt}", rule
        )

    if request.wants_escalation:
        what = (
            "a retry outside the sandbox after the sandbox refused it"
            if request.after_sandbox_denial
            else ("to run with more than the session's sandbox allows")
        )
        if policy is ApprovalPolicy.NEVER:
            return Verdict(
                Decision.FORBIDDEN,
                Decider.TABLE,
                f"the request asks {what}; approval policy `never` refuses every escalation "
                f"and runs commands only inside the {context.mode.value} sandbox",
            )
        justification = (
            f" (justification: {request.justification})" if request.justification else ""
        )
        return Verdict(Decision.PROMPT, Decider.TABLE, f"the request asks {what}{justification}")

    if policy is ApprovalPolicy.UNTRUSTED:
        allow_rules = [allowing_rule(context.rules, c) for c in parsed.commands]
        uncovered = [
            c
            for c, rule in zip(parsed.commands, allow_rules, strict=True)
            if rule is None and not is_known_safe(c)
        ]
        if not uncovered and not parsed.uncertain:
            used = next((r for r in allow_rules if r is not None), None)
            if used is not None:
                return Verdict(Decision.ALLOW, Decider.RULE, f"allowed by {used.describe()}", used)
            return Verdict(Decision.ALLOW, Decider.KNOWN_SAFE, "only known-safe reads")
        first = uncovered[0] if uncovered else parsed.commands[0]
        why = "; ".join(first.uncertain or parsed.uncertain)
        detail = f" ({why})" if why else ""
        return Verdict(
            Decision.PROMPT,
            Decider.TABLE,
            f"approval policy `untrusted` asks before anything but known-safe reads: "
            f"`{first.display()}`{detail}",
        )
    return Verdict(
        Decision.ALLOW,
        Decider.TABLE,
        f"approval policy `{policy.value}` runs it inside the {context.mode.value} sandbox",
    )


def _guardian(
    request: ApprovalRequest,
    context: PolicyContext,
    verdict: Verdict,
    risk: RiskAssessment,
    established: Established | None,
) -> Verdict:
    """Smart approvals: LOW + established runs, HIGH always asks (except under `never`)."""
    from harness.approval.guardian import Risk, combine, review_external, review_request

    consult_reviewer = context.reviewer and (
        (verdict.decision is Decision.PROMPT and verdict.decider is Decider.TABLE)
        or (verdict.decision is Decision.ALLOW and risk.level is not Risk.LOW)
    )
    if consult_reviewer and context.reviewer:
        review = review_external(
            context.reviewer,
            review_request(
                request.parsed,
                cwd=request.cwd,
                workspace=context.workspace,
                escalate=request.wants_escalation,
                justification=request.justification,
                scorer=risk,
            ),
            timeout=context.reviewer_timeout,
        )
        risk = combine(risk, review)
    commands = request.parsed.commands
    if (
        verdict.decision is Decision.PROMPT
        and verdict.decider is Decider.TABLE
        and not request.wants_escalation
        and risk.level is Risk.LOW
        and established is not None
        and established(request)
    ):
        return Verdict(
            Decision.ALLOW,
            Decider.GUARDIAN,
            f"guardian: {risk.rationale}; it matches a pattern approved earlier in this session",
            risk=risk,
            commands=commands,
        )
    if (
        verdict.decision is Decision.ALLOW
        and risk.level is Risk.HIGH
        and context.policy is not ApprovalPolicy.NEVER
    ):
        return Verdict(
            Decision.PROMPT,
            Decider.GUARDIAN,
            f"guardian: {risk.rationale}",
            risk=risk,
            commands=commands,
        )
    return _with(verdict, risk=risk, commands=commands)


def _with(
    verdict: Verdict, *, risk: RiskAssessment | None, commands: tuple[SimpleCommand, ...]
) -> Verdict:
    return Verdict(verdict.decision, verdict.decider, verdict.reason, verdict.rule, risk, commands)
