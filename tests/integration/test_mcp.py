"""`harness mcp` driven by the MCP SDK's own client, as a real MCP client would use it.

The server runs as a subprocess over stdio; sessions run on the real engines.
Approvals reach the client through elicitation when it declares the capability.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.session import ClientRequestContext

pytestmark = pytest.mark.slow

SERVER = "from harness.mcp_server import serve_stdio; serve_stdio()"
TOOLS = {
    "create_session",
    "run_command",
    "read_file",
    "write_file",
    "workspace_diff",
    "stop_session",
}
Elicitation = Callable[
    [ClientRequestContext, types.ElicitRequestParams], Awaitable[types.ElicitResult]
]


@pytest.fixture
def prompt_rules(harness_env: dict[str, str]) -> Path:
    """User rules that make two harmless commands ask a human."""
    config = Path(harness_env["XDG_CONFIG_HOME"]) / "harness" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        '[[prefix_rules]]\npattern = "git push --force"\naction = "prompt"\n\n'
        '[[prefix_rules]]\npattern = "echo approved"\naction = "prompt"\n'
    )
    return config


@pytest.fixture
def committed(workspace: Path) -> Path:
    """The workspace with one commit, so the diff has something to compare with."""
    (workspace / "README").write_text("first\n")
    subprocess.run(["git", "-C", str(workspace), "add", "README"], check=True)
    subprocess.run(["git", "-C", str(workspace), "commit", "-qm", "init"], check=True)
    return workspace


class Human:
    """An elicitation callback that answers by command and remembers what it was asked."""

    def __init__(self, answers: dict[str, tuple[str, str | None]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        assert "decision" in params.requested_schema["properties"]
        self.asked.append(params.message)
        for command, (decision, feedback) in self.answers.items():
            if f"command: {command}\n" in params.message:
                content: dict[str, Any] = {"decision": decision}
                if feedback:
                    content["feedback"] = feedback
                return types.ElicitResult(action="accept", content=content)
        return types.ElicitResult(action="decline")


@asynccontextmanager
async def client(
    env: dict[str, str], log: Path, elicitation: Elicitation | None = None
) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=["-c", SERVER], env=env)
    with log.open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, elicitation_callback=elicitation) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> types.CallToolResult:
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, types.CallToolResult)
    return result


def text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def data(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    return result.structured_content


async def create(
    session: ClientSession, workspace: Path, engine: str, **settings: str
) -> dict[str, Any]:
    """A harness session through the `create_session` tool; its description."""
    return data(
        await call(session, "create_session", workspace=str(workspace), backend=engine, **settings)
    )


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 300) -> None:
    async def bounded() -> None:
        with anyio.fail_after(timeout):
            await scenario()

    anyio.run(bounded)


def test_the_client_lists_the_tools(harness_env: dict[str, str], tmp_path: Path) -> None:
    async def scenario() -> None:
        async with client(harness_env, tmp_path / "server.log") as session:
            listed = await session.list_tools()
            tools = {tool.name: tool for tool in listed.tools}
            assert set(tools) == TOOLS
            schema = tools["run_command"].input_schema["properties"]
            assert set(schema) >= {"session_id", "command", "shell", "cwd", "justification"}
            assert "require_escalated" in str(schema["sandbox_permissions"])
            unknown = await call(session, "run_command", session_id="nope", command=["ls"])
            assert unknown.is_error
            assert "create_session" in text(unknown)
            assert "Traceback" not in text(unknown)

    run(scenario)


def test_a_session_runs_commands_reads_writes_diffs_and_stops(
    engine: str, harness_env: dict[str, str], committed: Path, containers, tmp_path: Path
) -> None:
    workspace = committed
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("not for the agent\n")
    (workspace / "escape").symlink_to(tmp_path / "outside")

    async def scenario() -> None:
        async with client(harness_env, tmp_path / "server.log") as session:
            created = await create(session, workspace, engine, profile="auto")
            session_id = created["session_id"]
            assert created["backend"] == engine
            assert created["approval_policy"] == "on-request"
            assert created["sandbox_mode"] == "workspace-write"
            assert len(containers(engine, session_id)) == 1

            ran = data(
                await call(
                    session,
                    "run_command",
                    session_id=session_id,
                    command=["sh", "-c", "pwd; echo err >&2; exit 7"],
                )
            )
            assert (ran["exit_code"], ran["stdout"], ran["stderr"]) == (
                7,
                f"{workspace}\n",
                "err\n",
            )
            assert ran["denied"] is False
            piped = data(
                await call(session, "run_command", session_id=session_id, shell="echo a b | wc -w")
            )
            assert piped["stdout"].strip() == "2"
            in_sub = data(
                await call(
                    session, "run_command", session_id=session_id, command=["pwd"], cwd=".git"
                )
            )
            assert in_sub["stdout"] == f"{workspace}/.git\n"

            written = data(
                await call(
                    session,
                    "write_file",
                    session_id=session_id,
                    path="notes/todo.txt",
                    content="ship it\n",
                )
            )
            assert written["bytes_written"] == 8
            assert (workspace / "notes" / "todo.txt").read_text() == "ship it\n"
            assert (workspace / "notes" / "todo.txt").stat().st_uid == (
                workspace.stat().st_uid
            )  # written by the sandbox's user, not by someone else
            data(
                await call(
                    session, "write_file", session_id=session_id, path="README", content="second\n"
                )
            )
            read = data(await call(session, "read_file", session_id=session_id, path="README"))
            assert read["content"] == "second\n"
            assert read["path"] == str(workspace / "README")

            for path in ("../outside/secret", "escape/secret", "/etc/passwd"):
                refused = await call(session, "read_file", session_id=session_id, path=path)
                assert refused.is_error
                assert "outside" in text(refused)
                assert "not for the agent" not in text(refused)
            refused = await call(
                session, "write_file", session_id=session_id, path="escape/x", content="x"
            )
            assert refused.is_error
            assert not (tmp_path / "outside" / "x").exists()
            hook = await call(
                session,
                "write_file",
                session_id=session_id,
                path=".git/hooks/pre-commit",
                content="#!/bin/sh\n",
            )
            assert hook.is_error  # the sandbox keeps .git/hooks read-only in workspace-write
            assert "Read-only file system" in text(hook)

            diff = data(await call(session, "workspace_diff", session_id=session_id))["result"]
            assert "-first" in diff
            assert "+second" in diff
            assert "untracked files:" in diff
            assert "notes/todo.txt" in diff

            stopped = data(await call(session, "stop_session", session_id=session_id))
            assert stopped == {"session_id": session_id, "stopped": True}
            assert containers(engine, session_id) == []
            again = await call(session, "run_command", session_id=session_id, command=["true"])
            assert again.is_error

    run(scenario)


def test_approvals_reach_the_client_through_elicitation(
    engine: str,
    harness_env: dict[str, str],
    workspace: Path,
    prompt_rules: Path,
    containers,
    tmp_path: Path,
) -> None:
    human = Human(
        {
            "git push --force": ("deny", "use a branch"),
            "echo approved": ("approve-once", None),
            "id -u": ("approve-once", None),
        }
    )

    async def scenario() -> None:
        async with client(harness_env, tmp_path / "server.log", human) as session:
            created = await create(session, workspace, engine, profile="auto")
            session_id = created["session_id"]

            plain = data(await call(session, "run_command", session_id=session_id, command=["ls"]))
            assert "probe.py" in plain["stdout"]
            assert human.asked == []  # nothing to ask for an allowed command

            denied = await call(
                session, "run_command", session_id=session_id, command=["git", "push", "--force"]
            )
            assert denied.is_error
            assert denied.structured_content is not None
            assert denied.structured_content["denied"] is True
            assert denied.structured_content["feedback"] == "use a branch"
            assert denied.structured_content["exit_code"] == 126
            assert "use a branch" in text(denied)
            assert "git push --force" in human.asked[-1]

            approved = data(
                await call(
                    session, "run_command", session_id=session_id, command=["echo", "approved"]
                )
            )
            assert approved["stdout"] == "approved\n"
            asked = len(human.asked)
            again = data(
                await call(
                    session, "run_command", session_id=session_id, command=["echo", "approved"]
                )
            )
            assert again["stdout"] == "approved\n"
            assert len(human.asked) == asked + 1  # "once" approved that one request only

            escalated = data(
                await call(
                    session,
                    "run_command",
                    session_id=session_id,
                    command=["id", "-u"],
                    sandbox_permissions="require_escalated",
                    justification="check the user outside the sandbox",
                )
            )
            assert escalated["exit_code"] == 0, escalated
            assert "escalation" in human.asked[-1]
            assert "check the user outside the sandbox" in human.asked[-1]
            no_reason = await call(
                session,
                "run_command",
                session_id=session_id,
                command=["id"],
                sandbox_permissions="require_escalated",
            )
            assert no_reason.is_error
            assert "justification" in text(no_reason)

            data(await call(session, "stop_session", session_id=session_id))
            assert containers(engine, session_id) == []

    run(scenario)


def test_without_elicitation_nobody_is_asked_and_sessions_stop_with_the_client(
    engine: str,
    harness_env: dict[str, str],
    workspace: Path,
    prompt_rules: Path,
    containers,
    tmp_path: Path,
) -> None:
    started: list[str] = []

    async def scenario() -> None:
        async with client(harness_env, tmp_path / "server.log") as session:
            created = await create(session, workspace, engine, profile="auto")
            started.append(created["session_id"])
            denied = await call(
                session,
                "run_command",
                session_id=created["session_id"],
                command=["git", "push", "--force"],
            )
            assert denied.is_error
            assert denied.structured_content is not None
            assert denied.structured_content["denied"] is True
            assert "no console attached" in denied.structured_content["reason"]

            read_only = await create(session, workspace, engine, sandbox_mode="read-only")
            started.append(read_only["session_id"])
            assert read_only["sandbox_mode"] == "read-only"
            refused = await call(
                session,
                "write_file",
                session_id=read_only["session_id"],
                path="x.txt",
                content="x",
            )
            assert refused.is_error
            assert "read-only" in text(refused)
            assert not (workspace / "x.txt").exists()
            readable = data(
                await call(
                    session, "read_file", session_id=read_only["session_id"], path="probe.py"
                )
            )
            assert readable["content"] == (workspace / "probe.py").read_text()
            for session_id in started:
                assert len(containers(engine, session_id)) == 1
        # the client went away without stop_session: the server stopped its sessions

    run(scenario)
    assert len(started) == 2
    for session_id in started:
        assert containers(engine, session_id) == []
