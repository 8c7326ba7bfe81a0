"""The helper processes a session may have (its gateway, its network), started alike.

Each runs `python -m MODULE serve CONFIG.json`, prints one `ready ...` line,
and serves until SIGTERM. Each is recorded by (pid, start time) under
`$XDG_STATE_HOME/harness/<kind>/<session>.json`, so that `down` and `prune`
can stop exactly it, even after the harness that started it died.
"""

from __future__ import annotations

import json
import os
import selectors
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import BackendError
from harness.paths import Locations, ensure_private_dir
from harness.procs import ProcessId, spawn_detached, stop

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Daemon:
    """A harness helper process for a session, and what it said when ready."""

    kind: str
    session_id: str
    process: ProcessId
    ready: str  # what followed "ready " on its first line


def _records(locations: Locations, kind: str) -> Path:
    return locations.state_dir / kind


def config_dir(locations: Locations, kind: str) -> Path:
    directory = ensure_private_dir(locations.runtime_dir) / kind
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def start_daemon(
    locations: Locations, kind: str, module: str, session_id: str, config: dict[str, Any]
) -> Daemon:
    """Start one helper process and wait for its `ready` line."""
    config_path = config_dir(locations, kind) / f"{session_id}.json"
    config_path.write_text(json.dumps(config))
    config_path.chmod(0o600)
    records = _records(locations, kind)
    records.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = records / f"{session_id}.log"
    ready_read, ready_write = os.pipe()
    try:
        with log.open("ab") as log_file:
            # its own session: a detached session keeps it after harness returns
            pid = spawn_detached(
                [sys.executable, "-m", module, "serve", str(config_path)],
                stdout=ready_write,
                stderr=log_file.fileno(),
            )
        os.close(ready_write)
        process = ProcessId.of(pid)
        line = _first_line(ready_read)
    finally:
        os.close(ready_read)
    if process is None or not line.startswith("ready"):
        if process is not None:
            stop(process)
        raise BackendError(
            f"the {kind} process of session {session_id} did not start ({line.strip() or 'no answer'}); see {log}."
        )
    (records / f"{session_id}.json").write_text(
        json.dumps({"session": session_id, "process": process.to_json()})
    )
    return Daemon(kind, session_id, process, line.removeprefix("ready").strip())


def _first_line(fd: int) -> str:
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    data = b""
    try:
        while b"\n" not in data and time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        selector.close()
    return data.decode(errors="replace")


def recorded_daemon(locations: Locations, kind: str, session_id: str) -> ProcessId | None:
    try:
        data = json.loads((_records(locations, kind) / f"{session_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return ProcessId.from_json(data.get("process"))


def stop_daemon(locations: Locations, kind: str, session_id: str) -> bool:
    """Stop the recorded helper of this kind; True when one was running."""
    process = recorded_daemon(locations, kind, session_id)
    stopped = False
    if process is not None and process.alive():
        stop(process, grace=5.0)
        stopped = True
    (_records(locations, kind) / f"{session_id}.json").unlink(missing_ok=True)
    return stopped


def record_age(locations: Locations, kind: str, session_id: str) -> float:
    """Seconds since the helper was recorded (infinite when there is no record)."""
    import time

    try:
        return time.time() - (_records(locations, kind) / f"{session_id}.json").stat().st_mtime
    except OSError:
        return float("inf")


def recorded_sessions(locations: Locations, kind: str) -> list[str]:
    records = _records(locations, kind)
    return sorted(p.stem for p in records.glob("*.json")) if records.is_dir() else []
