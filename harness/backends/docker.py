"""The Docker backend: one container per session on a real Docker engine.

`render_docker` is the pure function from the plan to the Engine API's
container-create body; unit tests check it without a daemon, integration
tests prove the kernel enforces it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.backends.base import KEEPER, SessionSpec
from harness.backends.engine import EngineBackend
from harness.backends.engine_api import EngineAPI
from harness.backends.mounts import MaskKind
from harness.paths import Locations
from harness.policy.modes import NetworkMode

DOCKER_SOCKET = "/var/run/docker.sock"
MASK_TMPFS_OPTIONS = "ro,nosuid,nodev,noexec,size=4k,mode=0555"


def tmpfs_options(
    size: int, mode: int, user: tuple[int, int], *, read_only: bool = False
) -> list[str]:
    options = ["ro" if read_only else "rw", "nosuid", "nodev", f"size={size}", f"mode={mode:o}"]
    if user != (0, 0):
        options += [f"uid={user[0]}", f"gid={user[1]}"]
    return options


def engine_network(spec: SessionSpec) -> str:
    """`none` unless the plan says full; allowlist is refused before rendering."""
    return "bridge" if spec.plan.network.mode is NetworkMode.FULL else "none"


def render_docker(spec: SessionSpec) -> dict[str, Any]:
    """The Engine API body for POST /containers/create."""
    plan = spec.plan
    mounts: list[dict[str, Any]] = [
        {
            "Type": "bind",
            "Source": bind.host_path,
            "Target": bind.guest_path,
            "ReadOnly": bind.read_only,
            "BindOptions": {"Propagation": "rprivate"},
        }
        for bind in spec.mounts.binds
    ]
    tmpfs = {
        t.guest_path: ",".join(tmpfs_options(t.size_bytes, t.mode, plan.user)) for t in plan.tmpfs
    }
    for mask in spec.mounts.masks:
        if mask.kind is MaskKind.FILE:
            mounts.append(
                {"Type": "bind", "Source": "/dev/null", "Target": mask.guest_path, "ReadOnly": True}
            )
        else:
            tmpfs[mask.guest_path] = MASK_TMPFS_OPTIONS
    security = ["no-new-privileges:true"] if plan.no_new_privileges else []
    security.append(f"seccomp={spec.seccomp_json}")
    command = list(spec.command) if spec.command is not None else list(KEEPER)
    attached = spec.command is not None
    interactive = attached and spec.stdin
    return {
        "Image": spec.image,
        "Entrypoint": [],
        "Cmd": command,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "WorkingDir": plan.workdir,
        "User": f"{plan.user[0]}:{plan.user[1]}",
        "Hostname": spec.hostname,
        "Labels": dict(spec.labels),
        "Tty": attached and spec.tty,
        "OpenStdin": interactive,
        "StdinOnce": interactive,
        "AttachStdin": interactive,
        "AttachStdout": attached,
        "AttachStderr": attached,
        "HostConfig": {
            "Mounts": mounts,
            "Tmpfs": tmpfs,
            "ReadonlyRootfs": plan.read_only_root,
            "CapDrop": ["ALL"] if plan.cap_drop_all else [],
            "CapAdd": list(plan.cap_add),
            "SecurityOpt": security,
            "PidsLimit": plan.limits.pids,
            "Memory": plan.limits.memory_bytes,
            "MemorySwap": plan.limits.memory_bytes,  # no swap: the limit is the limit
            "NanoCpus": int(plan.limits.cpus * 1e9),
            "Ulimits": [
                {"Name": name, "Soft": soft, "Hard": hard} for name, soft, hard in spec.ulimits
            ],
            "NetworkMode": engine_network(spec),
            "Init": True,  # tini as PID 1 reaps what exec leaves behind
            "Privileged": False,
            "IpcMode": "private",
            "AutoRemove": False,
            # output is streamed through attach; nothing of the session is kept on the host
            "LogConfig": {"Type": "none"},
        },
    }


class DockerBackend(EngineBackend):
    """Containers on a Docker engine, through its unix socket."""

    name = "docker"

    def __init__(self, locations: Locations, socket_path: str | None = None) -> None:
        host = os.environ.get("DOCKER_HOST", "")
        self.locations = locations
        self.socket_path = socket_path or (
            host.removeprefix("unix://") if host.startswith("unix://") else DOCKER_SOCKET
        )
        super().__init__(
            EngineAPI(
                self.socket_path,
                fix_command="dockerd (`systemctl start docker`, or `./scripts/engines start` in the harness repo)",
                name="docker",
            )
        )

    def check(self) -> str | None:
        if not Path(self.socket_path).exists():
            return (
                f"no Docker engine socket at {self.socket_path}; install docker.io and start dockerd "
                "(`apt-get install docker.io && systemctl start docker`)"
            )
        return self.ping()

    def version(self) -> str:
        return str(self.api.request("GET", "/version").json().get("Version", "?"))

    def render_create(self, spec: SessionSpec) -> dict[str, Any]:
        return render_docker(spec)

    def wait_exit_code(self, container_id: str) -> int:
        result = self.api.request(
            "POST", f"/containers/{container_id}/wait", query={"condition": "not-running"}
        ).json()
        return int(result.get("StatusCode", 125))
