"""The network process of one session: its namespace and its egress proxy.

    python -m harness.net serve CONFIG.json

Started by harness for a session whose plan is `allowlist`. It creates (or,
for Docker, names) the namespace `harness-<session>`, opens the proxy's
listening socket on 127.0.0.1 inside it, prints `ready <netns path>` and
serves until SIGTERM; then it removes the namespace. It outlives a detached
`harness up`; `harness down`/`prune` stop it by the (pid, start time) it
recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.policy.rules import NetworkRule, Origin

PROXY_PORT = 3128


def _rules(data: list[dict[str, Any]]) -> tuple[NetworkRule, ...]:
    return tuple(
        NetworkRule(
            r["domain"],
            bool(r["allow"]),
            r.get("port"),
            Origin(r.get("layer", "cli"), r.get("path")),
        )
        for r in data
    )


async def _serve(config: dict[str, Any], listener: Any, stop: asyncio.Event) -> None:
    from harness.audit import MultiAuditLog
    from harness.net.proxy import Approval, EgressProxy, StaticResolver, SystemResolver
    from harness.policy.modes import ApprovalPolicy

    paths = [Path(p) for p in config.get("audit_paths", [])]
    audit_log = MultiAuditLog(paths) if paths else None
    hosts = config.get("resolve") or {}
    control = config.get("control")

    async def ask(host: str, port: int) -> Approval:
        """A domain no rule covers: the session's gateway asks its console."""
        from harness.gateway.client import ask as ask_gateway

        assert control is not None  # noqa: S101 - only passed when there is one
        message = {"op": "network", "token": control["token"], "host": host, "port": port}
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(None, ask_gateway, control["socket"], message)
        except HarnessError:
            return Approval.DENY
        return {"once": Approval.ALLOW_ONCE, "session": Approval.ALLOW_SESSION}.get(
            str(answer.get("choice")), Approval.DENY
        )

    proxy = EgressProxy(
        _rules(config["rules"]),
        resolver=StaticResolver(hosts) if hosts else SystemResolver(),
        audit=audit_log.append if audit_log is not None else None,
        ask=ask if control else None,
        policy=ApprovalPolicy.parse(config.get("policy", "untrusted")),
        session=config["session"],
    )
    server = asyncio.ensure_future(proxy.serve(listener))
    await stop.wait()
    await proxy.close()
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server


def serve(config_path: str) -> int:
    from harness.net import netns

    config = json.loads(Path(config_path).read_text())
    name = netns.name_for(config["session"])
    adopt = config.get("adopt_pid")
    path = netns.attach(name, int(adopt)) if adopt else netns.create(name)
    try:
        listener = netns.listen_inside(name, int(config.get("port", PROXY_PORT)))
        sys.stdout.write(f"ready {path}\n")
        sys.stdout.flush()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            loop.run_until_complete(_serve(config, listener, stop))
        finally:
            loop.close()
            listener.close()
    finally:
        netns.remove(name)
        with contextlib.suppress(OSError):
            Path(config_path).unlink()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "serve":
        sys.stderr.write("usage: python -m harness.net serve CONFIG.json\n")
        return 2
    return serve(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
