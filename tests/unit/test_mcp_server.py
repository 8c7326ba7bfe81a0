"""The MCP server's pure parts: path containment, argument checks, results, the approval relay.

No daemon: the relay is tested against a stand-in gateway console socket.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.server.elicitation import render_elicitation_schema
from mcp.server.mcpserver import AcceptedElicitation, CancelledElicitation

from harness import mcp_server
from harness.errors import PolicyDenied, UsageError
from harness.gateway.protocol import encode, receive
from harness.mcp_server import (
    ApprovalAnswer,
    ApprovalRelay,
    MainThreadRunner,
    answer_message,
    command_request,
    contained_path,
    denial_result,
    elicitation_message,
    escalation,
    tail,
    workspace_argument,
)

# -- paths


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("x")
    return root


def test_relative_and_absolute_paths_inside_are_accepted(ws: Path) -> None:
    assert contained_path(str(ws), "src/a.py") == str(ws / "src" / "a.py")
    assert contained_path(str(ws), str(ws / "src" / "a.py")) == str(ws / "src" / "a.py")
    assert contained_path(str(ws), "new/file.txt") == str(ws / "new" / "file.txt")
    assert contained_path(str(ws), ".") == str(ws)
    assert contained_path(str(ws), "src/../src/a.py") == str(ws / "src" / "a.py")


@pytest.mark.parametrize("path", ["../x", "src/../../x", "/etc/passwd", "/", "..", "src/../.."])
def test_paths_leaving_the_workspace_are_refused(ws: Path, path: str) -> None:
    with pytest.raises(UsageError, match="outside the session's workspace"):
        contained_path(str(ws), path)


def test_a_sibling_with_the_same_prefix_is_outside(ws: Path) -> None:
    sibling = ws.parent / (ws.name + "-other")
    sibling.mkdir()
    with pytest.raises(UsageError, match="outside"):
        contained_path(str(ws), str(sibling / "f"))


def test_symlinks_out_of_the_workspace_are_refused(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("k")
    (ws / "link-dir").symlink_to(outside)
    (ws / "link-file").symlink_to(outside / "key")
    (ws / "dangling").symlink_to(outside / "not-yet")
    for path in ("link-dir/key", "link-file", "dangling", "link-dir/new-file"):
        with pytest.raises(UsageError, match="leads outside"):
            contained_path(str(ws), path)


def test_symlinks_within_the_workspace_are_fine(ws: Path) -> None:
    (ws / "alias").symlink_to(ws / "src")
    assert contained_path(str(ws), "alias/a.py") == str(ws / "alias" / "a.py")


def test_a_workspace_reached_through_a_symlink_still_contains_its_files(
    ws: Path, tmp_path: Path
) -> None:
    via = tmp_path / "via"
    via.symlink_to(ws)
    assert contained_path(str(via), "src/a.py") == str(via / "src" / "a.py")


@pytest.mark.parametrize("path", ["", "a\x00b"])
def test_empty_and_nul_paths_are_refused(ws: Path, path: str) -> None:
    with pytest.raises(UsageError):
        contained_path(str(ws), path)


# -- arguments


def test_exactly_one_of_argv_and_shell() -> None:
    assert command_request(["ls", "-la"], None) == (["ls", "-la"], None)
    assert command_request(None, "ls | wc -l") == (None, "ls | wc -l")
    for argv, shell in ((None, None), (["ls"], "ls")):
        with pytest.raises(UsageError, match="exactly one"):
            command_request(argv, shell)


@pytest.mark.parametrize(
    ("argv", "shell"), [([], None), ([""], None), (["a\x00"], None), (None, "  "), (None, "a\x00")]
)
def test_empty_or_nul_commands_are_refused(argv: list[str] | None, shell: str | None) -> None:
    with pytest.raises(UsageError):
        command_request(argv, shell)


def test_an_escalation_needs_a_justification() -> None:
    assert escalation("use_default", None) is False
    assert escalation("require_escalated", "needs the network to fetch deps") is True
    for justification in (None, "", "   "):
        with pytest.raises(UsageError, match="justification"):
            escalation("require_escalated", justification)
    with pytest.raises(UsageError):
        escalation("sudo", "please")


def test_the_workspace_must_be_an_absolute_directory(tmp_path: Path) -> None:
    assert workspace_argument(str(tmp_path)) == tmp_path
    with pytest.raises(UsageError, match="relative"):
        workspace_argument("repo")
    with pytest.raises(UsageError, match="not a directory"):
        workspace_argument(str(tmp_path / "missing"))
    with pytest.raises(UsageError):
        workspace_argument("")


def test_long_output_keeps_its_end() -> None:
    assert tail("short", 10) == "short"
    cut = tail("a" * 5 + "0123456789", 10)
    assert cut.endswith("0123456789")
    assert "5 characters cut" in cut


# -- what the client sees


def test_a_denial_is_a_readable_error_result_with_reason_and_feedback() -> None:
    denial = PolicyDenied(
        "denied (s-2): denied by the user\nharness: feedback from the reviewer: use a branch",
        reason="denied by the user",
        feedback="use a branch",
    )
    result = denial_result(denial)
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["denied"] is True
    assert result.structured_content["exit_code"] == 126
    assert result.structured_content["feedback"] == "use a branch"
    assert result.structured_content["reason"] == "denied by the user"
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text)["denied"] is True
    assert "use a branch" in text


def test_the_approval_question_is_a_spec_valid_elicitation_schema() -> None:
    schema = render_elicitation_schema(ApprovalAnswer)
    assert schema["required"] == ["decision"]
    assert schema["properties"]["decision"]["enum"] == ["approve-once", "approve-session", "deny"]
    assert schema["properties"]["feedback"]["type"] == "string"


def test_the_elicitation_message_names_the_request() -> None:
    question = {
        "id": "s-3-ab",
        "kind": "command",
        "command": "git push --force",
        "cwd": "/ws",
        "reason": "prompt rule 'git push --force'",
        "risk": "high",
        "rationale": "rewrites shared history",
        "justification": None,
        "escalate": False,
    }
    text = elicitation_message("s", question)
    for part in ("s-3-ab", "git push --force", "cwd: /ws", "risk: high: rewrites", "a command"):
        assert part in text
    assert "escalation" in elicitation_message("s", {**question, "escalate": True})
    network = elicitation_message(
        "s", {**question, "kind": "network", "command": "connect to x:443"}
    )
    assert "network access" in network
    assert "this domain" in network


def test_answers_name_their_id_and_drop_empty_feedback() -> None:
    assert answer_message("s-1", "deny", "use a branch") == {
        "type": "answer",
        "id": "s-1",
        "choice": "deny",
        "feedback": "use a branch",
    }
    assert answer_message("s-1", "approve-once", "  ")["feedback"] is None
    with pytest.raises(UsageError):
        answer_message("s-1", "maybe", None)


# -- the main-thread runner


def test_jobs_run_on_the_serving_thread_and_errors_reach_the_caller() -> None:
    runner = MainThreadRunner()
    seen: list[threading.Thread] = []
    ok = runner.submit(lambda: seen.append(threading.current_thread()) or 42)
    failing = runner.submit(lambda: 1 / 0)
    skipped = runner.submit(lambda: seen.append(threading.current_thread()))
    assert skipped.cancel()
    runner.stop()
    runner.serve()
    assert ok.result(timeout=1) == 42
    assert isinstance(failing.exception(timeout=1), ZeroDivisionError)
    assert seen == [threading.current_thread()]


# -- the relay, against a stand-in gateway


class FakeGateway:
    """A control socket that takes one console and records what it answers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.conn: socket.socket | None = None
        self.hello: dict[str, Any] = {}
        self.answers: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.connected = threading.Event()

    def _serve(self) -> None:
        self.conn, _ = self.server.accept()
        self.hello = receive(self.conn)
        self.connected.set()
        try:
            while True:
                self.answers.append(receive(self.conn))
        except OSError:
            return

    def send(self, message: dict[str, Any]) -> None:
        assert self.conn is not None
        self.conn.sendall(encode(message))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


class FakeContext:
    """Answers elicitations with the next scripted reply; a reply of None never answers."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.messages: list[str] = []

    async def elicit(self, message: str, schema: type[ApprovalAnswer]) -> Any:
        self.messages.append(message)
        reply = self.replies.pop(0)
        if reply is None:
            await anyio.sleep_forever()
        return reply


def _pending(approval_id: str, command: str = "git push --force") -> dict[str, Any]:
    return {
        "type": "pending",
        "id": approval_id,
        "kind": "command",
        "command": command,
        "cwd": "/ws",
        "reason": "prompt rule",
        "risk": None,
        "rationale": None,
        "justification": None,
        "escalate": False,
    }


async def _until(condition: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def test_the_relay_turns_questions_into_elicitations_and_answers_by_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcp_server, "DECLINED_GRACE", 0.2)
    gateway = FakeGateway(tmp_path / "control.sock")
    ctx = FakeContext(
        [
            AcceptedElicitation(data=ApprovalAnswer(decision="deny", feedback="use a branch")),
            CancelledElicitation(),
            None,  # s-3: never answered here; another console resolves it
            AcceptedElicitation(data=ApprovalAnswer(decision="approve-once")),
        ]
    )

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            relay = ApprovalRelay("s", str(gateway.path), "tok", group)
            async with relay.attached(ctx):  # type: ignore[arg-type]
                await _until(gateway.connected.is_set)
                assert gateway.hello == {"op": "console", "token": "tok"}
                gateway.send(_pending("s-1"))
                await _until(lambda: len(gateway.answers) == 1)
                gateway.send({"type": "resolved", "id": "s-1"})
                gateway.send(_pending("s-2"))  # declined: denied after the grace period
                await _until(lambda: len(gateway.answers) == 2)
                gateway.send({"type": "resolved", "id": "s-2"})
                gateway.send(_pending("s-3"))
                await _until(lambda: "s-3" in relay.asking)
                gateway.send({"type": "resolved", "id": "s-3"})  # answered elsewhere
                await _until(lambda: "s-3" not in relay.asking)
                gateway.send(_pending("s-3"))  # a repeat of a resolved question: not asked
                gateway.send(_pending("s-4", "echo approved"))
                await _until(lambda: len(gateway.answers) == 3)
            assert relay.stream is None
            group.cancel_scope.cancel()

    try:
        anyio.run(scenario)
    finally:
        gateway.close()
    assert gateway.answers[0] == {
        "type": "answer",
        "id": "s-1",
        "choice": "deny",
        "feedback": "use a branch",
    }
    assert gateway.answers[1]["id"] == "s-2"
    assert gateway.answers[1]["choice"] == "deny"
    assert "no other console answered" in gateway.answers[1]["feedback"]
    assert gateway.answers[2] == {
        "type": "answer",
        "id": "s-4",
        "choice": "approve-once",
        "feedback": None,
    }
    assert len(ctx.messages) == 4
    assert "git push --force" in ctx.messages[0]


def test_a_relay_that_cannot_reach_the_gateway_leaves_the_decision_to_it(
    tmp_path: Path,
) -> None:
    """No console from us: the gateway asks its other consoles, or denies."""
    attached: list[bool] = []

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            relay = ApprovalRelay("s", str(tmp_path / "absent.sock"), "tok", group)
            async with relay.attached(FakeContext([])):  # type: ignore[arg-type]
                attached.append(relay.stream is not None)

    anyio.run(scenario)
    assert attached == [False]
