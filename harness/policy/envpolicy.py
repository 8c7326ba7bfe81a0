"""What of the host environment enters the sandbox: almost nothing.

Only a short list of harmless variables passes by default. Names that look
like secrets never pass, even when a configuration asks for them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

SAFE_BY_DEFAULT = frozenset(
    {"TERM", "LANG", "LANGUAGE", "TZ", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES"}
)
SAFE_PREFIXES = ("LC_",)
SECRET_PATTERNS = ("*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*")


def secret_name(name: str) -> bool:
    """True for names like AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, DB_PASSWORD (any case)."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in SECRET_PATTERNS)


@dataclass(frozen=True)
class EnvPolicy:
    """Which host variables pass (`[env] pass`) and which are set (`[env] set`)."""

    passthrough: frozenset[str] = frozenset()
    fixed: Mapping[str, str] = field(default_factory=dict)

    def allows(self, name: str) -> bool:
        if secret_name(name):
            return False
        return name in SAFE_BY_DEFAULT or name.startswith(SAFE_PREFIXES) or name in self.passthrough

    def build(
        self, host_env: Mapping[str, str], base: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The sandbox environment: `base` (harness's own), then allowed host names, then `fixed`."""
        env = dict(base or {})
        env.update({k: v for k, v in host_env.items() if self.allows(k)})
        env.update({k: v for k, v in self.fixed.items() if not secret_name(k)})
        return env
