"""SandboxPlan: what the sandbox is, as one frozen value every backend renders.

`build_plan` is a pure function of (mode, permissions, workspace). Backends
never decide policy; they turn this value into engine arguments, and the
integration tests prove the kernel enforces it.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from harness.policy.envpolicy import EnvPolicy
from harness.policy.modes import FilesystemAccess, NetworkMode, SandboxMode
from harness.policy.rules import FilesystemRule, NetworkRule

GIB = 1024**3
MIB = 1024**2

# Inside a writable workspace these stay read-only: each is executed or read
# by tools on the host later (git hooks and config, direnv, editors, agents).
ALWAYS_PROTECTED = (".git/hooks", ".git/config", ".harness")
PROTECTED_WHEN_PRESENT = (".envrc", ".vscode", ".idea", ".mcp.json", ".gitmodules")

GUEST_HOME = "/home/harness"


class Access(enum.Enum):
    READ_ONLY = "ro"
    READ_WRITE = "rw"


@dataclass(frozen=True)
class Limits:
    """Resource limits; the defaults bound a fork bomb and a runaway allocation."""

    pids: int = 2048
    memory_bytes: int = 4 * GIB
    cpus: float = float(os.cpu_count() or 1)

    def __post_init__(self) -> None:
        if self.pids < 16 or self.memory_bytes < 16 * MIB or self.cpus <= 0:
            raise ValueError(f"limits too small to start anything: {self}")


@dataclass(frozen=True)
class Mount:
    """A host path bound into the sandbox."""

    host_path: str
    guest_path: str
    access: Access

    def __post_init__(self) -> None:
        for path in (self.host_path, self.guest_path):
            if not PurePosixPath(path).is_absolute():
                raise ValueError(f"mount paths must be absolute: {path!r}")


@dataclass(frozen=True)
class Tmpfs:
    """A memory-backed directory that never reaches the host."""

    guest_path: str
    size_bytes: int
    mode: int = 0o1777


@dataclass(frozen=True)
class NetworkPlan:
    """What the sandbox may reach: nothing, the allowlist through the proxy, or everything."""

    mode: NetworkMode
    rules: tuple[NetworkRule, ...] = ()


@dataclass(frozen=True)
class Permissions:
    """The permission profile: everything besides the mode that shapes the plan."""

    filesystem: tuple[FilesystemRule, ...] = ()
    network: NetworkMode = NetworkMode.NONE
    network_rules: tuple[NetworkRule, ...] = ()
    limits: Limits = field(default_factory=Limits)
    env: EnvPolicy = field(default_factory=EnvPolicy)
    protected_paths: tuple[str, ...] = ()
    user: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class SandboxPlan:
    """The sandbox as data.

    Attributes:
        mounts: host paths bound in, workspace first; later entries win on overlap.
        protected: subpaths of the workspace kept read-only; those in `protected_always`
            must not be creatable either, the others are protected when they exist.
        hidden: host paths the sandbox must not see at all (`access = "none"`).
        tmpfs: writable memory-backed directories.
        read_only_root: the image's root filesystem is mounted read-only.
        seccomp_profile: name of the file in `seccomp/` (without .json).
        cap_drop_all / cap_add: capabilities.
        user: uid, gid the command runs as (the invoking user's, so files keep their owner).
    """

    mode: SandboxMode
    workspace: str
    mounts: tuple[Mount, ...]
    protected: tuple[str, ...]
    protected_always: tuple[str, ...]
    hidden: tuple[str, ...]
    tmpfs: tuple[Tmpfs, ...]
    read_only_root: bool
    network: NetworkPlan
    seccomp_profile: str
    cap_drop_all: bool
    cap_add: tuple[str, ...]
    no_new_privileges: bool
    limits: Limits
    env: EnvPolicy
    user: tuple[int, int]
    workdir: str
    home: str = GUEST_HOME

    def __post_init__(self) -> None:
        restricted = self.mode is not SandboxMode.DANGER_FULL_ACCESS
        if restricted and not (
            self.cap_drop_all and self.no_new_privileges and self.read_only_root
        ):
            raise ValueError(
                f"{self.mode.value} requires dropped capabilities and a read-only root"
            )
        workspace_mount = self.mounts[0] if self.mounts else None
        if workspace_mount is None or workspace_mount.host_path != self.workspace:
            raise ValueError("the workspace must be the first mount")

    @property
    def workspace_writable(self) -> bool:
        return self.mounts[0].access is Access.READ_WRITE


def build_plan(mode: SandboxMode, permissions: Permissions, workspace: str) -> SandboxPlan:
    """The plan for `mode` over `workspace` with `permissions`."""
    root = str(PurePosixPath(workspace))
    writable_workspace = mode is not SandboxMode.READ_ONLY
    mounts = [Mount(root, root, Access.READ_WRITE if writable_workspace else Access.READ_ONLY)]
    hidden: list[str] = []
    for rule in permissions.filesystem:
        path = str(Path(rule.path).expanduser())
        if rule.access is FilesystemAccess.NONE:
            hidden.append(path)
            continue
        access = Access.READ_WRITE if rule.access is FilesystemAccess.WRITE else Access.READ_ONLY
        if mode is SandboxMode.READ_ONLY:
            access = Access.READ_ONLY  # read-only means read-only, whatever a path entry says
        mounts.append(Mount(path, path, access))

    protected: list[str] = []
    always: list[str] = []
    if writable_workspace and mode is not SandboxMode.DANGER_FULL_ACCESS:
        names = [*ALWAYS_PROTECTED, *PROTECTED_WHEN_PRESENT, *permissions.protected_paths]
        protected = [str(PurePosixPath(root) / name) for name in dict.fromkeys(names)]
        always = [str(PurePosixPath(root) / name) for name in ALWAYS_PROTECTED]

    restricted = mode is not SandboxMode.DANGER_FULL_ACCESS
    tmpfs = (
        Tmpfs("/tmp", 1 * GIB),
        Tmpfs("/var/tmp", 256 * MIB),
        Tmpfs("/run", 64 * MIB, 0o755),
        Tmpfs(GUEST_HOME, 1 * GIB, 0o700),
    )
    return SandboxPlan(
        mode=mode,
        workspace=root,
        mounts=tuple(mounts),
        protected=tuple(protected),
        protected_always=tuple(always),
        hidden=tuple(hidden),
        tmpfs=tmpfs,
        read_only_root=restricted,
        network=NetworkPlan(permissions.network, permissions.network_rules),
        seccomp_profile=mode.value,
        cap_drop_all=restricted,
        cap_add=(),
        no_new_privileges=restricted,
        limits=permissions.limits,
        env=permissions.env,
        user=permissions.user,
        workdir=root,
    )


def plan_to_json(plan: SandboxPlan) -> dict[str, object]:
    """A plan as plain JSON (for the session's gateway process, which rebuilds it)."""
    return {
        "mode": plan.mode.value,
        "workspace": plan.workspace,
        "mounts": [[m.host_path, m.guest_path, m.access.value] for m in plan.mounts],
        "protected": list(plan.protected),
        "protected_always": list(plan.protected_always),
        "hidden": list(plan.hidden),
        "tmpfs": [[t.guest_path, t.size_bytes, t.mode] for t in plan.tmpfs],
        "read_only_root": plan.read_only_root,
        "network": plan.network.mode.value,
        "network_rules": [
            [r.domain, r.allow, r.port, r.origin.layer, r.origin.path] for r in plan.network.rules
        ],
        "seccomp_profile": plan.seccomp_profile,
        "cap_drop_all": plan.cap_drop_all,
        "cap_add": list(plan.cap_add),
        "no_new_privileges": plan.no_new_privileges,
        "limits": [plan.limits.pids, plan.limits.memory_bytes, plan.limits.cpus],
        "env_pass": sorted(plan.env.passthrough),
        "env_set": dict(plan.env.fixed),
        "user": list(plan.user),
        "workdir": plan.workdir,
        "home": plan.home,
    }


def plan_from_json(data: dict[str, Any]) -> SandboxPlan:
    from harness.policy.rules import NetworkRule, Origin

    return SandboxPlan(
        mode=SandboxMode.parse(data["mode"]),
        workspace=data["workspace"],
        mounts=tuple(Mount(h, g, Access(a)) for h, g, a in data["mounts"]),
        protected=tuple(data["protected"]),
        protected_always=tuple(data["protected_always"]),
        hidden=tuple(data["hidden"]),
        tmpfs=tuple(Tmpfs(p, size, mode) for p, size, mode in data["tmpfs"]),
        read_only_root=bool(data["read_only_root"]),
        network=NetworkPlan(
            NetworkMode.parse(data["network"]),
            tuple(
                NetworkRule(d, a, p, Origin(layer, path))
                for d, a, p, layer, path in data["network_rules"]
            ),
        ),
        seccomp_profile=data["seccomp_profile"],
        cap_drop_all=bool(data["cap_drop_all"]),
        cap_add=tuple(data["cap_add"]),
        no_new_privileges=bool(data["no_new_privileges"]),
        limits=Limits(*data["limits"]),
        env=EnvPolicy(frozenset(data["env_pass"]), dict(data["env_set"])),
        user=(int(data["user"][0]), int(data["user"][1])),
        workdir=data["workdir"],
        home=data["home"],
    )
