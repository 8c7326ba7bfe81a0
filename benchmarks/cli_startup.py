"""How fast does `harness --help` start? Target: median under 0.3 s on this machine.

Runs `harness --help` and, for scale, a bare `python -c pass`, alternately in
one run, and prints medians and the ratio.

    .venv/bin/python benchmarks/cli_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HARNESS = Path(sys.executable).with_name("harness")


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    cases = {
        "harness --help": [str(HARNESS), "--help"],
        "harness policy --help": [str(HARNESS), "policy", "--help"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():
        timed(argv)  # warm the page cache
    for _ in range(args.runs):
        for name, argv in cases.items():
            samples[name].append(timed(argv))
    baseline = statistics.median(samples["python -c pass"])
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:<24} median {median * 1000:7.1f} ms  p90 {sorted(values)[int(len(values) * 0.9)] * 1000:7.1f} ms  ({median / baseline:.1f}x bare python)"
        )
    help_median = statistics.median(samples["harness --help"])
    verdict = "meets" if help_median < 0.3 else "MISSES"
    print(f"harness --help median {help_median:.3f} s {verdict} the 0.3 s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
