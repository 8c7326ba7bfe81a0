"""Starting and stopping a session's gateway process."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.daemons import config_dir, start_daemon, stop_daemon
from harness.paths import Locations

KIND = "gateway"
GATEWAY_DIR_IN_SANDBOX = "/run/harness-gateway"
GATEWAY_IN_SANDBOX = f"{GATEWAY_DIR_IN_SANDBOX}/gateway.sock"


@dataclass(frozen=True)
class SessionGateway:
    """A running session gateway: its sockets, token and policy."""

    session_id: str
    token: str
    socket_dir: str  # host folder holding gateway.sock, mounted read-only into the sandbox
    control: str  # host-only socket
    policy: str  # the session's approval policy (harness-sh offers escalation under on-request)


def start_gateway(
    locations: Locations,
    session_id: str,
    context: dict[str, Any],
    audit_paths: Iterable[Path],
    escalation: dict[str, Any] | None,
    *,
    owner: str | None = None,
) -> SessionGateway:
    folder = config_dir(locations, KIND) / session_id
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)  # the sandbox's user must reach the socket through the mount
    token = secrets.token_hex(16)
    control = str(config_dir(locations, KIND) / f"{session_id}.control")
    config = {
        "session": session_id,
        "token": token,
        "context": context,
        "audit_paths": [str(p) for p in audit_paths],
        "gateway_socket": str(folder / "gateway.sock"),
        "control_socket": control,
        "escalation": escalation,
        "session_record": str(locations.sessions_dir / f"{session_id}.json"),
        "owner": owner,  # "pid:start" of the harness that owns the session; None when detached
    }
    start_daemon(locations, KIND, "harness.gateway", session_id, config)
    return SessionGateway(session_id, token, str(folder), control, str(context["policy"]))


def stop_gateway(locations: Locations, session_id: str) -> bool:
    stopped = stop_daemon(locations, KIND, session_id)
    folder = config_dir(locations, KIND) / session_id
    for leftover in (
        folder / "gateway.sock",
        config_dir(locations, KIND) / f"{session_id}.control",
    ):
        leftover.unlink(missing_ok=True)
    if folder.exists():
        folder.rmdir()
    return stopped
