"""harness doctor on the real host: engines, kernel features and the KVM probe.

Skipped locally only when no container engine is installed; in CI (CI set)
a missing piece fails instead.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.podman_service import stop_recorded_service
from harness.doctor import PROBE_TIMEOUT, Check, DoctorReport, diagnose
from harness.paths import Locations

pytestmark = [pytest.mark.requires_docker, pytest.mark.requires_podman, pytest.mark.requires_vm]


def skip_unless_ci(reason: str) -> None:
    """Skip locally; in CI a test that cannot run is a failure, never a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DoctorReport, float]]:
    if not (shutil.which("docker") or shutil.which("dockerd") or shutil.which("podman")):
        skip_unless_ci("neither docker nor podman is installed")
    root = tmp_path_factory.mktemp("doctor")
    locations = Locations(root / "config", root / "state", root / "etc", None, root / "run")
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            # Not doctor's: podman_service.find_or_start drops the Popen of the service it
            # leaves running on purpose ("subprocess ... is still running"), and its _answers
            # does not close the socket when connect() fails ("unclosed <socket.socket ...>").
            warnings.filterwarnings("ignore", "subprocess .* is still running", ResourceWarning)
            warnings.filterwarnings("ignore", "unclosed <socket.socket", ResourceWarning)
            result = diagnose(locations)
        elapsed = time.monotonic() - started
        yield result, elapsed
    finally:
        stop_recorded_service(locations)  # the private podman service doctor may have started


def named(report: DoctorReport, name: str) -> Check:
    found = report.check(name)
    assert found is not None, f"doctor has no {name} check"
    return found


def test_doctor_finishes_in_bounded_time(report: tuple[DoctorReport, float]) -> None:
    _, elapsed = report
    assert elapsed < 15, f"doctor took {elapsed:.1f} s"


def test_both_engines_with_versions(report: tuple[DoctorReport, float]) -> None:
    result, _ = report
    for name in ("docker", "podman"):
        engine = named(result, name)
        assert engine.ok, f"{name}: {engine.detail} (fix: {engine.fix})"
        version = engine.data["version"]
        assert isinstance(version, str) and version[0].isdigit(), version
        assert version in engine.detail
    assert result.ok


def test_auto_picks_podman_first(report: tuple[DoctorReport, float]) -> None:
    result, _ = report
    assert result.backend == "podman", result.backend_reason
    assert "podman" in result.backend_reason


def test_seccomp(report: tuple[DoctorReport, float]) -> None:
    result, _ = report
    seccomp = named(result, "seccomp")
    assert seccomp.ok, seccomp.detail
    engines = named(result, "engine-seccomp")
    assert engines.ok, engines.detail
    assert engines.data == {"docker": True, "podman": True}


def test_landlock(report: tuple[DoctorReport, float]) -> None:
    result, _ = report
    landlock = named(result, "landlock")
    assert landlock.ok, f"{landlock.detail} (fix: {landlock.fix})"
    abi = landlock.data["abi"]
    assert isinstance(abi, int) and abi >= 1


def test_user_namespaces(report: tuple[DoctorReport, float]) -> None:
    result, _ = report
    userns = named(result, "userns")
    assert userns.ok, f"{userns.detail} (fix: {userns.fix})"


def test_kvm_probe_answers_within_its_timeout(report: tuple[DoctorReport, float]) -> None:
    result, _ = report
    if not Path("/dev/kvm").exists() or shutil.which("qemu-system-x86_64") is None:
        skip_unless_ci("no /dev/kvm or no qemu-system-x86_64 on this host")
    kvm = named(result, "kvm")
    assert kvm.data["outcome"] in ("ok", "timeout", "error"), kvm.data
    seconds = kvm.data["seconds"]
    assert isinstance(seconds, float) and seconds < PROBE_TIMEOUT + 2
    if not kvm.ok:
        assert "TCG" in kvm.detail
        assert kvm.fix
    tcg = named(result, "tcg")
    assert tcg.ok, tcg.detail
    assert tcg.data["progress"] == "RPLCM"


def test_podman_on_this_host_is_explained(report: tuple[DoctorReport, float]) -> None:
    result, _ = report
    runtime = named(result, "podman-runtime")
    layout = named(result, "cgroups").data["version"]
    if layout != "v2":
        assert "runc" in (runtime.detail + (runtime.fix or ""))
    ulimits = named(result, "podman-ulimits")
    if not ulimits.ok:
        assert ulimits.fix is not None
        assert "harness sets runc and ulimits per container" in ulimits.fix


def test_to_json_is_serialisable(report: tuple[DoctorReport, float]) -> None:
    import json

    result, _ = report
    data = json.loads(json.dumps(result.to_json()))
    assert data["ok"] is True
    assert {c["name"] for c in data["checks"]} >= {"docker", "podman", "seccomp", "kvm"}
