"""Built-in defaults and named profiles, kept as TOML so `profile show` prints what applies."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UnknownProfileError

DEFAULTS_TOML = """\
# Built-in defaults: stricter than most tools ship. Every layer above may change them,
# within the floor of /etc/harness/managed.toml.
[approval]
policy = "untrusted"

[sandbox]
mode = "workspace-write"
backend = "auto"
image = "localhost/harness-session:latest"

[features]
smart_approvals = false

[limits]
pids = 2048
memory = "4GiB"

[guardian]
timeout = 30.0

[audit]
enabled = true
"""

BUILTIN_PROFILES: dict[str, tuple[str, str]] = {
    "strict": (
        "junior developer: every command but known-safe reads is asked; nothing is written",
        """\
[approval]
policy = "untrusted"

[sandbox]
mode = "read-only"
""",
    ),
    "auto": (
        "senior developer: reads and writes in the workspace run; escalations are asked",
        """\
[approval]
policy = "on-request"

[sandbox]
mode = "workspace-write"
""",
    ),
    "review": (
        "security audit: read-only, every command asked, nothing leaves the box",
        """\
[approval]
policy = "untrusted"

[sandbox]
mode = "read-only"
network = "none"
""",
    ),
    "ci": (
        "CI pipeline: no prompts, workspace-write, network off, exit code passes through",
        """\
[approval]
policy = "never"

[sandbox]
mode = "workspace-write"
network = "none"
""",
    ),
    "infra": (
        "infrastructure: full access inside a throwaway VM, escalations asked",
        """\
[approval]
policy = "on-request"

[sandbox]
mode = "danger-full-access"
backend = "vm"
""",
    ),
    "yolo": (
        "full autonomy inside a throwaway VM: no prompts, full access",
        """\
[approval]
policy = "never"

[sandbox]
mode = "danger-full-access"
backend = "vm"
""",
    ),
}


@dataclass(frozen=True)
class ProfileSource:
    """Where a named profile's TOML comes from."""

    name: str
    text: str
    path: Path | None  # None for built-ins
    description: str

    @property
    def builtin(self) -> bool:
        return self.path is None


def user_profile_dir(config_home: Path) -> Path:
    return config_home / "harness" / "profiles"


def list_profiles(config_home: Path) -> list[ProfileSource]:
    """Built-ins first, then user files; a user file may shadow a built-in of the same name."""
    found: dict[str, ProfileSource] = {
        name: ProfileSource(name, text, None, description)
        for name, (description, text) in BUILTIN_PROFILES.items()
    }
    directory = user_profile_dir(config_home)
    if directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            found[path.stem] = ProfileSource(path.stem, "", path, f"user profile ({path})")
    return list(found.values())


def find_profile(name: str, config_home: Path) -> ProfileSource:
    for profile in list_profiles(config_home):
        if profile.name == name:
            if profile.path is not None:
                return ProfileSource(name, _read(profile.path), profile.path, profile.description)
            return profile
    known = [p.name for p in list_profiles(config_home)]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    raise UnknownProfileError(
        f"unknown profile `{name}`.{hint} Known profiles: {', '.join(known)}. "
        f"Create {user_profile_dir(config_home) / (name + '.toml')} to define it.",
        key="--profile",
    )


def _read(path: Path) -> str:
    from harness.errors import ConfigError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot be read ({exc}); fix or remove it.", path=str(path)
        ) from None
