from __future__ import annotations

import io

import pytest

from harness.approval.broker import Answer, Choice
from harness.cli.console import prompt_choice

COMMAND = {"id": "s-1", "kind": "command"}
NETWORK = {"id": "s-2", "kind": "network"}


def ask(replies: str, question: dict[str, str] = COMMAND) -> tuple[Answer, str]:
    out = io.StringIO()
    answer = prompt_choice(out, io.StringIO(replies), question)
    return answer, out.getvalue()


@pytest.mark.parametrize(
    ("reply", "choice"),
    [
        ("a", Choice.APPROVE_ONCE),
        ("Approve", Choice.APPROVE_ONCE),
        ("once", Choice.APPROVE_ONCE),
        ("s", Choice.APPROVE_SESSION),
        ("  session ", Choice.APPROVE_SESSION),
        ("d", Choice.DENY),
        ("no", Choice.DENY),
    ],
)
def test_whole_replies_choose(reply: str, choice: Choice) -> None:
    answer, _ = ask(f"{reply}\n")
    assert answer == Answer(choice)


@pytest.mark.parametrize("reply", ["sure", "stop", "again", "delete it", "", "x"])
def test_anything_else_asks_again_and_approves_nothing(reply: str) -> None:
    answer, out = ask(f"{reply}\nd\n")
    assert answer == Answer(Choice.DENY)
    assert out.count("[d]eny") == 2


def test_feedback_goes_with_the_denial() -> None:
    answer, out = ask("f\nuse a branch\n")
    assert answer == Answer(Choice.DENY, "use a branch")
    assert "feedback: " in out


def test_network_questions_take_no_feedback() -> None:
    answer, out = ask("f\nallow\n", NETWORK)
    assert answer == Answer(Choice.APPROVE_ONCE)
    assert out.count("allow this domain for the [s]ession") == 2


def test_end_of_input_is_a_denial() -> None:
    answer, _ = ask("maybe\n")
    assert answer.choice is Choice.DENY
    assert answer.feedback == "no answer (end of input)"
