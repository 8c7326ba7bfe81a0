"""What the engine benchmarks share: a scratch state, timing, alternating runs, a session."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HARNESS = str(Path(sys.executable).with_name("harness"))


@dataclass(frozen=True)
class Scratch:
    """A workspace and an environment whose harness state lives in a temporary folder."""

    workspace: Path
    env: dict[str, str]


@contextlib.contextmanager
def scratch() -> Iterator[Scratch]:
    """A private harness state for one benchmark run; the Podman service it started is stopped."""
    from harness.backends.podman_service import stop_recorded_service
    from harness.paths import Locations

    with tempfile.TemporaryDirectory(prefix="harness-bench-") as folder:
        workspace = Path(folder) / "ws"
        workspace.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "XDG_"))}
        env["XDG_STATE_HOME"] = str(Path(folder) / "state")
        env["XDG_CONFIG_HOME"] = str(Path(folder) / "config")
        try:
            yield Scratch(workspace, env)
        finally:
            stop_recorded_service(Locations.from_environment(env))


def timed(argv: list[str], where: Scratch) -> float:
    """Seconds `argv` took to run to its end; a failure stops the benchmark."""
    start = time.perf_counter()
    result = subprocess.run(
        argv,
        cwd=where.workspace,
        env=where.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode()[-500:]}"
        )
    return elapsed


@dataclass(frozen=True)
class Pair:
    """Times of harness and of the raw engine, taken alternately."""

    ours: list[float]
    theirs: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.theirs)


def alternate(ours: list[str], theirs: list[str], runs: int, where: Scratch) -> Pair:
    """`runs` of each, alternating, after one warm-up of each."""
    timed(ours, where)
    timed(theirs, where)
    pair = Pair([], [])
    for _ in range(runs):
        pair.ours.append(timed(ours, where))
        pair.theirs.append(timed(theirs, where))
    return pair


@contextlib.contextmanager
def detached_session(engine: str, where: Scratch) -> Iterator[tuple[str, str]]:
    """(session id, container id) of a `harness up -d --approval never` session, removed after."""
    up = subprocess.run(
        [HARNESS, "up", "-d", "--backend", engine, "--approval", "never"],
        cwd=where.workspace,
        env=where.env,
        capture_output=True,
        text=True,
        check=False,
    )
    if up.returncode != 0:
        raise SystemExit(f"harness up on {engine} failed: {up.stderr[-1000:]}")
    session = up.stdout.strip().splitlines()[-1]
    try:
        listed = subprocess.run(
            [engine, "ps", "-q", "--no-trunc", "--filter", f"label=harness.session={session}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if len(listed) != 1:
            raise SystemExit(f"expected one container for session {session}, found {listed}")
        yield session, listed[0]
    finally:
        subprocess.run(
            [HARNESS, "down", session],
            cwd=where.workspace,
            env=where.env,
            capture_output=True,
            check=False,
        )
