"""The command-line options that choose a configuration, as a plain value.

Kept apart from `resolve` so that the CLI can build it without importing
pydantic: `harness --help` must start fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CliOptions:
    """The options `run`, `up`, `config show` and `policy check` share."""

    profile: str | None = None
    approval: str | None = None
    sandbox: str | None = None
    full_auto: bool = False
    yolo: bool = False
    backend: str | None = None
    image: str | None = None
    workspace: Path | None = None
    network: str | None = None
    allow_domains: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
