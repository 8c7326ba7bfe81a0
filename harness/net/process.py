"""Starting, finding and stopping the network process of a session (see __main__.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BackendError
from harness.paths import Locations, ensure_private_dir
from harness.policy.rules import NetworkRule
from harness.procs import ProcessId, stop

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
START_TIMEOUT = 15.0
RESOLVE_ENV = (
    "HARNESS_PROXY_RESOLVE"  # "name=ip,name=ip": for tests that serve test names on loopback
)


@dataclass(frozen=True)
class SessionNetwork:
    session_id: str
    netns_path: str
    process: ProcessId

    @property
    def name(self) -> str:
        return Path(self.netns_path).name


def proxy_env() -> dict[str, str]:
    """What makes curl, git, pip and npm inside the sandbox use the proxy."""
    no_proxy = "localhost,127.0.0.1,::1"
    env = {}
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[key] = PROXY_URL
        env[key.lower()] = PROXY_URL
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def _records(locations: Locations) -> Path:
    return locations.state_dir / "network"


def _resolve_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in environ.get(RESOLVE_ENV, "").split(",") if "=" in item]
    return {name.strip().lower(): address.strip() for name, address in pairs}


def start_network(
    locations: Locations,
    session_id: str,
    rules: Sequence[NetworkRule],
    audit_paths: Iterable[Path],
    *,
    adopt_pid: int | None = None,
) -> SessionNetwork:
    """Start the session's network process; returns once its proxy listens in the namespace."""
    directory = ensure_private_dir(locations.runtime_dir) / "network"
    directory.mkdir(mode=0o700, exist_ok=True)
    config_path = directory / f"{session_id}.json"
    config = {
        "session": session_id,
        "rules": [
            {
                "domain": r.domain,
                "allow": r.allow,
                "port": r.port,
                "layer": r.origin.layer,
                "path": r.origin.path,
            }
            for r in rules
        ],
        "audit_paths": [str(p) for p in audit_paths],
        "adopt_pid": adopt_pid,
        "port": PROXY_PORT,
        "resolve": _resolve_overrides(os.environ),
    }
    config_path.write_text(json.dumps(config))
    config_path.chmod(0o600)
    log = locations.state_dir / "network" / f"{session_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with log.open("ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "harness.net", "serve", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,  # a detached session keeps its network after harness returns
        )
    _STARTED.append(child)
    process = ProcessId.of(child.pid)
    line = _read_ready(child)
    if process is None or not line.startswith("ready "):
        if process is not None:
            stop(process)
        raise BackendError(
            f"the network process of session {session_id} did not start ({line.strip() or 'no answer'}); "
            f"see {log}. Creating network namespaces needs root (or CAP_SYS_ADMIN)."
        )
    network = SessionNetwork(session_id, line.split(" ", 1)[1].strip(), process)
    record = _records(locations) / f"{session_id}.json"
    record.write_text(
        json.dumps(
            {"session": session_id, "netns": network.netns_path, "process": process.to_json()}
        )
    )
    return network


def _read_ready(child: subprocess.Popen[bytes]) -> str:
    import selectors

    assert child.stdout is not None  # noqa: S101 - we asked for a pipe
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    data = b""
    try:
        while b"\n" not in data and time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(child.stdout.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    finally:
        selector.close()
    return data.decode(errors="replace")


_STARTED: list[subprocess.Popen[bytes]] = []


def stop_network(locations: Locations, session_id: str) -> bool:
    """Stop the session's network process (it removes its namespace); True when one was running."""
    record = _records(locations) / f"{session_id}.json"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return _remove_namespace(session_id)
    process = ProcessId.from_json(data.get("process"))
    stopped = False
    if process is not None and process.alive():
        stop(process, grace=5.0)
        stopped = True
    record.unlink(missing_ok=True)
    _reap_children()
    return _remove_namespace(session_id) or stopped


def _remove_namespace(session_id: str) -> bool:
    from harness.net.netns import RUN_DIR, name_for

    if not (RUN_DIR / name_for(session_id)).exists():
        return False
    from harness.net import netns

    return netns.remove(name_for(session_id))


def _reap_children() -> None:
    for child in list(_STARTED):
        if child.poll() is not None:
            with contextlib.suppress(Exception):
                if child.stdout is not None:
                    child.stdout.close()
            _STARTED.remove(child)


def recorded_network(locations: Locations, session_id: str) -> ProcessId | None:
    """The network process this state dir started for the session, if recorded."""
    try:
        data = json.loads((_records(locations) / f"{session_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return ProcessId.from_json(data.get("process"))


def network_sessions(locations: Locations) -> list[str]:
    """Sessions with a network record or a namespace left in /run/netns."""
    from harness.net.netns import PREFIX, harness_namespaces

    found = (
        {p.stem for p in _records(locations).glob("*.json")}
        if _records(locations).is_dir()
        else set()
    )
    found |= {n.removeprefix(PREFIX) for n in harness_namespaces()}
    return sorted(found)
