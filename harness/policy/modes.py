"""The two axes of the security model, each ordered by strictness."""

from __future__ import annotations

import enum
from typing import Self


class _Ordered(enum.Enum):
    """An enum whose members are declared strictest first."""

    @classmethod
    def names(cls) -> list[str]:
        return [m.value for m in cls]

    @property
    def strictness(self) -> int:
        """Higher is stricter; the first declared member is the strictest."""
        members = list(type(self))
        return len(members) - members.index(self)

    def is_stricter_than(self, other: Self) -> bool:
        return self.strictness > other.strictness

    @classmethod
    def strictest(cls, first: Self, *rest: Self) -> Self:
        return max((first, *rest), key=lambda m: m.strictness)

    @classmethod
    def parse(cls, value: str) -> Self:
        """The member named `value`; ValueError lists the allowed names."""
        for member in cls:
            if member.value == value:
                return member
        raise ValueError(f"{value!r} is not one of {', '.join(cls.names())}")


class ApprovalPolicy(_Ordered):
    """When a human must be asked."""

    UNTRUSTED = "untrusted"
    ON_REQUEST = "on-request"
    NEVER = "never"


class SandboxMode(_Ordered):
    """What the operating system allows inside the sandbox."""

    READ_ONLY = "read-only"
    WORKSPACE_WRITE = "workspace-write"
    DANGER_FULL_ACCESS = "danger-full-access"


class NetworkMode(_Ordered):
    """How the sandbox reaches the network."""

    NONE = "none"
    ALLOWLIST = "allowlist"
    FULL = "full"


class FilesystemAccess(_Ordered):
    """Access to an extra host path named in `[[filesystem]]`."""

    NONE = "none"
    READ = "read"
    WRITE = "write"


class RuleAction(_Ordered):
    """What a prefix rule decides; strictest match wins."""

    FORBIDDEN = "forbidden"
    PROMPT = "prompt"
    ALLOW = "allow"


DEPRECATED_POLICIES = {"on-failure": ApprovalPolicy.ON_REQUEST}
