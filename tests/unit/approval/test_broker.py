from __future__ import annotations

from pathlib import Path

from harness.approval.broker import Answer, ApprovalBroker, Choice, PendingApproval
from harness.approval.engine import ApprovalRequest, Decider, PolicyContext
from harness.audit import AuditLog
from harness.policy.modes import ApprovalPolicy, SandboxMode


def untrusted() -> PolicyContext:
    return PolicyContext(ApprovalPolicy.UNTRUSTED, SandboxMode.WORKSPACE_WRITE, workspace="/work")


class ScriptedHuman:
    """Answers in order and remembers what it was shown."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.seen: list[PendingApproval] = []

    def __call__(self, pending: PendingApproval) -> Answer:
        self.seen.append(pending)
        return self.answers.pop(0)


def request(source: str, cwd: str = "/work", escalate: bool = False) -> ApprovalRequest:
    return ApprovalRequest.for_shell(source, cwd, escalate=escalate)


def test_every_request_gets_a_distinct_id() -> None:
    broker = ApprovalBroker(untrusted(), session="s1")
    ids = {broker.submit(request("ls")).approval_id for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("s1-") for i in ids)


def test_approve_once_approves_only_that_id() -> None:
    human = ScriptedHuman(Answer(Choice.APPROVE_ONCE), Answer(Choice.DENY, "no"))
    broker = ApprovalBroker(untrusted(), session="s", asker=human)
    first = broker.submit(request("make test"))
    second = broker.submit(request("make test"))
    assert first.allowed and not second.allowed
    assert len(human.seen) == 2
    assert human.seen[0].approval_id != human.seen[1].approval_id
    assert second.feedback == "no"
    assert "no" in second.denial_message()


def test_approve_for_session_caches_the_exact_command_cwd_and_escalation() -> None:
    human = ScriptedHuman(*[Answer(Choice.APPROVE_SESSION)] + [Answer(Choice.DENY)] * 4)
    broker = ApprovalBroker(untrusted(), session="s", asker=human)
    assert broker.submit(request("make test")).allowed
    again = broker.submit(request("make  test"))  # same normalised command
    assert again.allowed
    assert again.decider is Decider.USER
    assert "earlier" in again.reason
    assert len(human.seen) == 1
    assert not broker.submit(request("make test", cwd="/work/sub")).allowed
    assert not broker.submit(request("make test -j2")).allowed
    assert not broker.submit(request("make install")).allowed
    assert not broker.submit(request("make test", escalate=True)).allowed
    assert len(human.seen) == 5


def test_without_a_human_prompts_are_denied_with_the_reason() -> None:
    broker = ApprovalBroker(untrusted(), session="s")
    outcome = broker.submit(request("make test"))
    assert not outcome.allowed
    assert "no terminal" in outcome.reason
    assert broker.submit(request("ls")).allowed  # known-safe needs no human


def test_forbidden_never_reaches_the_human() -> None:
    from harness.policy.modes import RuleAction
    from harness.policy.rules import Origin, PrefixRule

    context = PolicyContext(
        ApprovalPolicy.UNTRUSTED,
        SandboxMode.WORKSPACE_WRITE,
        rules=(PrefixRule("rm -rf /", RuleAction.FORBIDDEN, Origin("managed", "/m.toml")),),
    )
    human = ScriptedHuman(Answer(Choice.APPROVE_ONCE))
    outcome = ApprovalBroker(context, session="s", asker=human).submit(request("sudo rm -fr /"))
    assert not outcome.allowed
    assert human.seen == []


def test_every_decision_is_audited_with_its_decider(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    human = ScriptedHuman(Answer(Choice.DENY, "use a branch"))
    broker = ApprovalBroker(untrusted(), session="s9", asker=human, audit=log)
    broker.submit(request("ls"))
    broker.submit(request("git push --force"))
    records = list(log.records())
    assert [r.event for r in records] == ["approval.requested", "approval.decided"] * 2
    decided = [r for r in records if r.event == "approval.decided"]
    assert [r.fields["decider"] for r in decided] == ["known-safe", "user"]
    assert decided[1].fields["feedback"] == "use a branch"
    assert decided[1].fields["decision"] == "deny"
    assert all(r.fields["session"] == "s9" for r in records)
    assert log.verify().ok


def test_established_patterns_come_from_human_approvals() -> None:
    context = PolicyContext(
        ApprovalPolicy.UNTRUSTED,
        SandboxMode.WORKSPACE_WRITE,
        workspace="/work",
        smart_approvals=True,
    )
    human = ScriptedHuman(Answer(Choice.APPROVE_ONCE))
    broker = ApprovalBroker(context, session="s", asker=human)
    assert broker.submit(request("pytest tests/a.py")).allowed
    follow_up = broker.submit(request("pytest tests/b.py"))
    assert follow_up.allowed
    assert follow_up.decider is Decider.GUARDIAN
    assert len(human.seen) == 1


def test_history_lists_every_decision_with_its_decider(tmp_path: Path) -> None:
    from harness.approval.history import approval_history

    log = AuditLog(tmp_path / "audit.jsonl")
    human = ScriptedHuman(Answer(Choice.DENY, "use a branch"), Answer(Choice.APPROVE_ONCE))
    broker = ApprovalBroker(untrusted(), session="s7", asker=human, audit=log)
    broker.submit(request("ls"))
    broker.submit(request("git push --force"))
    broker.submit(request("make test"))
    ApprovalBroker(untrusted(), session="other", audit=log).submit(request("ls"))
    history = approval_history(log.records(), session="s7")
    assert [(e.command, e.decision, e.decider, e.feedback) for e in history] == [
        ("ls", "allow", "known-safe", None),
        ("git push --force", "deny", "user", "use a branch"),
        ("make test", "allow", "user", None),
    ]
    assert len({e.approval_id for e in history}) == 3
    assert len(approval_history(log.records())) == 4
