"""The 3×3 matrix of DESIGN.md, enforced by the kernel: every mode under every policy."""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

MODES = ("read-only", "workspace-write", "danger-full-access")
POLICIES = ("untrusted", "on-request", "never")
EROFS, ENOENT, EACCES = errno.EROFS, errno.ENOENT, errno.EACCES
OK = "ok"

# What each write must do, per mode (DESIGN.md "What each sandbox mode means").
WRITES: dict[str, dict[str, object]] = {
    "read-only": {
        "write-workspace": (EROFS,),
        "write-root": (EROFS,),
        "write-etc": (EROFS,),
        "write-tmp": OK,
        "write-home": OK,
        "write-git-hooks": (EROFS,),
        "write-git-config": (EROFS,),
        "write-harness-dir": (EROFS, ENOENT),  # absent, and the workspace cannot grow it
        "dev-null": OK,
        "dev-shm": OK,
    },
    "workspace-write": {
        "write-workspace": OK,
        "write-root": (EROFS,),
        "write-etc": (EROFS,),
        "write-tmp": OK,
        "write-home": OK,
        "write-git-hooks": (EROFS,),
        "write-git-config": (EROFS,),
        "write-harness-dir": (EROFS,),
        "dev-null": OK,
        "dev-shm": OK,
    },
    "danger-full-access": {
        "write-workspace": OK,
        "write-root": OK,
        "write-etc": OK,
        "write-tmp": OK,
        "write-home": OK,
        "write-git-hooks": OK,
        "write-git-config": OK,
        "write-harness-dir": OK,
        "dev-null": OK,
        "dev-shm": OK,
    },
}


def run_probe(
    harness_cli: Callable[..., subprocess.CompletedProcess[str]],
    engine: str,
    mode: str,
    policy: str,
    target: str,
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, object]]]:
    result = harness_cli(
        "run", "--backend", engine, "-a", policy, "-s", mode, "--", "python3", "probe.py", target
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines or result.returncode == 126, (
        f"probe printed nothing (exit {result.returncode}): {result.stderr[-1500:]}"
    )
    return result, {line["name"]: line for line in lines}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_matrix(engine: str, mode: str, policy: str, harness_cli, workspace: Path) -> None:
    if policy == "untrusted":
        # no terminal here: anything but a known-safe read is denied before a sandbox exists
        denied, _ = run_probe(harness_cli, engine, mode, policy, "files")
        assert denied.returncode == 126, denied.stderr
        assert "no terminal" in denied.stderr
        assert not (workspace / "written-inside.txt").exists()
        read = harness_cli(
            "run", "--backend", engine, "-a", policy, "-s", mode, "--", "cat", "probe.py"
        )
        assert read.returncode == 0, read.stderr
        assert "Escape attempts" in read.stdout
        return

    result, files = run_probe(harness_cli, engine, mode, policy, "files")
    assert result.returncode == 0, result.stderr
    for name, expected in WRITES[mode].items():
        entry = files[name]
        if expected == OK:
            assert entry["ok"] is True, (mode, name, entry)
        else:
            assert entry["ok"] is False, (mode, name, "should have been refused", entry)
            assert entry["errno"] in expected, (mode, name, entry)  # type: ignore[operator]
    # nothing written outside the workspace reaches the host, in any mode
    assert not (workspace.parent / "outside.txt").exists()
    assert (workspace / "written-inside.txt").exists() is (mode != "read-only")
    assert (
        not (workspace / ".git" / "hooks" / "pre-commit").exists() or mode == "danger-full-access"
    )

    if mode == "danger-full-access":
        # full access really is full: the probe's junk in .harness/config.toml would now (rightly)
        # stop the next run with a config error
        assert (workspace / ".harness" / "config.toml").read_text() == "x"
        (workspace / ".harness" / "config.toml").unlink()
    isolated = mode != "danger-full-access"
    _, network = run_probe(
        harness_cli, engine, mode, policy, "network-isolated" if isolated else "network"
    )
    interfaces = str(network["interfaces"]["detail"]).split(",")
    for name in ("inet-socket", "inet6-socket", "udp-socket", "loopback-server", "unix-socketpair"):
        assert network[name]["ok"] is True, (
            mode,
            name,
            network[name],
        )  # tests that bind 127.0.0.1 keep working
    if isolated:
        assert interfaces == ["lo"]
        assert network["outside-connect"]["ok"] is False
        assert network["outside-connect"]["errno"] in (errno.ENETUNREACH, errno.EHOSTUNREACH)
    else:
        assert "lo" in interfaces
        assert len(interfaces) > 1  # the engine's default network


@pytest.mark.parametrize("mode", MODES)
def test_git_keeps_working(engine: str, mode: str, harness_cli, workspace: Path) -> None:
    script = "git status --short && git log --oneline -1 2>/dev/null; git add probe.py && git commit -qm inside && git log --oneline"
    result = harness_cli(
        "run", "--backend", engine, "-a", "never", "-s", mode, "--", "sh", "-c", script
    )
    if mode == "read-only":
        assert result.returncode != 0
        assert "Read-only file system" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "inside" in result.stdout
