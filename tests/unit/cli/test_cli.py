from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.audit import AuditLog
from harness.cli.main import main
from harness.paths import Locations


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("config", "policy", "profile", "trust", "audit", "seccomp"):
        assert command in out


def test_config_show_json(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    code, out, _ = run(capsys, "config", "show", "--profile", "auto", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["effective"]["approval.policy"] == "on-request"
    assert data["sources"]["approval.policy"] == "profile:auto"
    assert data["effective"]["sandbox.mode"] == "workspace-write"
    assert data["sources"]["limits.pids"] == "default"
    assert set(data["effective"]) == set(data["sources"])


def test_config_show_table(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    code, out, _ = run(capsys, "config", "show", "-s", "read-only")
    assert code == 0
    assert "sandbox.mode" in out
    assert "read-only" in out
    assert "cli" in out


def test_unknown_profile_exits_125_and_lists_profiles(
    capsys: pytest.CaptureFixture[str], workspace: Path
) -> None:
    code, _, err = run(capsys, "config", "show", "--profile", "nosuch")
    assert code == 125
    assert "strict" in err
    assert "yolo" in err


def test_bad_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    code, _, err = run(capsys, "config", "show", "--sandbox", "sandboxed")
    assert code == 2
    assert "read-only" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("config", "show", "--bogus"),
        ("down", "--session", "abc"),
        ("ls", "--all-of-them"),
        ("nosuchcommand",),
        ("policy", "check", "--nope", "--", "ls"),
    ],
)
def test_unknown_options_and_commands_are_usage_errors_not_crashes(
    capsys: pytest.CaptureFixture[str], workspace: Path, argv: tuple[str, ...]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "internal error" not in err
    assert "No such" in err
    assert "-h' for help" in err


def test_malformed_toml_exits_125_naming_line(
    capsys: pytest.CaptureFixture[str], workspace: Path
) -> None:
    config = workspace / ".harness" / "config.toml"
    config.parent.mkdir()
    config.write_text("[sandbox\nmode = 1\n")
    code, _, err = run(capsys, "policy", "check", "--", "ls")
    assert code == 125
    assert str(config) in err
    assert "line 1" in err


def test_missing_workspace_exits_125(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    code, _, err = run(capsys, "config", "show", "-w", "/no/such/dir")
    assert code == 125
    assert "/no/such/dir" in err


def test_managed_floor_refusal_names_file(
    capsys: pytest.CaptureFixture[str], workspace: Path
) -> None:
    managed = Locations.from_environment().managed_config
    managed.write_text('[admin]\nmin_sandbox = "workspace-write"\n')
    code, _, err = run(capsys, "config", "show", "--yolo")
    assert code == 125
    assert str(managed) in err
    assert "min_sandbox" in err


def test_policy_check_json(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    managed = Locations.from_environment().managed_config
    managed.write_text('[[prefix_rules]]\npattern = "rm -rf /"\naction = "forbidden"\n')
    code, out, _ = run(capsys, "policy", "check", "--json", "-c", "cd / && sudo rm -fr .")
    assert code == 0
    data = json.loads(out)
    assert data["decision"] == "forbidden"
    assert data["rule"]["file"] == str(managed)
    assert data["approval_policy"] == "untrusted"
    assert data["sandbox_mode"] == "workspace-write"
    assert [c["argv"] for c in data["commands"]] == [["cd", "/"], ["rm", "-fr", "."]]
    for key in (
        "decision",
        "reason",
        "rule",
        "risk",
        "rationale",
        "approval_policy",
        "sandbox_mode",
        "commands",
    ):
        assert key in data


def test_policy_check_argv_and_text(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    code, out, _ = run(capsys, "policy", "check", "-a", "untrusted", "--", "git", "status")
    assert code == 0
    assert out.startswith("allow")
    assert "known-safe" in out
    code, out, _ = run(capsys, "policy", "check", "--profile", "auto", "--", "make", "test")
    assert out.startswith("allow")
    assert "on-request" in out


def test_policy_check_needs_exactly_one_command(
    capsys: pytest.CaptureFixture[str], workspace: Path
) -> None:
    code, _, _ = run(capsys, "policy", "check")
    assert code == 2
    code, _, _ = run(capsys, "policy", "check", "-c", "ls", "--", "ls")
    assert code == 2


def test_untrusted_project_notice_goes_to_stderr(
    capsys: pytest.CaptureFixture[str], workspace: Path
) -> None:
    config = workspace / ".harness" / "config.toml"
    config.parent.mkdir()
    config.write_text('[sandbox]\nmode = "danger-full-access"\n')
    code, out, err = run(capsys, "config", "show", "--json")
    assert code == 0
    assert json.loads(out)["effective"]["sandbox.mode"] == "workspace-write"
    assert "not trusted" in err
    code, out, _ = run(capsys, "trust", str(workspace))
    assert code == 0
    code, out, err = run(capsys, "config", "show", "--json")
    assert json.loads(out)["effective"]["sandbox.mode"] == "danger-full-access"
    assert json.loads(out)["sources"]["sandbox.mode"] == "project"
    assert "not trusted" not in err


def test_profile_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "strict",
        "auto",
        "review",
        "ci",
        "infra",
        "yolo",
    ]
    code, out, _ = run(capsys, "profile", "show", "ci")
    assert code == 0
    assert 'policy = "never"' in out


def test_audit_verify_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    for index in range(5):
        log.append("approval.decided", session="s1" if index % 2 else "s2", decision="allow")
    code, out, _ = run(capsys, "audit", "verify", "--path", str(log.path))
    assert code == 0
    assert "ok" in out
    code, out, _ = run(
        capsys, "audit", "show", "--path", str(log.path), "--session", "s1", "--json"
    )
    assert code == 0
    assert len(out.splitlines()) == 2
    lines = log.path.read_text().splitlines()
    lines[2] = lines[2].replace('"allow"', '"deny"')
    log.path.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, "audit", "verify", "--path", str(log.path))
    assert code == 1
    assert "line 3" in out


def test_approvals_of_a_session_and_of_an_unknown_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    log.append("config.resolved", session="quiet")  # a session that asked nothing
    log.append(
        "approval.decided",
        session="s1",
        approval_id="s1-1",
        command="git push --force",
        decision="deny",
        decider="user",
        feedback="use a branch",
    )
    code, out, _ = run(capsys, "approvals", "--path", str(log.path), "--session", "s1", "--json")
    assert code == 0
    assert [(e["id"], e["decision"], e["feedback"]) for e in json.loads(out)] == [
        ("s1-1", "deny", "use a branch")
    ]
    code, out, _ = run(capsys, "approvals", "--path", str(log.path), "--session", "quiet", "--json")
    assert (code, json.loads(out)) == (0, [])
    code, out, err = run(capsys, "approvals", "--path", str(log.path), "--session", "s2")
    assert code == 125
    assert "no record of session 's2'" in err
    assert str(log.path) in err


def test_seccomp_generate_matches_checked_in_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from harness.policy.seccomp import default_directory

    code, out, _ = run(capsys, "seccomp", "generate", "-o", str(tmp_path))
    assert code == 0
    written = sorted(Path(line) for line in out.split())
    assert written
    for path in written:
        assert path.read_text() == (default_directory() / path.name).read_text()


def test_an_engine_that_is_down_gives_the_fix_and_125(
    capsys: pytest.CaptureFixture[str], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{workspace}/no-such-docker.sock")
    code, _, err = run(capsys, "run", "--backend", "docker", "-a", "never", "--", "true")
    assert code == 125
    assert "no-such-docker.sock" in err
    assert "dockerd" in err or "systemctl start docker" in err
    monkeypatch.setenv("PATH", str(workspace))  # no podman anywhere
    code, _, err = run(capsys, "run", "--backend", "podman", "-a", "never", "--", "true")
    assert code == 125
    assert "apt-get install podman" in err
