"""harness doctor: every verdict from canned facts, no host I/O (a fake Probes)."""

from __future__ import annotations

import errno
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.doctor import (
    PROBE_EXIT_CODE,
    BackendChoice,
    CgroupLayout,
    Check,
    DoctorReport,
    EngineProbe,
    HostLimits,
    KernelSeccomp,
    KvmDevice,
    LandlockStatus,
    PodmanRuntime,
    Probes,
    Run,
    UserNamespaces,
    VMProbe,
    _query_kvm,
    describe_progress,
    diagnose,
    probe_firmware,
    report_json,
    run_bounded,
)
from harness.paths import Locations

UNSHARE = ("unshare", "--user", "--map-root-user", "true")
BWRAP = ("bwrap", "--ro-bind", "/", "/", "true")

GOOD: dict[str, Any] = {
    "docker": EngineProbe(
        "docker",
        None,
        client="/usr/bin/docker",
        endpoint="/var/run/docker.sock",
        version="24.0.7",
        api_version="1.43",
        seccomp=True,
    ),
    "podman": EngineProbe(
        "podman",
        None,
        client="/usr/bin/podman",
        endpoint="/run/harness/podman.sock",
        version="4.3.1",
        api_version="1.41",
        client_version="4.3.1",
        seccomp=True,
        started_by_harness=True,
    ),
    "choice": BackendChoice("podman", "auto picks podman: the first usable of podman, docker"),
    "runtime": PodmanRuntime("runc", None, "/usr/sbin/runc", rootless=False),
    "layout": CgroupLayout("v2", (), "/sys/fs/cgroup"),
    "limits": HostLimits(1_048_576, 1_048_576, 1_048_576, True, True),
    "seccomp": KernelSeccomp(True, 0, None, ("kill_process", "errno", "allow")),
    "landlock": LandlockStatus(4),
    "userns": UserNamespaces(15000, None, None, Run(UNSHARE, 0), root=False),
    "bwrap": Run(BWRAP, 0),
    "kvm_device": KvmDevice(True, True, True),
    "kvm": VMProbe("kvm", "ok", seconds=0.05, progress="RPLCM", kvm_enabled=True),
    "tcg": VMProbe("tcg", "ok", seconds=0.3, progress="RPLCM", kvm_enabled=False),
    "qemu_version": "QEMU emulator version 7.2.22",
    "systemd": True,
    "which": {
        "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64",
        "debootstrap": "/usr/sbin/debootstrap",
        "podman": "/usr/bin/podman",
    },
}


class FakeProbes(Probes):
    """Canned answers; `raising` names probes that blow up."""

    def __init__(self, raising: tuple[str, ...] = (), **overrides: Any) -> None:
        super().__init__(Locations(Path("/nonexistent/config"), Path("/nonexistent/state")))
        self.facts = {**GOOD, **overrides}
        self.raising = raising

    def _fact(self, name: str) -> Any:
        if name in self.raising:
            raise RuntimeError(f"{name} probe exploded")
        return self.facts[name]

    def docker(self) -> EngineProbe:
        return self._fact("docker")  # type: ignore[no-any-return]

    def podman(self) -> EngineProbe:
        return self._fact("podman")  # type: ignore[no-any-return]

    def choose(self) -> BackendChoice:
        return self._fact("choice")  # type: ignore[no-any-return]

    def podman_runtime(self) -> PodmanRuntime:
        return self._fact("runtime")  # type: ignore[no-any-return]

    def cgroup_layout(self) -> CgroupLayout:
        return self._fact("layout")  # type: ignore[no-any-return]

    def host_limits(self) -> HostLimits:
        return self._fact("limits")  # type: ignore[no-any-return]

    def kernel_seccomp(self) -> KernelSeccomp:
        return self._fact("seccomp")  # type: ignore[no-any-return]

    def landlock(self) -> LandlockStatus:
        return self._fact("landlock")  # type: ignore[no-any-return]

    def user_namespaces(self) -> UserNamespaces:
        return self._fact("userns")  # type: ignore[no-any-return]

    def bubblewrap(self) -> Run:
        return self._fact("bwrap")  # type: ignore[no-any-return]

    def kvm_device(self) -> KvmDevice:
        return self._fact("kvm_device")  # type: ignore[no-any-return]

    def vm(self, accel: str) -> VMProbe:
        return self._fact(accel)  # type: ignore[no-any-return]

    def qemu_version(self) -> str | None:
        return self._fact("qemu_version")  # type: ignore[no-any-return]

    def has_systemd(self) -> bool:
        return self._fact("systemd")  # type: ignore[no-any-return]

    def which(self, program: str) -> str | None:
        return self._fact("which").get(program)  # type: ignore[no-any-return]


def doctor(**overrides: Any) -> DoctorReport:
    return diagnose(Locations(Path("/x"), Path("/y")), probes=FakeProbes(**overrides))


def check(report: DoctorReport, name: str) -> Check:
    found = report.check(name)
    assert found is not None, f"no {name} check in {[c.name for c in report.checks]}"
    return found


def without(program: str) -> dict[str, str]:
    return {k: v for k, v in GOOD["which"].items() if k != program}


# -- a good host ---------------------------------------------------------------


def test_good_host_every_check_passes() -> None:
    report = doctor()
    failing = [(c.name, c.detail) for c in report.checks if not c.ok]
    assert failing == []
    assert report.ok
    assert [c.name for c in report.checks] == [
        "docker",
        "podman",
        "seccomp",
        "engine-seccomp",
        "cgroups",
        "podman-runtime",
        "podman-ulimits",
        "landlock",
        "userns",
        "bubblewrap",
        "qemu",
        "kvm",
        "tcg",
        "debootstrap",
    ]
    assert all(c.fix is None for c in report.checks)


def test_engine_versions_are_reported() -> None:
    report = doctor()
    assert "Docker Engine 24.0.7" in check(report, "docker").detail
    assert check(report, "docker").data["version"] == "24.0.7"
    podman = check(report, "podman")
    assert "Podman 4.3.1" in podman.detail
    assert "harness started" in podman.detail
    assert podman.data["started_by_harness"] is True


def test_auto_choice_and_reason_pass_through() -> None:
    reason = "auto picks docker: the first usable of podman, docker (podman: boom)"
    report = doctor(choice=BackendChoice("docker", reason))
    assert report.backend == "docker"
    assert report.backend_reason == reason
    assert report.to_json()["backend"] == "docker"
    assert report.to_json()["backend_reason"] == reason


def test_no_backend_is_reported_with_the_reason() -> None:
    reason = "no container engine is usable. podman: not installed docker: down"
    report = doctor(choice=BackendChoice(None, reason))
    assert report.backend is None
    assert report.backend_reason == reason


# -- engines -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("problem", "systemd", "fix"),
    [
        ("down", True, "systemctl start docker"),
        ("down", False, "dockerd > /var/log/dockerd.log 2>&1 &"),
        ("missing", True, "apt-get install docker.io && systemctl start docker"),
        ("missing", False, "apt-get install docker.io && dockerd > /var/log/dockerd.log 2>&1 &"),
        ("denied", True, 'usermod -aG docker "$USER"  (then log in again)'),
        ("error", True, "systemctl restart docker"),
    ],
)
def test_docker_not_usable_names_the_command(problem: str, systemd: bool, fix: str) -> None:
    down = EngineProbe("docker", problem, "no Docker engine socket at /var/run/docker.sock")
    report = doctor(docker=down, systemd=systemd)
    docker = check(report, "docker")
    assert not docker.ok
    assert docker.fix == fix
    assert "no Docker engine socket" in docker.detail
    assert report.ok  # podman still works


def test_podman_missing() -> None:
    report = doctor(
        podman=EngineProbe("podman", "missing", "podman is not installed"), which=without("podman")
    )
    podman = check(report, "podman")
    assert not podman.ok
    assert podman.fix == "apt-get install podman runc"
    # podman's runtime and limits are only judged when podman is there
    assert report.check("podman-runtime") is None
    assert report.check("podman-ulimits") is None
    assert report.ok


def test_podman_service_down() -> None:
    report = doctor(
        podman=EngineProbe("podman", "down", "`podman system service` exited with code 125")
    )
    podman = check(report, "podman")
    assert not podman.ok
    assert "exited with code 125" in podman.detail
    assert podman.fix is not None and podman.fix.startswith("podman info")


def test_no_engine_at_all_is_not_ok() -> None:
    report = doctor(
        docker=EngineProbe("docker", "down", "no socket"),
        podman=EngineProbe("podman", "missing", "podman is not installed"),
        choice=BackendChoice(None, "no container engine is usable."),
    )
    assert not report.ok
    assert report.to_json()["ok"] is False
    assert not check(report, "engine-seccomp").ok


def test_engine_without_seccomp() -> None:
    report = doctor(docker=replace(GOOD["docker"], seccomp=False))
    engine = check(report, "engine-seccomp")
    assert not engine.ok
    assert "docker" in engine.detail
    assert engine.fix == "apt-get install --reinstall docker.io libseccomp2"
    assert report.ok  # informational: the kernel has seccomp and the engines answer


# -- kernel --------------------------------------------------------------------


def test_kernel_without_seccomp_is_not_ok() -> None:
    report = doctor(seccomp=KernelSeccomp(False, None, errno.EINVAL))
    seccomp = check(report, "seccomp")
    assert not seccomp.ok
    assert "EINVAL" in seccomp.detail
    assert seccomp.fix is not None and "CONFIG_SECCOMP_FILTER" in seccomp.fix
    assert not report.ok


def test_seccomp_already_filtered_is_fine() -> None:
    seccomp = check(doctor(seccomp=KernelSeccomp(True, 2, None, ())), "seccomp")
    assert seccomp.ok
    assert "already runs under a filter" in seccomp.detail


@pytest.mark.parametrize(
    ("status", "fix_part"),
    [
        (LandlockStatus(None, errno.ENOSYS), "CONFIG_SECURITY_LANDLOCK"),
        (LandlockStatus(None, errno.EOPNOTSUPP), "lsm="),
    ],
)
def test_no_landlock(status: LandlockStatus, fix_part: str) -> None:
    report = doctor(landlock=status)
    landlock = check(report, "landlock")
    assert not landlock.ok
    assert landlock.fix is not None and fix_part in landlock.fix
    assert report.ok  # informational


def test_landlock_abi_reported() -> None:
    landlock = check(doctor(landlock=LandlockStatus(7)), "landlock")
    assert landlock.ok
    assert landlock.detail == "Landlock ABI 7"
    assert landlock.data["abi"] == 7


def test_userns_blocked_for_unprivileged_user() -> None:
    failed = Run(UNSHARE, 1, stderr="unshare: unshare failed: Operation not permitted")
    report = doctor(userns=UserNamespaces(15000, 0, None, failed, root=False))
    userns = check(report, "userns")
    assert not userns.ok
    assert "kernel.unprivileged_userns_clone is 0" in userns.detail
    assert "Operation not permitted" in userns.detail
    assert userns.fix == "sysctl -w kernel.unprivileged_userns_clone=1"


def test_userns_apparmor_and_max_zero() -> None:
    failed = Run(UNSHARE, 1, stderr="unshare: unshare failed: No space left on device")
    userns = check(
        doctor(userns=UserNamespaces(0, None, 1, failed, root=False)),
        "userns",
    )
    assert not userns.ok
    assert userns.fix == (
        "sysctl -w user.max_user_namespaces=15000 && "
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
    )


def test_userns_restricted_for_others_but_root_works() -> None:
    userns = check(
        doctor(userns=UserNamespaces(15000, 0, None, Run(UNSHARE, 0), root=True)), "userns"
    )
    assert userns.ok
    assert "kernel.unprivileged_userns_clone=1" in userns.detail


def test_userns_probe_timeout() -> None:
    hung = Run(UNSHARE, None, timed_out=True, seconds=5.0)
    userns = check(doctor(userns=UserNamespaces(15000, None, None, hung, root=False)), "userns")
    assert not userns.ok
    assert "did not finish" in userns.detail
    assert userns.fix is not None


def test_bubblewrap_missing() -> None:
    bwrap = check(doctor(bwrap=Run(BWRAP, None, missing=True)), "bubblewrap")
    assert not bwrap.ok
    assert bwrap.fix == "apt-get install bubblewrap"


def test_bubblewrap_failing_because_of_userns_gets_the_userns_fix() -> None:
    blocked = Run(UNSHARE, 1, stderr="Operation not permitted")
    report = doctor(
        userns=UserNamespaces(15000, 0, None, blocked, root=False),
        bwrap=Run(BWRAP, 1, stderr="bwrap: No permissions to creating new namespace"),
    )
    bwrap = check(report, "bubblewrap")
    assert not bwrap.ok
    assert "No permissions" in bwrap.detail
    assert bwrap.fix == "sysctl -w kernel.unprivileged_userns_clone=1"


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (CgroupLayout("v2", (), "/sys/fs/cgroup"), "cgroup v2"),
        (CgroupLayout("hybrid", ("cpu", "memory"), "/sys/fs/cgroup/unified"), "hybrid"),
        (CgroupLayout("v1", ("cpu", "memory"), None), "cgroup v1 controllers (cpu, memory)"),
    ],
)
def test_cgroup_layouts(layout: CgroupLayout, expected: str) -> None:
    cgroups = check(doctor(layout=layout), "cgroups")
    assert cgroups.ok
    assert expected in cgroups.detail
    assert cgroups.data["version"] == layout.version


def test_no_cgroups() -> None:
    cgroups = check(doctor(layout=CgroupLayout("none")), "cgroups")
    assert not cgroups.ok
    assert cgroups.fix == "mount -t cgroup2 none /sys/fs/cgroup"


# -- podman on hybrid cgroups ----------------------------------------------------

HYBRID = CgroupLayout("hybrid", ("cpu", "memory", "pids"), "/sys/fs/cgroup/unified")


def test_podman_without_crun_on_hybrid_cgroups_uses_runc() -> None:
    runtime = PodmanRuntime("runc", None, "/usr/sbin/runc", rootless=False)
    podman_runtime = check(doctor(layout=HYBRID, runtime=runtime), "podman-runtime")
    assert podman_runtime.ok
    assert "runc" in podman_runtime.detail
    assert "crun is not installed" in podman_runtime.detail
    assert "hybrid" in podman_runtime.detail


def test_podman_defaulting_to_crun_on_hybrid_cgroups() -> None:
    runtime = PodmanRuntime("crun", "/usr/bin/crun", "/usr/sbin/runc", rootless=False)
    podman_runtime = check(doctor(layout=HYBRID, runtime=runtime), "podman-runtime")
    assert not podman_runtime.ok
    assert podman_runtime.fix == (
        "harness sets runc and ulimits per container; "
        'for your own podman use set runtime = "runc" in /etc/containers/containers.conf'
    )


def test_podman_on_hybrid_cgroups_without_runc() -> None:
    runtime = PodmanRuntime("crun", "/usr/bin/crun", None, rootless=False)
    podman_runtime = check(doctor(layout=HYBRID, runtime=runtime), "podman-runtime")
    assert not podman_runtime.ok
    assert podman_runtime.fix == "apt-get install runc"


def test_podman_runtime_on_cgroup_v2() -> None:
    runtime = PodmanRuntime("crun", "/usr/bin/crun", None, rootless=False)
    assert check(doctor(runtime=runtime), "podman-runtime").ok


def test_podman_info_failing() -> None:
    runtime = PodmanRuntime(None, None, "/usr/sbin/runc", False, "`podman info` failed: timed out")
    podman_runtime = check(doctor(runtime=runtime), "podman-runtime")
    assert not podman_runtime.ok
    assert "timed out" in podman_runtime.detail


LOW_LIMITS = HostLimits(20000, 96365, 1_048_576, cap_sys_resource=False, root=True)


def test_podman_needs_explicit_ulimits_here() -> None:
    ulimits = check(doctor(layout=HYBRID, limits=LOW_LIMITS), "podman-ulimits")
    assert not ulimits.ok
    assert "hard nofile 20000, nproc 96365" in ulimits.detail
    assert "no CAP_SYS_RESOURCE" in ulimits.detail
    assert ulimits.fix is not None
    assert ulimits.fix.startswith("harness sets runc and ulimits per container")
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=96365:96365"]' in ulimits.fix
    assert doctor(layout=HYBRID, limits=LOW_LIMITS).ok  # informational: harness copes


def test_podman_process_limits_lower_the_ceiling() -> None:
    podman = replace(GOOD["podman"], info={"hard_limits": {"nofile": 20000, "nproc": 32768}})
    ulimits = check(doctor(podman=podman, limits=LOW_LIMITS), "podman-ulimits")
    assert not ulimits.ok
    assert "the podman process itself: nofile 20000, nproc 32768" in ulimits.detail
    assert ulimits.fix is not None
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in ulimits.fix
    assert ulimits.data["ceiling"] == {"nofile": 20000, "nproc": 32768}


def test_podman_ulimits_configured_too_high_still_fail() -> None:
    podman = replace(GOOD["podman"], info={"hard_limits": {"nofile": 20000, "nproc": 32768}})
    limits = replace(LOW_LIMITS, podman_default_ulimits=("nofile=20000:20000", "nproc=96365:96365"))
    assert not check(doctor(podman=podman, limits=limits), "podman-ulimits").ok


def test_podman_ulimits_configured_as_process_maximum() -> None:
    limits = replace(LOW_LIMITS, podman_default_ulimits=("nofile=-1:-1", "nproc=-1"))
    assert check(doctor(limits=limits), "podman-ulimits").ok


def test_podman_ulimits_fine_with_cap_sys_resource() -> None:
    limits = replace(LOW_LIMITS, cap_sys_resource=True)
    assert check(doctor(limits=limits), "podman-ulimits").ok


def test_podman_ulimits_configured_in_containers_conf() -> None:
    limits = replace(LOW_LIMITS, podman_default_ulimits=("nofile=20000:20000", "nproc=9000:9000"))
    ulimits = check(doctor(limits=limits), "podman-ulimits")
    assert ulimits.ok
    assert "containers.conf" in ulimits.detail


def test_podman_ulimits_nr_open_too_small_even_with_cap() -> None:
    limits = HostLimits(None, None, 65536, cap_sys_resource=True, root=True)
    assert not check(doctor(limits=limits), "podman-ulimits").ok


def test_rootless_podman_is_not_affected() -> None:
    runtime = PodmanRuntime("crun", "/usr/bin/crun", None, rootless=True)
    ulimits = check(doctor(limits=LOW_LIMITS, runtime=runtime), "podman-ulimits")
    assert ulimits.ok


# -- VMs -----------------------------------------------------------------------


def test_kvm_timing_out_falls_back_to_tcg() -> None:
    slow = VMProbe("kvm", "timeout", "killed after 5 s", 5.02, "RPL", True)
    report = doctor(kvm=slow)
    kvm = check(report, "kvm")
    assert not kvm.ok
    assert kvm.detail.startswith("KVM unusable (probe timed out), the VM backend will use TCG")
    assert "long mode" in kvm.detail
    assert kvm.fix is not None
    assert kvm.data["outcome"] == "timeout"
    assert kvm.data["progress"] == "RPL"
    assert check(report, "tcg").ok
    assert report.ok  # informational


def test_kvm_and_tcg_both_broken() -> None:
    report = doctor(
        kvm=VMProbe("kvm", "timeout", "killed after 5 s", 5.0, ""),
        tcg=VMProbe("tcg", "error", "qemu: could not load PC BIOS", 0.1, ""),
    )
    kvm = check(report, "kvm")
    assert "TCG does not work either" in kvm.detail
    tcg = check(report, "tcg")
    assert not tcg.ok
    assert "could not load PC BIOS" in tcg.detail
    assert tcg.fix == "apt-get install --reinstall qemu-system-x86"


def test_kvm_works() -> None:
    kvm = check(doctor(), "kvm")
    assert kvm.ok
    assert "KVM works" in kvm.detail
    assert "an 8 MiB memory sweep" in kvm.detail


def test_no_dev_kvm() -> None:
    kvm = check(doctor(kvm_device=KvmDevice(False, False, False)), "kvm")
    assert not kvm.ok
    assert "the VM backend will use TCG" in kvm.detail
    assert kvm.fix is not None and kvm.fix.startswith("modprobe kvm_intel")


def test_dev_kvm_without_permission() -> None:
    kvm = check(doctor(kvm_device=KvmDevice(True, False, False)), "kvm")
    assert not kvm.ok
    assert kvm.fix == 'usermod -aG kvm "$USER"  (then log in again)'


def test_kvm_refused_by_qemu() -> None:
    refused = VMProbe("kvm", "error", "Could not access KVM kernel module: Permission denied")
    kvm = check(doctor(kvm=refused), "kvm")
    assert not kvm.ok
    assert "Could not access KVM kernel module" in kvm.detail


def test_qemu_missing() -> None:
    missing = VMProbe("kvm", "missing", "qemu-system-x86_64 is not installed")
    report = doctor(
        which=without("qemu-system-x86_64"),
        qemu_version=None,
        kvm=missing,
        tcg=replace(missing, accel="tcg"),
    )
    for name in ("qemu", "kvm", "tcg"):
        found = check(report, name)
        assert not found.ok
        assert found.fix == "apt-get install qemu-system-x86", name


def test_debootstrap_missing() -> None:
    debootstrap = check(doctor(which=without("debootstrap")), "debootstrap")
    assert not debootstrap.ok
    assert debootstrap.fix == "apt-get install debootstrap"


# -- the whole report ----------------------------------------------------------


def test_every_failing_check_on_a_bad_host_has_a_fix() -> None:
    report = doctor(
        docker=EngineProbe("docker", "missing", "not installed"),
        podman=EngineProbe("podman", "down", "no service"),
        choice=BackendChoice(None, "no container engine is usable."),
        seccomp=KernelSeccomp(True, None, errno.EINVAL),
        layout=HYBRID,
        runtime=PodmanRuntime("crun", "/usr/bin/crun", None, rootless=False),
        limits=LOW_LIMITS,
        landlock=LandlockStatus(None, errno.ENOSYS),
        userns=UserNamespaces(15000, 0, None, Run(UNSHARE, 1), root=False),
        bwrap=Run(BWRAP, None, missing=True),
        kvm_device=KvmDevice(True, True, True),
        kvm=VMProbe("kvm", "timeout", "killed", 5.0, "R"),
        tcg=VMProbe("tcg", "ok", "", 0.3, "RPLCM"),
        which=without("debootstrap"),
    )
    failing = [c for c in report.checks if not c.ok]
    assert {c.name for c in failing} >= {
        "docker",
        "podman",
        "seccomp",
        "podman-runtime",
        "podman-ulimits",
        "landlock",
        "userns",
        "bubblewrap",
        "kvm",
        "debootstrap",
    }
    # engine-seccomp has nobody to ask, so no command to run; everything else names one
    assert [c.name for c in failing if not c.fix] == ["engine-seccomp"]
    assert not report.ok


def test_json_shape() -> None:
    report = doctor(kvm=VMProbe("kvm", "timeout", "killed after 5 s", 5.0, "RPL", True))
    data = json.loads(report_json(report))
    assert set(data) == {"backend", "backend_reason", "checks", "ok"}
    assert data["backend"] == "podman"
    assert data["ok"] is True
    assert isinstance(data["checks"], list)
    for item in data["checks"]:
        assert set(item) == {"name", "ok", "detail", "fix", "data"}
        assert isinstance(item["name"], str)
        assert isinstance(item["ok"], bool)
        assert isinstance(item["detail"], str) and item["detail"]
        assert item["fix"] is None or isinstance(item["fix"], str)
        assert isinstance(item["data"], dict)
    kvm = next(item for item in data["checks"] if item["name"] == "kvm")
    assert kvm["ok"] is False
    assert kvm["data"]["outcome"] == "timeout"
    assert report.to_json() == data


def test_a_probe_that_raises_fails_its_check_only() -> None:
    report = diagnose(
        Locations(Path("/x"), Path("/y")), probes=FakeProbes(raising=("landlock", "docker"))
    )
    landlock = check(report, "landlock")
    assert not landlock.ok
    assert "landlock probe exploded" in landlock.detail
    assert not check(report, "docker").ok
    assert check(report, "podman").ok
    assert report.ok


def test_a_raising_engine_pair_still_gives_a_reason() -> None:
    report = diagnose(Locations(Path("/x"), Path("/y")), probes=FakeProbes(raising=("podman",)))
    assert report.backend is None
    assert "podman probe exploded" in report.backend_reason


def test_checks_are_frozen() -> None:
    item = Check("x", True, "fine")
    with pytest.raises(AttributeError):
        item.ok = False  # type: ignore[misc]
    assert item.data == {}


# -- helpers that need no host -------------------------------------------------


def test_probe_firmware_layout() -> None:
    image = probe_firmware()
    assert len(image) == 64 * 1024
    assert image[0] == 0xFA  # cli
    assert image[0xFFF0:0xFFF5] == bytes.fromhex("ea000000f0")  # ljmp $0xF000, $0
    assert PROBE_EXIT_CODE == 99


def test_query_kvm_parsing() -> None:
    output = (
        '{"QMP": {"version": {}}}\r\n{"return": {}}\r\n'
        '{"return": {"enabled": true, "present": true}}\r\n{"event": "RESUME"}\r\n'
    )
    assert _query_kvm(output) is True
    assert _query_kvm('{"return": {"enabled": false, "present": true}}') is False
    assert _query_kvm("garbage") is None


def test_describe_progress() -> None:
    assert describe_progress("RP") == "real mode, protected mode"
    assert describe_progress("") == "nothing (not even the first instruction)"


def test_run_bounded_kills_the_whole_group_on_timeout(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild-survived"
    started = time.monotonic()
    run = run_bounded(["sh", "-c", f"(sleep 1; touch {marker}) & sleep 30"], timeout=0.3)
    assert run.timed_out
    assert run.returncode is None
    assert time.monotonic() - started < 3
    time.sleep(1.5)
    assert not marker.exists()  # the background grandchild died with the group


def test_run_bounded_missing_program() -> None:
    run = run_bounded(["harness-no-such-program-xyz", "--version"])
    assert run.missing
    assert not run.ok


def test_run_bounded_output_and_stdin() -> None:
    run = run_bounded(["sh", "-c", "cat; echo oops >&2; exit 3"], stdin=b"hello")
    assert run.returncode == 3
    assert run.stdout == "hello"
    assert run.summary() == "oops"
