from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.cache import resolve_cached, settings_from_json, settings_to_json
from harness.config.options import CliOptions
from harness.config.resolve import resolve
from harness.config.trust import set_trusted
from harness.errors import ConfigError
from harness.paths import Locations


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


RICH = """
[approval]
policy = "on-request"
[sandbox]
mode = "read-only"
protected_paths = [".secrets"]
[features]
smart_approvals = true
[[filesystem]]
path = "/data"
access = "read"
[[network]]
domain = "*.example.com"
allow = true
port = 443
[[prefix_rules]]
pattern = "git push --force"
action = "prompt"
justification = "history"
[env]
pass = ["GIT_AUTHOR_NAME"]
set = { EDITOR = "vi" }
[guardian]
command = ["reviewer", "--json"]
timeout = 12
"""


def test_settings_round_trip_through_json(workspace: Path) -> None:
    locations = Locations.from_environment()
    write(locations.user_config, RICH)
    write(
        locations.managed_config,
        '[admin]\nmin_sandbox = "workspace-write"\ndisallow_policies = ["never"]\naudit_required = true\nmax_network = "allowlist"\n[[prefix_rules]]\npattern = "rm -rf /"\naction = "forbidden"\n',
    )
    settings = resolve(CliOptions(workspace=workspace, profile="auto"), locations)
    assert settings_from_json(settings_to_json(settings)) == settings


def test_cache_hits_and_invalidates_on_any_byte(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locations = Locations.from_environment()
    write(locations.user_config, '[approval]\npolicy = "never"\n')
    calls = []
    import harness.config.resolve as resolve_module

    real = resolve_module.resolve

    def counting(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(resolve_module, "resolve", counting)
    first = resolve_cached(CliOptions(workspace=workspace), locations, cwd=workspace)
    second = resolve_cached(CliOptions(workspace=workspace), locations, cwd=workspace)
    assert first == second
    assert len(calls) == 1
    resolve_cached(CliOptions(workspace=workspace, sandbox="read-only"), locations, cwd=workspace)
    assert len(calls) == 2  # other options, other key
    write(Locations.project_config(workspace), '[sandbox]\nmode = "read-only"\n')
    assert (
        resolve_cached(CliOptions(workspace=workspace), locations, cwd=workspace).sandbox_mode.value
        == "read-only"
    )
    set_trusted(workspace, locations.trust_file)  # trust changes what the project may do
    resolve_cached(CliOptions(workspace=workspace), locations, cwd=workspace)
    write(locations.managed_config, '[admin]\ndisallow_policies = ["never"]\n')
    with pytest.raises(ConfigError):
        resolve_cached(CliOptions(workspace=workspace), locations, cwd=workspace)
    assert len(calls) == 5


def test_failures_are_not_cached(workspace: Path) -> None:
    locations = Locations.from_environment()
    write(locations.user_config, "[sandbox\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="malformed"):
            resolve_cached(CliOptions(workspace=workspace), locations, cwd=workspace)
    assert (
        not list((locations.state_dir / "cache").glob("*.json"))
        if (locations.state_dir / "cache").exists()
        else True
    )
