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
import statistics
import subprocess

from common import HARNESS, Scratch, alternate, detached_session, scratch

IMAGE = "localhost/harness-session:latest"
GOAL = 1.3


def compare(
    name: str, ours: list[str], theirs: list[str], runs: int, where: Scratch
) -> dict[str, float]:
    pair = alternate(ours, theirs, runs, where)
    ours_median, theirs_median = statistics.median(pair.ours), statistics.median(pair.theirs)
    verdict = "meets" if pair.ratio <= GOAL else "MISSES"
    print(
        f"{name:<34} harness {ours_median * 1000:7.1f} ms   raw {theirs_median * 1000:7.1f} ms   "
        f"ratio {pair.ratio:4.2f}  ({verdict} the {GOAL} goal; {runs} runs each, alternating)"
    )
    return {"harness_ms": ours_median * 1000, "raw_ms": theirs_median * 1000, "ratio": pair.ratio}


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
    with scratch() as where:
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
                where,
            )
            with detached_session(engine, where) as (session, container):
                listed = subprocess.run(
                    [HARNESS, "ls", "--json"],
                    cwd=where.workspace,
                    env=where.env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                assert any(row["session"] == session for row in json.loads(listed))
                results[f"{engine} exec"] = compare(
                    f"{engine}: exec -- true",
                    [HARNESS, "exec", "--session", session, "--", "true"],
                    [engine, "exec", container, "true"],
                    args.runs,
                    where,
                )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
