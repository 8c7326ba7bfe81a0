"""Start-up cost of harness against the raw engines, measured alternately in one run.

    .venv/bin/python benchmarks/startup.py [--runs 15] [--engines docker,podman]

For each engine:
  - `harness run --approval never -- true` against `docker run --rm IMAGE true`
    (`podman run --rm ...` for podman, with the ulimits this host needs);
  - `harness exec -- true` on a running session against `docker exec CONTAINER true`.
Prints medians and the ratio (goal: <= 1.3 for both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HARNESS = str(Path(sys.executable).with_name("harness"))
IMAGE = "localhost/harness-session:latest"


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode()[-500:]}"
        )
    return elapsed


def compare(
    name: str, ours: list[str], theirs: list[str], runs: int, cwd: Path, env: dict[str, str]
) -> dict[str, float]:
    timed(ours, cwd, env)
    timed(theirs, cwd, env)
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(timed(ours, cwd, env))
        b.append(timed(theirs, cwd, env))
    ours_median, theirs_median = statistics.median(a), statistics.median(b)
    ratio = ours_median / theirs_median
    verdict = "meets" if ratio <= 1.3 else "MISSES"
    print(
        f"{name:<34} harness {ours_median * 1000:7.1f} ms   raw {theirs_median * 1000:7.1f} ms   "
        f"ratio {ratio:4.2f}  ({verdict} the 1.3 goal; {runs} runs each, alternating)"
    )
    return {"harness_ms": ours_median * 1000, "raw_ms": theirs_median * 1000, "ratio": ratio}


def podman_raw(*args: str) -> list[str]:
    import resource

    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return [
        "podman",
        *args[:1],
        "--ulimit",
        f"nofile={nofile}:{nofile}",
        "--ulimit",
        f"nproc={nproc}:{nproc}",
        *args[1:],
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--engines", default="docker,podman")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as scratch:
        workspace = Path(scratch) / "ws"
        workspace.mkdir()
        env = dict(os.environ)
        env["XDG_STATE_HOME"] = str(Path(scratch) / "state")
        env["XDG_CONFIG_HOME"] = str(Path(scratch) / "config")
        for engine in args.engines.split(","):
            raw_run = (
                ["docker", "run", "--rm", IMAGE, "true"]
                if engine == "docker"
                else podman_raw("run", "--rm", IMAGE, "true")
            )
            results[f"{engine} run"] = compare(
                f"{engine}: run -- true",
                [HARNESS, "run", "--backend", engine, "--approval", "never", "--", "true"],
                raw_run,
                args.runs,
                workspace,
                env,
            )
            up = subprocess.run(
                [HARNESS, "up", "-d", "--backend", engine, "--approval", "never"],
                cwd=workspace,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            session = up.stdout.strip().splitlines()[-1]
            try:
                listed = json.loads(
                    subprocess.run(
                        [HARNESS, "ls", "--json"],
                        cwd=workspace,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                container = next(
                    c
                    for c in subprocess.run(
                        [engine, "ps", "-q", "--filter", f"label=harness.session={session}"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout.split()
                )
                assert any(row["session"] == session for row in listed)
                results[f"{engine} exec"] = compare(
                    f"{engine}: exec -- true",
                    [HARNESS, "exec", "--session", session, "--", "true"],
                    [engine, "exec", container, "true"],
                    args.runs,
                    workspace,
                    env,
                )
            finally:
                subprocess.run(
                    [HARNESS, "down", session],
                    cwd=workspace,
                    env=env,
                    capture_output=True,
                    check=False,
                )
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from harness.backends.podman_service import stop_recorded_service; "
                "from harness.paths import Locations; stop_recorded_service(Locations.from_environment())",
            ],
            env=env,
            check=False,
        )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
