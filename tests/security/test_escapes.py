"""Escape attempts against the real kernel, on Docker and on Podman.

Every attempt must fail because the sandbox refused it (the errno says so),
not by accident. A failing test here is a release blocker.
"""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RESTRICTED = ("read-only", "workspace-write")
Result = dict[str, dict[str, object]]


def probe(
    harness_cli: Callable[..., subprocess.CompletedProcess[str]],
    engine: str,
    mode: str,
    target: str,
    *extra: str,
) -> Result:
    result = harness_cli(
        "run",
        "--backend",
        engine,
        "-a",
        "never",
        "-s",
        mode,
        *extra,
        "--",
        "python3",
        "probe.py",
        target,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"probe printed nothing (exit {result.returncode}):\n{result.stderr[-2000:]}"
    return {line["name"]: line for line in lines}


def refused(results: Result, name: str, *errnos: int) -> None:
    entry = results[name]
    assert entry["ok"] is False, f"{name} succeeded inside the sandbox: {entry}"
    assert entry["errno"] in errnos, (
        f"{name} failed with {entry['errname']} ({entry['errno']}), expected one of {[errno.errorcode[e] for e in errnos]}"
    )


EPERM, EACCES, EROFS, ENOENT, ENOSYS = (
    errno.EPERM,
    errno.EACCES,
    errno.EROFS,
    errno.ENOENT,
    errno.ENOSYS,
)


@pytest.mark.parametrize("mode", RESTRICTED)
def test_syscall_escapes_are_refused(engine: str, mode: str, harness_cli, workspace: Path) -> None:
    results = probe(harness_cli, engine, mode, "syscalls")
    refused(results, "ptrace-attach", EPERM)
    refused(results, "mount", EPERM)
    refused(results, "mount-tmpfs", EPERM)
    refused(results, "unshare", EPERM)  # CLONE_NEWUSER
    refused(results, "unshare-net", EPERM)
    refused(results, "unshare-mount", EPERM)
    refused(results, "setns", EPERM)
    refused(results, "chroot", EPERM)
    for name in (
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "io_uring_setup",
        "userfaultfd",
        "perf_event_open",
        "process_vm_readv",
        "kexec_load",
        "init_module",
        "pivot_root",
        "open_by_handle_at",
    ):
        refused(results, name, EPERM)
    refused(results, "mknod", EPERM)
    refused(results, "raw-socket", EPERM)
    refused(results, "packet-socket", EPERM)
    refused(results, "vsock-socket", EPERM)
    refused(results, "alg-socket", EPERM)
    refused(results, "proc-sys-write", EROFS, EACCES)
    refused(results, "sysrq-trigger", EROFS, EACCES, ENOENT)
    refused(results, "kmsg", ENOENT, EACCES, EPERM)
    assert results["capabilities"]["ok"] is True, results["capabilities"]  # CapEff reads 0


@pytest.mark.parametrize("mode", (*RESTRICTED, "danger-full-access"))
def test_host_secrets_and_engine_stay_out(
    engine: str, mode: str, harness_cli, workspace: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret")
    (workspace / "planted-link").symlink_to(secret)
    results = probe(harness_cli, engine, mode, "host")
    for name, entry in results.items():
        if name.startswith("engine-socket:"):
            refused(results, name, ENOENT)
            assert entry["ok"] is False
    refused(results, "symlink-to-host", ENOENT)
    assert results["host-env-secret"]["ok"] is False, (
        "AWS_SECRET_ACCESS_KEY leaked into the sandbox"
    )
    assert results["host-home"]["ok"] is False


@pytest.mark.parametrize("mode", (*RESTRICTED, "danger-full-access"))
def test_fork_bomb_stops_at_the_pids_limit(
    engine: str, mode: str, harness_cli, workspace: Path
) -> None:
    config = workspace / ".harness"
    results = probe(harness_cli, engine, mode, "forkbomb")
    entry = results["forkbomb"]
    assert entry["ok"] is False, "fork never failed"
    assert entry["errno"] == errno.EAGAIN
    assert int(str(entry["detail"])) < 2048
    assert not config.exists() or not any(config.iterdir())


@pytest.mark.parametrize("mode", ("workspace-write", "danger-full-access"))
def test_six_gib_allocation_is_killed_at_the_memory_limit(
    engine: str, mode: str, harness_cli, workspace: Path
) -> None:
    result = harness_cli(
        "run", "--backend", engine, "-a", "never", "-s", mode, "--", "python3", "probe.py", "memory"
    )
    assert "memory-start" in result.stdout
    assert "memory-allocated" not in result.stdout
    assert result.returncode == 137, (
        result.returncode,
        result.stderr[-500:],
    )  # SIGKILL from the OOM killer
