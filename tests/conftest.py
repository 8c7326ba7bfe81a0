"""Guardrails for every test: no real home, config, state or managed file is touched."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

import harness.paths

REPO = Path(__file__).resolve().parents[1]
HARNESS = str(Path(sys.executable).with_name("harness"))
ENGINES = ("docker", "podman")


@pytest.fixture(autouse=True)
def isolation(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A private HOME, XDG dirs and /etc/harness for each test."""
    root = tmp_path_factory.mktemp("isolated")
    home = root / "home"
    home.mkdir()
    etc = root / "etc-harness"
    etc.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.delenv("HARNESS_MANAGED_CONFIG", raising=False)
    monkeypatch.setattr(harness.paths, "SYSTEM_DIR", etc)
    yield root


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def need(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI never skips integration tests)")
    pytest.skip(reason)


def engine_usable(name: str) -> bool:
    if name == "docker":
        return shutil.which("docker") is not None and Path("/var/run/docker.sock").exists()
    return shutil.which("podman") is not None


@pytest.fixture(scope="session")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One state dir for the whole run, so harness reuses one podman service; stopped at the end."""
    state = tmp_path_factory.mktemp("harness-state")
    yield state
    from harness.backends.podman_service import stop_recorded_service
    from harness.paths import Locations

    stop_recorded_service(Locations(config_home=state / "config", state_home=state))


@pytest.fixture
def harness_env(shared_state: Path, isolation: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "XDG_"))}
    env.update(
        {
            "HOME": str(isolation / "home"),
            "XDG_CONFIG_HOME": str(isolation / "home" / ".config"),
            "XDG_STATE_HOME": str(shared_state),
            "AWS_SECRET_ACCESS_KEY": "host-secret-must-not-leak",
            "GITHUB_TOKEN": "host-token-must-not-leak",
        }
    )
    return env


_built: dict[str, str] = {}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, harness_env: dict[str, str]) -> str:
    name = str(request.param)
    need(engine_usable(name), f"{name} is not installed or not running")
    if name not in _built:
        result = subprocess.run(
            [HARNESS, "image", "build", "--backend", name],
            env=harness_env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        assert result.returncode == 0, f"image build on {name} failed:\n{result.stderr[-3000:]}"
        _built[name] = result.stdout.strip().splitlines()[-1]
    return name


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "config", "user.email", "t@example.com"], check=True)
    subprocess.run(["git", "-C", str(root), "config", "user.name", "t"], check=True)
    shutil.copy(REPO / "tests" / "security" / "probe.py", root / "probe.py")
    return root


Harness = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def harness_cli(harness_env: dict[str, str], workspace: Path) -> Harness:
    """Run the real `harness` command line with the test's environment, in the workspace."""

    def run(
        *args: str,
        cwd: Path | None = None,
        timeout: float = 300,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_harness(
            env or harness_env, *args, cwd=cwd or workspace, timeout=timeout, stdin=stdin
        )

    return run


def run_harness(
    env: dict[str, str], *args: str, cwd: Path, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HARNESS, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin if stdin is not None else "",
        check=False,
    )


@pytest.fixture
def containers() -> Callable[..., list[str]]:
    return engine_containers


def engine_containers(engine: str, session: str | None = None) -> list[str]:
    label = f"harness.session={session}" if session else "harness.session"
    result = subprocess.run(
        [engine, "ps", "-aq", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def wait_until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def until() -> Callable[..., None]:
    """`until(predicate, timeout=60)`: poll until it holds; fail the test on timeout."""
    return wait_until


@pytest.fixture
def detached_session(
    harness_cli: Harness,
) -> Callable[..., AbstractContextManager[str]]:
    """`with detached_session(engine, *options, env=...) as session:` a session from
    `harness up -d`, brought down afterwards."""

    @contextlib.contextmanager
    def session(engine: str, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
        up = harness_cli("up", "-d", "--backend", engine, *options, env=env)
        assert up.returncode == 0, up.stderr
        session_id = up.stdout.strip().splitlines()[-1]
        try:
            yield session_id
        finally:
            harness_cli("down", session_id, env=env)

    return session


@pytest.fixture
def harness_in_background(
    harness_env: dict[str, str], workspace: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`harness_in_background(engine, *args, env=..., ready=...)`: `harness ARGS` started
    quietly with no standard input (as a CI step runs it), returned once ENGINE shows a
    harness container and `ready()` holds; killed at the end if the test left it running."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        engine: str,
        *args: str,
        env: dict[str, str] | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [HARNESS, *args],
            cwd=workspace,
            env=env or harness_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        wait_until(lambda: bool(engine_containers(engine)) and ready())
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
