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
    runtime_home: Path | None = None

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
        runtime = Path(env["XDG_RUNTIME_DIR"]) if env.get("XDG_RUNTIME_DIR") else None
        return cls(config_home, state_home, SYSTEM_DIR, Path(extra) if extra else None, runtime)

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

    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"

    @property
    def runtime_dir(self) -> Path:
        """Sockets live here: short paths (unix sockets allow 107 bytes), private to the user."""
        if self.runtime_home is not None:
            return self.runtime_home / "harness"
        return Path(f"/tmp/harness-{os.getuid()}")  # noqa: S108 - checked by ensure_private_dir

    @staticmethod
    def project_config(workspace: Path) -> Path:
        return workspace / ".harness" / "config.toml"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (0700) or check that an existing one is ours and private.

    A directory in /tmp that another user made first would let them swap our
    sockets; refuse it rather than use it.
    """
    from harness.errors import HarnessError

    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.lstat()
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise HarnessError(
            f"{path} is not a private directory owned by you (uid {os.getuid()}); "
            "remove it, or set XDG_RUNTIME_DIR to a private directory."
        )
    return path
