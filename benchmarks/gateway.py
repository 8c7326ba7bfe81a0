"""Per-command overhead through the session's gateway, against the engine's own exec.

    .venv/bin/python benchmarks/gateway.py [--runs 30] [--inner-runs 200] [--engines docker,podman]

For each engine, one session (`harness up -d --backend ENGINE --approval never`), then,
alternately in one run:

  (a) `harness exec --session ID -- true`: host → the gateway's approval (control socket)
      → the in-sandbox agent, against
  (b) `docker exec CONTAINER true` (`podman exec` for podman). Goal: (a) <= 1.2 × (b).
  (c) inside the sandbox, `$SHELL -c true` (harness-sh → the gateway → bash) against
      `bash -c true`, timed by a small python loop that `harness exec` starts once, so
      the cost of entering the container is not in these figures.

Also printed, to show where the time goes (no process start around them): on the host,
one approval round trip on the gateway's control socket, one `true` through the in-sandbox
agent, both together (= `harness exec` without its own start-up), and a bare
`python -c pass`; inside the sandbox, one approval round trip on gateway.sock and a bare
`python3 -c pass` (harness-sh is a python3 script).
Prints medians and ratios, then everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

from common import HARNESS, Scratch, alternate, detached_session, scratch

GOAL = 1.2

# Runs inside the sandbox on the image's python3: (c), alternately, as JSON on stdout.
INNER = r"""
import json, os, statistics, subprocess, sys, time

import socket, struct

runs = int(sys.argv[1])
shell = os.environ["SHELL"]
pairs = {
    "harness-sh": [shell, "-c", "true"],
    "bash": ["bash", "-c", "true"],
    "python3": ["python3", "-c", "pass"],
}


def timed(argv):
    start = time.perf_counter()
    code = subprocess.call(argv, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{argv} failed with {code}")
    return elapsed


def ask():
    # one approval round trip on gateway.sock, as harness-sh asks it
    start = time.perf_counter()
    body = json.dumps({
        "op": "run", "token": os.environ["HARNESS_GATEWAY_TOKEN"], "shell": "true",
        "cwd": os.getcwd(), "escalate": False, "justification": None, "after_denial": False,
    }).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(os.environ["HARNESS_GATEWAY"])
        sock.sendall(struct.pack(">I", len(body)) + body)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data[4:])
    if answer.get("decision") != "allow":
        sys.exit(f"the gateway said {answer}")
    return time.perf_counter() - start


for argv in pairs.values():
    timed(argv)
times = {name: [] for name in [*pairs, "approval"]}
for _ in range(runs):
    for name, argv in pairs.items():
        times[name].append(timed(argv))
    times["approval"].append(ask())
    time.sleep(0.05)  # under the gateway's rate limit (20 a second)
print(json.dumps({"shell": shell, **{name: statistics.median(t) for name, t in times.items()}}))
"""


def line(name: str, ours: float, theirs: float, labels: tuple[str, str], note: str) -> None:
    ratio = ours / theirs
    print(
        f"{name:<30} {labels[0]} {ours * 1000:7.2f} ms   {labels[1]} {theirs * 1000:7.2f} ms   "
        f"ratio {ratio:4.2f}  ({note})"
    )


def exec_pair(
    engine: str, session: str, container: str, runs: int, where: Scratch
) -> dict[str, float]:
    """(a) against (b), alternately, after one warm-up each."""
    pair = alternate(
        [HARNESS, "exec", "--session", session, "--", "true"],
        [engine, "exec", container, "true"],
        runs,
        where,
    )
    harness_ms, raw_ms = statistics.median(pair.ours), statistics.median(pair.theirs)
    ratio = pair.ratio
    verdict = "meets" if ratio <= GOAL else "MISSES"
    line(
        f"{engine}: exec -- true",
        harness_ms,
        raw_ms,
        ("harness", f"{engine} exec"),
        f"{verdict} the {GOAL} goal; {runs} runs each, alternating",
    )
    return {
        "harness_exec_ms": harness_ms * 1000,
        "engine_exec_ms": raw_ms * 1000,
        "ratio": ratio,
        "harness_exec_min_ms": min(pair.ours) * 1000,
        "engine_exec_min_ms": min(pair.theirs) * 1000,
    }


def inner_pair(session: str, runs: int, where: Scratch) -> dict[str, float]:
    """(c): harness-sh against bash, measured inside the sandbox."""
    script = where.workspace / ".gateway-bench.py"
    script.write_text(INNER)
    try:
        result = subprocess.run(
            [HARNESS, "exec", "--session", session, "--", "python3", script.name, str(runs)],
            cwd=where.workspace,
            env=where.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        script.unlink()
    if result.returncode != 0:
        raise SystemExit(f"the in-sandbox loop failed: {result.stderr[-1000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    ours, theirs = float(figures["harness-sh"]), float(figures["bash"])
    line(
        "  in the sandbox: $SHELL -c true",
        ours,
        theirs,
        ("harness-sh", "bash -c"),
        f"+{(ours - theirs) * 1000:.2f} ms per command through the gateway; {runs} runs each",
    )
    python, approval = float(figures["python3"]), float(figures["approval"])
    print(
        f"    of which: python3 -c pass {python * 1000:.2f} ms, "
        f"approval round trip on gateway.sock {approval * 1000:.2f} ms"
    )
    return {
        "harness_sh_ms": ours * 1000,
        "bash_ms": theirs * 1000,
        "ratio": ours / theirs,
        "python3_start_ms": python * 1000,
        "approval_in_sandbox_ms": approval * 1000,
    }


def host_breakdown(session: str, runs: int, env: dict[str, str]) -> dict[str, float]:
    """What `harness exec` does, without starting a process: medians in ms."""
    code = f"""
import json, os, statistics, sys, time
from harness.backends.agent_client import run_via_agent
from harness.backends.stream import Terminal
from harness.gateway.client import ask
from harness.paths import Locations
from harness.procs import ProcessId
from harness.session import SessionStore

record = SessionStore(Locations.from_environment()).load({session!r})
agent = ProcessId.from_label(record.agent)
if agent is None:
    sys.exit("the session has no agent: harness exec falls back to the engine's exec")
message = {{"op": "run", "token": record.gateway_token, "argv": ["true"], "cwd": record.workdir}}
null = os.open(os.devnull, os.O_RDWR)
terminal = Terminal(null, null, null)


def approval():
    answer = ask(record.gateway_control, message)
    assert answer["decision"] == "allow", answer


def agent_run():
    code = run_via_agent(agent, ["true"], cwd=record.workdir, env=record.env, tty=False,
                         stdin=False, terminal=terminal)
    assert code == 0, code


def both():
    approval()
    agent_run()


def python():
    import subprocess
    subprocess.run([sys.executable, "-c", "pass"], check=True)


cases = {{"approval": approval, "agent": agent_run, "both": both, "python": python}}
times = {{name: [] for name in cases}}
for case in cases.values():
    case()
for _ in range({runs}):
    for name, case in cases.items():
        start = time.perf_counter()
        case()
        times[name].append(time.perf_counter() - start)
    time.sleep(0.05)  # under the gateway's rate limit
print(json.dumps({{name: statistics.median(t) * 1000 for name, t in times.items()}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"the host breakdown failed: {result.stderr[-1000:]}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"    of which (in-process, host): approval round trip {figures['approval']:.2f} ms, "
        f"agent runs `true` {figures['agent']:.2f} ms, both {figures['both']:.2f} ms; "
        f"python -c pass {figures['python']:.2f} ms"
    )
    return figures


def bench_engine(engine: str, runs: int, inner_runs: int, where: Scratch) -> dict[str, Any]:
    with detached_session(engine, where) as (session, container):
        return {
            "session": session,
            "exec": exec_pair(engine, session, container, runs, where),
            "host_ms": host_breakdown(session, inner_runs, where.env),
            "in_sandbox": inner_pair(session, inner_runs, where),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="(a) and (b): runs of each")
    parser.add_argument("--inner-runs", type=int, default=200, help="(c): runs of each")
    parser.add_argument("--engines", default="docker")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with scratch() as where:
        for engine in args.engines.split(","):
            results[engine] = bench_engine(engine, args.runs, args.inner_runs, where)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
