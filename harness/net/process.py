"""Starting, finding and stopping the network process of a session (see __main__.py)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.daemons import recorded_daemon, recorded_sessions, start_daemon, stop_daemon
from harness.paths import Locations
from harness.policy.rules import NetworkRule
from harness.procs import ProcessId

KIND = "network"
PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
RESOLVE_ENV = (
    "HARNESS_PROXY_RESOLVE"  # "name=ip,name=ip": for tests that serve test names on loopback
)


@dataclass(frozen=True)
class SessionNetwork:
    """A session's network namespace and the process serving its proxy."""

    session_id: str
    netns_path: str
    process: ProcessId


def proxy_env() -> dict[str, str]:
    """What makes curl, git, pip and npm inside the sandbox use the proxy."""
    env = {}
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[key] = env[key.lower()] = PROXY_URL
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    return env


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
    control: Mapping[str, str] | None = None,
    policy: str = "untrusted",
) -> SessionNetwork:
    """Start the session's network process; returns once its proxy listens in the namespace."""
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
        "control": dict(control) if control else None,
        "policy": policy,
    }
    daemon = start_daemon(locations, KIND, "harness.net", session_id, config)
    return SessionNetwork(session_id, daemon.ready, daemon.process)


def stop_network(locations: Locations, session_id: str) -> bool:
    """Stop the session's network process (it removes its namespace), and any namespace left."""
    stopped = stop_daemon(locations, KIND, session_id)
    from harness.net.netns import RUN_DIR, name_for

    if (RUN_DIR / name_for(session_id)).exists():
        from harness.net import netns

        return netns.remove(name_for(session_id))
    return stopped


def recorded_network(locations: Locations, session_id: str) -> ProcessId | None:
    return recorded_daemon(locations, KIND, session_id)


def network_sessions(locations: Locations) -> list[str]:
    """Sessions with a network record here, or a namespace left in /run/netns."""
    from harness.net.netns import PREFIX, harness_namespaces

    found = set(recorded_sessions(locations, KIND))
    found |= {n.removeprefix(PREFIX) for n in harness_namespaces()}
    return sorted(found)
