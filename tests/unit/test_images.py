"""The session image without an engine: base choice, build plumbing, Dockerfile and builder lints."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import images
from harness.errors import BackendError, BackendUnavailable
from harness.images import (
    BASE_IMAGE,
    DEFAULT_IMAGE,
    UPSTREAM_BASE,
    BaseStep,
    build_ulimits,
    choose_base,
    context_tar,
    upstream_base,
)
from harness.paths import Locations

ROOT = images.repo_root()
DOCKERFILE = ROOT / "Dockerfile"
BUILDER = ROOT / "images" / "build-base.sh"

REQUIRED_PACKAGES = [
    "bash",
    "coreutils",
    "findutils",
    "grep",
    "sed",
    "gawk",
    "diffutils",
    "patch",
    "less",
    "file",
    "procps",
    "util-linux",
    "iproute2",
    "git",
    "python3",
    "python3-venv",
    "python3-pip",
    "curl",
    "ca-certificates",
    "openssh-client",
    "jq",
    "ripgrep",
    "make",
    "unzip",
    "xz-utils",
    "netbase",
    "nodejs",
    "npm",
]


# --- which base -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["docker", "podman"])
@pytest.mark.parametrize("upstream_present", [True, False])
@pytest.mark.parametrize("pulled", [None, True, False])
def test_an_offline_base_wins_and_the_registry_is_never_asked(
    engine: str, upstream_present: bool, pulled: bool | None
) -> None:
    step = choose_base(
        engine, offline_base_present=True, upstream_present=upstream_present, pulled=pulled
    )
    assert step == BaseStep("use", BASE_IMAGE)


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_a_local_upstream_base_is_used_without_pulling(engine: str) -> None:
    step = choose_base(engine, offline_base_present=False, upstream_present=True)
    assert step == BaseStep("use", upstream_base(engine))


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_no_base_at_all_means_pull_first(engine: str) -> None:
    step = choose_base(engine, offline_base_present=False, upstream_present=False)
    assert step == BaseStep("pull", upstream_base(engine))


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_a_successful_pull_uses_upstream(engine: str) -> None:
    step = choose_base(engine, offline_base_present=False, upstream_present=False, pulled=True)
    assert step == BaseStep("use", upstream_base(engine))


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_a_failed_pull_falls_back_to_debootstrap(engine: str) -> None:
    step = choose_base(engine, offline_base_present=False, upstream_present=False, pulled=False)
    assert step == BaseStep("debootstrap", BASE_IMAGE)


def test_podman_gets_a_fully_qualified_upstream_name() -> None:
    assert upstream_base("docker") == UPSTREAM_BASE
    assert upstream_base("podman") == f"docker.io/library/{UPSTREAM_BASE}"


def test_the_image_names() -> None:
    assert DEFAULT_IMAGE == "localhost/harness-session:latest"
    assert BASE_IMAGE == "localhost/harness-base:bookworm"
    assert UPSTREAM_BASE == "debian:bookworm-slim"
    assert images.repo_root() == Path(images.__file__).resolve().parents[1]
    assert DOCKERFILE.is_file()
    assert BUILDER.is_file()


# --- the orchestration with a fake engine -----------------------------------------------------


class FakeEngine:
    def __init__(self, name: str, present: set[str], pull_error: str | None = None) -> None:
        self.name = name
        self.images = set(present)
        self.pull_error = pull_error
        self.pulls: list[str] = []
        self.builds: list[tuple[str, str]] = []
        self.closed = False

    def present(self, reference: str) -> bool:
        return reference in self.images

    def pull(self, reference: str, progress: images.Progress) -> str | None:
        self.pulls.append(reference)
        if self.pull_error is None:
            self.images.add(reference)
        return self.pull_error

    def build(self, context: bytes, tag: str, base: str, progress: images.Progress) -> None:
        assert base in self.images
        self.builds.append((tag, base))
        self.images.add(tag)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Route images._engine to FakeEngines and record offline base builds."""
    state: dict[str, object] = {"engines": [], "offline": [], "present": set(), "pull_error": None}

    def make(engine: str, locations: Locations | None) -> FakeEngine:
        made = FakeEngine(engine, state["present"], state["pull_error"])  # type: ignore[arg-type]
        state["engines"].append(made)  # type: ignore[attr-defined]
        return made

    def offline(engine: str, pull_error: str | None, progress: images.Progress) -> None:
        state["offline"].append((engine, pull_error))  # type: ignore[attr-defined]
        for made in state["engines"]:  # type: ignore[attr-defined]
            made.images.add(BASE_IMAGE)

    monkeypatch.setattr(images, "_engine", make)
    monkeypatch.setattr(images, "_build_base_offline", offline)
    return state


def _locations(tmp_path: Path) -> Locations:
    return Locations(tmp_path / "config", tmp_path / "state", tmp_path / "etc")


def test_build_with_an_offline_base_never_pulls(fake: dict, tmp_path: Path) -> None:
    fake["present"] = {BASE_IMAGE, UPSTREAM_BASE}
    lines: list[str] = []
    ref = images.build_session_image(
        "docker", progress=lines.append, locations=_locations(tmp_path)
    )
    engine = fake["engines"][0]
    assert ref == DEFAULT_IMAGE
    assert engine.pulls == []
    assert engine.builds == [(DEFAULT_IMAGE, BASE_IMAGE)]
    assert fake["offline"] == []
    assert engine.closed
    assert not any("debootstrap" in line for line in lines)


def test_build_pulls_upstream_when_nothing_is_local(fake: dict, tmp_path: Path) -> None:
    images.build_session_image("podman", "localhost/x:1", locations=_locations(tmp_path))
    engine = fake["engines"][0]
    assert engine.pulls == [upstream_base("podman")]
    assert engine.builds == [("localhost/x:1", upstream_base("podman"))]
    assert fake["offline"] == []


def test_build_falls_back_to_debootstrap_when_the_pull_fails(fake: dict, tmp_path: Path) -> None:
    fake["pull_error"] = "no such host"
    images.build_session_image("docker", locations=_locations(tmp_path))
    engine = fake["engines"][0]
    assert engine.pulls == [UPSTREAM_BASE]
    assert fake["offline"] == [("docker", "no such host")]
    assert engine.builds == [(DEFAULT_IMAGE, BASE_IMAGE)]


def test_ensure_image_returns_a_present_image_without_building(fake: dict, tmp_path: Path) -> None:
    fake["present"] = {"localhost/custom:1"}
    assert images.ensure_image("docker", "localhost/custom:1", locations=_locations(tmp_path))
    assert all(not e.builds for e in fake["engines"])


def test_ensure_image_builds_the_default_image_on_first_use(fake: dict, tmp_path: Path) -> None:
    fake["present"] = {BASE_IMAGE}
    lines: list[str] = []
    ref = images.ensure_image(
        "podman", DEFAULT_IMAGE, progress=lines.append, locations=_locations(tmp_path)
    )
    assert ref == DEFAULT_IMAGE
    assert [b for e in fake["engines"] for b in e.builds] == [(DEFAULT_IMAGE, BASE_IMAGE)]
    assert any("first use" in line for line in lines)


def test_ensure_image_names_the_fix_for_a_missing_custom_image(fake: dict, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        images.ensure_image(
            "podman", "registry.example/team/agent:2", locations=_locations(tmp_path)
        )
    message = str(caught.value)
    assert "registry.example/team/agent:2" in message
    assert "podman pull registry.example/team/agent:2" in message
    assert "harness image build" in message
    assert all(not e.builds for e in fake["engines"])


def test_an_unknown_engine_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="docker or podman"):
        images.image_present("lxc", DEFAULT_IMAGE)


def test_the_offline_base_needs_root_and_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BackendUnavailable) as caught:
        images._build_base_offline("docker", "no such host", lambda line: None)
    message = str(caught.value)
    assert "sudo " in message and "build-base.sh docker localhost/harness-base:bookworm" in message
    assert "docker pull debian:bookworm-slim" in message
    assert "no such host" in message


# --- small pure helpers -----------------------------------------------------------------------


def test_build_ulimits_stay_within_the_hard_limits() -> None:
    assert build_ulimits(20000, 32768) == ["nofile=20000:20000", "nproc=32768:32768"]
    assert build_ulimits(-1, 10**9) == ["nofile=1048576:1048576", "nproc=1048576:1048576"]


def test_hard_limits_are_read_from_proc_limits_text() -> None:
    text = (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max processes             32768                32768                processes \n"
        "Max open files            1024                 20000                files     \n"
        "Max locked memory         unlimited            unlimited            bytes     \n"
    )
    assert images._hard_limit(text, "Max open files", 7) == 20000
    assert images._hard_limit(text, "Max processes", 7) == 32768
    assert images._hard_limit(text, "Max locked memory", 7) == -1
    assert images._hard_limit(text, "Max nothing", 7) == 7


def test_the_build_context_is_the_dockerfile_alone_and_deterministic() -> None:
    data = b"FROM scratch\n"
    first = context_tar(data)
    assert first == context_tar(data)
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["Dockerfile"]
        extracted = tar.extractfile(members[0])
        assert extracted is not None and extracted.read() == data
        assert members[0].mtime == 0


def test_stream_chunks_become_whole_lines() -> None:
    lines: list[str] = []
    splitter = images._Lines(lines.append)
    for chunk in ["Step 1/2 : FR", "OM x\n ---> abc\n\n", "tail without newline"]:
        splitter.feed(chunk)
    assert lines == ["Step 1/2 : FROM x", " ---> abc"]
    splitter.flush()
    assert lines[-1] == "tail without newline"


def test_json_lines_tolerate_noise() -> None:
    events = list(images._json_lines([b'{"stream": "a"}', b"", "not json", b"[1]"]))
    assert events == [{"stream": "a"}, {"stream": "not json"}]


# --- Dockerfile lints -------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continuation"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def test_dockerfile_takes_the_base_as_an_argument() -> None:
    instructions = _instructions()
    assert instructions[0] == ("ARG", "BASE=debian:bookworm-slim")
    assert instructions[1] == ("FROM", "${BASE}")
    assert [name for name, _ in instructions].count("FROM") == 1


def test_dockerfile_installs_every_required_package_without_recommends() -> None:
    runs = [args for name, args in _instructions() if name == "RUN"]
    assert len(runs) == 1, "one layer: install and clean up in the same RUN"
    run = runs[0]
    install = re.search(r"apt-get install -y --no-install-recommends ([^;]+);", run)
    assert install, run
    installed = set(install.group(1).split())
    missing = [p for p in REQUIRED_PACKAGES if p not in installed]
    assert not missing
    assert "tini" not in installed
    assert "apt-get update" in run
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_dockerfile_creates_the_harness_user_with_fixed_ids() -> None:
    run = next(args for name, args in _instructions() if name == "RUN")
    assert re.search(r"groupadd --gid 1000 harness", run)
    assert re.search(
        r"useradd --uid 1000 --gid 1000 --create-home --home-dir /home/harness .*harness", run
    )


def test_dockerfile_environment_labels_and_command() -> None:
    instructions = _instructions()
    names = [name for name, _ in instructions]
    assert "ENTRYPOINT" not in names
    assert instructions[-1] == ("CMD", '["bash"]')
    env = " ".join(args for name, args in instructions if name == "ENV")
    assert "HOME=/home/harness" in env
    assert "LANG=C.UTF-8" in env
    labels = " ".join(args for name, args in instructions if name == "LABEL")
    assert 'org.opencontainers.image.title="harness-session"' in labels
    assert 'io.harness.image="session"' in labels
    # the frontend setting must not leak into sessions
    assert not re.search(r"DEBIAN_FRONTEND", env)


def test_dockerfile_holds_no_secrets_and_fetches_nothing_unverified() -> None:
    text = DOCKERFILE.read_text()
    instructions = _instructions()
    names = {name for name, _ in instructions}
    assert names <= {"ARG", "FROM", "LABEL", "RUN", "ENV", "CMD"}, names
    assert "ADD" not in names and "COPY" not in names, "the build context is the Dockerfile alone"
    assert not re.search(r"(?i)(password|passwd|token|secret|api[_-]?key|auth)\s*=", text)
    assert not re.search(r"(?i)(curl|wget)[^;|]*\|\s*(sh|bash)", text)
    assert not re.search(r"(?i)\bsudo\b", text)


# --- images/build-base.sh ---------------------------------------------------------------------


def test_the_base_builder_is_an_executable_strict_shell_script() -> None:
    assert BUILDER.stat().st_mode & stat.S_IXUSR
    text = BUILDER.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in text
    assert "--variant=minbase" in text
    assert "trap cleanup EXIT" in text
    assert "import" in text and 'CMD ["bash"]' in text
    subprocess.run(["sh", "-n", str(BUILDER)], check=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage:"),
        (["docker"], "usage:"),
        (["lxc", "localhost/x:1"], "unknown engine 'lxc'"),
    ],
)
def test_the_base_builder_rejects_bad_arguments(args: list[str], message: str) -> None:
    result = subprocess.run([str(BUILDER), *args], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""


def test_the_base_builder_says_what_is_missing(tmp_path: Path) -> None:
    """As root: debootstrap missing names the apt-get fix; otherwise: root is required."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "mktemp"):
        found = subprocess.run(
            ["sh", "-c", f"command -v {tool}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        ["/bin/sh", str(BUILDER), "docker", "localhost/x:1"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": str(bin_dir)},
    )
    assert result.returncode != 0
    if os.geteuid() == 0:
        assert "apt-get install debootstrap" in result.stderr
    else:
        assert "must run as root" in result.stderr and "sudo" in result.stderr
