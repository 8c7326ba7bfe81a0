"""`harness doctor`: what this host offers harness, what is missing, and the command that fixes it.

`diagnose` returns a `DoctorReport` of `Check`s and never prints, exits or
hangs: every probe that runs a program does so with an argv list, in its own
process group, under a hard timeout, and the probes run in parallel.

The host I/O lives in `Probes` (one method per question, returning plain
values); `diagnose` only turns those values into checks, so unit tests
substitute a fake `Probes` and check every verdict without touching the host.

Essential checks decide `DoctorReport.ok`: at least one container engine
(docker or podman) answers, and the kernel has seccomp. The rest tells what
the planned backends (VM, native) and the offline image build will find.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.errors import HarnessError
from harness.paths import Locations

if TYPE_CHECKING:
    from harness.backends.engine_api import EngineAPI

T = TypeVar("T")

PROBE_TIMEOUT = 5.0
PODMAN_DEFAULT_RLIMIT = 1_048_576  # podman's nofile and nproc for rootful containers
CAP_SYS_RESOURCE = 24
LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
LANDLOCK_CREATE_RULESET_VERSION = 1
PR_GET_SECCOMP = 21
ENGINE_CHECKS = ("docker", "podman")
ESSENTIAL = ("seccomp",)
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
CONTAINERS_CONF_FILES = (
    Path("/usr/share/containers/containers.conf"),
    CONTAINERS_CONF,
)
CONTAINERS_CONF_DIR = Path("/etc/containers/containers.conf.d")


# -- the report ----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One verdict about the host.

    Attributes:
        name: a stable identifier ("docker", "seccomp", "kvm", ...).
        ok: whether harness can use what this check is about.
        detail: one line for a human: what was found.
        fix: the exact command (or edit) that fixes a failing check; None when ok.
        data: the raw facts behind the verdict, for `--json`.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "fix": self.fix,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class DoctorReport:
    """All checks, and which backend `--backend auto` picks (None when none is usable) and why."""

    checks: tuple[Check, ...]
    backend: str | None
    backend_reason: str

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def ok(self) -> bool:
        """At least one container engine answers and every essential check passes."""
        engines = [c for c in self.checks if c.name in ENGINE_CHECKS]
        essentials = [c for c in self.checks if c.name in ESSENTIAL]
        return (
            any(c.ok for c in engines)
            and len(essentials) == len(ESSENTIAL)
            and all(c.ok for c in essentials)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "checks": [c.to_json() for c in self.checks],
            "ok": self.ok,
        }


# -- what the probes find ------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One helper program run under a timeout.

    `returncode` is None when the program is missing or was killed on timeout.
    """

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    missing: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> str:
        """The last line of what it said, for a detail string."""
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return lines[-1][:300] if lines else ""

    def to_json(self) -> dict[str, object]:
        return {
            "argv": list(self.argv),
            "returncode": self.returncode,
            "timed_out": self.timed_out,
            "missing": self.missing,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class EngineProbe:
    """What a container engine's API says about itself.

    Attributes:
        problem: None when the API answered; else "missing" (not installed),
            "down" (installed, nothing answers), "denied" (no permission on the
            socket) or "error" (it answered with an error or too slowly).
        client: the path of the engine's CLI, when installed.
        endpoint: the API socket that was asked.
        version / api_version: the engine's own version, when it answered.
        seccomp: whether the engine reports seccomp support (None: unknown).
        started_by_harness: podman only: harness started the API service.
        info: other facts worth showing (runtime, cgroup driver, ...).
    """

    name: str
    problem: str | None
    error: str | None = None
    client: str | None = None
    endpoint: str | None = None
    version: str | None = None
    api_version: str | None = None
    client_version: str | None = None
    seccomp: bool | None = None
    started_by_harness: bool = False
    info: Mapping[str, object] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class PodmanRuntime:
    """podman's default OCI runtime (from `podman info`) and which runtimes are installed."""

    default: str | None
    crun: str | None
    runc: str | None
    rootless: bool
    error: str | None = None


@dataclass(frozen=True)
class CgroupLayout:
    """version: "v2" (unified), "v1", "hybrid" (v1 controllers plus a cgroup2 mount) or "none"."""

    version: str
    v1_controllers: tuple[str, ...] = ()
    unified_mount: str | None = None


@dataclass(frozen=True)
class HostLimits:
    """This process's hard limits (None: unlimited) and whether it may raise them."""

    nofile_hard: int | None
    nproc_hard: int | None
    nr_open: int | None
    cap_sys_resource: bool
    root: bool
    podman_default_ulimits: tuple[str, ...] = ()  # default_ulimits from containers.conf


@dataclass(frozen=True)
class KernelSeccomp:
    """status_field: /proc/self/status has a Seccomp line; mode: prctl(PR_GET_SECCOMP)."""

    status_field: bool
    mode: int | None
    errno: int | None = None
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class LandlockStatus:
    """Landlock's ABI version, or the errno that says why it is unusable."""

    abi: int | None
    errno: int | None = None


@dataclass(frozen=True)
class UserNamespaces:
    """What decides whether user namespaces can be created here."""

    max_user_namespaces: int | None
    unprivileged_clone: (
        int | None
    )  # kernel.unprivileged_userns_clone (Debian/Ubuntu), None if absent
    apparmor_restrict: int | None  # kernel.apparmor_restrict_unprivileged_userns, None if absent
    probe: Run
    root: bool


@dataclass(frozen=True)
class KvmDevice:
    """Whether /dev/kvm exists and this user may open it."""

    exists: bool
    readable: bool
    writable: bool


@dataclass(frozen=True)
class VMProbe:
    """One run of the probe guest under an accelerator.

    outcome: "ok" (the guest finished), "timeout" (killed at the deadline),
    "error" (qemu refused or failed), "missing" (no qemu).
    progress: the stages the guest reported (see `PROBE_STAGES`).
    """

    accel: str
    outcome: str
    message: str = ""
    seconds: float = 0.0
    progress: str = ""
    kvm_enabled: bool | None = None
    binary: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class BackendChoice:
    """What `--backend auto` would pick, and why."""

    name: str | None
    reason: str


# -- subprocesses --------------------------------------------------------------


def run_bounded(
    argv: Sequence[str], *, timeout: float = PROBE_TIMEOUT, stdin: bytes | None = None
) -> Run:
    """Run argv in its own process group; kill the whole group at the deadline."""
    command = tuple(argv)
    executable = shutil.which(command[0]) if command else None
    if executable is None:
        return Run(command, None, missing=True)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            [executable, *command[1:]],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return Run(command, None, stderr=str(exc), missing=True)
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        try:
            out, err = process.communicate(timeout=2.0)
        except subprocess.TimeoutExpired:  # stuck in the kernel: give up rather than hang
            out, err = b"", b""
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        return Run(
            command,
            None,
            _text(out),
            _text(err),
            timed_out=True,
            seconds=time.monotonic() - started,
        )
    return Run(
        command,
        process.returncode,
        _text(out),
        _text(err),
        seconds=time.monotonic() - started,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")[-20000:]


# -- the VM probe guest --------------------------------------------------------

# A 64 KiB firmware image for `qemu -machine microvm -bios`. From the reset
# vector the vCPU goes real mode -> protected mode -> long mode with paging,
# spins 10 M times, clears 8 MiB, and leaves through isa-debug-exit (qemu exits
# with (0x31 << 1) | 1 = 99). It writes one letter per stage to the
# isa-debugcon port 0x402. A bare `query-kvm` is not enough: on hosts with
# broken nested virtualisation KVM initialises and runs real-mode code, then
# crawls (this machine: 10 M iterations take more than 8 s; TCG takes 0.05 s),
# which looks like a hung guest. Source (GNU as; `ld -Ttext=0`, objcopy -O binary):
#
#   BASE = 0xF0000            /* the last 64 KiB below 1 MiB alias the image */
#   .code16
#   start:  cli; mov $0x402,%dx; mov $'R',%al; out %al,%dx
#           lgdtl %cs:gdt_desc
#           mov %cr0,%eax; or $1,%eax; mov %eax,%cr0
#           ljmpl $0x08, $(BASE+pm32)
#   .code32
#   pm32:   mov $0x10,%ax; mov %ax,%ds; mov %ax,%es; mov %ax,%ss
#           mov $'P',%al; out %al,%dx
#           mov $0x1000,%edi; xor %eax,%eax; mov $3072,%ecx; rep stosl  /* 3 tables */
#           movl $0x2003,0x1000; movl $0x3003,0x2000   /* PML4 -> PDPT -> PD */
#           mov $0x3000,%edi; mov $0x83,%eax; mov $8,%ecx
#   3:      mov %eax,(%edi); add $0x200000,%eax; add $8,%edi; loop 3b  /* 16 MiB, 2 MiB pages */
#           mov %cr4,%eax; or $0x20,%eax; mov %eax,%cr4                 /* PAE */
#           mov $0x1000,%eax; mov %eax,%cr3
#           mov $0xC0000080,%ecx; rdmsr; or $0x100,%eax; wrmsr         /* EFER.LME */
#           mov %cr0,%eax; or $0x80000000,%eax; mov %eax,%cr0          /* paging */
#           ljmp $0x18, $(BASE+lm64)
#   .code64
#   lm64:   mov $0x402,%dx; mov $'L',%al; out %al,%dx
#           mov $10000000,%rcx
#   2:      dec %rcx; jnz 2b
#           mov $'C',%al; out %al,%dx
#           mov $0x200000,%rdi; mov $0x100000,%rcx; xor %rax,%rax; rep stosq
#           mov $'M',%al; out %al,%dx
#           mov $0xf4,%dx; mov $0x31,%al; out %al,%dx
#   1:      hlt; jmp 1b
#   .balign 8
#   gdt:    .quad 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00AF9A000000FFFF
#   gdt_end:
#   gdt_desc: .word gdt_end-gdt-1; .long BASE+gdt
#   .org 0xFFF0
#   .code16
#   reset:  ljmp $0xF000, $start
#   .org 0x10000
PROBE_CODE = bytes.fromhex(
    "faba0204b052ee2e660f0116f8000f20c06683c8010f22c066ea20000f00080066b810008ed88ec0"
    "8ed0b050eebf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000bf"
    "00300000b883000000b9080000008907050000200083c708e2f40f20e083c8200f22e0b800100000"
    "0f22d8b9800000c00f320d000100000f300f20c00d000000800f22c0ea9b000f00180066ba0204b0"
    "4cee48c7c18096980048ffc975fbb043ee48c7c70000200048c7c1000010004831c0f348abb04dee"
    "66baf400b031eef4ebfd8db4000066900000000000000000ffff0000009acf00ffff00000092cf00"
    "ffff0000009aaf001f00d8000f00"
)
PROBE_RESET = bytes.fromhex("ea0000" + "00f0")  # ljmp $0xF000, $0 at 0xFFF0
PROBE_EXIT_CODE = (0x31 << 1) | 1
PROBE_STAGES = {
    "R": "real mode",
    "P": "protected mode",
    "L": "long mode",
    "C": "a 10 M-iteration loop",
    "M": "an 8 MiB memory sweep",
}


def probe_firmware() -> bytes:
    image = bytearray(64 * 1024)
    image[: len(PROBE_CODE)] = PROBE_CODE
    image[0xFFF0 : 0xFFF0 + len(PROBE_RESET)] = PROBE_RESET
    return bytes(image)


def describe_progress(progress: str) -> str:
    stages = [PROBE_STAGES[c] for c in progress if c in PROBE_STAGES]
    return ", ".join(stages) if stages else "nothing (not even the first instruction)"


# -- the probes ----------------------------------------------------------------


class Probes:
    """The host I/O behind `diagnose`: each method answers one question and never raises."""

    def __init__(self, locations: Locations, *, timeout: float = PROBE_TIMEOUT) -> None:
        self.locations = locations
        self.timeout = timeout

    # engines

    def docker(self) -> EngineProbe:
        from harness.backends.docker import DockerBackend
        from harness.backends.engine_api import EngineAPI

        socket_path = DockerBackend(self.locations).socket_path
        client = shutil.which("docker")
        daemon = shutil.which("dockerd")
        info: dict[str, object] = {"dockerd": daemon}
        if not Path(socket_path).exists():
            problem = "down" if daemon else "missing"
            return EngineProbe(
                "docker",
                problem,
                f"no Docker engine socket at {socket_path}",
                client,
                socket_path,
                info=info,
            )
        if not os.access(socket_path, os.R_OK | os.W_OK):
            return EngineProbe(
                "docker",
                "denied",
                f"no permission on {socket_path} for uid {os.getuid()}",
                client,
                socket_path,
                info=info,
            )
        api = EngineAPI(socket_path, fix_command="dockerd", name="docker", timeout=self.timeout)
        try:
            version = api.request("GET", "/version").json() or {}
            details = api.request("GET", "/info").json() or {}
        except HarnessError as exc:
            problem = "down" if "not reachable" in str(exc) else "error"
            return EngineProbe("docker", problem, str(exc), client, socket_path, info=info)
        options = [str(o) for o in details.get("SecurityOptions") or []]
        info.update(
            {
                "hard_limits": _engine_limits(api),
                "security_options": options,
                "cgroup_version": details.get("CgroupVersion"),
                "cgroup_driver": details.get("CgroupDriver"),
                "default_runtime": details.get("DefaultRuntime"),
            }
        )
        return EngineProbe(
            "docker",
            None,
            client=client,
            endpoint=socket_path,
            version=_str_or_none(version.get("Version")),
            api_version=_str_or_none(version.get("ApiVersion")),
            seccomp=any(o.startswith("name=seccomp") for o in options),
            info=info,
        )

    def podman(self) -> EngineProbe:
        from harness.backends.engine_api import EngineAPI
        from harness.backends.podman_service import find_or_start

        client = shutil.which("podman")
        if client is None:
            return EngineProbe("podman", "missing", "podman is not installed")
        cli = run_bounded([client, "version", "--format", "json"], timeout=self.timeout)
        client_version = None
        if cli.ok:
            try:
                client_version = _str_or_none(json.loads(cli.stdout)["Client"]["Version"])
            except (ValueError, KeyError, TypeError):
                client_version = None
        try:
            service = find_or_start(self.locations)
        except HarnessError as exc:
            return EngineProbe("podman", "down", str(exc), client, client_version=client_version)
        api = EngineAPI(
            service.socket_path,
            fix_command="podman system service",
            name="podman",
            timeout=self.timeout,
        )
        try:
            version = api.request("GET", "/version").json() or {}
            details = api.request("GET", "/v4.0.0/libpod/info").json() or {}
        except HarnessError as exc:
            return EngineProbe(
                "podman",
                "error",
                str(exc),
                client,
                service.socket_path,
                client_version=client_version,
                started_by_harness=service.started_by_harness,
            )
        host = _mapping(details, "host")
        security = _mapping(host, "security")
        runtime = _mapping(host, "ociRuntime")
        seccomp = security.get("seccompEnabled")
        return EngineProbe(
            "podman",
            None,
            client=client,
            endpoint=service.socket_path,
            version=_str_or_none(version.get("Version")),
            api_version=_str_or_none(version.get("ApiVersion")),
            client_version=client_version,
            seccomp=seccomp if isinstance(seccomp, bool) else None,
            started_by_harness=service.started_by_harness,
            info={
                "hard_limits": _engine_limits(api),
                "rootless": security.get("rootless"),
                "cgroup_version": host.get("cgroupVersion"),
                "oci_runtime": runtime.get("name"),
                "service_pid": service.process.pid if service.process else None,
            },
        )

    def podman_runtime(self) -> PodmanRuntime:
        crun, runc = shutil.which("crun"), shutil.which("runc")
        podman = shutil.which("podman")
        root = os.geteuid() == 0
        if podman is None:
            return PodmanRuntime(None, crun, runc, not root, "podman is not installed")
        run = run_bounded([podman, "info", "--format", "json"], timeout=self.timeout)
        if not run.ok:
            reason = "timed out" if run.timed_out else run.summary()
            return PodmanRuntime(None, crun, runc, not root, f"`podman info` failed: {reason}")
        try:
            data = json.loads(run.stdout)
            default = _str_or_none(data["host"]["ociRuntime"]["name"])
            rootless = bool(data["host"]["security"]["rootless"])
        except (ValueError, KeyError, TypeError):
            return PodmanRuntime(
                None, crun, runc, not root, "`podman info` said something unexpected"
            )
        return PodmanRuntime(default, crun, runc, rootless)

    def choose(self) -> BackendChoice:
        from harness.backends.registry import choose_backend

        try:
            choice = choose_backend("auto", self.locations)
        except HarnessError as exc:
            return BackendChoice(None, str(exc))
        except ImportError as exc:  # a backend module that cannot load is a harness bug: say so
            return BackendChoice(None, f"a backend module failed to import: {exc}")
        return BackendChoice(choice.backend.name, choice.reason)

    # kernel and host

    def cgroup_layout(self) -> CgroupLayout:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
        v1: list[str] = []
        unified: str | None = None
        for line in mountinfo.splitlines():
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            mount_point, fstype, options = fields[4], tail[0], tail[2]
            if fstype == "cgroup2":
                if unified is None or mount_point == "/sys/fs/cgroup":
                    unified = mount_point
            elif fstype == "cgroup":
                names = [o for o in options.split(",") if o not in ("rw", "ro")]
                v1.extend(n for n in names if "=" not in n and n not in v1)
        if unified == "/sys/fs/cgroup" or (
            not v1 and Path("/sys/fs/cgroup/cgroup.controllers").exists()
        ):
            return CgroupLayout("v2", (), "/sys/fs/cgroup")
        if v1 and unified:
            return CgroupLayout("hybrid", tuple(v1), unified)
        if v1:
            return CgroupLayout("v1", tuple(v1), None)
        return CgroupLayout("none")

    def host_limits(self) -> HostLimits:
        def hard(kind: int) -> int | None:
            value = resource.getrlimit(kind)[1]
            return None if value == resource.RLIM_INFINITY else value

        return HostLimits(
            nofile_hard=hard(resource.RLIMIT_NOFILE),
            nproc_hard=hard(resource.RLIMIT_NPROC),
            nr_open=_read_int(Path("/proc/sys/fs/nr_open")),
            cap_sys_resource=_has_capability(CAP_SYS_RESOURCE),
            root=os.geteuid() == 0,
            podman_default_ulimits=_podman_default_ulimits(),
        )

    def kernel_seccomp(self) -> KernelSeccomp:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            status = ""
        has_field = any(line.startswith("Seccomp:") for line in status.splitlines())
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        prctl.restype = ctypes.c_int
        mode = prctl(
            ctypes.c_int(PR_GET_SECCOMP),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        failure = ctypes.get_errno() if mode < 0 else None
        try:
            actions = tuple(Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split())
        except OSError:
            actions = ()
        return KernelSeccomp(has_field, None if mode < 0 else int(mode), failure, actions)

    def landlock(self) -> LandlockStatus:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        abi = syscall(
            ctypes.c_long(LANDLOCK_CREATE_RULESET),
            ctypes.c_void_p(None),
            ctypes.c_size_t(0),
            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
        )
        if abi < 0:
            return LandlockStatus(None, ctypes.get_errno())
        return LandlockStatus(int(abi))

    def user_namespaces(self) -> UserNamespaces:
        return UserNamespaces(
            max_user_namespaces=_read_int(Path("/proc/sys/user/max_user_namespaces")),
            unprivileged_clone=_read_int(Path("/proc/sys/kernel/unprivileged_userns_clone")),
            apparmor_restrict=_read_int(
                Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            ),
            probe=run_bounded(
                ["unshare", "--user", "--map-root-user", "true"], timeout=self.timeout
            ),
            root=os.geteuid() == 0,
        )

    def bubblewrap(self) -> Run:
        return run_bounded(["bwrap", "--ro-bind", "/", "/", "true"], timeout=self.timeout)

    def which(self, program: str) -> str | None:
        return shutil.which(program)

    def qemu_version(self) -> str | None:
        run = run_bounded(["qemu-system-x86_64", "--version"], timeout=self.timeout)
        first = run.stdout.strip().splitlines()
        return first[0] if run.ok and first else None

    def kvm_device(self) -> KvmDevice:
        path = "/dev/kvm"
        exists = Path(path).exists()
        return KvmDevice(
            exists, exists and os.access(path, os.R_OK), exists and os.access(path, os.W_OK)
        )

    def vm(self, accel: str) -> VMProbe:
        """Boot the probe guest under `accel` ("kvm" or "tcg") with a hard deadline."""
        binary = shutil.which("qemu-system-x86_64")
        if binary is None:
            return VMProbe(accel, "missing", "qemu-system-x86_64 is not installed")
        if platform.machine() not in ("x86_64", "AMD64"):
            return VMProbe(
                accel,
                "error",
                f"the probe guest is x86_64 code; this host is {platform.machine()}",
                binary=binary,
            )
        with tempfile.TemporaryDirectory(prefix="harness-doctor-") as scratch:
            firmware = Path(scratch) / "probe.bin"
            firmware.write_bytes(probe_firmware())
            progress_file = Path(scratch) / "progress"
            argv = [
                binary,
                "-accel", accel,
                "-machine", "microvm",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-m", "32",
                "-bios", str(firmware),
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-chardev", f"file,id=progress,path={progress_file}",
                "-device", "isa-debugcon,iobase=0x402,chardev=progress",
                "-S", "-qmp", "stdio",
            ]  # fmt: skip
            qmp = (
                b'{"execute": "qmp_capabilities"}\n{"execute": "query-kvm"}\n{"execute": "cont"}\n'
            )
            run = run_bounded(argv, timeout=self.timeout, stdin=qmp)
            try:
                progress = progress_file.read_text("latin-1")
            except OSError:
                progress = ""
        kvm_enabled = _query_kvm(run.stdout)
        if run.timed_out:
            return VMProbe(
                accel,
                "timeout",
                f"killed after {self.timeout:g} s",
                run.seconds,
                progress,
                kvm_enabled,
                binary,
            )
        if run.returncode == PROBE_EXIT_CODE:
            return VMProbe(accel, "ok", "", run.seconds, progress, kvm_enabled, binary)
        said = [line for line in run.stderr.splitlines() if line.strip() and "warning:" not in line]
        message = said[-1][:300] if said else f"qemu exited with code {run.returncode}"
        return VMProbe(accel, "error", message, run.seconds, progress, kvm_enabled, binary)

    def has_systemd(self) -> bool:
        return Path("/run/systemd/system").is_dir()


def _engine_limits(api: EngineAPI) -> dict[str, int]:
    """The engine process's hard nofile/nproc: the runtime it starts cannot set more."""
    from harness.backends.engine import read_hard_limits

    pid = api.peer_pid()
    return {} if pid is None else read_hard_limits(pid)


def _mapping(data: object, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _has_capability(bit: int) -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _podman_default_ulimits() -> tuple[str, ...]:
    files = [*CONTAINERS_CONF_FILES]
    if CONTAINERS_CONF_DIR.is_dir():
        files += sorted(CONTAINERS_CONF_DIR.glob("*.conf"))
    found: tuple[str, ...] = ()
    for path in files:  # later files override earlier ones, as in podman
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, ValueError):
            continue
        containers = data.get("containers")
        if isinstance(containers, dict) and isinstance(containers.get("default_ulimits"), list):
            found = tuple(str(u) for u in containers["default_ulimits"])
    return found


def _query_kvm(output: str) -> bool | None:
    for line in output.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        answer = message.get("return") if isinstance(message, dict) else None
        if isinstance(answer, dict) and "enabled" in answer and "present" in answer:
            return bool(answer["enabled"])
    return None


# -- from facts to checks ------------------------------------------------------


def _docker_fix(probe: EngineProbe, systemd: bool) -> str:
    start = "systemctl start docker" if systemd else "dockerd > /var/log/dockerd.log 2>&1 &"
    if probe.problem == "missing":
        return f"apt-get install docker.io && {start}"
    if probe.problem == "denied":
        return 'usermod -aG docker "$USER"  (then log in again)'
    if probe.problem == "error":
        return "systemctl restart docker" if systemd else f"pkill -x dockerd; {start}"
    return start


def docker_check(probe: EngineProbe, systemd: bool) -> Check:
    data: dict[str, object] = {
        "problem": probe.problem,
        "endpoint": probe.endpoint,
        "client": probe.client,
        "version": probe.version,
        "api_version": probe.api_version,
        "seccomp": probe.seccomp,
        **probe.info,
    }
    if probe.usable:
        return Check(
            "docker",
            True,
            f"Docker Engine {probe.version} (API {probe.api_version}) answers at {probe.endpoint}",
            data=data,
        )
    what = {
        "missing": "Docker is not installed",
        "down": "Docker is installed but its engine is not running",
        "denied": "the Docker engine socket is not open to you",
        "error": "the Docker engine does not answer properly",
    }.get(probe.problem or "", "Docker is not usable")
    return Check("docker", False, f"{what}: {probe.error}", _docker_fix(probe, systemd), data)


def podman_check(probe: EngineProbe) -> Check:
    data: dict[str, object] = {
        "problem": probe.problem,
        "endpoint": probe.endpoint,
        "client": probe.client,
        "version": probe.version,
        "client_version": probe.client_version,
        "api_version": probe.api_version,
        "seccomp": probe.seccomp,
        "started_by_harness": probe.started_by_harness,
        **probe.info,
    }
    if probe.usable:
        how = (
            "a private API service harness started (it exits after 10 idle minutes)"
            if probe.started_by_harness
            else "its API service"
        )
        return Check(
            "podman",
            True,
            f"Podman {probe.version} answers at {probe.endpoint}, {how}",
            data=data,
        )
    if probe.problem == "missing":
        return Check(
            "podman", False, "Podman is not installed", "apt-get install podman runc", data
        )
    return Check(
        "podman",
        False,
        f"Podman is installed but its API service does not answer: {probe.error}",
        "podman info  (shows why podman cannot start; fix what it names, then run harness doctor again)",
        data,
    )


def seccomp_check(kernel: KernelSeccomp) -> Check:
    data: dict[str, object] = {
        "status_field": kernel.status_field,
        "mode": kernel.mode,
        "errno": kernel.errno,
        "actions": list(kernel.actions),
    }
    filters = not kernel.actions or "errno" in kernel.actions
    if kernel.status_field and kernel.mode is not None and filters:
        mode = {0: "this process is not filtered", 2: "this process already runs under a filter"}
        actions = f"; actions: {' '.join(kernel.actions)}" if kernel.actions else ""
        return Check(
            "seccomp",
            True,
            f"the kernel has seccomp filters ({mode.get(kernel.mode, f'mode {kernel.mode}')}{actions})",
            data=data,
        )
    reason = (
        f"prctl(PR_GET_SECCOMP) failed ({errno.errorcode.get(kernel.errno or 0, kernel.errno)})"
        if kernel.mode is None
        else "no seccomp filter support"
    )
    return Check(
        "seccomp",
        False,
        f"the kernel has no usable seccomp: {reason}; harness cannot confine syscalls",
        'apt-get install "linux-image-$(dpkg --print-architecture)" && reboot  '
        "(a kernel with CONFIG_SECCOMP_FILTER=y)",
        data,
    )


def engine_seccomp_check(engines: Sequence[EngineProbe]) -> Check:
    usable = [e for e in engines if e.usable]
    data: dict[str, object] = {e.name: e.seccomp for e in usable}
    lacking = [e.name for e in usable if e.seccomp is False]
    if not usable:
        return Check(
            "engine-seccomp", False, "no engine answered, so none could be asked", None, data
        )
    if lacking:
        fixes = {
            "docker": "apt-get install --reinstall docker.io libseccomp2",
            "podman": "apt-get install --reinstall podman libseccomp2",
        }
        return Check(
            "engine-seccomp",
            False,
            f"{', '.join(lacking)} reports no seccomp support: harness's profiles would not apply",
            " && ".join(fixes[name] for name in lacking),
            data,
        )
    said = ", ".join(f"{e.name}: {'yes' if e.seccomp else 'not reported'}" for e in usable)
    return Check("engine-seccomp", True, f"engines apply seccomp profiles ({said})", data=data)


def cgroup_check(layout: CgroupLayout) -> Check:
    data: dict[str, object] = {
        "version": layout.version,
        "v1_controllers": list(layout.v1_controllers),
        "unified_mount": layout.unified_mount,
    }
    controllers = ", ".join(layout.v1_controllers)
    detail = {
        "v2": "cgroup v2 (unified) at /sys/fs/cgroup",
        "hybrid": f"hybrid: cgroup v1 controllers ({controllers}) and cgroup2 at {layout.unified_mount}",
        "v1": f"cgroup v1 controllers ({controllers})",
    }.get(layout.version)
    if detail is None:
        return Check(
            "cgroups",
            False,
            "no cgroup filesystem is mounted: engines cannot set pids, memory or cpu limits",
            "mount -t cgroup2 none /sys/fs/cgroup",
            data,
        )
    return Check("cgroups", True, detail, data=data)


def podman_runtime_check(runtime: PodmanRuntime, layout: CgroupLayout) -> Check:
    data: dict[str, object] = {
        "default": runtime.default,
        "crun": runtime.crun,
        "runc": runtime.runc,
        "cgroup_layout": layout.version,
        "error": runtime.error,
    }
    crun_state = "crun is installed" if runtime.crun else "crun is not installed"
    if runtime.default is None:
        return Check(
            "podman-runtime",
            False,
            f"podman's default OCI runtime is unknown: {runtime.error}",
            "podman info  (shows what is wrong with podman's configuration)",
            data,
        )
    if layout.version == "v2":
        return Check(
            "podman-runtime",
            True,
            f"podman's default OCI runtime is {runtime.default} ({crun_state}); on cgroup v2 crun and runc both work",
            data=data,
        )
    note = (
        "harness sets runc and ulimits per container; "
        'for your own podman use set runtime = "runc" in /etc/containers/containers.conf'
    )
    if runtime.runc is None:
        return Check(
            "podman-runtime",
            False,
            f"podman's default OCI runtime is {runtime.default} and runc is not installed; "
            f"crun fails on this {layout.version} cgroup layout, harness needs runc here",
            "apt-get install runc",
            data,
        )
    if runtime.default == "crun":
        return Check(
            "podman-runtime",
            False,
            f"podman's default OCI runtime is crun, which fails on this {layout.version} cgroup layout; "
            "harness runs its podman containers with runc",
            note,
            data,
        )
    return Check(
        "podman-runtime",
        True,
        f"podman's default OCI runtime is {runtime.default} ({crun_state}), which works on this "
        f"{layout.version} cgroup layout; harness names runc per container here",
        data=data,
    )


def podman_ulimits_check(
    limits: HostLimits, runtime: PodmanRuntime, engine_limits: Mapping[str, int] | None = None
) -> Check:
    """Whether a plain rootful `podman run` can get podman's default nofile/nproc here.

    Without CAP_SYS_RESOURCE the OCI runtime cannot go above the hard limits it
    inherits: this process's, lowered further by the podman process itself
    (`engine_limits`, read from /proc/PID/limits of the API service).
    """
    engine = dict(engine_limits or {})

    def ceiling(name: str, host: int | None) -> int | None:
        values = [v for v in (host, engine.get(name)) if v is not None]
        return min(values) if values else None

    def shown(value: int | None) -> str:
        return "unlimited" if value is None else str(value)

    ceilings = {
        "nofile": ceiling("nofile", limits.nofile_hard),
        "nproc": ceiling("nproc", limits.nproc_hard),
    }
    data: dict[str, object] = {
        "podman_default": PODMAN_DEFAULT_RLIMIT,
        "nofile_hard": limits.nofile_hard,
        "nproc_hard": limits.nproc_hard,
        "engine_hard": engine,
        "ceiling": ceilings,
        "nr_open": limits.nr_open,
        "cap_sys_resource": limits.cap_sys_resource,
        "configured": list(limits.podman_default_ulimits),
    }
    if runtime.rootless:
        return Check(
            "podman-ulimits",
            True,
            "rootless podman keeps containers within your own limits",
            data=data,
        )

    def fits(name: str, wanted: int) -> bool:
        top = ceilings[name]
        if name == "nofile" and limits.nr_open is not None and wanted > limits.nr_open:
            return False
        return top is None or wanted <= top or limits.cap_sys_resource

    hard = f"hard nofile {shown(limits.nofile_hard)}, nproc {shown(limits.nproc_hard)}"
    if engine:
        hard += (
            f"; the podman process itself: nofile {shown(engine.get('nofile'))}, "
            f"nproc {shown(engine.get('nproc'))}"
        )
    if not limits.cap_sys_resource:
        hard += "; no CAP_SYS_RESOURCE"
    if fits("nofile", PODMAN_DEFAULT_RLIMIT) and fits("nproc", PODMAN_DEFAULT_RLIMIT):
        return Check(
            "podman-ulimits",
            True,
            f"podman's default nofile/nproc ({PODMAN_DEFAULT_RLIMIT}) fit within what this host allows ({hard})",
            data=data,
        )
    configured = _configured_ulimits(limits.podman_default_ulimits)
    if {"nofile", "nproc"} <= set(configured) and all(
        fits(name, value) for name, value in configured.items() if name in ceilings
    ):
        return Check(
            "podman-ulimits",
            True,
            f"this host cannot give podman's default nofile/nproc ({hard}); containers.conf sets "
            f"default_ulimits ({', '.join(limits.podman_default_ulimits)}) within it, and harness "
            "sets ulimits per container",
            data=data,
        )
    settings = ", ".join(
        f'"{name}={value}:{value}"'
        for name, value in (
            ("nofile", ceilings["nofile"] or PODMAN_DEFAULT_RLIMIT),
            ("nproc", ceilings["nproc"] or PODMAN_DEFAULT_RLIMIT),
        )
    )
    return Check(
        "podman-ulimits",
        False,
        f"podman asks for nofile/nproc {PODMAN_DEFAULT_RLIMIT} but this host allows less ({hard}): "
        "a plain `podman run` fails with 'error setting rlimit'; harness sets ulimits within "
        "these limits per container",
        "harness sets runc and ulimits per container; for your own podman add "
        f"default_ulimits = [{settings}] under [containers] in /etc/containers/containers.conf",
        data,
    )


def _configured_ulimits(entries: Sequence[str]) -> dict[str, int]:
    """{"nofile": hard, ...} from containers.conf entries like "nofile=20000:20000"."""
    found: dict[str, int] = {}
    for entry in entries:
        name, _, values = entry.partition("=")
        hard = values.rpartition(":")[2] if ":" in values else values
        try:
            number = int(hard)
        except ValueError:
            continue
        found[name.strip()] = max(number, 0)  # -1: podman's own maximum, which always fits
    return found


def landlock_check(status: LandlockStatus) -> Check:
    data: dict[str, object] = {"abi": status.abi, "errno": status.errno}
    if status.abi is not None and status.abi >= 1:
        return Check("landlock", True, f"Landlock ABI {status.abi}", data=data)
    if status.errno == errno.EOPNOTSUPP:
        return Check(
            "landlock",
            False,
            "the kernel has Landlock but it is not enabled: the native backend cannot restrict files",
            'add landlock to the lsm= kernel parameter (e.g. GRUB_CMDLINE_LINUX="lsm=landlock,lockdown,yama,integrity,apparmor" '
            "in /etc/default/grub), then update-grub && reboot",
            data,
        )
    name = errno.errorcode.get(status.errno or 0, str(status.errno))
    return Check(
        "landlock",
        False,
        f"no Landlock ({name}): the native backend cannot restrict files; containers and VMs are unaffected",
        'apt-get install "linux-image-$(dpkg --print-architecture)" && reboot  '
        "(Linux >= 5.13 with CONFIG_SECURITY_LANDLOCK=y)",
        data,
    )


def userns_check(userns: UserNamespaces) -> Check:
    data: dict[str, object] = {
        "max_user_namespaces": userns.max_user_namespaces,
        "unprivileged_userns_clone": userns.unprivileged_clone,
        "apparmor_restrict_unprivileged_userns": userns.apparmor_restrict,
        "probe": userns.probe.to_json(),
        "root": userns.root,
    }
    fixes: list[str] = []
    problems: list[str] = []
    unprivileged: list[str] = []
    if userns.max_user_namespaces == 0:
        problems.append("user.max_user_namespaces is 0")
        fixes.append("sysctl -w user.max_user_namespaces=15000")
    if userns.unprivileged_clone == 0:
        (unprivileged if userns.root else problems).append("kernel.unprivileged_userns_clone is 0")
        fixes.append("sysctl -w kernel.unprivileged_userns_clone=1")
    if userns.apparmor_restrict == 1:
        (unprivileged if userns.root else problems).append(
            "kernel.apparmor_restrict_unprivileged_userns is 1"
        )
        fixes.append("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    probe = userns.probe
    if probe.missing:
        problems.append("unshare is not installed")
        fixes.append("apt-get install util-linux")
    elif probe.timed_out:
        problems.append(
            f"`unshare --user --map-root-user true` did not finish in {probe.seconds:.0f} s"
        )
    elif not probe.ok:
        problems.append(f"`unshare --user --map-root-user true` failed: {probe.summary()}")
    if problems:
        return Check(
            "userns",
            False,
            "user namespaces are not usable: " + "; ".join(problems),
            " && ".join(fixes)
            if fixes
            else "sysctl -a 2>/dev/null | grep userns  (look for the switch that blocks them)",
            data,
        )
    detail = "user namespaces work (`unshare --user --map-root-user true` succeeded)"
    if unprivileged:
        detail += (
            f"; as root only: {', '.join(unprivileged)}, so rootless podman and bubblewrap "
            f"for other users fail (`{' && '.join(fixes)}` allows them)"
        )
    return Check("userns", True, detail, data=data)


def bubblewrap_check(run: Run, userns: Check) -> Check:
    data: dict[str, object] = {"probe": run.to_json()}
    if run.missing:
        return Check(
            "bubblewrap",
            False,
            "bubblewrap (bwrap) is not installed",
            "apt-get install bubblewrap",
            data,
        )
    if run.ok:
        return Check("bubblewrap", True, "`bwrap --ro-bind / / true` works", data=data)
    why = f"timed out after {run.seconds:.0f} s" if run.timed_out else run.summary()
    fix = userns.fix if not userns.ok and userns.fix else "apt-get install --reinstall bubblewrap"
    return Check("bubblewrap", False, f"`bwrap --ro-bind / / true` failed: {why}", fix, data)


def qemu_check(binary: str | None, version: str | None) -> Check:
    data: dict[str, object] = {"binary": binary, "version": version}
    if binary is None:
        return Check(
            "qemu",
            False,
            "qemu-system-x86_64 is not installed: the VM backend cannot run",
            "apt-get install qemu-system-x86",
            data,
        )
    return Check("qemu", True, f"{version or 'qemu'} at {binary}", data=data)


def kvm_check(device: KvmDevice, probe: VMProbe | None, tcg: VMProbe) -> Check:
    data: dict[str, object] = {
        "device": device.exists,
        "readable": device.readable,
        "writable": device.writable,
    }
    if probe is not None:
        data.update(
            {
                "outcome": probe.outcome,
                "seconds": round(probe.seconds, 3),
                "progress": probe.progress,
                "kvm_enabled": probe.kvm_enabled,
                "message": probe.message,
            }
        )
    fallback = "the VM backend will use TCG" if tcg.ok else "and TCG does not work either (see tcg)"
    if not device.exists:
        return Check(
            "kvm",
            False,
            f"no /dev/kvm: {fallback}",
            "modprobe kvm_intel || modprobe kvm_amd  (and enable VT-x/AMD-V, or nested virtualisation, for this machine)",
            data,
        )
    if not (device.readable and device.writable):
        return Check(
            "kvm",
            False,
            f"/dev/kvm is not readable and writable for you: {fallback}",
            'usermod -aG kvm "$USER"  (then log in again)',
            data,
        )
    if probe is None or probe.outcome == "missing":
        return Check(
            "kvm",
            False,
            "/dev/kvm exists but qemu is not installed to use it",
            "apt-get install qemu-system-x86",
            data,
        )
    if probe.ok:
        return Check(
            "kvm",
            True,
            f"KVM works: the probe guest ran {describe_progress(probe.progress)} in {probe.seconds:.2f} s",
            data=data,
        )
    if probe.outcome == "timeout":
        return Check(
            "kvm",
            False,
            f"KVM unusable (probe timed out), {fallback}; the guest got through "
            f"{describe_progress(probe.progress)} before it was killed after {probe.seconds:.1f} s",
            "nothing to run here: KVM initialises but guests crawl (typically broken nested "
            "virtualisation); run on a host with working VT-x/AMD-V to use KVM",
            data,
        )
    return Check(
        "kvm",
        False,
        f"KVM unusable ({probe.message}), {fallback}",
        "dmesg | grep -i kvm  (the kernel says why KVM refuses)",
        data,
    )


def tcg_check(probe: VMProbe) -> Check:
    data: dict[str, object] = {
        "outcome": probe.outcome,
        "seconds": round(probe.seconds, 3),
        "progress": probe.progress,
        "message": probe.message,
    }
    if probe.ok:
        return Check(
            "tcg",
            True,
            f"TCG (software emulation) works: the probe guest ran {describe_progress(probe.progress)} in {probe.seconds:.2f} s",
            data=data,
        )
    if probe.outcome == "missing":
        return Check(
            "tcg",
            False,
            "qemu-system-x86_64 is not installed",
            "apt-get install qemu-system-x86",
            data,
        )
    why = "timed out" if probe.outcome == "timeout" else probe.message
    return Check(
        "tcg",
        False,
        f"TCG does not work ({why}); the guest got through {describe_progress(probe.progress)}",
        "apt-get install --reinstall qemu-system-x86",
        data,
    )


def debootstrap_check(path: str | None) -> Check:
    data: dict[str, object] = {"binary": path}
    if path is None:
        return Check(
            "debootstrap",
            False,
            "debootstrap is not installed: `harness image build` cannot build the base image offline",
            "apt-get install debootstrap",
            data,
        )
    return Check(
        "debootstrap", True, f"debootstrap at {path}: offline image builds work", data=data
    )


# -- putting it together -------------------------------------------------------


def diagnose(locations: Locations, *, probes: Probes | None = None) -> DoctorReport:
    """Probe the host (in parallel, every probe bounded) and judge what harness can use."""
    host = probes if probes is not None else Probes(locations)

    def podman_then_choice() -> tuple[EngineProbe, BackendChoice]:
        # podman first: choose() then reuses the API service the podman probe found or started
        return host.podman(), host.choose()

    with ThreadPoolExecutor(max_workers=9, thread_name_prefix="harness-doctor") as pool:
        engines_future = pool.submit(podman_then_choice)
        docker_future = pool.submit(host.docker)
        kvm_future = pool.submit(host.vm, "kvm")
        tcg_future = pool.submit(host.vm, "tcg")
        runtime_future = pool.submit(host.podman_runtime)
        userns_future = pool.submit(host.user_namespaces)
        bwrap_future = pool.submit(host.bubblewrap)
        qemu_version_future = pool.submit(host.qemu_version)
        # the quick ones, on this thread meanwhile
        layout = _guarded(host.cgroup_layout)
        limits = _guarded(host.host_limits)
        seccomp = _guarded(host.kernel_seccomp)
        landlock = _guarded(host.landlock)
        kvm_device = _guarded(host.kvm_device)
        systemd = _guarded(host.has_systemd) is True
        qemu = _guarded(lambda: host.which("qemu-system-x86_64"))
        debootstrap = _guarded(lambda: host.which("debootstrap"))
        podman_installed = isinstance(_guarded(lambda: host.which("podman")), str)
        engines = _result(engines_future)
        docker = _result(docker_future)
        kvm = _result(kvm_future)
        tcg = _result(tcg_future)
        runtime = _result(runtime_future)
        userns = _result(userns_future)
        bwrap = _result(bwrap_future)
        qemu_version = _result(qemu_version_future)

    if isinstance(engines, BaseException):
        podman: EngineProbe | BaseException = engines
        choice = BackendChoice(None, f"could not decide: {engines}")
    else:
        podman, choice = engines
    checks = [
        _build("docker", lambda: docker_check(_ok(docker), systemd)),
        _build("podman", lambda: podman_check(_ok(podman))),
        _build("seccomp", lambda: seccomp_check(_ok(seccomp))),
        _build(
            "engine-seccomp",
            lambda: engine_seccomp_check(
                [p for p in (docker, podman) if isinstance(p, EngineProbe)]
            ),
        ),
        _build("cgroups", lambda: cgroup_check(_ok(layout))),
    ]
    if podman_installed:
        checks += [
            _build("podman-runtime", lambda: podman_runtime_check(_ok(runtime), _ok(layout))),
            _build(
                "podman-ulimits",
                lambda: podman_ulimits_check(_ok(limits), _ok(runtime), _hard_limits(podman)),
            ),
        ]
    userns_verdict = _build("userns", lambda: userns_check(_ok(userns)))
    checks += [
        _build("landlock", lambda: landlock_check(_ok(landlock))),
        userns_verdict,
        _build("bubblewrap", lambda: bubblewrap_check(_ok(bwrap), userns_verdict)),
        _build(
            "qemu",
            lambda: qemu_check(
                qemu if isinstance(qemu, str) else None,
                qemu_version if isinstance(qemu_version, str) else None,
            ),
        ),
        _build("kvm", lambda: kvm_check(_ok(kvm_device), _ok(kvm), _ok(tcg))),
        _build("tcg", lambda: tcg_check(_ok(tcg))),
        _build(
            "debootstrap",
            lambda: debootstrap_check(debootstrap if isinstance(debootstrap, str) else None),
        ),
    ]
    return DoctorReport(tuple(checks), choice.name, choice.reason)


def _hard_limits(engine: EngineProbe | BaseException) -> dict[str, int]:
    found = engine.info.get("hard_limits") if isinstance(engine, EngineProbe) else None
    if not isinstance(found, dict):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, int)}


class _ProbeFailed(Exception):
    """A probe raised: the check that needed it fails with the exception's text."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")


def _guarded(probe: Callable[[], T]) -> T | BaseException:
    try:
        return probe()
    except Exception as exc:  # doctor reports a broken probe; it does not crash
        return exc


def _result(future: Future[T]) -> T | BaseException:
    try:
        return future.result()
    except Exception as exc:
        return exc


def _ok(value: T | BaseException) -> T:
    if isinstance(value, BaseException):
        raise _ProbeFailed(value)
    return value


def _build(name: str, make: Callable[[], Check]) -> Check:
    try:
        return make()
    except _ProbeFailed as exc:
        return Check(name, False, f"the probe failed: {exc}", None, {"error": str(exc)})


def report_json(report: DoctorReport) -> str:
    """The `--json` text of a report."""
    return json.dumps(report.to_json(), indent=2, sort_keys=False)


__all__ = [
    "Check",
    "DoctorReport",
    "Probes",
    "diagnose",
    "report_json",
]
