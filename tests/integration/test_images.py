"""The session image built for real on Docker and Podman: contents, cache, offline base.

Each engine builds once per test session (module-scoped fixture). On a host
without a registry the first build makes the base with debootstrap (a few
minutes); later runs reuse the base and the layer cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import images
from harness.errors import BackendUnavailable
from harness.paths import Locations

pytestmark = pytest.mark.slow

TEST_LABEL = "io.harness.test=images"
# Podman on some hosts (this one) cannot grant its default 1048576 open files/processes.
PODMAN_RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")


def need_engine(name: str) -> None:
    """Skip when `name` cannot be used here; in CI (env CI set) fail instead: CI never skips."""
    reason = _engine_problem(name)
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI never skips integration tests)")
    pytest.skip(reason)


def _engine_problem(name: str) -> str | None:
    if shutil.which(name) is None:
        return f"{name} is not installed"
    try:
        result = subprocess.run(
            [
                name,
                "info",
                "--format",
                "{{.ServerVersion}}" if name == "docker" else "{{.Version}}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`{name} info` did not answer within 30 s"
    if result.returncode != 0:
        return f"{name} is not usable: {result.stderr.strip()[-300:]}"
    return None


def need_root_debootstrap() -> None:
    if os.geteuid() == 0 and shutil.which("debootstrap"):
        return
    reason = "the offline base builder needs root and debootstrap (apt-get install debootstrap)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI never skips integration tests)")
    pytest.skip(reason)


ENGINE_PARAMS = [
    pytest.param("docker", marks=pytest.mark.requires_docker, id="docker"),
    pytest.param("podman", marks=pytest.mark.requires_podman, id="podman"),
]


@dataclass(frozen=True)
class Built:
    engine: str
    reference: str
    seconds: float
    lines: tuple[str, ...]
    image_id: str
    locations: Locations


def _image_id(engine: str, reference: str) -> str:
    return subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Id}}", reference],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _private_locations(root: Path) -> Locations:
    # a private state and runtime dir: the podman service this starts is ours alone
    return Locations(root / "config", root / "state", root / "etc", None, root / "run")


@pytest.fixture(scope="module", params=ENGINE_PARAMS)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    engine = str(request.param)
    need_engine(engine)
    locations = _private_locations(tmp_path_factory.mktemp(f"images-{engine}"))
    lines: list[str] = []
    start = time.monotonic()
    reference = images.build_session_image(engine, progress=lines.append, locations=locations)
    seconds = time.monotonic() - start
    print(f"\n{engine}: image build took {seconds:.1f} s")
    try:
        yield Built(
            engine, reference, seconds, tuple(lines), _image_id(engine, reference), locations
        )
    finally:
        if engine == "podman":
            from harness.backends.podman_service import stop_recorded_service

            stop_recorded_service(locations)


def _run_in_image(engine: str, reference: str, *argv: str) -> subprocess.CompletedProcess[str]:
    extra = PODMAN_RUN_LIMITS if engine == "podman" else ()
    return subprocess.run(
        [
            engine,
            "run",
            "--rm",
            "--label",
            TEST_LABEL,
            "--network",
            "none",
            *extra,
            reference,
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_build_returns_the_default_reference(built: Built) -> None:
    assert built.reference == images.DEFAULT_IMAGE
    assert images.image_present(built.engine, built.reference, locations=built.locations)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(("python3", "-c", "print(1)"), r"^1\n$", id="python3"),
        pytest.param(("git", "--version"), r"^git version \d", id="git"),
        pytest.param(("id", "-u", "harness"), r"^1000\n$", id="uid"),
        pytest.param(("id", "-g", "harness"), r"^1000\n$", id="gid"),
        pytest.param(("rg", "--version"), r"^ripgrep \d", id="ripgrep"),
        pytest.param(("node", "--version"), r"^v\d+\.", id="node"),
        pytest.param(("npm", "--version"), r"^\d+\.", id="npm"),
        pytest.param(("sh", "-c", 'echo "$HOME $LANG"'), r"^/home/harness C\.UTF-8\n$", id="env"),
        pytest.param(
            ("bash", "-c", "command -v curl jq make unzip xz patch file ps ip ssh less diff"),
            r"(?s)/curl\n.*/ssh\n.*/diff\n$",
            id="tools",
        ),
        pytest.param(("python3", "-m", "venv", "--help"), r"usage: venv", id="venv"),
    ],
)
def test_the_image_has_the_tools_agents_need(
    built: Built, argv: tuple[str, ...], expected: str
) -> None:
    result = _run_in_image(built.engine, built.reference, *argv)
    assert result.returncode == 0, result.stderr
    assert re.search(expected, result.stdout), result.stdout


def test_the_image_carries_its_labels_and_no_entrypoint(built: Built) -> None:
    result = subprocess.run(
        [
            built.engine,
            "image",
            "inspect",
            "--format",
            '{{index .Config.Labels "io.harness.image"}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}',
            built.reference,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    label, entrypoint, cmd = result.stdout.strip().split("|")
    assert label == "session"
    assert entrypoint in ("null", "[]")
    assert cmd == '["bash"]'


def test_a_second_build_is_fast_cached_and_never_debootstraps(built: Built) -> None:
    lines: list[str] = []
    start = time.monotonic()
    reference = images.build_session_image(
        built.engine, progress=lines.append, locations=built.locations
    )
    seconds = time.monotonic() - start
    print(f"\n{built.engine}: second build took {seconds:.1f} s (first: {built.seconds:.1f} s)")
    assert reference == images.DEFAULT_IMAGE
    assert seconds < 30, "\n".join(lines[-30:])
    assert not any("debootstrap" in line or line.startswith("pulling") for line in lines), lines
    assert _image_id(built.engine, reference) == built.image_id, "the layer cache was not used"


def test_ensure_image_returns_a_present_image_at_once(built: Built) -> None:
    lines: list[str] = []
    start = time.monotonic()
    assert (
        images.ensure_image(
            built.engine, images.DEFAULT_IMAGE, progress=lines.append, locations=built.locations
        )
        == images.DEFAULT_IMAGE
    )
    assert lines == []
    assert time.monotonic() - start < 10


def test_ensure_image_refuses_a_missing_custom_image_with_the_fix(built: Built) -> None:
    missing = f"localhost/harness-no-such-image:{uuid.uuid4().hex[:12]}"
    with pytest.raises(BackendUnavailable) as caught:
        images.ensure_image(built.engine, missing, locations=built.locations)
    assert f"{built.engine} pull {missing}" in str(caught.value)
    assert not images.image_present(built.engine, missing, locations=built.locations)


def test_no_test_container_is_left_behind(built: Built) -> None:
    result = subprocess.run(
        [built.engine, "ps", "-aq", "--filter", f"label={TEST_LABEL}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == []


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_the_offline_base_builder_makes_a_slim_debian(engine: str) -> None:
    """images/build-base.sh on its own: REF on the last line, a minbase Debian without docs."""
    need_engine(engine)
    need_root_debootstrap()
    reference = f"localhost/harness-base-test:{uuid.uuid4().hex[:12]}"
    try:
        result = subprocess.run(
            [str(images.base_builder_path()), engine, reference],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.splitlines()[-1] == reference
        probe = _run_in_image(
            engine,
            reference,
            "sh",
            "-c",
            "cat /etc/debian_version; ls /usr/share/man | wc -l; "
            "ls /var/lib/apt/lists | wc -l; echo $PATH",
        )
        assert probe.returncode == 0, probe.stderr
        version, man_entries, list_entries, path = probe.stdout.splitlines()
        assert version.startswith("12."), version
        assert man_entries == "0"
        assert list_entries == "0"
        assert path.startswith("/usr/local/sbin:/usr/local/bin:")
        rootfs = re.search(r"into (\S+)", result.stderr)
        assert rootfs, result.stderr[:500]
        assert not Path(rootfs.group(1)).exists(), "the debootstrap directory was not removed"
    finally:
        subprocess.run([engine, "rmi", "-f", reference], capture_output=True, check=False)
