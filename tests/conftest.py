"""Guardrails for every test: no real home, config, state or managed file is touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness.paths


@pytest.fixture(autouse=True)
def isolation(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A private HOME, XDG dirs and /etc/harness for each test."""
    root = tmp_path_factory.mktemp("isolated")
    home = root / "home"
    home.mkdir()
    etc = root / "etc-harness"
    etc.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.delenv("HARNESS_MANAGED_CONFIG", raising=False)
    monkeypatch.setattr(harness.paths, "SYSTEM_DIR", etc)
    yield root


def in_ci() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("HARNESS_CI"))
