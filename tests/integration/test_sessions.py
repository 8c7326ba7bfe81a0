"""Sessions on the real engines: exit codes, streams, cleanup, approval, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_run_passes_exit_code_and_streams(
    engine: str, harness_cli, containers, workspace: Path
) -> None:
    result = harness_cli(
        "run",
        "--backend",
        engine,
        "-a",
        "never",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr
    assert containers(engine) == []


def test_run_passes_stdin_through(engine: str, harness_cli, workspace: Path) -> None:
    result = harness_cli(
        "run", "--backend", engine, "-a", "never", "--", "sh", "-c", "tr a-z A-Z", stdin="hello\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HELLO\n"


def test_files_written_in_the_workspace_belong_to_the_invoking_user(
    engine: str, harness_cli, workspace: Path
) -> None:
    result = harness_cli(
        "run", "--backend", engine, "-a", "never", "--", "sh", "-c", "echo x > made-inside"
    )
    assert result.returncode == 0, result.stderr
    info = (workspace / "made-inside").stat()
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())


def test_needing_a_human_without_a_terminal_is_denied_126(
    engine: str, harness_cli, containers, workspace: Path
) -> None:
    result = harness_cli("run", "--backend", engine, "-a", "untrusted", "--", "touch", "x")
    assert result.returncode == 126
    assert "no terminal" in result.stderr
    assert not (workspace / "x").exists()
    known_safe = harness_cli("run", "--backend", engine, "-a", "untrusted", "--", "ls", "probe.py")
    assert known_safe.returncode == 0, known_safe.stderr
    assert known_safe.stdout == "probe.py\n"
    assert containers(engine) == []


def test_forbidden_rule_is_refused_before_anything_starts(
    engine: str,
    harness_cli,
    harness_env: dict[str, str],
    containers,
    workspace: Path,
    tmp_path: Path,
) -> None:
    managed = tmp_path / "managed.toml"
    managed.write_text('[[prefix_rules]]\npattern = "git push --force"\naction = "forbidden"\n')
    env = {**harness_env, "HARNESS_MANAGED_CONFIG": str(managed)}
    result = harness_cli(
        "run",
        "--backend",
        engine,
        "-a",
        "never",
        "--",
        "sh",
        "-c",
        "git push -f origin main",
        env=env,
    )
    assert result.returncode == 126
    assert "forbidden" in result.stderr
    assert str(managed) in result.stderr
    assert containers(engine) == []


def test_every_decision_and_result_is_audited(
    engine: str, harness_cli, harness_env: dict[str, str], workspace: Path
) -> None:
    result = harness_cli("run", "--backend", engine, "-a", "never", "--", "sh", "-c", "exit 3")
    assert result.returncode == 3
    log = Path(harness_env["XDG_STATE_HOME"]) / "harness" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    finished = [r for r in records if r["event"] == "command.finished"]
    assert finished[-1]["exit_code"] == 3
    assert finished[-1]["duration_ms"] > 0
    decided = [r for r in records if r["event"] == "approval.decided"]
    assert decided[-1]["decision"] == "allow"
    assert decided[-1]["decider"] == "table"
    verify = harness_cli("audit", "verify", "--path", str(log))
    assert verify.returncode == 0, verify.stdout


def test_up_detached_exec_ls_down(engine: str, harness_cli, containers, workspace: Path) -> None:
    up = harness_cli("up", "-d", "--backend", engine, "--full-auto")
    assert up.returncode == 0, up.stderr
    session = up.stdout.strip().splitlines()[-1]
    try:
        assert len(containers(engine, session)) == 1
        listed = json.loads(harness_cli("ls", "--json").stdout)
        assert any(row["session"] == session and row["state"] == "running" for row in listed)
        first = harness_cli(
            "exec", "--session", session, "--", "sh", "-c", "echo kept > /tmp/state; pwd"
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == str(workspace)
        second = harness_cli("exec", "--session", session, "--", "cat", "/tmp/state")
        assert second.stdout == "kept\n"  # the same sandbox: /tmp survives between commands
        code = harness_cli("exec", "--session", session, "--", "sh", "-c", "exit 9")
        assert code.returncode == 9
        implicit = harness_cli("exec", "--", "true")  # the one session of this workspace
        assert implicit.returncode == 0, implicit.stderr
    finally:
        down = harness_cli("down", session)
    assert down.returncode == 0, down.stderr
    assert containers(engine, session) == []
    assert harness_cli("exec", "--session", session, "--", "true").returncode == 125


def test_an_image_without_python3_still_works_and_its_shell_refuses_clearly(
    engine: str, harness_cli, detached_session, containers, workspace: Path
) -> None:
    """A user's own image may lack python3: commands go through the engine's exec, and
    $SHELL (harness-sh) says what is missing instead of failing obscurely."""
    from harness.images import BASE_IMAGE, UPSTREAM_BASE

    present = [
        image
        for image in (BASE_IMAGE, UPSTREAM_BASE)
        if subprocess.run(
            [engine, "image", "inspect", image], capture_output=True, check=False
        ).returncode
        == 0
    ]
    assert present, f"`harness image build` leaves {BASE_IMAGE} or {UPSTREAM_BASE} in {engine}"
    with detached_session(engine, "-a", "never", "--image", present[0]) as session:
        result = harness_cli(
            "exec",
            "--session",
            session,
            "--",
            "sh",
            "-c",
            'command -v python3 || echo "no python3"; "$SHELL" -c "touch made"; echo "rc=$?"',
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "no python3\nrc=126\n"
        assert "this image has no python3" in result.stderr
        assert not (workspace / "made").exists()
    assert containers(engine, session) == []


def test_up_runs_a_command_and_removes_the_session(
    engine: str, harness_cli, containers, workspace: Path
) -> None:
    result = harness_cli(
        "up", "--backend", engine, "-a", "never", "--", "sh", "-c", "echo agent; exit 4"
    )
    assert result.returncode == 4, result.stderr
    assert "agent" in result.stdout
    assert containers(engine) == []


@pytest.mark.parametrize("how", ["sigterm", "sigint"])
def test_signals_remove_the_session(
    engine: str, harness_in_background, containers, how: str
) -> None:
    process = harness_in_background(
        engine, "run", "--backend", engine, "-a", "never", "--", "sleep", "120"
    )
    process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    process.wait(timeout=60)
    assert process.returncode != 0
    assert containers(engine) == []


def test_kill_9_then_prune_leaves_nothing(
    engine: str, harness_cli, harness_in_background, harness_env: dict[str, str], containers
) -> None:
    process = harness_in_background(
        engine, "run", "--backend", engine, "-a", "never", "--", "sleep", "300"
    )
    session_containers = containers(engine)
    process.kill()
    process.wait()
    assert containers(engine) == session_containers  # nothing cleaned up by itself: harness died
    pruned = harness_cli("prune")
    assert pruned.returncode == 0, pruned.stderr
    assert containers(engine) == []
    state = Path(harness_env["XDG_STATE_HOME"]) / "harness" / "sessions"
    assert not list(state.glob("*.json"))
    leftover = subprocess.run(
        ["pgrep", "-x", "-f", "sleep 300"], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == ""  # the sandboxed process died with its container


def test_kill_9_of_a_session_with_a_gateway_then_prune(
    engine: str,
    harness_cli,
    harness_in_background,
    until,
    harness_env: dict[str, str],
    containers,
) -> None:  # type: ignore[no-untyped-def]
    sessions = Path(harness_env["XDG_STATE_HOME"]) / "harness" / "sessions"
    process = harness_in_background(
        engine,
        "up",
        "--backend",
        engine,
        "-a",
        "never",
        "--",
        "sleep",
        "300",
        ready=lambda: bool(list(sessions.glob("*.json"))),
    )
    session = next(sessions.glob("*.json")).stem

    def gateways() -> list[str]:
        found = subprocess.run(
            ["pgrep", "-f", f"harness.gateway serve .*{session}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.split()

    assert gateways(), "the session's gateway should be running"
    process.kill()
    process.wait()
    assert harness_cli("prune").returncode == 0
    assert containers(engine) == []
    until(lambda: not gateways(), timeout=15)  # the gateway follows its session out


def test_an_interrupt_before_the_engine_answers_create_leaves_nothing(
    engine: str, harness_env: dict[str, str], containers, workspace: Path
) -> None:
    """Ctrl-C can land after the engine made the container but before its id came back."""
    from harness.backends.registry import choose_backend
    from harness.config.options import CliOptions
    from harness.config.resolve import resolve
    from harness.paths import Locations
    from harness.session import new_session_id, plan_for, session_spec

    locations = Locations.from_environment(harness_env)
    backend = choose_backend(engine, locations).backend
    settings = resolve(CliOptions(workspace=workspace, approval="never"), locations)
    session_id = new_session_id()
    spec = session_spec(
        backend,
        plan_for(settings),
        session_id,
        "localhost/harness-session:latest",
        command=["true"],
        tty=False,
        stdin=False,
    )
    api = backend.api  # type: ignore[attr-defined]
    request = api.request

    def interrupted_after_create(method: str, path: str, **kwargs: object) -> object:
        response = request(method, path, **kwargs)
        if path.endswith("/containers/create"):
            raise KeyboardInterrupt
        return response

    api.request = interrupted_after_create
    with pytest.raises(KeyboardInterrupt):
        backend.create(spec)
    api.request = request
    assert containers(engine, session_id) == []
