"""The in-sandbox agent must never become a way out: a sandbox that swaps its socket for a
link cannot redirect the host, and a dead agent only costs speed."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path


def test_symlinked_agent_socket_does_not_redirect_the_host(
    engine: str, harness_cli, detached_session, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    trap_path = tmp_path / "trap.sock"
    trap = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    trap.bind(str(trap_path))
    trap.listen(1)
    trap.setblocking(False)
    with detached_session(engine, "--full-auto") as session, contextlib.closing(trap):
        swap = harness_cli(
            "exec",
            "--session",
            session,
            "--",
            "sh",
            "-c",
            f"rm /run/harness/agent.sock && ln -s {trap_path} /run/harness/agent.sock && ls -l /run/harness",
        )
        assert swap.returncode == 0, swap.stderr
        assert "->" in swap.stdout
        after = harness_cli("exec", "--session", session, "--", "echo", "still-runs")
        assert after.returncode == 0, after.stderr
        assert after.stdout == "still-runs\n"  # through the engine's exec
        try:
            connection, _ = trap.accept()
        except BlockingIOError:
            connection = None
        assert connection is None, "the host followed the sandbox's link to a host socket"


def test_killed_agent_falls_back_to_the_engine(engine: str, harness_cli, detached_session) -> None:  # type: ignore[no-untyped-def]
    with detached_session(engine, "--full-auto") as session:
        fast = harness_cli(
            "exec",
            "--session",
            session,
            "--",
            "sh",
            "-c",
            "echo $PPID; cat /proc/$PPID/cmdline | tr '\\0' ' '",
        )
        assert "agent.py" in fast.stdout  # the agent ran it
        harness_cli("exec", "--session", session, "--", "sh", "-c", "rm -f /run/harness/agent.sock")
        slow = harness_cli(
            "exec",
            "--session",
            session,
            "--",
            "sh",
            "-c",
            "cat /proc/$PPID/cmdline | tr '\\0' ' '; exit 3",
        )
        assert slow.returncode == 3
        assert "agent.py" not in slow.stdout
