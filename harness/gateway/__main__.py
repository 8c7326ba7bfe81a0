"""The gateway process of one session (see server.py).

    python -m harness.gateway serve CONFIG.json

Prints `ready` once both sockets listen and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.gateway.protocol import STDERR, STDOUT


def _escalator(
    config: dict[str, Any],
) -> Callable[[tuple[str, ...], str, Callable[[int, bytes], None]], int] | None:
    escalation = config.get("escalation")
    if not escalation:
        return None
    from harness.backends.base import LABEL_SESSION
    from harness.backends.registry import BACKENDS
    from harness.backends.stream import Terminal
    from harness.paths import Locations
    from harness.policy.plan import plan_from_json
    from harness.session import session_spec

    backend = BACKENDS[escalation["backend"]](Locations.from_environment())
    plan = plan_from_json(escalation["plan"])
    session = config["session"]

    def run(argv: tuple[str, ...], cwd: str, frame: Callable[[int, bytes], None]) -> int:
        """An approved escalation: a sibling sandbox with the full plan, sharing the workspace."""
        sibling = f"{session}-e{secrets.token_hex(2)}"
        workdir = (
            cwd if cwd == plan.workspace or cwd.startswith(plan.workspace + "/") else plan.workdir
        )
        spec = session_spec(
            backend,
            replace(plan, workdir=workdir),
            sibling,
            escalation["image"],
            command=argv,
            tty=False,
            stdin=False,
            role="escalation",
        )
        spec = replace(
            spec, labels={**spec.labels, LABEL_SESSION: session, "harness.sibling": sibling}
        )
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY)

        def relay(fd: int, kind: int) -> None:
            while chunk := os.read(fd, 65536):
                frame(kind, chunk)
            os.close(fd)

        readers = [
            threading.Thread(target=relay, args=(out_r, STDOUT)),
            threading.Thread(target=relay, args=(err_r, STDERR)),
        ]
        for reader in readers:
            reader.start()
        handle = None
        try:
            handle = backend.create(spec)
            return backend.attach(handle, spec, terminal=Terminal(devnull, out_w, err_w))
        finally:
            if handle is not None:
                with contextlib.suppress(Exception):
                    backend.destroy(handle)
            for fd in (out_w, err_w, devnull):
                os.close(fd)
            for reader in readers:
                reader.join(timeout=10)

    return run


async def _serve(config: dict[str, Any], stop: asyncio.Event) -> None:
    from harness.audit import MultiAuditLog
    from harness.gateway.server import Gateway
    from harness.session import context_from_json

    paths = [Path(p) for p in config.get("audit_paths", [])]
    gateway = Gateway(
        config["session"],
        config["token"],
        context_from_json(config["context"]),
        audit=MultiAuditLog(paths) if paths else None,
        escalator=_escalator(config),
    )
    await gateway.start(Path(config["gateway_socket"]), Path(config["control_socket"]))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    watchdog = (
        asyncio.ensure_future(
            _watch_session(Path(config["session_record"]), config.get("owner"), stop)
        )
        if config.get("session_record")
        else None
    )
    await stop.wait()
    if watchdog is not None:
        watchdog.cancel()
    await gateway.close()


async def _watch_session(record: Path, owner: str | None, stop: asyncio.Event) -> None:
    """Exit with the session: when the harness that owns it dies (kill -9: the sandbox is
    orphaned and `prune` removes it), when its record is gone (down, prune), or when the
    record never appears (harness died before the sandbox existed)."""
    from harness.procs import ProcessId

    owner_process = ProcessId.from_label(owner) if owner else None
    seen = False
    waited = 0.0
    while not stop.is_set():
        await asyncio.sleep(0.5)
        waited += 0.5
        if owner_process is not None and not owner_process.alive():
            stop.set()
        elif record.exists():
            seen = True
        elif seen or waited > 120:
            stop.set()


def serve(config_path: str) -> int:
    import json

    config = json.loads(Path(config_path).read_text())
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(_serve(config, stop))
    finally:
        loop.close()
        for key in ("gateway_socket", "control_socket"):
            Path(config[key]).unlink(missing_ok=True)
        Path(config_path).unlink(missing_ok=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "serve":
        sys.stderr.write("usage: python -m harness.gateway serve CONFIG.json\n")
        return 2
    return serve(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
