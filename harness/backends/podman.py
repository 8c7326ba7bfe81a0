"""The Podman backend: one container per session through the libpod API.

`render_podman` is the pure function from the plan to libpod's
SpecGenerator. On hosts with hybrid cgroups (this one) crun fails, and
podman's default rlimits exceed what the host allows: the spec names runc
and sets rlimits within the host's hard limits, so users need not configure
anything (`harness doctor` explains).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from harness.backends.base import KEEPER, SessionSpec
from harness.backends.docker import MASK_TMPFS_OPTIONS, engine_network, tmpfs_options
from harness.backends.engine import EngineBackend, container_name
from harness.backends.engine_api import EngineAPI
from harness.backends.mounts import MaskKind
from harness.errors import BackendError
from harness.paths import Locations, ensure_private_dir

LIBPOD = "/v4.0.0/libpod"
WAIT_POLL_INTERVAL = "10ms"
"""Libpod's wait polls the container's state, by default every 250 ms: most of a short
command's run. The poll only reads the container's state file, so 10 ms costs little."""
INIT_CANDIDATES = (
    "/usr/libexec/podman/catatonit",
    "/usr/bin/catatonit",
    "/usr/bin/tini-static",
    "/usr/bin/tini",
)


def render_podman(
    spec: SessionSpec,
    *,
    seccomp_path: str,
    runtime: str | None,
    init_path: str | None,
    rootless: bool,
) -> dict[str, Any]:
    """The libpod SpecGenerator body for POST /libpod/containers/create."""
    plan = spec.plan
    mounts: list[dict[str, Any]] = [
        {
            "destination": bind.guest_path,
            "source": bind.host_path,
            "type": "bind",
            "options": ["rbind", "rprivate", "ro" if bind.read_only else "rw"],
        }
        for bind in spec.mounts.binds
    ]
    for tmp in plan.tmpfs:
        mounts.append(
            {
                "destination": tmp.guest_path,
                "source": "tmpfs",
                "type": "tmpfs",
                "options": tmpfs_options(tmp.size_bytes, tmp.mode, plan.user),
            }
        )
    for mask in spec.mounts.masks:
        if mask.kind is MaskKind.FILE:
            mounts.append(
                {
                    "destination": mask.guest_path,
                    "source": "/dev/null",
                    "type": "bind",
                    "options": ["rbind", "ro"],
                }
            )
        else:
            mounts.append(
                {
                    "destination": mask.guest_path,
                    "source": "tmpfs",
                    "type": "tmpfs",
                    "options": MASK_TMPFS_OPTIONS.split(","),
                }
            )
    attached = spec.command is not None
    body: dict[str, Any] = {
        "name": container_name(spec.session_id),
        "image": spec.image,
        "entrypoint": [],
        "command": list(spec.command) if attached and spec.command is not None else list(KEEPER),
        "env": dict(spec.env),
        "work_dir": plan.workdir,
        "hostname": spec.hostname,
        "labels": dict(spec.labels),
        "terminal": attached and spec.tty,
        "stdin": attached and spec.stdin,
        "mounts": mounts,
        "read_only_filesystem": plan.read_only_root,
        "read_only_tmpfs": False,  # we lay out our own tmpfs mounts
        "cap_drop": ["ALL"] if plan.cap_drop_all else [],
        "cap_add": list(plan.cap_add),
        "no_new_privileges": plan.no_new_privileges,
        "seccomp_policy": "default",
        "seccomp_profile_path": seccomp_path,
        "resource_limits": {
            "pids": {"limit": plan.limits.pids},
            "memory": {"limit": plan.limits.memory_bytes, "swap": plan.limits.memory_bytes},
            "cpu": {"quota": int(plan.limits.cpus * 100_000), "period": 100_000},
        },
        "r_limits": [
            {"type": name, "soft": soft, "hard": hard} for name, soft, hard in spec.ulimits
        ],
        "netns": {"nsmode": "path", "value": spec.netns_path}
        if spec.netns_path
        else {"nsmode": engine_network(spec)},
        "ipcns": {"nsmode": "private"},
        "privileged": False,
        "remove": False,
        "log_configuration": {"driver": "none"},
    }
    if rootless:
        body["userns"] = {"nsmode": "keep-id"}  # container uid = your uid: files keep their owner
    else:
        body["user"] = f"{plan.user[0]}:{plan.user[1]}"
    if runtime:
        body["oci_runtime"] = runtime
    if init_path:
        body["init"] = True
        body["init_path"] = init_path
    return body


class PodmanBackend(EngineBackend):
    """Containers on Podman, through `podman system service` (started by harness when needed)."""

    name = "podman"
    prefix = LIBPOD

    def __init__(self, locations: Locations) -> None:
        self.locations = locations
        self._service_socket: str | None = None
        super().__init__(EngineAPI("", fix_command="podman system service", name="podman"))

    def ready(self) -> None:
        self._ensure_service()

    def _ensure_service(self) -> None:
        if self._service_socket is None:
            from harness.backends.podman_service import find_or_start

            self._service_socket = find_or_start(self.locations).socket_path
            self.api.socket_path = self._service_socket

    def check(self) -> str | None:
        if shutil.which("podman") is None:
            return "podman is not installed; install it with `apt-get install podman runc`"
        try:
            self._ensure_service()
        except BackendError as exc:
            return str(exc)
        return self.ping()

    def version(self) -> str:
        self._ensure_service()
        return str(self.api.request("GET", f"{LIBPOD}/version").json().get("Version", "?"))

    def _seccomp_file(self, content: str) -> str:
        """libpod reads the profile from a file on the host: keep one per content."""
        digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        directory = ensure_private_dir(self.locations.runtime_dir) / "seccomp"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{digest}.json"
        if not path.exists():
            temporary = path.with_suffix(".tmp")
            temporary.write_text(content)
            temporary.replace(path)
        return str(path)

    def render_create(self, spec: SessionSpec) -> dict[str, Any]:
        return render_podman(
            spec,
            seccomp_path=self._seccomp_file(spec.seccomp_json),
            runtime=choose_runtime(),
            init_path=next((p for p in INIT_CANDIDATES if Path(p).exists()), None),
            rootless=_rootless(),
        )

    def create_query(self, spec: SessionSpec) -> dict[str, Any]:
        return {}

    def wait_exit_code(self, container_id: str) -> int:
        result = self.api.request(
            "POST",
            f"{LIBPOD}/containers/{container_id}/wait",
            query={"condition": "stopped", "interval": WAIT_POLL_INTERVAL},
        ).json()
        if isinstance(result, int):
            return result
        return int(result.get("StatusCode", 125)) if isinstance(result, dict) else 125

    def image_exists(self, reference: str) -> bool:
        self.ready()
        response = self.api.request("GET", f"{LIBPOD}/images/{reference}/exists", ok=(204, 404))
        return response.status == 204


def choose_runtime() -> str | None:
    """runc when crun cannot work here (cgroup v1 or hybrid) and runc is installed; else podman's default."""
    unified_only = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    if not unified_only and shutil.which("runc"):
        return "runc"
    if shutil.which("crun") is None and shutil.which("runc"):
        return "runc"
    return None


def _rootless() -> bool:
    import os

    return os.getuid() != 0
