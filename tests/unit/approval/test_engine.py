from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.approval.engine import (
    ApprovalRequest,
    Decider,
    Decision,
    PolicyContext,
    Verdict,
    evaluate,
)
from harness.policy.modes import ApprovalPolicy, RuleAction, SandboxMode
from harness.policy.rules import Origin, PrefixRule

MANAGED = Origin("managed", "/etc/harness/managed.toml")
RM_ROOT = PrefixRule("rm -rf /", RuleAction.FORBIDDEN, MANAGED)


def context(
    policy: ApprovalPolicy = ApprovalPolicy.ON_REQUEST,
    mode: SandboxMode = SandboxMode.WORKSPACE_WRITE,
    rules: tuple[PrefixRule, ...] = (RM_ROOT,),
    smart: bool = False,
) -> PolicyContext:
    return PolicyContext(
        policy=policy, mode=mode, rules=rules, workspace="/work", smart_approvals=smart
    )


def decide(
    source: str,
    ctx: PolicyContext | None = None,
    cwd: str = "/work",
    *,
    escalate: bool = False,
    justification: str | None = None,
) -> Verdict:
    request = ApprovalRequest.for_shell(source, cwd, escalate=escalate, justification=justification)
    return evaluate(request, ctx or context())


SPELLINGS = [
    "rm -rf /",
    "/bin/rm -rf /",
    "/usr/bin/rm -rf /",
    "rm  -rf  /",
    "rm\t-rf\t/",
    "sudo rm -rf /",
    "sudo -u root -- rm -rf /",
    "sudo -E env rm -rf /",
    "doas rm -rf /",
    'sh -c "rm -rf /"',
    "bash -lc 'cd / && rm -rf /'",
    "bash -o pipefail -c 'rm -rf /'",
    "zsh -c 'rm -rf /'",
    "dash -xc 'rm -rf /'",
    "env X=1 rm -rf /",
    "env -i rm -rf /",
    "env -S 'rm -rf /'",
    "command rm -rf /",
    "exec rm -rf /",
    "builtin command rm -rf /",
    '"rm" -rf /',
    "'rm' -rf /",
    'r""m -rf /',
    "\\rm -rf /",
    "r\\m -rf /",
    "$'\\x72m' -rf /",
    "$'\\162m' -rf /",
    "rm -fr /",
    "rm -r -f /",
    "rm -f -r /",
    "rm -Rf /",
    "rm --recursive --force /",
    "rm --force --recursive /",
    "rm -r --force /",
    "rm -rf --no-preserve-root /",
    "rm -rf -- /",
    "rm -rf //",
    "rm -rf /.",
    "rm -rf /./",
    "rm -rf /tmp/..",
    "rm -rf ///",
    "rm -rf /*",
    "rm -rf /tmp /",
    "rm -v -rf /",
    "echo / | xargs rm -rf",
    "echo / | xargs -0 rm -rf",
    "echo / | xargs -I{} rm -rf {}",
    "ls / | xargs -n1 rm -rf",
    "find / -maxdepth 0 -exec rm -rf {} +",
    "nice rm -rf /",
    "nice -n 19 rm -rf /",
    "ionice -c3 rm -rf /",
    "timeout 10 rm -rf /",
    "timeout -s KILL 10 rm -rf /",
    "nohup rm -rf /",
    "time rm -rf /",
    "stdbuf -o0 rm -rf /",
    "setsid rm -rf /",
    "busybox rm -rf /",
    "flock /tmp/lock rm -rf /",
    "watch rm -rf /",
    "su -c 'rm -rf /'",
    "sudo sh -c 'rm -rf /'",
    "eval 'rm -rf /'",
    "eval rm -rf /",
    "true && rm -rf /",
    "false || rm -rf /",
    "echo hi; rm -rf /",
    "echo hi\nrm -rf /",
    "echo hi | rm -rf /",
    "rm -rf / &",
    "(rm -rf /)",
    "{ rm -rf /; }",
    "! rm -rf /",
    "if true; then rm -rf /; fi",
    "for d in /; do rm -rf $d; done",
    "while true; do rm -rf /; done",
    "f() { rm -rf /; }; f",
    "echo $(rm -rf /)",
    "echo `rm -rf /`",
    "cat <(rm -rf /)",
    "x=$(rm -rf /)",
    'echo "$(rm -rf /)"',
    "cat <<EOF\n$(rm -rf /)\nEOF",
    "r\\\nm -rf /",
    "cd / && rm -rf .",
    "cd / && rm -rf *",
    "cd /tmp && cd .. && rm -rf .",
    "X=/; rm -rf $X",
    'rm -rf "$X"',
    "rm -rf $HOME/..",
    "$CMD -rf /",
    '"$(echo rm)" -rf /',
    "r{m,} -rf /",
    "{rm,-rf,/}",
    "alias x='rm -rf /'",
    "trap 'rm -rf /' EXIT",
    "bash <<< 'rm -rf /'",
    "echo 'rm -rf /' | sh",
    "sh < script.sh",
    "source ./evil.sh",
    ". ./evil.sh",
    "bash evil.sh",
    "echo 'rm -rf /",  # does not parse: could be anything
]


@pytest.mark.parametrize("source", SPELLINGS)
@pytest.mark.parametrize("policy", list(ApprovalPolicy))
def test_managed_rm_rf_root_is_never_bypassed(source: str, policy: ApprovalPolicy) -> None:
    verdict = decide(source, context(policy=policy))
    assert verdict.decision is Decision.FORBIDDEN, (source, verdict.reason)
    assert verdict.decider is Decider.RULE
    assert verdict.rule == RM_ROOT
    assert "/etc/harness/managed.toml" in verdict.reason


@pytest.mark.parametrize(
    "argv",
    [
        ["rm", "-rf", "/"],
        ["/bin/rm", "-rf", "/"],
        ["sudo", "rm", "-rf", "/"],
        ["sh", "-c", "rm -rf /"],
        ["bash", "-lc", "cd / && rm -rf /"],
        ["env", "X=1", "rm", "-rf", "/"],
        ["command", "rm", "-rf", "/"],
        ["rm", "-r", "-f", "/"],
        ["xargs", "rm", "-rf"],
        ["find", "/", "-exec", "rm", "-rf", "{}", ";"],
    ],
)
def test_argv_spellings_are_forbidden_too(argv: list[str]) -> None:
    verdict = evaluate(
        ApprovalRequest.for_argv(argv, "/work"), context(policy=ApprovalPolicy.NEVER)
    )
    assert verdict.decision is Decision.FORBIDDEN, verdict.reason


@pytest.mark.parametrize(
    "source",
    [
        "rm -rf build",
        "rm -rf ./build /tmp/x",
        "rm -f /",  # not recursive: the rule does not name it
        "rm -r /tmp/cache",
        "echo rm -rf /",
        "git commit -m 'rm -rf /'",
        "grep -r 'rm -rf /' .",
        "ls /",
        "cat /etc/hostname",
        "rm -rf *.pyc",
        "find . -name '*.pyc' -delete",
        "echo $(date)",
    ],
)
def test_lookalikes_are_not_forbidden(source: str) -> None:
    assert decide(source).decision is not Decision.FORBIDDEN


def test_uncertain_match_says_why() -> None:
    verdict = decide("echo / | xargs rm -rf")
    assert "cannot be analysed with certainty" in verdict.reason
    assert "xargs" in verdict.reason


# -- the policy x mode table -------------------------------------------------------------


@pytest.mark.parametrize("mode", list(SandboxMode))
def test_untrusted_runs_known_safe_reads_and_asks_for_the_rest(mode: SandboxMode) -> None:
    ctx = context(policy=ApprovalPolicy.UNTRUSTED, mode=mode)
    for source in (
        "ls -la",
        "cat README.md | head -5",
        "git status",
        "git log --oneline -n 3",
        "rg foo src",
    ):
        verdict = decide(source, ctx)
        assert (verdict.decision, verdict.decider) == (Decision.ALLOW, Decider.KNOWN_SAFE), source
    for source in (
        "make test",
        "pip install x",
        "ls > out.txt",
        "ls $(pwd)",
        "git push",
        "python -c 1",
    ):
        verdict = decide(source, ctx)
        assert (verdict.decision, verdict.decider) == (Decision.PROMPT, Decider.TABLE), source


@pytest.mark.parametrize("mode", list(SandboxMode))
def test_on_request_runs_in_the_sandbox_and_asks_only_to_escalate(mode: SandboxMode) -> None:
    ctx = context(policy=ApprovalPolicy.ON_REQUEST, mode=mode)
    assert decide("make test", ctx).decision is Decision.ALLOW
    escalated = decide("curl https://example.com", ctx, escalate=True, justification="fetch docs")
    assert escalated.decision is Decision.PROMPT
    assert "fetch docs" in escalated.reason
    parsed = ApprovalRequest.for_shell("make", "/work").parsed
    retry = evaluate(ApprovalRequest(parsed, "/work", after_sandbox_denial=True), ctx)
    assert retry.decision is Decision.PROMPT


@pytest.mark.parametrize("mode", list(SandboxMode))
def test_never_runs_and_refuses_escalation(mode: SandboxMode) -> None:
    ctx = context(policy=ApprovalPolicy.NEVER, mode=mode)
    assert decide("make test", ctx).decision is Decision.ALLOW
    refused = decide("make test", ctx, escalate=True)
    assert refused.decision is Decision.FORBIDDEN
    assert "never" in refused.reason


@pytest.mark.parametrize(("policy", "mode"), list(itertools.product(ApprovalPolicy, SandboxMode)))
def test_all_nine_cells_decide(policy: ApprovalPolicy, mode: SandboxMode) -> None:
    verdict = decide("make test", context(policy=policy, mode=mode))
    expected = Decision.PROMPT if policy is ApprovalPolicy.UNTRUSTED else Decision.ALLOW
    assert verdict.decision is expected


# -- prefix rules ----------------------------------------------------------------------


USER = Origin("user", "/home/u/.config/harness/config.toml")


def test_strictest_rule_wins() -> None:
    rules = (
        PrefixRule("git push", RuleAction.ALLOW, USER),
        PrefixRule("git push --force", RuleAction.PROMPT, USER),
        PrefixRule("git push --force origin main", RuleAction.FORBIDDEN, USER),
    )
    ctx = context(policy=ApprovalPolicy.UNTRUSTED, rules=rules)
    assert decide("git push origin feature", ctx).decision is Decision.ALLOW
    assert decide("git push -f origin feature", ctx).decision is Decision.PROMPT
    assert decide("git push origin +feature", ctx).decision is Decision.PROMPT
    assert decide("git push --force origin main", ctx).decision is Decision.FORBIDDEN
    assert decide("git push origin main -f", ctx).decision is Decision.FORBIDDEN


def test_prompt_rule_under_never_is_refused_not_run() -> None:
    rules = (PrefixRule("git push --force", RuleAction.PROMPT, USER),)
    verdict = decide("git push --force", context(policy=ApprovalPolicy.NEVER, rules=rules))
    assert verdict.decision is Decision.FORBIDDEN
    assert "never" in verdict.reason


def test_allow_rules_are_narrow() -> None:
    rules = (PrefixRule("make test", RuleAction.ALLOW, USER),)
    ctx = context(policy=ApprovalPolicy.UNTRUSTED, rules=rules)
    assert decide("make test", ctx).decider is Decider.RULE
    assert decide("make test -j4", ctx).decision is Decision.ALLOW
    for source in (
        "make install",
        "sudo make test",
        "make test > log",
        "PATH=/x make test",
        "make $T",
    ):
        assert decide(source, ctx).decision is Decision.PROMPT, source


def test_managed_forbidden_beats_user_allow() -> None:
    rules = (PrefixRule("rm", RuleAction.ALLOW, USER), RM_ROOT)
    verdict = decide("rm -rf /", context(policy=ApprovalPolicy.UNTRUSTED, rules=rules))
    assert verdict.decision is Decision.FORBIDDEN


def test_allow_rule_does_not_grant_escalation() -> None:
    rules = (PrefixRule("curl", RuleAction.ALLOW, USER),)
    assert decide("curl x", context(rules=rules), escalate=True).decision is Decision.PROMPT


# -- known-safe forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "find . -name x -exec rm {} ;",
        "find . -delete",
        "find . -fprint out",
        "rg --pre cat foo",
        "rg -z foo",
        "git -c core.pager=evil log",
        "git --output=x diff",
        "git diff --ext-diff",
        "git log --output=x",
        "git branch -D main",
        "git branch newbranch",
        "git -C /elsewhere status",
        "sed -i s/a/b/ f",
        "sed --in-place s/a/b/ f",
        "sed -n 1w/tmp/x f",
        "sed 's/a/b/e' f",
        "sort -o out f",
        "ls > out",
        "cat f >> out",
        "echo x | tee out",
        "date -s 2020-01-01",
        "uniq in out",
        "sudo ls",
        "LD_PRELOAD=/x.so ls",
    ],
)
def test_dangerous_forms_of_safe_commands_ask(source: str) -> None:
    verdict = decide(source, context(policy=ApprovalPolicy.UNTRUSTED, rules=()))
    assert verdict.decision is Decision.PROMPT, source


@pytest.mark.parametrize(
    "source",
    [
        "sed -n 1,5p f",
        "sed 's/a/b/g' f",
        "git diff HEAD~1",
        "git branch -a",
        "git show HEAD:README.md",
        "find . -name '*.py' -type f",
        "ls 2>/dev/null",
        "wc -l < f",
        "LANG=C sort f",
        "cat f | grep x | wc -l",
    ],
)
def test_safe_forms_run_under_untrusted(source: str) -> None:
    verdict = decide(source, context(policy=ApprovalPolicy.UNTRUSTED, rules=()))
    assert verdict.decision is Decision.ALLOW, (source, verdict.reason)


# -- guardian --------------------------------------------------------------------------


def test_guardian_high_risk_asks_even_under_on_request() -> None:
    verdict = decide("git push --force origin main", context(smart=True, rules=()))
    assert verdict.decision is Decision.PROMPT
    assert verdict.decider is Decider.GUARDIAN
    assert verdict.risk is not None
    assert verdict.risk.level.value == "high"


def test_guardian_never_asks_under_never() -> None:
    ctx = context(policy=ApprovalPolicy.NEVER, smart=True, rules=())
    assert decide("git push --force origin main", ctx).decision is Decision.ALLOW


def test_guardian_low_risk_auto_approves_only_established_patterns() -> None:
    ctx = context(policy=ApprovalPolicy.UNTRUSTED, smart=True, rules=())
    request = ApprovalRequest.for_shell("pytest tests/unit", "/work")
    assert evaluate(request, ctx).decision is Decision.PROMPT
    assert evaluate(request, ctx, established=lambda r: False).decision is Decision.PROMPT
    verdict = evaluate(request, ctx, established=lambda r: True)
    assert (verdict.decision, verdict.decider) == (Decision.ALLOW, Decider.GUARDIAN)
    risky = ApprovalRequest.for_shell("pip install requests", "/work")
    assert evaluate(risky, ctx, established=lambda r: True).decision is Decision.PROMPT


def test_guardian_off_keeps_the_table() -> None:
    request = ApprovalRequest.for_shell("git push --force origin main", "/work")
    verdict = evaluate(request, context(smart=False, rules=()), with_risk=True)
    assert verdict.decision is Decision.ALLOW
    assert verdict.risk is not None  # shown, not used
    assert evaluate(request, context(smart=False, rules=())).risk is None


# -- property: no forbidden simple command in any list is ever allowed ---------------------

SAFE_COMMANDS = [
    "ls",
    "echo hi",
    "git status",
    "make test",
    "cat f",
    "true",
    "pwd",
    "python -c 1",
    'echo "a b"',
    "ls -la /tmp",
    "(cd sub)",
    "{ ls; }",
    "echo $(date)",
    "x=1",
    "ls > /dev/null",
    "grep -r foo .",
]
FORBIDDEN_SPELLINGS = [
    "rm -rf /",
    "/bin/rm -fr /",
    "rm -r -f /",
    "sudo rm -rf /",
    "command rm --recursive --force /",
    "env A=1 rm -Rf //",
    "\\rm -rf /.",
    "nice timeout 5 rm -rf /",
]
SEPARATORS = [" && ", " || ", "; ", " | ", "\n", " & ", " |& ", ";\n", " &&\n", "\n\n", " ;"]


@st.composite
def command_lists(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(SAFE_COMMANDS), max_size=5))
    position = draw(st.integers(min_value=0, max_value=len(parts)))
    parts.insert(position, draw(st.sampled_from(FORBIDDEN_SPELLINGS)))
    separators = draw(
        st.lists(st.sampled_from(SEPARATORS), min_size=len(parts), max_size=len(parts))
    )
    script = "".join(p + s for p, s in zip(parts, separators, strict=True)).rstrip(" &|;\n")
    wrapper = draw(
        st.sampled_from(
            ["{}", "sh -c '{}'", "bash -lc '{}'", "sudo bash -c '{}'", "eval '{}'", "({})"]
        )
    )
    return wrapper.format(script) if "'" not in script else script


@settings(max_examples=300, deadline=None)
@given(command_lists(), st.sampled_from(list(ApprovalPolicy)), st.booleans())
def test_no_list_containing_a_forbidden_command_is_allowed(
    source: str, policy: ApprovalPolicy, smart: bool
) -> None:
    verdict = decide(source, context(policy=policy, smart=smart))
    assert verdict.decision is Decision.FORBIDDEN, (source, verdict.reason)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.sampled_from(list(ApprovalPolicy)))
def test_engine_never_crashes(source: str, policy: ApprovalPolicy) -> None:
    verdict = decide(source, context(policy=policy, smart=True))
    assert verdict.decision in set(Decision)
