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
    from harness.net.proxy import EgressProxy, StaticResolver, SystemResolver

    paths = [Path(p) for p in config.get("audit_paths", [])]
    audit_log = MultiAuditLog(paths) if paths else None

    def audit(event: str, **fields: object) -> None:
        if audit_log is not None:
            with contextlib.suppress(
                Exception
            ):  # the log must not stop traffic it cannot record... but
                audit_log.append(event, **fields)

    hosts = config.get("resolve") or {}
    resolver = StaticResolver(hosts) if hosts else SystemResolver()
    proxy = EgressProxy(
        rules=_rules(config["rules"]),
        resolver=resolver,
        audit=audit,
        ask=None,
        session=config["session"],
    )
    server = asyncio.ensure_future(proxy.serve(listener))
    await stop.wait()
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await server
    await proxy.close()


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
