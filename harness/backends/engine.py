"""What the Docker and Podman backends share: both speak the same container API
(Podman's libpod dialect differs in paths and in the create body, not in how
attach, exec, wait and remove work)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from harness.backends.base import LABEL_SESSION, ExecSpec, Handle, SandboxInfo, SessionSpec
from harness.backends.engine_api import EngineAPI, EngineAPIError
from harness.backends.retry import transient_retry
from harness.backends.session_io import attach_stream
from harness.backends.stream import Terminal
from harness.errors import BackendError

EXEC_EXIT_POLLS = 300


def container_name(session_id: str) -> str:
    return f"harness-{session_id}"


def render_exec(spec: ExecSpec) -> dict[str, Any]:
    """The exec-create body; the same for Docker and Podman."""
    return {
        "Cmd": list(spec.argv),
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "WorkingDir": spec.workdir,
        "User": f"{spec.user[0]}:{spec.user[1]}",
        "Tty": spec.tty,
        "AttachStdin": spec.stdin,
        "AttachStdout": True,
        "AttachStderr": True,
    }


class EngineBackend:
    """Lifecycle over an engine API; subclasses render the create body and name the paths."""

    name = "engine"
    prefix = ""  # "" for Docker, "/v4.0.0/libpod" for Podman

    def __init__(self, api: EngineAPI) -> None:
        self.api = api

    # -- what subclasses provide

    def render_create(self, spec: SessionSpec) -> dict[str, Any]:
        raise NotImplementedError

    def create_query(self, spec: SessionSpec) -> dict[str, Any]:
        return {"name": container_name(spec.session_id)}

    def wait_exit_code(self, container_id: str) -> int:
        raise NotImplementedError

    def ready(self) -> None:
        """Called before every engine call; Podman starts its API service here."""

    # -- the Protocol

    def _path(self, path: str) -> str:
        return f"{self.prefix}{path}"

    @transient_retry
    def _create(self, spec: SessionSpec) -> str:
        response = self.api.request(
            "POST",
            self._path("/containers/create"),
            query=self.create_query(spec),
            body=self.render_create(spec),
        )
        return str(response.json()["Id"])

    def create(self, spec: SessionSpec) -> Handle:
        """Create (and for a keeper, start) the sandbox; nothing is left behind when this raises,
        even for Ctrl-C or SIGTERM arriving after the engine made the container but before its
        id came back: the engine knows it by its name then."""
        self.ready()
        handle = Handle(self.name, container_name(spec.session_id), spec.session_id)
        try:
            handle = Handle(self.name, self._create(spec), spec.session_id)
            if spec.command is None:
                self.api.request("POST", self._path(f"/containers/{handle.container_id}/start"))
        except BaseException:
            with contextlib.suppress(BackendError):
                self.destroy(handle)
            raise
        return handle

    def attach(self, handle: Handle, spec: SessionSpec, terminal: Terminal | None = None) -> int:
        self.ready()
        path = self._path(f"/containers/{handle.container_id}")
        stream = self.api.hijack(
            "POST",
            f"{path}/attach",
            query={"stream": True, "stdin": spec.stdin, "stdout": True, "stderr": True},
        )

        def start() -> None:
            self.api.request("POST", f"{path}/start")

        def resize(lines: int, columns: int) -> None:
            self.api.request(
                "POST",
                f"{path}/resize",
                query={"h": lines, "w": columns},
                ok=(200, 201, 204, 409, 500),
            )

        attach_stream(
            stream, start=start, resize=resize, tty=spec.tty, stdin=spec.stdin, terminal=terminal
        )
        return self.wait_exit_code(handle.container_id)

    def exec(self, handle: Handle, spec: ExecSpec) -> int:
        self.ready()
        created = self.api.request(
            "POST", self._path(f"/containers/{handle.container_id}/exec"), body=render_exec(spec)
        ).json()
        exec_id = created["Id"]
        stream = self.api.hijack(
            "POST", self._path(f"/exec/{exec_id}/start"), body={"Detach": False, "Tty": spec.tty}
        )

        def resize(lines: int, columns: int) -> None:
            self.api.request(
                "POST",
                self._path(f"/exec/{exec_id}/resize"),
                query={"h": lines, "w": columns},
                ok=(200, 201, 204, 409, 500),
            )

        attach_stream(stream, start=lambda: None, resize=resize, tty=spec.tty, stdin=spec.stdin)
        for _ in range(EXEC_EXIT_POLLS):
            info = self.api.request("GET", self._path(f"/exec/{exec_id}/json")).json()
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.01)
        raise BackendError(f"{self.name} did not report the exit code of exec {exec_id}")

    def destroy(self, handle: Handle) -> None:
        self.ready()
        try:
            self.api.request(
                "DELETE",
                self._path(f"/containers/{handle.container_id}"),
                query={"force": True, "v": True},
                ok=(200, 204, 404),
            )
        except EngineAPIError as exc:
            if "already in progress" in exc.engine_message:
                return
            raise

    def list(self, labels: Mapping[str, str]) -> list[SandboxInfo]:
        self.ready()
        filters = {"label": [f"{k}={v}" if v else k for k, v in labels.items()] or [LABEL_SESSION]}
        found = self.api.request(
            "GET", self._path("/containers/json"), query={"all": True, "filters": filters}
        ).json()
        return [
            SandboxInfo(
                self.name,
                item["Id"],
                item.get("Labels") or {},
                str(item.get("State", "?")),
                str(item.get("Created", "")),
            )
            for item in found or []
        ]

    def image_exists(self, reference: str) -> bool:
        self.ready()
        response = self.api.request("GET", self._path(f"/images/{reference}/json"), ok=(200, 404))
        return response.status == 200

    def main_pid(self, handle: Handle) -> int | None:
        """The host pid of the sandbox's main process, while it runs."""
        self.ready()
        info = self.api.request("GET", self._path(f"/containers/{handle.container_id}/json")).json()
        pid = (info.get("State") or {}).get("Pid")
        return int(pid) if isinstance(pid, int) and pid > 0 else None

    def hard_limits(self) -> dict[str, int]:
        """The engine process's hard limits: the runtime it starts cannot set more in the sandbox."""
        self.ready()
        pid = self.api.peer_pid()
        return {} if pid is None else read_hard_limits(pid)

    def ping(self) -> str | None:
        try:
            self.api.request("GET", "/_ping", timeout=5)
        except BackendError as exc:
            return str(exc)
        return None


_LIMIT_NAMES = {"Max open files": "nofile", "Max processes": "nproc"}


def read_hard_limits(pid: int) -> dict[str, int]:
    from pathlib import Path

    limits: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return limits
    for line in text.splitlines():
        for label, name in _LIMIT_NAMES.items():
            if line.startswith(label):
                hard = line[len(label) :].split()[1]
                if hard.isdigit():
                    limits[name] = int(hard)
    return limits
