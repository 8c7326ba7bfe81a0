"""A session's gateway: the one place where its commands are approved.

Two unix sockets:
  - gateway.sock, mounted read-only into the sandbox: harness-sh asks here
    before it runs a command (defence in depth: the sandbox still enforces
    the plan whatever the answer);
  - control.sock, host only (0600): consoles attach here to answer, the
    network process asks here about domains, host tools check here.

Requests are parsed strictly, bounded in size and time, rate limited, and
authenticated by the session's token. One broker holds the session's
approval IDs and its "approve for session" memory, whoever asks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.approval.broker import Answer, ApprovalBroker, Choice, Outcome, PendingApproval
from harness.approval.engine import ApprovalRequest, PolicyContext
from harness.approval.shell import parse_argv, parse_shell
from harness.gateway.protocol import (
    EXIT,
    FRAME,
    STDERR,
    CommandRequest,
    ProtocolError,
    encode,
    read_message,
)

REQUEST_TIMEOUT = 10.0  # a client that does not finish its request in time is dropped
ANSWER_TIMEOUT = 600.0  # a question nobody answers is a denial
MAX_CONNECTIONS = 64
RATE_PER_SECOND = 20.0
RATE_BURST = 60.0

# Runs an approved escalation and streams its output: (argv, cwd, write_frame) -> exit code
Escalator = Callable[[tuple[str, ...], str, Callable[[int, bytes], None]], int]


@dataclass
class _Console:
    """An attached approval console."""

    writer: asyncio.StreamWriter


@dataclass
class _Pending:
    """A request waiting for a human's answer."""

    approval_id: str
    summary: dict[str, Any]
    answer: concurrent.futures.Future[Answer | None]


@dataclass
class _Bucket:
    """A token bucket: at most RATE_PER_SECOND requests, bursts up to RATE_BURST."""

    tokens: float = RATE_BURST
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(RATE_BURST, self.tokens + (now - self.stamp) * RATE_PER_SECOND)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Gateway:
    """The approval service of one session."""

    def __init__(
        self,
        session: str,
        token: str,
        context: PolicyContext,
        *,
        audit: Any = None,
        escalator: Escalator | None = None,
    ) -> None:
        self.session = session
        self.token = token
        self.context = context
        self.escalator = escalator
        self.broker = ApprovalBroker(
            context,
            session=session,
            asker=self._ask,
            audit=audit,
            no_human_reason="no console attached",
        )
        self.consoles: list[_Console] = []
        self.pending: dict[str, _Pending] = {}
        self.bucket = _Bucket()
        self.connections = 0
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=16, thread_name_prefix="approval"
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.servers: list[asyncio.AbstractServer] = []

    # -- sockets

    async def start(self, gateway_path: Path, control_path: Path) -> None:
        self.loop = asyncio.get_running_loop()
        for path in (gateway_path, control_path):
            path.unlink(missing_ok=True)
        self.servers.append(
            await asyncio.start_unix_server(self._sandbox_client, path=str(gateway_path))
        )
        # the sandbox connects through a read-only mount; writing to a socket needs o+w here
        gateway_path.chmod(0o666)
        self.servers.append(
            await asyncio.start_unix_server(self._control_client, path=str(control_path))
        )
        control_path.chmod(0o600)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()
        for pending in list(self.pending.values()):
            if not pending.answer.done():
                pending.answer.set_result(None)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _token_ok(self, value: object) -> bool:
        """This session's token? (a lone surrogate must not make `encode` raise)"""
        return isinstance(value, str) and hmac.compare_digest(
            value.encode("utf-8", "surrogatepass"), self.token.encode()
        )

    # -- the sandbox side

    async def _sandbox_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.connections >= MAX_CONNECTIONS:
            await self._reply(writer, {"decision": "deny", "reason": "too many requests at once"})
            return
        self.connections += 1
        try:
            await self._serve_sandbox(reader, writer)
        except Exception as error:  # a bug costs one request (denied), never the gateway
            await self._reply(writer, {"decision": "deny", "reason": f"internal error: {error!r}"})
        finally:
            self.connections -= 1

    async def _serve_sandbox(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            message = await read_message(reader, timeout=REQUEST_TIMEOUT)
            if not self.bucket.take():
                raise ProtocolError("rate limit: too many requests; slow down")
            if not self._token_ok(message.get("token")):
                raise ProtocolError("not this session's token")
            if message.get("op") != "run":
                raise ProtocolError(f"unknown operation {message.get('op')!r}")
            request = CommandRequest.parse(message)
        except ProtocolError as error:
            await self._reply(writer, {"decision": "deny", "reason": f"bad request: {error}"})
            return
        outcome = await self._decide(request)
        reply = _outcome_json(outcome)
        wants_more = request.escalate or request.after_denial
        if not outcome.allowed or not wants_more:
            await self._reply(writer, reply)
            return
        if self.escalator is None:
            await self._reply(
                writer,
                {**reply, "decision": "deny", "reason": "escalation is not available here"},
            )
            return
        await self._reply(writer, {**reply, "escalated": True}, close=False)
        await self._run_escalated(request, writer)

    async def _decide(self, request: CommandRequest) -> Outcome:
        if request.argv is not None:
            parsed = parse_argv(request.argv, request.cwd)
        else:
            parsed = parse_shell(request.shell or "", request.cwd)
        approval = ApprovalRequest(
            parsed,
            request.cwd,
            escalate=request.escalate,
            justification=request.justification,
            after_sandbox_denial=request.after_denial,
        )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.broker.submit, approval)

    async def _run_escalated(self, request: CommandRequest, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        argv = request.argv if request.argv is not None else ("sh", "-c", request.shell or "")

        def frame(kind: int, data: bytes) -> None:
            loop.call_soon_threadsafe(writer.write, FRAME.pack(kind, len(data)) + data)

        assert self.escalator is not None  # noqa: S101 - checked by the caller
        try:
            code = await loop.run_in_executor(self.pool, self.escalator, argv, request.cwd, frame)
        except Exception as error:  # the requester learns why, the gateway lives on
            frame(STDERR, f"harness: the escalated command could not run: {error}\n".encode())
            code = 125
        frame(EXIT, str(code).encode())
        # the frames were queued on the loop in order; wait until all of them are written
        flushed = loop.create_future()
        loop.call_soon_threadsafe(flushed.set_result, None)
        await flushed
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    @staticmethod
    async def _reply(
        writer: asyncio.StreamWriter, message: dict[str, Any], *, close: bool = True
    ) -> None:
        with contextlib.suppress(ConnectionError, ProtocolError):
            writer.write(encode(message))
            await writer.drain()
        if close:
            writer.close()

    # -- the host side

    async def _control_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            message = await read_message(reader, timeout=REQUEST_TIMEOUT)
            if not self._token_ok(message.get("token")):
                raise ProtocolError("not this session's token")
            op = message.get("op")
            if op == "console":
                await self._console(reader, writer)
            elif op == "run":
                outcome = await self._decide(CommandRequest.parse(message))
                await self._reply(writer, _outcome_json(outcome))
            elif op == "network":
                await self._reply(writer, await self._network(message))
            else:
                raise ProtocolError(f"unknown operation {op!r}")
        except ProtocolError as error:
            await self._reply(writer, {"error": str(error)})

    async def _console(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        console = _Console(writer)
        self.consoles.append(console)
        try:
            for pending in list(self.pending.values()):
                writer.write(encode({"type": "pending", **pending.summary}))
            await writer.drain()
            while True:
                try:
                    message = await read_message(reader, timeout=3600 * 24)
                except ProtocolError:
                    return
                if message.get("type") == "answer":
                    self._answer(message)
        finally:
            self.consoles.remove(console)
            writer.close()
            if not self.consoles:
                # the last human left: what they were asked is now asked of no one
                for pending in list(self.pending.values()):
                    if not pending.answer.done():
                        pending.answer.set_result(None)

    def _answer(self, message: dict[str, Any]) -> None:
        approval_id = message.get("id")
        pending = self.pending.get(approval_id) if isinstance(approval_id, str) else None
        choice = {c.value: c for c in Choice}.get(str(message.get("choice")))
        if pending is None or choice is None or pending.answer.done():
            return  # an answer to nothing, or to a question already answered: ignored
        feedback = message.get("feedback")
        pending.answer.set_result(Answer(choice, feedback if isinstance(feedback, str) else None))

    def _broadcast(self, message: dict[str, Any]) -> None:
        data = encode(message)
        for console in list(self.consoles):
            with contextlib.suppress(ConnectionError, RuntimeError):
                console.writer.write(data)

    def _ask(self, pending: PendingApproval) -> Answer | None:
        """Runs in a worker thread: wait for a console's answer to exactly this approval ID."""
        return self._wait_for_answer(pending.approval_id, pending.question())

    def _wait_for_answer(self, approval_id: str, summary: dict[str, Any]) -> Answer | None:
        if not self.consoles or self.loop is None:
            return None
        try:
            encode({"type": "pending", **summary})
        except ProtocolError:
            return None  # too large to show to anyone, so nobody can approve it
        future: concurrent.futures.Future[Answer | None] = concurrent.futures.Future()
        self.pending[approval_id] = _Pending(approval_id, summary, future)
        self.loop.call_soon_threadsafe(self._broadcast, {"type": "pending", **summary})
        try:
            return future.result(timeout=ANSWER_TIMEOUT)
        except concurrent.futures.TimeoutError:
            return None  # nobody answered: that is not a user's denial
        finally:
            self.pending.pop(approval_id, None)
            self.loop.call_soon_threadsafe(self._broadcast, {"type": "resolved", "id": approval_id})

    async def _network(self, message: dict[str, Any]) -> dict[str, Any]:
        host, port = message.get("host"), message.get("port")
        if not isinstance(host, str) or not isinstance(port, int) or len(host) > 255:
            raise ProtocolError("network questions need host and port")
        if self.context.policy.value == "never":
            return {"choice": "deny", "reason": "approval policy `never` asks no one"}
        approval_id = f"{self.session}-net-{os.urandom(3).hex()}"
        summary = {
            "id": approval_id,
            "kind": "network",
            "command": f"connect to {host}:{port}",
            "cwd": "",
            "reason": f"no rule allows {host}:{port}",
            "risk": None,
            "rationale": None,
            "justification": None,
            "escalate": False,
        }
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.pool, self._wait_for_answer, approval_id, summary)
        if answer is None:
            return {"choice": "deny", "reason": "no console attached to ask"}
        choice = {Choice.APPROVE_ONCE: "once", Choice.APPROVE_SESSION: "session"}.get(
            answer.choice, "deny"
        )
        return {"choice": choice, "feedback": answer.feedback}


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "decision": "allow" if outcome.allowed else "deny",
        "approval_id": outcome.approval_id,
        "decider": outcome.decider.value,
        "reason": outcome.reason,
        "feedback": outcome.feedback,
    }
