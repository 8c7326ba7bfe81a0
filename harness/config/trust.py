"""Which project directories the user has trusted (`harness trust DIR`).

A project's `.harness/config.toml` arrives with the repository, so until its
directory is trusted it may only tighten settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.errors import ConfigError


def _canonical(directory: Path) -> str:
    return str(directory.resolve())


def trusted_directories(trust_file: Path) -> list[str]:
    if not trust_file.exists():
        return []
    try:
        data = json.loads(trust_file.read_text(encoding="utf-8"))
        directories = data["directories"]
        if not isinstance(directories, list) or not all(isinstance(d, str) for d in directories):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{trust_file}: is not a valid trust list; delete it and run `harness trust DIR` again.",
            path=str(trust_file),
        ) from None
    return list(directories)


def is_trusted(directory: Path, trust_file: Path) -> bool:
    return _canonical(directory) in trusted_directories(trust_file)


def set_trusted(directory: Path, trust_file: Path, *, trusted: bool = True) -> str:
    """Record (or remove) `directory` as trusted; returns its canonical path."""
    if not directory.is_dir():
        raise ConfigError(
            f"{directory}: is not a directory; give the project folder to trust.",
            path=str(directory),
        )
    canonical = _canonical(directory)
    directories = [d for d in trusted_directories(trust_file) if d != canonical]
    if trusted:
        directories.append(canonical)
    trust_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = trust_file.with_name(f".{trust_file.name}.{os.getpid()}")
    temporary.write_text(
        json.dumps({"directories": sorted(directories)}, indent=2) + "\n", encoding="utf-8"
    )
    temporary.chmod(0o600)
    temporary.replace(trust_file)
    return canonical
