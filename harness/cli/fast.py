"""`harness exec` without typer: agents run it once per command, so start-up counts.

Only the common form is handled here: `exec [--session ID] [--] CMD...`.
Anything else (--escalate, --help, a typo) returns None and the full CLI
takes over, with its help and its errors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.paths import Locations
    from harness.session import Sessions


def parse_exec(args: Sequence[str]) -> tuple[str | None, list[str]] | None:
    """(session, command), or None when the full CLI should handle these arguments."""
    session: str | None = None
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            command = list(args[index + 1 :])
            return (session, command) if command else None
        if arg == "--session" and index + 1 < len(args):
            session = args[index + 1]
            index += 2
            continue
        if arg.startswith("--session="):
            session = arg.split("=", 1)[1]
            index += 1
            continue
        return None
    return None


def fast_exec(args: Sequence[str]) -> int | None:
    parsed = parse_exec(args)
    if parsed is None:
        return None
    session, command = parsed
    from harness.paths import Locations

    sessions = sessions_for_cli(Locations.from_environment())
    return sessions.exec(session, command, tty=_terminal(), stdin=True, cwd=Path.cwd())


def fast_run(args: Sequence[str]) -> int | None:
    """`harness run [OPTIONS] -- CMD...` without typer; pydantic only when the config changed."""
    from harness.cli.optspec import parse_sandbox_options

    parsed = parse_sandbox_options(args)
    if parsed is None:
        return None
    options, command = parsed
    from harness.config.cache import resolve_cached
    from harness.paths import Locations

    locations = Locations.from_environment()
    settings = resolve_cached(options, locations)
    for notice in settings.notices:
        sys.stderr.write(f"harness: note: {notice}\n")
    sessions = sessions_for_cli(locations)
    return int(sessions.run(settings, command, tty=_terminal(), stdin=True))


def _terminal() -> bool:
    """The same test as console.has_terminal, without importing the console (and the engine)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def progress(line: str) -> None:
    sys.stderr.write(f"harness: {line.rstrip()}\n")
    sys.stderr.flush()


def sessions_for_cli(locations: Locations) -> Sessions:
    """Sessions with this terminal as the human: an asker, and a console for foreground sessions."""
    from harness.session import Sessions

    if not _terminal():
        # nobody to ask: skip the console (and the approval engine it would import)
        return Sessions(locations, progress=progress)
    from harness.cli.console import GatewayConsole, terminal_asker

    asker = terminal_asker()
    return Sessions(
        locations,
        asker=asker,
        progress=progress,
        no_human_reason="no terminal to ask" if asker is None else "nobody answering",
        console_factory=(
            (lambda record: GatewayConsole(record.gateway_control, record.gateway_token))
            if asker
            else None
        ),
    )
