from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.backends.base import SessionSpec
from harness.backends.docker import render_docker
from harness.backends.mounts import MaskKind, PreparedMounts, SessionRefused, prepare_mounts
from harness.backends.podman import render_podman
from harness.policy.envpolicy import EnvPolicy
from harness.policy.modes import FilesystemAccess, NetworkMode, SandboxMode
from harness.policy.plan import Limits, Permissions, SandboxPlan, build_plan
from harness.policy.rules import FilesystemRule
from harness.policy.seccomp import render
from harness.session import sandbox_env


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    return root


def plan(repo: Path, mode: SandboxMode, **kwargs: object) -> SandboxPlan:
    network = NetworkMode.FULL if mode is SandboxMode.DANGER_FULL_ACCESS else NetworkMode.NONE
    permissions = Permissions(
        network=network,
        limits=Limits(pids=512, memory_bytes=1 << 30, cpus=1.5),
        env=EnvPolicy(passthrough=frozenset({"EDITOR"})),
        user=(1000, 1000),
        **kwargs,  # type: ignore[arg-type]
    )
    return build_plan(mode, permissions, str(repo))


def spec(the_plan: SandboxPlan, command: tuple[str, ...] | None = ("make",)) -> SessionSpec:
    host_env = {
        "EDITOR": "vi",
        "AWS_SECRET_ACCESS_KEY": "x",
        "HOME": "/root",
        "DOCKER_HOST": "tcp://x",
    }
    return SessionSpec(
        session_id="abc123",
        image="img:1",
        plan=the_plan,
        env=sandbox_env(the_plan, "abc123", tty=False, host_env=host_env),
        labels={"harness.session": "abc123"},
        seccomp_json=render(the_plan.seccomp_profile),
        mounts=prepare_mounts(the_plan),
        ulimits=(("nofile", 1024, 1024),),
        command=command,
    )


def test_docker_workspace_write(repo: Path) -> None:
    body = render_docker(spec(plan(repo, SandboxMode.WORKSPACE_WRITE)))
    host = body["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == []
    assert "no-new-privileges:true" in host["SecurityOpt"]
    seccomp = next(o for o in host["SecurityOpt"] if o.startswith("seccomp="))
    assert json.loads(seccomp.removeprefix("seccomp=")) == json.loads(render("workspace-write"))
    assert host["NetworkMode"] == "none"
    assert (host["PidsLimit"], host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (
        512,
        1 << 30,
        1 << 30,
        1_500_000_000,
    )
    assert host["Privileged"] is False
    binds = {m["Target"]: m for m in host["Mounts"] if m["Type"] == "bind"}
    assert binds[str(repo)]["ReadOnly"] is False
    assert binds[str(repo)]["Source"] == str(repo)
    assert binds[str(repo / ".git" / "hooks")]["ReadOnly"] is True
    assert binds[str(repo / ".git" / "config")]["ReadOnly"] is True
    assert str(repo / ".harness") in host["Tmpfs"]  # missing: covered so it cannot be created
    assert host["Tmpfs"][str(repo / ".harness")].startswith("ro,")
    assert set(host["Tmpfs"]) >= {"/tmp", "/home/harness", "/run", "/var/tmp"}
    assert "uid=1000" in host["Tmpfs"]["/home/harness"]
    assert body["User"] == "1000:1000"
    assert body["WorkingDir"] == str(repo)
    assert body["Cmd"] == ["make"]


def test_docker_nothing_else_from_the_host(repo: Path) -> None:
    body = render_docker(spec(plan(repo, SandboxMode.WORKSPACE_WRITE)))
    sources = [m.get("Source") for m in body["HostConfig"]["Mounts"]]
    assert all(s == "/dev/null" or s.startswith(str(repo)) for s in sources), sources
    assert not any("docker.sock" in s or "podman.sock" in s for s in sources)
    env = dict(item.split("=", 1) for item in body["Env"])
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "DOCKER_HOST" not in env
    assert env["HOME"] == "/home/harness"
    assert env["EDITOR"] == "vi"


def test_docker_read_only_and_danger(repo: Path) -> None:
    read_only = render_docker(spec(plan(repo, SandboxMode.READ_ONLY)))
    binds = {m["Target"]: m for m in read_only["HostConfig"]["Mounts"]}
    assert binds[str(repo)]["ReadOnly"] is True
    seccomp = next(o for o in read_only["HostConfig"]["SecurityOpt"] if o.startswith("seccomp="))
    assert json.loads(seccomp.removeprefix("seccomp=")) == json.loads(render("read-only"))

    danger = render_docker(spec(plan(repo, SandboxMode.DANGER_FULL_ACCESS)))
    host = danger["HostConfig"]
    assert host["ReadonlyRootfs"] is False
    assert host["CapDrop"] == []
    assert host["NetworkMode"] == "bridge"
    assert host["PidsLimit"] == 512  # limits hold in every mode
    assert not any(o.startswith("no-new-privileges") for o in host["SecurityOpt"])
    assert {m["Target"] for m in host["Mounts"]} == {str(repo)}


def test_docker_keeper_and_attach_flags(repo: Path) -> None:
    from harness.backends.base import KEEPER

    keeper = render_docker(spec(plan(repo, SandboxMode.WORKSPACE_WRITE), command=None))
    assert keeper["Cmd"] == list(KEEPER)
    assert "agent.py" in keeper["Cmd"][-1]
    assert keeper["AttachStdout"] is False
    assert keeper["HostConfig"]["Init"] is True


def test_filesystem_entries_keep_their_access(repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rules = (
        FilesystemRule(str(data), FilesystemAccess.READ),
        FilesystemRule(str(scratch), FilesystemAccess.WRITE),
    )
    body = render_docker(spec(plan(repo, SandboxMode.WORKSPACE_WRITE, filesystem=rules)))
    binds = {m["Target"]: m["ReadOnly"] for m in body["HostConfig"]["Mounts"]}
    assert binds[str(data)] is True
    assert binds[str(scratch)] is False
    ro = render_docker(spec(plan(repo, SandboxMode.READ_ONLY, filesystem=rules)))
    assert {m["Target"]: m["ReadOnly"] for m in ro["HostConfig"]["Mounts"]}[str(scratch)] is True


def test_podman_workspace_write(repo: Path) -> None:
    body = render_podman(
        spec(plan(repo, SandboxMode.WORKSPACE_WRITE)),
        seccomp_path="/run/x.json",
        runtime="runc",
        init_path="/usr/bin/tini-static",
        rootless=False,
    )
    assert body["read_only_filesystem"] is True
    assert body["cap_drop"] == ["ALL"]
    assert body["no_new_privileges"] is True
    assert body["seccomp_profile_path"] == "/run/x.json"
    assert body["netns"] == {"nsmode": "none"}
    assert body["oci_runtime"] == "runc"
    assert body["resource_limits"]["pids"] == {"limit": 512}
    assert body["r_limits"] == [{"type": "nofile", "soft": 1024, "hard": 1024}]
    assert body["user"] == "1000:1000"
    mounts = {m["destination"]: m for m in body["mounts"]}
    assert "rw" in mounts[str(repo)]["options"]
    assert "ro" in mounts[str(repo / ".git" / "hooks")]["options"]
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert mounts[str(repo / ".harness")]["type"] == "tmpfs"
    assert "ro" in mounts[str(repo / ".harness")]["options"]
    assert "AWS_SECRET_ACCESS_KEY" not in body["env"]


def test_podman_rootless_keeps_the_users_id(repo: Path) -> None:
    body = render_podman(
        spec(plan(repo, SandboxMode.WORKSPACE_WRITE)),
        seccomp_path="/x",
        runtime=None,
        init_path=None,
        rootless=True,
    )
    assert body["userns"] == {"nsmode": "keep-id"}
    assert "user" not in body
    assert "oci_runtime" not in body
    assert "init" not in body


# -- prepare_mounts -------------------------------------------------------------------------


def test_missing_git_is_masked_whole(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    prepared = prepare_mounts(plan(root, SandboxMode.WORKSPACE_WRITE))
    masks = {m.guest_path: m.kind for m in prepared.masks}
    assert masks[str(root / ".git")] is MaskKind.DIRECTORY
    assert masks[str(root / ".harness")] is MaskKind.DIRECTORY
    assert str(root / ".git" / "hooks") not in masks
    assert set(prepared.created_on_host) == {str(root / ".git"), str(root / ".harness")}


def test_git_worktree_file_is_bound_read_only(tmp_path: Path) -> None:
    root = tmp_path / "worktree"
    root.mkdir()
    (root / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")
    prepared = prepare_mounts(plan(root, SandboxMode.WORKSPACE_WRITE))
    assert any(b.guest_path == str(root / ".git") and b.read_only for b in prepared.binds)


def test_missing_git_config_is_masked_as_a_file(repo: Path) -> None:
    (repo / ".git" / "config").unlink()
    prepared = prepare_mounts(plan(repo, SandboxMode.WORKSPACE_WRITE))
    assert {m.guest_path: m.kind for m in prepared.masks}[
        str(repo / ".git" / "config")
    ] is MaskKind.FILE


def test_symlinked_protected_path_is_refused(repo: Path, tmp_path: Path) -> None:
    (repo / ".git" / "hooks").rmdir()
    (repo / ".git" / "hooks").symlink_to(tmp_path)
    with pytest.raises(SessionRefused, match="symlink"):
        prepare_mounts(plan(repo, SandboxMode.WORKSPACE_WRITE))


def test_optional_protected_paths_only_when_present(repo: Path) -> None:
    (repo / ".vscode").mkdir()
    prepared = prepare_mounts(plan(repo, SandboxMode.WORKSPACE_WRITE))
    bound = {b.guest_path for b in prepared.binds if b.read_only}
    assert str(repo / ".vscode") in bound
    assert str(repo / ".envrc") not in bound
    assert str(repo / ".envrc") not in {m.guest_path for m in prepared.masks}


def test_read_only_mode_needs_no_protection(repo: Path) -> None:
    prepared = prepare_mounts(plan(repo, SandboxMode.READ_ONLY))
    assert prepared.masks == ()
    assert [b.read_only for b in prepared.binds] == [True]


def test_hidden_paths_inside_the_workspace_are_masked(repo: Path) -> None:
    (repo / ".env").write_text("SECRET=1\n")
    rules = (FilesystemRule(str(repo / ".env"), FilesystemAccess.NONE),)
    prepared = prepare_mounts(plan(repo, SandboxMode.WORKSPACE_WRITE, filesystem=rules))
    assert {m.guest_path: m.kind for m in prepared.masks}[str(repo / ".env")] is MaskKind.FILE


def test_remove_created_mount_points_keeps_content(tmp_path: Path) -> None:
    from harness.backends.mounts import remove_created_mount_points

    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep")
    remove_created_mount_points(PreparedMounts((), (), (str(empty), str(full))))
    assert not empty.exists()
    assert (full / "x").read_text() == "keep"


@pytest.mark.parametrize("mode", list(SandboxMode))
def test_plan_round_trips_through_json(repo: Path, mode: SandboxMode) -> None:
    import json as json_module

    from harness.policy.plan import plan_from_json, plan_to_json

    original = plan(repo, mode)
    assert plan_from_json(json_module.loads(json_module.dumps(plan_to_json(original)))) == original
