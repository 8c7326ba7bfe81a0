"""`harness mcp`: harness as an MCP server over stdio, for agents that speak MCP.

Tools: `create_session`, `run_command`, `read_file`, `write_file`,
`workspace_diff`, `stop_session`. Every command, read and write goes through
the session's gateway, exactly as `harness exec` and harness-sh do, and runs
inside the session's sandbox: the approval policy decides, the sandbox
enforces (a write to `.git/hooks` in workspace-write fails there, whatever was
approved).

Human approvals: while a tool call on a session runs, and when the client
declared the elicitation capability, this server attaches to that session's
gateway as a console and turns every pending question into an elicitation
(approve once / approve for the session / deny, with optional feedback). A
client without elicitation gets no console from us, so the session's other
consoles (a `harness up` terminal) answer, and with none the gateway denies:
nothing that needs a human is ever allowed silently. When the client declines
or cancels an elicitation, nothing is answered for `DECLINED_GRACE` seconds
(another console may answer meanwhile); then the question is denied, so a
tool call never waits for the gateway's own ten-minute limit.

Threads: `Sessions.up` and the in-sandbox agent install signal handlers, which
Python allows only on the main thread. `serve_stdio` therefore runs the MCP
event loop on a second thread and keeps the main thread for those blocking
calls, one at a time (`MainThreadRunner`); `stop_session` does not need it.
While a command runs, the agent client forwards SIGINT and SIGTERM to that
command (its own handlers); the server itself stops on the next one, or when
the client closes stdin.

Sessions created here are kept in memory and stopped when the client goes
away, on SIGTERM and on ^C. A tool can only reach sessions this server created.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from harness.errors import HarnessError, PolicyDenied, UsageError
from harness.paths import Locations
from harness.session import (
    CommandResult,
    SessionError,
    SessionRecord,
    Sessions,
    raise_unless_allowed,
)

SERVER_NAME = "harness"
DECLINED_GRACE = 30.0  # seconds another console has to answer what the MCP client declined
CONSOLE_SETTLE = 0.02  # lets the gateway register a fresh console before the question comes
MAX_READ = 1 << 20  # bytes of a file that read_file returns
MAX_WRITE = 16 << 20  # bytes write_file accepts
MAX_OUTPUT = 1 << 20  # characters of a command's stdout or stderr kept (the end)
MAX_MESSAGE = 64 * 1024  # the gateway protocol's own bound

T = TypeVar("T")
AnyContext = Context[Any, Any]
Decision = Literal["approve-once", "approve-session", "deny"]


# -- results -----------------------------------------------------------------------------


class SessionInfo(BaseModel):
    session_id: str
    workspace: str
    approval_policy: str
    sandbox_mode: str
    backend: str
    notices: list[str] = Field(default_factory=list)


class CommandOutput(BaseModel):
    """A command's result; a denial has `denied` true, exit code 126, the reason and feedback."""

    exit_code: int
    stdout: str
    stderr: str
    denied: bool = False
    reason: str | None = None
    feedback: str | None = None


class FileContent(BaseModel):
    path: str
    content: str
    truncated: bool = False


class FileWritten(BaseModel):
    path: str
    bytes_written: int


class SessionStopped(BaseModel):
    session_id: str
    stopped: bool


class ApprovalAnswer(BaseModel):
    """What the human answers to one pending approval (the elicitation's schema)."""

    decision: Decision = Field(
        description=(
            "approve-once: run this request once; approve-session: also run the same "
            "request again in this session without asking; deny: refuse it"
        )
    )
    feedback: str | None = Field(
        default=None,
        description="Optional: told to the agent with the decision, e.g. what to do instead",
    )


def _result(model: BaseModel | str) -> CallToolResult:
    """A successful tool result: the JSON as text for the model, the same as structured content."""
    if isinstance(model, str):
        return CallToolResult(
            content=[TextContent(type="text", text=model)], structured_content={"result": model}
        )
    data = model.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, ensure_ascii=False))],
        structured_content=data,
    )


def denial_result(error: PolicyDenied) -> CallToolResult:
    """A denial as a tool error the model can read and adapt to: `denied`, reason, feedback."""
    output = CommandOutput(
        exit_code=error.exit_code,
        stdout="",
        stderr=f"harness: {error.message}",
        denied=True,
        reason=error.reason,
        feedback=error.feedback,
    )
    data = output.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, ensure_ascii=False))],
        structured_content=data,
        is_error=True,
    )


# -- argument checks (pure) --------------------------------------------------------------


def contained_path(workspace: str, path: str) -> str:
    """`path` (absolute, or relative to the workspace) as a normalised absolute path inside it.

    Refused: an empty path, NUL, `..` that leaves the workspace, and any path whose real
    location on the host (symlinks followed, also for a file that does not exist yet) is
    outside the real workspace. The returned path is the one the sandbox sees: the
    workspace is mounted at the same path.
    """
    if not path or "\x00" in path:
        raise UsageError("give a path inside the session's workspace (non-empty, without NUL).")
    root = os.path.normpath(workspace)
    candidate = os.path.normpath(os.path.join(root, path))  # noqa: PTH118 - lexical on purpose
    if not _inside(candidate, root):
        raise UsageError(
            f"{path!r} is outside the session's workspace {root}; give a path inside it."
        )
    real_root = os.path.realpath(root)
    real = os.path.realpath(candidate)
    if not _inside(real, real_root):
        raise UsageError(
            f"{path!r} leads outside the session's workspace {root} (it resolves to {real}); "
            "symlinks out of the workspace are not followed."
        )
    return candidate


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def command_request(
    command: Sequence[str] | None, shell: str | None
) -> tuple[list[str] | None, str | None]:
    """Exactly one of an argv list and a shell string, both non-empty and without NUL."""
    if (command is None) == (shell is None):
        raise UsageError(
            "give exactly one of `command` (an argv list) and `shell` (a shell string)."
        )
    if command is not None:
        argv = list(command)
        if not argv or not argv[0] or any("\x00" in part for part in argv):
            raise UsageError(
                "`command` must be a non-empty list of strings without NUL, e.g. ['ls', '-la']."
            )
        return argv, None
    assert shell is not None  # noqa: S101 - one of the two, checked above
    if not shell.strip() or "\x00" in shell:
        raise UsageError("`shell` must be a non-empty shell command without NUL.")
    return None, shell


def escalation(sandbox_permissions: str, justification: str | None) -> bool:
    """Whether the request asks to leave the sandbox; an escalation needs a justification."""
    if sandbox_permissions not in ("use_default", "require_escalated"):
        raise UsageError("`sandbox_permissions` is `use_default` or `require_escalated`.")
    escalate = sandbox_permissions == "require_escalated"
    if escalate and not (justification and justification.strip()):
        raise UsageError(
            "`require_escalated` needs a `justification`: the human sees it when asked."
        )
    return escalate


def workspace_argument(workspace: str) -> Path:
    """The workspace of a new session: an absolute path to an existing directory."""
    if not workspace or "\x00" in workspace:
        raise UsageError("give the workspace as an absolute path to a directory.")
    path = Path(workspace).expanduser()
    if not path.is_absolute():
        raise UsageError(
            f"workspace {workspace!r} is relative; give an absolute path (the server's "
            "working directory is not the client's)."
        )
    if not path.is_dir():
        raise UsageError(f"workspace {workspace} is not a directory.")
    return path


def tail(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return f"[harness: {len(text) - limit} characters cut]\n" + text[-limit:]


def elicitation_message(session_id: str, question: dict[str, Any]) -> str:
    """What the human reads in the MCP client for one pending gateway question."""
    network = question.get("kind") == "network"
    if network:
        what = "network access"
    elif question.get("escalate"):
        what = "an escalation (runs outside the sandbox)"
    else:
        what = "a command"
    lines = [f"harness: session {session_id} asks approval for {what} [{question.get('id')}]"]
    rows = [
        ("command", question.get("command")),
        ("cwd", question.get("cwd")),
        ("why", question.get("reason")),
        ("asked", question.get("justification")),
    ]
    if question.get("risk"):
        rows.insert(2, ("risk", f"{question['risk']}: {question.get('rationale') or ''}".strip()))
    lines += [f"{label}: {value}" for label, value in rows if value]
    lines.append(
        "approve-once allows this request only"
        + (" (this connection)" if network else "")
        + "; approve-session also allows "
        + ("this domain" if network else "the same request")
        + " for the rest of the session; deny refuses it (feedback goes to the agent)."
    )
    return "\n".join(lines)


def answer_message(approval_id: str, decision: str, feedback: str | None) -> dict[str, Any]:
    if decision not in ("approve-once", "approve-session", "deny"):
        raise UsageError(f"unknown decision {decision!r}")
    return {
        "type": "answer",
        "id": approval_id,
        "choice": decision,
        "feedback": feedback.strip() if feedback and feedback.strip() else None,
    }


def supports_elicitation(ctx: AnyContext) -> bool:
    capabilities = ctx.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


# -- the main thread ---------------------------------------------------------------------


class MainThreadRunner:
    """Runs blocking calls on the thread that called `serve()`, one at a time.

    `Sessions.up` and the in-sandbox agent client set signal handlers (to forward ^C
    and SIGTERM, and to clean up), and Python allows that on the main thread only.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = (
            queue.Queue()
        )

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def serve(self) -> None:
        while True:
            try:
                item = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue  # the tool call that wanted it was cancelled meanwhile
            try:
                future.set_result(job())
            except Exception as error:
                future.set_exception(error)
            except BaseException:  # ^C or SIGTERM: the caller learns, then we stop
                future.set_exception(SessionError("the MCP server is shutting down"))
                raise


# -- approvals through elicitation -------------------------------------------------------


class ApprovalRelay:
    """This server as a console on one session's gateway, while tool calls on it run.

    Pending questions become elicitations in the client of the most recent tool call;
    a question resolved elsewhere (another console, a timeout) cancels its elicitation.
    """

    def __init__(self, session_id: str, control: str, token: str, group: anyio.abc.TaskGroup):
        self.session_id = session_id
        self.control = control
        self.token = token
        self.group = group
        self.callers: list[AnyContext] = []
        self.stream: anyio.abc.SocketStream | None = None
        self.asking: dict[str, anyio.CancelScope] = {}
        self.resolved: set[str] = set()
        self._attach = anyio.Lock()
        self._send = anyio.Lock()

    @contextlib.asynccontextmanager
    async def attached(self, ctx: AnyContext) -> AsyncIterator[None]:
        await self._join(ctx)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self._leave(ctx)

    async def _join(self, ctx: AnyContext) -> None:
        async with self._attach:
            self.callers.append(ctx)
            if self.stream is not None:
                return
            from harness.gateway.protocol import encode

            try:
                stream = await anyio.connect_unix(self.control)
                await stream.send(encode({"op": "console", "token": self.token}))
            except OSError as exc:
                _log(f"cannot attach to the gateway of session {self.session_id}: {exc}")
                return  # the gateway decides without us: other consoles, or a denial
            self.stream = stream
            self.resolved.clear()
            self.group.start_soon(self._receive, stream)
            await anyio.sleep(CONSOLE_SETTLE)

    async def _leave(self, ctx: AnyContext) -> None:
        async with self._attach:
            with contextlib.suppress(ValueError):
                self.callers.remove(ctx)
            if self.callers:
                return
            await self.close()

    async def close(self) -> None:
        for scope in list(self.asking.values()):
            scope.cancel()
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError):
                await stream.aclose()

    async def _receive(self, stream: anyio.abc.SocketStream) -> None:
        from harness.gateway.protocol import HEAD

        buffered = BufferedByteReceiveStream(stream)
        with contextlib.suppress(
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
            OSError,
            ValueError,
        ):
            while True:
                (length,) = HEAD.unpack(await buffered.receive_exactly(HEAD.size))
                if length > MAX_MESSAGE:
                    return
                message = json.loads(await buffered.receive_exactly(length))
                if not isinstance(message, dict) or not isinstance(message.get("id"), str):
                    continue
                approval_id = message["id"]
                if message.get("type") == "pending":
                    if approval_id not in self.asking and approval_id not in self.resolved:
                        scope = anyio.CancelScope()
                        self.asking[approval_id] = scope
                        self.group.start_soon(self._ask, message, scope)
                elif message.get("type") == "resolved":
                    self.resolved.add(approval_id)
                    pending = self.asking.pop(approval_id, None)
                    if pending is not None:
                        pending.cancel()
        if self.stream is stream:  # the gateway went away: attach afresh next time
            self.stream = None

    async def _ask(self, question: dict[str, Any], scope: anyio.CancelScope) -> None:
        approval_id = question["id"]
        with scope:
            try:
                if not self.callers:
                    return
                ctx = self.callers[-1]
                try:
                    reply = await ctx.elicit(
                        elicitation_message(self.session_id, question), ApprovalAnswer
                    )
                except Exception as exc:  # a client that fails to answer has not answered
                    _log(f"elicitation for {approval_id} failed: {exc}")
                    reply = None
                if reply is not None and reply.action == "accept":
                    await self._answer(
                        answer_message(approval_id, reply.data.decision, reply.data.feedback)
                    )
                    return
                # declined or cancelled: another console may answer; then it is a denial
                await anyio.sleep(DECLINED_GRACE)
                await self._answer(
                    answer_message(
                        approval_id,
                        "deny",
                        "the MCP client did not approve it and no other console answered",
                    )
                )
            finally:
                if self.asking.get(approval_id) is scope:
                    del self.asking[approval_id]

    async def _answer(self, message: dict[str, Any]) -> None:
        from harness.gateway.protocol import encode

        async with self._send:
            if self.stream is None:
                return
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.stream.send(encode(message))


# -- the server --------------------------------------------------------------------------


def _log(line: str) -> None:
    """Progress and notes go to stderr: stdout carries the protocol."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"harness mcp: {line}\n")
        sys.stderr.flush()


@dataclass
class HarnessMcp:
    """The state of one MCP server: its sessions, their consoles, the main-thread runner."""

    locations: Locations
    runner: MainThreadRunner = field(default_factory=MainThreadRunner)
    records: dict[str, SessionRecord] = field(default_factory=dict)
    relays: dict[str, ApprovalRelay] = field(default_factory=dict)
    group: anyio.abc.TaskGroup | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sessions(self) -> Sessions:
        return Sessions(
            self.locations,
            asker=None,
            progress=_log,
            no_human_reason="no MCP client or console to ask",
        )

    async def in_main(self, job: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.runner.submit(job))

    def record(self, session_id: str) -> SessionRecord:
        with self._lock:
            record = self.records.get(session_id)
        if record is None:
            raise SessionError(
                f"no session {session_id!r} was created by this MCP server; "
                "create one with create_session."
            )
        return record

    def remember(self, record: SessionRecord) -> None:
        with self._lock:
            self.records[record.session_id] = record

    @contextlib.asynccontextmanager
    async def asking(self, ctx: AnyContext, record: SessionRecord) -> AsyncIterator[None]:
        """Attach as the session's console for this call, when the client can elicit."""
        if not supports_elicitation(ctx) or self.group is None or not record.gateway_control:
            yield
            return
        relay = self.relays.get(record.session_id)
        if relay is None:
            relay = ApprovalRelay(
                record.session_id, record.gateway_control, record.gateway_token, self.group
            )
            self.relays[record.session_id] = relay
        async with relay.attached(ctx):
            yield

    async def serve(self, server: MCPServer[Any]) -> None:
        async with anyio.create_task_group() as group:
            self.group = group
            await server.run_stdio_async()
            group.cancel_scope.cancel()

    def stop_all(self) -> None:
        """Stop every session this server created: on shutdown, from either thread.

        In parallel, because a client gives a server little time after closing its stdin
        (the SDK's: two seconds, then SIGTERM, then SIGKILL). A second caller (SIGTERM
        during the first) waits until the first is done rather than exit under it.
        """
        with self._stopping:
            with self._lock:
                records, self.records = list(self.records.values()), {}

            def down(record: SessionRecord) -> None:
                try:
                    self.sessions.down(record.session_id)
                except HarnessError as error:
                    _log(f"could not stop session {record.session_id}: {error}")

            workers = [threading.Thread(target=down, args=(r,), daemon=True) for r in records]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

    # -- the tools' bodies

    async def create_session(
        self,
        workspace: str,
        profile: str | None,
        approval_policy: str | None,
        sandbox_mode: str | None,
        backend: str | None,
    ) -> SessionInfo:
        from harness.config.options import CliOptions

        options = CliOptions(
            workspace=workspace_argument(workspace),
            profile=profile,
            approval=approval_policy,
            sandbox=sandbox_mode,
            backend=backend,
        )

        def start() -> tuple[SessionRecord, tuple[str, ...]]:
            from harness.config.resolve import resolve

            settings = resolve(options, self.locations)
            started: list[SessionRecord] = []

            def ready(record: SessionRecord) -> None:
                self.remember(record)  # before anything else: a shutdown now still stops it
                started.append(record)

            self.sessions.up(
                settings, None, detach=True, tty=False, stdin=False, on_ready=ready, owned=True
            )
            if not started:
                raise SessionError("the session did not start")
            return started[0], tuple(settings.notices)

        record, notices = await self.in_main(start)
        return SessionInfo(
            session_id=record.session_id,
            workspace=record.workspace,
            approval_policy=record.policy,
            sandbox_mode=record.mode,
            backend=record.backend,
            notices=list(notices),
        )

    async def run_command(
        self,
        ctx: AnyContext,
        session_id: str,
        command: list[str] | None,
        shell: str | None,
        cwd: str | None,
        sandbox_permissions: str,
        justification: str | None,
    ) -> CommandOutput:
        record = self.record(session_id)
        argv, text = command_request(command, shell)
        escalate = escalation(sandbox_permissions, justification)
        workdir = contained_path(record.workspace, cwd) if cwd else record.workdir
        async with self.asking(ctx, record):
            result = await self.in_main(
                lambda: self.sessions.exec_captured(
                    record.session_id,
                    argv,
                    shell=text,
                    cwd=workdir,
                    escalate=escalate,
                    justification=justification,
                )
            )
        return CommandOutput(
            exit_code=result.exit_code, stdout=tail(result.stdout), stderr=tail(result.stderr)
        )

    async def read_file(self, ctx: AnyContext, session_id: str, path: str) -> FileContent:
        record = self.record(session_id)
        target = contained_path(record.workspace, path)
        async with self.asking(ctx, record):
            result = await self.in_main(
                lambda: self.sessions.exec_captured(
                    record.session_id, ["head", "-c", str(MAX_READ + 1), "--", target]
                )
            )
        if result.exit_code != 0:
            raise ToolError(f"cannot read {target}: {result.stderr.strip() or 'failed'}")
        data = result.stdout
        truncated = len(data.encode(errors="replace")) > MAX_READ
        if truncated:
            data = data.encode(errors="replace")[:MAX_READ].decode(errors="ignore")
        return FileContent(path=target, content=data, truncated=truncated)

    async def write_file(
        self, ctx: AnyContext, session_id: str, path: str, content: str
    ) -> FileWritten:
        record = self.record(session_id)
        if record.mode == "read-only":
            raise UsageError(
                f"session {record.session_id} is read-only (sandbox_mode read-only): writing "
                "is refused; create a session with sandbox_mode workspace-write to write."
            )
        target = contained_path(record.workspace, path)
        data = content.encode()
        if len(data) > MAX_WRITE:
            raise UsageError(f"content is {len(data)} bytes; write_file takes at most {MAX_WRITE}.")
        parent = os.path.dirname(target)  # noqa: PTH120 - a string path, kept as such
        async with self.asking(ctx, record):
            if not Path(parent).is_dir():  # asked for as its own command: the human sees it
                made = await self.in_main(
                    lambda: self.sessions.exec_captured(
                        record.session_id, ["mkdir", "-p", "--", parent]
                    )
                )
                if made.exit_code != 0:
                    raise ToolError(f"cannot create {parent}: {made.stderr.strip() or 'failed'}")
            result = await self.in_main(lambda: write_in_sandbox(record, target, data))
        if result.exit_code != 0:
            raise ToolError(f"cannot write {target}: {result.stderr.strip() or 'failed'}")
        return FileWritten(path=target, bytes_written=len(data))

    async def workspace_diff(self, ctx: AnyContext, session_id: str) -> str:
        record = self.record(session_id)
        async with self.asking(ctx, record):
            return await self.in_main(lambda: diff_in_sandbox(self.sessions, record))

    async def stop_session(self, session_id: str) -> SessionStopped:
        record = self.record(session_id)
        relay = self.relays.pop(record.session_id, None)
        if relay is not None:
            await relay.close()
        await anyio.to_thread.run_sync(self.sessions.down, record.session_id)
        with self._lock:
            self.records.pop(record.session_id, None)
        return SessionStopped(session_id=record.session_id, stopped=True)


# -- file writes and the diff, inside the sandbox ----------------------------------------


def write_in_sandbox(record: SessionRecord, target: str, data: bytes) -> CommandResult:
    """Write through the sandbox: approved at the gateway as `dd of=PATH`, content on stdin.

    The request is the command that runs, so the policy and prefix rules judge a write as
    they would the agent's own `dd`; the sandbox enforces the mode (read-only mounts,
    `.git/hooks`, `.harness/`). `dd` rather than `tee`: tee echoes the content to stdout,
    which the agent relays while it is still feeding stdin, and a large file deadlocks.
    """
    from harness.audit import MultiAuditLog
    from harness.backends.agent_client import AgentUnavailable, run_via_agent
    from harness.backends.stream import Terminal
    from harness.gateway.client import ask
    from harness.procs import ProcessId

    argv = ["dd", f"of={target}", "status=none"]
    answer = ask(
        record.gateway_control,
        {
            "op": "run",
            "token": record.gateway_token,
            "argv": argv,
            "cwd": record.workspace,
            "escalate": False,
            "justification": f"write_file from the MCP client: {len(data)} bytes to {target}",
        },
    )
    raise_unless_allowed(answer)
    sandbox = ProcessId.from_label(record.agent) if record.agent else None
    if sandbox is None:
        raise SessionError(
            "the session's agent is not reachable; writing needs it (an image with python3)"
        )
    audit = MultiAuditLog([Path(p) for p in record.audit_paths]) if record.audit_paths else None
    started = time.monotonic()
    if audit is not None:
        audit.append(
            "command.started", session=record.session_id, command=argv, backend=record.backend
        )
    with (
        tempfile.TemporaryFile() as stdin,
        tempfile.TemporaryFile() as stderr,
        Path(os.devnull).open("wb") as stdout,
    ):
        stdin.write(data)
        stdin.seek(0)
        try:
            code = run_via_agent(
                sandbox,
                argv,
                cwd=record.workspace,
                env=dict(record.env),
                tty=False,
                stdin=True,
                terminal=Terminal(stdin.fileno(), stdout.fileno(), stderr.fileno()),
            )
        except AgentUnavailable as error:
            raise SessionError(f"the session's agent is not reachable: {error}") from None
        stderr.seek(0)
        errors = stderr.read(MAX_OUTPUT).decode(errors="replace")
    if audit is not None:
        audit.append(
            "command.finished",
            session=record.session_id,
            command=argv,
            exit_code=code,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
    return CommandResult(code, "", errors)


def diff_in_sandbox(sessions: Sessions, record: SessionRecord) -> str:
    """`git diff HEAD` of the workspace and its untracked files, run inside the sandbox.

    `git --no-pager` rather than `git -c core.pager=cat`: the same output, and it stays a
    known-safe read, so an `untrusted` session does not ask for it.
    """

    def git(*args: str) -> CommandResult:
        return sessions.exec_captured(
            record.session_id, ["git", "--no-pager", *args], cwd=record.workspace
        )

    inside = git("rev-parse", "--is-inside-work-tree")
    if inside.exit_code != 0 or inside.stdout.strip() != "true":
        return f"{record.workspace} is not a git repository: there is no diff to show."
    options = ("diff", "--no-color", "--no-ext-diff")
    if git("rev-parse", "--verify", "-q", "HEAD").exit_code == 0:
        changes = git(*options, "HEAD")
        parts = [changes]
    else:  # no commit yet: what is staged, then what is not
        parts = [git(*options, "--cached"), git(*options)]
    for part in parts:
        if part.exit_code != 0:
            raise SessionError(f"git diff failed: {part.stderr.strip()}")
    diff = "".join(part.stdout for part in parts)
    listed = git("ls-files", "--others", "--exclude-standard", "-z")
    untracked = [name for name in listed.stdout.split("\x00") if name]
    sections = [tail(diff) if diff.strip() else "no changes to tracked files\n"]
    if untracked:
        sections.append("untracked files:\n" + "".join(f"  {name}\n" for name in untracked))
    else:
        sections.append("no untracked files\n")
    return "\n".join(sections)


# -- tool registration -------------------------------------------------------------------


async def _guarded(call: Callable[[], Awaitable[BaseModel | str]]) -> CallToolResult:
    """Run one tool body: a denial becomes a readable result, a HarnessError a tool error."""
    try:
        result = await call()
    except PolicyDenied as denial:
        return denial_result(denial)
    except HarnessError as error:
        raise ToolError(error.message) from None
    return _result(result)


def build_server(state: HarnessMcp) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        instructions=(
            "harness runs commands in a disposable sandbox (container) per session, over a "
            "workspace directory. Create a session, then run commands, read and write files "
            "and look at the workspace diff through it; stop it when done. Commands are "
            "approved by the session's policy; a denied one comes back with denied=true, the "
            "reason and the human's feedback: adapt to it rather than retrying as is."
        ),
        log_level="WARNING",
    )

    @server.tool()
    async def create_session(
        workspace: Annotated[str, Field(description="Absolute path of the workspace directory")],
        profile: Annotated[
            str | None, Field(description="Profile: strict, auto, review, ci, or a user profile")
        ] = None,
        approval_policy: Literal["untrusted", "on-request", "never"] | None = None,
        sandbox_mode: Literal["read-only", "workspace-write", "danger-full-access"] | None = None,
        backend: Annotated[
            str | None, Field(description="Backend: auto (default), docker or podman")
        ] = None,
    ) -> Annotated[CallToolResult, SessionInfo]:
        """Start a session: a sandbox over the workspace, with its approval policy and sandbox mode."""
        return await _guarded(
            lambda: state.create_session(workspace, profile, approval_policy, sandbox_mode, backend)
        )

    @server.tool()
    async def run_command(
        session_id: str,
        ctx: AnyContext,
        command: Annotated[
            list[str] | None, Field(description="The command as an argv list, e.g. ['ls', '-la']")
        ] = None,
        shell: Annotated[
            str | None, Field(description="Or a shell command string, run with bash -c")
        ] = None,
        cwd: Annotated[
            str | None, Field(description="Working directory inside the workspace")
        ] = None,
        sandbox_permissions: Literal["use_default", "require_escalated"] = "use_default",
        justification: Annotated[
            str | None,
            Field(description="Why; required with require_escalated, shown to the human"),
        ] = None,
    ) -> Annotated[CallToolResult, CommandOutput]:
        """Run a command in the session's sandbox, through its approval policy.

        require_escalated asks to run it outside the sandbox's limits (network, writes
        outside the workspace); a human decides. A denial returns denied=true with the
        reason and the human's feedback.
        """
        return await _guarded(
            lambda: state.run_command(
                ctx, session_id, command, shell, cwd, sandbox_permissions, justification
            )
        )

    @server.tool()
    async def read_file(
        session_id: str,
        path: Annotated[str, Field(description="Path inside the workspace (or relative to it)")],
        ctx: AnyContext,
    ) -> Annotated[CallToolResult, FileContent]:
        """Read a text file of the workspace, as the sandbox sees it (at most 1 MiB)."""
        return await _guarded(lambda: state.read_file(ctx, session_id, path))

    @server.tool()
    async def write_file(
        session_id: str,
        path: Annotated[str, Field(description="Path inside the workspace (or relative to it)")],
        content: str,
        ctx: AnyContext,
    ) -> Annotated[CallToolResult, FileWritten]:
        """Write a text file in the workspace, through the approval policy and the sandbox.

        Missing parent directories are created. Refused in a read-only session and
        outside the workspace.
        """
        return await _guarded(lambda: state.write_file(ctx, session_id, path, content))

    @server.tool()
    async def workspace_diff(session_id: str, ctx: AnyContext) -> Annotated[CallToolResult, str]:
        """The workspace's changes: git diff against HEAD and the untracked files."""
        return await _guarded(lambda: state.workspace_diff(ctx, session_id))

    @server.tool()
    async def stop_session(session_id: str) -> Annotated[CallToolResult, SessionStopped]:
        """Stop the session and remove its sandbox."""
        return await _guarded(lambda: state.stop_session(session_id))

    return server


# -- entry point -------------------------------------------------------------------------


def serve_stdio() -> None:
    """Run the MCP server over stdin/stdout until the client goes away (blocking).

    Returns when the client closes the connection, or on ^C or SIGTERM, after stopping
    every session it created. Call it from the main thread: that thread runs the
    session calls that need it (see `MainThreadRunner`).
    """
    from harness.session import Terminated, terminate_as_exception

    if threading.current_thread() is not threading.main_thread():
        raise HarnessError("the MCP server runs from the main thread (it handles signals there)")
    state = HarnessMcp(Locations.from_environment())
    server = build_server(state)

    def loop() -> None:
        try:
            anyio.run(state.serve, server, backend="asyncio")
        except Exception as error:  # the transport failed: stop as if the client left
            _log(f"the server stopped: {error}")
        finally:
            state.stop_all()  # from this thread too: a command the main thread runs then ends
            state.runner.stop()

    thread = threading.Thread(target=loop, name="harness-mcp", daemon=True)
    thread.start()
    try:
        with terminate_as_exception():
            state.runner.serve()
    except (KeyboardInterrupt, Terminated):  # asked to stop: a normal end for a server
        _log("interrupted; stopping the sessions")
    finally:
        state.stop_all()
