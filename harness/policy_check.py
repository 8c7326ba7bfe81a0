"""`harness policy check`: what the engine would decide, without running anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.approval.engine import ApprovalRequest, PolicyContext, Verdict, evaluate
from harness.config.options import CliOptions
from harness.config.resolve import resolve
from harness.config.settings import Settings
from harness.errors import UsageError
from harness.paths import Locations


@dataclass(frozen=True)
class PolicyCheck:
    """What `harness policy check` reports: the settings, the request and the verdict."""

    settings: Settings
    request: ApprovalRequest
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        rule = self.verdict.rule
        risk = self.verdict.risk
        return {
            "decision": self.verdict.decision.value,
            "decider": self.verdict.decider.value,
            "reason": self.verdict.reason,
            "rule": None
            if rule is None
            else {
                "pattern": rule.pattern,
                "action": rule.action.value,
                "layer": rule.origin.layer,
                "file": rule.origin.path,
            },
            "risk": risk.level.value if risk else None,
            "rationale": risk.rationale if risk else None,
            "evidence": [e.detail for e in risk.evidence] if risk else [],
            "approval_policy": self.settings.approval_policy.value,
            "sandbox_mode": self.settings.sandbox_mode.value,
            "smart_approvals": self.settings.smart_approvals,
            "commands": [
                {
                    "command": c.display(),
                    "argv": list(c.argv) if c.argv is not None else None,
                    "wrappers": list(c.wrappers),
                    "uncertain": list(c.uncertain),
                }
                for c in self.request.parsed.commands
            ],
            "uncertain": list(self.request.parsed.reasons()),
        }


def check_policy(
    options: CliOptions,
    locations: Locations,
    *,
    argv: Sequence[str] = (),
    shell: str | None = None,
    cwd: Path | None = None,
    escalate: bool = False,
    justification: str | None = None,
) -> PolicyCheck:
    """Resolve the configuration for `options` and decide one command."""
    if bool(argv) == (shell is not None):
        raise UsageError(
            "give the command either after `--` or as one string with -c, not both or neither."
        )
    settings = resolve(options, locations, cwd=cwd)
    where = str(cwd.resolve() if cwd else settings.workspace)
    if shell is not None:
        request = ApprovalRequest.for_shell(
            shell, where, escalate=escalate, justification=justification
        )
    else:
        request = ApprovalRequest.for_argv(
            argv, where, escalate=escalate, justification=justification
        )
    return PolicyCheck(
        settings, request, evaluate(request, PolicyContext.for_settings(settings), with_risk=True)
    )
