"""Network namespaces for sessions, managed with pyroute2.

A session with an allowlist lives in a namespace named `harness-<session>`
(in /run/netns, so `ip netns` shows it): only `lo`, no veth, no route, no
resolver. The egress proxy listens on 127.0.0.1 inside it; nothing else
leaves. pyroute2 costs ~250 ms to import, so only the network process
imports this module.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

PREFIX = "harness-"
RUN_DIR = Path("/run/netns")


def name_for(session_id: str) -> str:
    return f"{PREFIX}{session_id}"


def path_for(name: str) -> str:
    return str(RUN_DIR / name)


def create(name: str) -> str:
    """A new, empty namespace with `lo` up; returns its path."""
    from pyroute2 import netns

    netns.create(name)
    _loopback_up(name)
    return path_for(name)


def attach(name: str, pid: int) -> str:
    """Name the namespace of `pid` (a sandbox the engine created with network `none`)."""
    from pyroute2 import netns

    netns.attach(name, pid)
    _loopback_up(name)
    return path_for(name)


def remove(name: str) -> bool:
    """Unmount and remove a named namespace; True when it existed."""
    from pyroute2 import netns

    if not Path(path_for(name)).exists():
        return False
    netns.remove(name)
    return True


def harness_namespaces() -> list[str]:
    """Names of the namespaces harness made (for `prune`); reading /run/netns needs no pyroute2."""
    try:
        return sorted(n for n in (p.name for p in RUN_DIR.iterdir()) if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def interfaces(name: str) -> list[str]:
    from pyroute2 import NetNS

    with NetNS(name) as ns:
        return sorted(str(link.get_attr("IFLA_IFNAME")) for link in ns.get_links())


def _loopback_up(name: str) -> None:
    from pyroute2 import NetNS

    with NetNS(name) as ns:
        index = ns.link_lookup(ifname="lo")[0]
        ns.link("set", index=index, state="up")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread in namespace `name`: sockets made here belong to it."""
    from pyroute2 import netns

    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


def listen_inside(name: str, port: int) -> socket.socket:
    """A TCP socket listening on 127.0.0.1:`port` of the namespace, usable from the host side."""
    with entered(name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(512)
    sock.setblocking(False)
    return sock
