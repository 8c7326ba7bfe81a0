"""Finding, or starting, the Podman API service that podman-py and harness talk to.

Podman has no daemon; its REST API comes from `podman system service`. When no
socket answers, harness starts one on a private socket, records (pid, start
time) in its state, reuses it while it lives, and the service exits by itself
after an idle timeout. `stop_recorded_service` stops it explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BackendUnavailable
from harness.paths import Locations, ensure_private_dir
from harness.procs import ProcessId, spawn_detached, stop

IDLE_TIMEOUT_SECONDS = 600
START_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class PodmanService:
    """A Podman API socket that answers, and the service process if harness started it."""

    socket_path: str
    started_by_harness: bool
    process: ProcessId | None = None


def _answers(socket_path: str, timeout: float = 2.0) -> bool:
    """True when an API answers /_ping at `socket_path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: podman\r\nConnection: close\r\n\r\n")
        head = sock.recv(64)
    except OSError:
        return False
    finally:
        sock.close()
    return head.startswith(b"HTTP/1.1 200")


def _well_known_sockets() -> list[str]:
    candidates: list[str] = []
    host = os.environ.get("CONTAINER_HOST", "")
    if host.startswith("unix://"):
        candidates.append(host.removeprefix("unix://"))
    if os.getuid() == 0:
        candidates.append("/run/podman/podman.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        candidates.append(f"{runtime}/podman/podman.sock")
    return candidates


def _record_file(locations: Locations) -> Path:
    return locations.state_dir / "podman-service.json"


def _recorded(locations: Locations) -> PodmanService | None:
    try:
        data = json.loads(_record_file(locations).read_text())
    except (OSError, ValueError):
        return None
    process = ProcessId.from_json(data.get("process"))
    path = data.get("socket")
    if process is None or not isinstance(path, str) or not process.alive():
        return None
    return PodmanService(path, True, process)


def find_or_start(locations: Locations) -> PodmanService:
    """A responsive Podman API socket; start a private service when there is none."""
    for path in _well_known_sockets():
        if _answers(path):
            return PodmanService(path, started_by_harness=False)
    recorded = _recorded(locations)
    if recorded is not None and _answers(recorded.socket_path):
        return recorded
    podman = shutil.which("podman")
    if podman is None:
        raise BackendUnavailable(
            "podman is not installed; install it with `apt-get install podman runc` "
            "(or choose --backend docker)."
        )
    directory = ensure_private_dir(locations.runtime_dir)
    # one service per state directory: two of them must not share (and clobber) a socket
    tag = hashlib.sha256(str(locations.state_dir).encode()).hexdigest()[:10]
    socket_path = str(directory / f"podman-{tag}.sock")
    if Path(socket_path).exists():
        Path(socket_path).unlink()
    log_path = locations.state_dir / "podman-service.log"
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with log_path.open("ab") as log:
        # survives this harness process; stopped by its pid record or its idle timeout
        pid = spawn_detached(
            [
                podman,
                "system",
                "service",
                f"--time={IDLE_TIMEOUT_SECONDS}",
                f"unix://{socket_path}",
            ],
            stdout=log.fileno(),
            stderr=log.fileno(),
        )
    process = ProcessId.of(pid)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if _answers(socket_path, timeout=1.0):
            break
        if process is None or not process.alive() or _exited(pid):
            raise BackendUnavailable(
                f"`podman system service` exited at once; see {log_path}. Check `podman info` for the cause."
            )
        time.sleep(0.05)
    else:
        if process is not None:
            stop(process)
        raise BackendUnavailable(
            f"`podman system service` did not answer on {socket_path} within {START_TIMEOUT_SECONDS:.0f} s; "
            f"see {log_path}."
        )
    if process is not None:
        record = {"socket": socket_path, "process": process.to_json()}
        _record_file(locations).write_text(json.dumps(record) + "\n")
    return PodmanService(socket_path, True, process)


def stop_recorded_service(locations: Locations) -> bool:
    """Stop the service harness started, if it still runs; True when something was stopped."""
    recorded = _recorded(locations)
    if recorded is None or recorded.process is None:
        return False
    stop(recorded.process)
    _record_file(locations).unlink(missing_ok=True)
    return True


def _exited(pid: int) -> bool:
    """True when our child `pid` has exited (and reaps it)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid
