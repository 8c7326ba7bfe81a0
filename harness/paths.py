"""Where harness reads configuration and keeps state (XDG base directories).

The system and managed paths are fixed on purpose: an environment variable
that moved /etc/harness/managed.toml would let anyone step below the floor an
administrator set. Only `HARNESS_MANAGED_CONFIG` exists, and it can only add
constraints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SYSTEM_DIR = Path("/etc/harness")
MANAGED_ENV = "HARNESS_MANAGED_CONFIG"


@dataclass(frozen=True)
class Locations:
    """The files and folders one harness invocation uses.

    Attributes:
        config_home: `$XDG_CONFIG_HOME` (default ~/.config).
        state_home: `$XDG_STATE_HOME` (default ~/.local/state).
        system_dir: /etc/harness (config.toml, managed.toml).
        extra_managed: the file named by HARNESS_MANAGED_CONFIG, if any.
    """

    config_home: Path
    state_home: Path
    system_dir: Path = SYSTEM_DIR
    extra_managed: Path | None = None

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Locations:
        env = dict(os.environ) if environ is None else environ
        home = Path(env.get("HOME") or Path.home())
        config_home = (
            Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
        )
        state_home = (
            Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else home / ".local" / "state"
        )
        extra = env.get(MANAGED_ENV)
        return cls(config_home, state_home, SYSTEM_DIR, Path(extra) if extra else None)

    @property
    def system_config(self) -> Path:
        return self.system_dir / "config.toml"

    @property
    def managed_config(self) -> Path:
        return self.system_dir / "managed.toml"

    @property
    def user_config(self) -> Path:
        return self.config_home / "harness" / "config.toml"

    @property
    def state_dir(self) -> Path:
        return self.state_home / "harness"

    @property
    def default_audit_log(self) -> Path:
        return self.state_dir / "audit.jsonl"

    @property
    def trust_file(self) -> Path:
        return self.state_dir / "trusted.json"

    @staticmethod
    def project_config(workspace: Path) -> Path:
        return workspace / ".harness" / "config.toml"
