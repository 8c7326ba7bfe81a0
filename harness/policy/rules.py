"""Rules as plain values: where they came from and what they say."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from harness.policy.modes import FilesystemAccess, RuleAction


@dataclass(frozen=True)
class Origin:
    """Where a setting or rule came from.

    Attributes:
        layer: one of default, system, user, project, profile:NAME, cli, managed.
        path: the file it was read from, if any.
    """

    layer: str
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.layer} ({self.path})" if self.path else self.layer


BUILTIN = Origin("default")


@dataclass(frozen=True)
class PrefixRule:
    """`[[prefix_rules]] pattern = "git push --force", action = "prompt"`."""

    pattern: str
    action: RuleAction
    origin: Origin = BUILTIN
    justification: str | None = None

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.pattern))

    @property
    def is_managed(self) -> bool:
        return self.origin.layer == "managed"

    def describe(self) -> str:
        return f"{self.action.value} rule '{self.pattern}' from {self.origin}"


@dataclass(frozen=True)
class NetworkRule:
    """`[[network]] domain = "*.example.com", allow = true`, optionally `port`."""

    domain: str
    allow: bool
    port: int | None = None
    origin: Origin = BUILTIN

    def describe(self) -> str:
        verb = "allow" if self.allow else "deny"
        port = f":{self.port}" if self.port is not None else ""
        return f"{verb} rule '{self.domain}{port}' from {self.origin}"


@dataclass(frozen=True)
class FilesystemRule:
    """`[[filesystem]] path = "/data", access = "read"`."""

    path: str
    access: FilesystemAccess
    origin: Origin = BUILTIN
