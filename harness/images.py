"""The session image: build it, offline when no registry answers, and build it on first use.

The default image is the top-level `Dockerfile`, built on `ARG BASE`. The base
is chosen by `choose_base` (a pure function):

1. `BASE_IMAGE` (made offline earlier) is in the engine: use it, never ask a
   registry, so rebuilds on an air-gapped host stay fast;
2. `UPSTREAM_BASE` is in the engine: use it;
3. otherwise pull `UPSTREAM_BASE`, giving up when the registry does not
   answer within `PULL_TIMEOUT_SECONDS`;
4. when that fails, `images/build-base.sh` makes `BASE_IMAGE` with debootstrap
   from a Debian mirror (root only) and the build uses that.

The build context is the Dockerfile alone (it copies nothing in), sent as a
small deterministic tar: the repository with its virtualenv never goes to the
engine, and an unchanged Dockerfile is a pure layer-cache hit.

docker and podman-py are imported inside the functions: `harness --help` and
`harness run` must not pay for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import resource
import shlex
import socket
import struct
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.errors import BackendError, BackendUnavailable
from harness.paths import Locations

DEFAULT_IMAGE = "localhost/harness-session:latest"
BASE_IMAGE = "localhost/harness-base:bookworm"
UPSTREAM_BASE = "debian:bookworm-slim"

ENGINES = ("docker", "podman")
DOCKER_SOCKET = "/var/run/docker.sock"
# A registry that does not answer within this many seconds counts as unreachable.
PULL_TIMEOUT_SECONDS = 30
# Longest silence tolerated from the engine during a build (apt can be quiet a while).
BUILD_READ_TIMEOUT_SECONDS = 1800
# Podman's own default for nofile/nproc in containers; never ask for more.
ULIMIT_CAP = 1_048_576

Progress = Callable[[str], None]


def _quiet(line: str) -> None:
    """The default progress sink: discard."""


def repo_root() -> Path:
    """The folder that holds the `Dockerfile` and `images/`."""
    return Path(__file__).resolve().parents[1]


def dockerfile_path() -> Path:
    return repo_root() / "Dockerfile"


def base_builder_path() -> Path:
    return repo_root() / "images" / "build-base.sh"


# --- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseStep:
    """The next thing to do about the base image.

    Attributes:
        action: "use" the reference as BASE; "pull" it, then ask again with the
            result; "debootstrap" it with images/build-base.sh, then use it.
        reference: the image the action is about (engine-qualified).
    """

    action: Literal["use", "pull", "debootstrap"]
    reference: str


def upstream_base(engine: str) -> str:
    """`UPSTREAM_BASE` spelled so the engine finds it without short-name resolution.

    Podman resolves short names through registries.conf (and may refuse or
    prompt); the fully qualified name means the same image to both engines.
    """
    if engine == "podman":
        return f"docker.io/library/{UPSTREAM_BASE}"
    return UPSTREAM_BASE


def choose_base(
    engine: str,
    *,
    offline_base_present: bool,
    upstream_present: bool,
    pulled: bool | None = None,
) -> BaseStep:
    """Which base the build uses, from what the engine has and how a pull went.

    `pulled` is None before any pull was tried. An offline base wins over
    everything, so a host that once built it never waits for a registry again.
    """
    upstream = upstream_base(engine)
    if offline_base_present:
        return BaseStep("use", BASE_IMAGE)
    if upstream_present:
        return BaseStep("use", upstream)
    if pulled is None:
        return BaseStep("pull", upstream)
    if pulled:
        return BaseStep("use", upstream)
    return BaseStep("debootstrap", BASE_IMAGE)


def build_ulimits(nofile_hard: int, nproc_hard: int) -> list[str]:
    """`--ulimit` values for podman build containers, within the service's hard limits.

    Some buildah versions (vendored by podman releases after 4.3) give every
    RUN step nofile/nproc of 1048576 unless told otherwise. A service without
    CAP_SYS_RESOURCE (root inside some containers and VMs, this machine's
    among them) cannot raise a hard limit, and runc then fails every RUN step
    with "error setting rlimit type 7: operation not permitted". Podman 4.3
    here inherits the service's limits and does not need this; asking
    explicitly for what the service has works on both.
    """
    values = []
    for name, hard in (("nofile", nofile_hard), ("nproc", nproc_hard)):
        limit = ULIMIT_CAP if hard < 0 else min(hard, ULIMIT_CAP)  # RLIM_INFINITY is -1
        values.append(f"{name}={limit}:{limit}")
    return values


def context_tar(dockerfile: bytes) -> bytes:
    """A build context holding only the Dockerfile, byte-identical for identical input."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(dockerfile))
    return buffer.getvalue()


class _Lines:
    """Turns stream chunks into whole lines for the progress callback."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.pending = ""

    def feed(self, text: str) -> None:
        self.pending += text
        *complete, self.pending = self.pending.split("\n")
        for line in complete:
            if line.strip():
                self.progress(line.rstrip())

    def flush(self) -> None:
        if self.pending.strip():
            self.progress(self.pending.rstrip())
        self.pending = ""


# --- engines ----------------------------------------------------------------------------------


class _Engine(Protocol):
    name: str

    def present(self, reference: str) -> bool: ...

    def pull(self, reference: str, progress: Progress) -> str | None:
        """Pull; None on success, else why it failed."""
        ...

    def build(self, context: bytes, tag: str, base: str, progress: Progress) -> None: ...

    def close(self) -> None: ...


def _docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else DOCKER_SOCKET


class _Docker:
    name = "docker"

    def __init__(self) -> None:
        import docker
        import docker.errors

        self.errors = docker.errors
        self.socket_path = _docker_socket()
        try:
            self.client = docker.DockerClient(
                base_url=f"unix://{self.socket_path}", timeout=PULL_TIMEOUT_SECONDS
            )
        except (docker.errors.DockerException, OSError) as exc:
            raise BackendUnavailable(
                f"the Docker engine is not reachable at {self.socket_path} ({exc}); start it with "
                "`systemctl start docker` (install it with `apt-get install docker.io`), "
                "or build with podman."
            ) from None

    def close(self) -> None:
        self.client.close()

    def present(self, reference: str) -> bool:
        try:
            self.client.api.inspect_image(reference)  # type: ignore[no-untyped-call]
        except self.errors.ImageNotFound:
            return False
        except (self.errors.DockerException, OSError) as exc:
            raise BackendError(f"docker: inspecting image {reference} failed: {exc}") from None
        return True

    def pull(self, reference: str, progress: Progress) -> str | None:
        repository, _, tag = reference.rpartition(":")
        try:
            for event in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    return str(event["error"])
                status = event.get("status")
                if status and "progressDetail" not in event:
                    progress(f"{event['id']}: {status}" if event.get("id") else str(status))
        except (self.errors.DockerException, OSError) as exc:
            return str(getattr(exc, "explanation", None) or exc)
        return None

    def build(self, context: bytes, tag: str, base: str, progress: Progress) -> None:
        lines = _Lines(progress)
        try:
            events = self.client.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                dockerfile="Dockerfile",
                tag=tag,
                buildargs={"BASE": base},
                rm=True,
                forcerm=True,  # no intermediate container survives a failed step
                pull=False,
                decode=True,
                timeout=BUILD_READ_TIMEOUT_SECONDS,
            )
            for event in events:
                if "error" in event:
                    lines.flush()
                    raise BackendError(
                        f"docker build of {tag} failed: {str(event['error']).strip()}"
                    )
                if "stream" in event:
                    lines.feed(str(event["stream"]))
        except (self.errors.DockerException, OSError) as exc:
            raise BackendError(f"docker build of {tag} failed: {exc}") from None
        lines.flush()


class _Podman:
    name = "podman"

    def __init__(self, locations: Locations) -> None:
        import podman
        import podman.errors

        from harness.backends.podman_service import find_or_start

        self.errors = podman.errors
        self.service = find_or_start(locations)
        self.client = podman.PodmanClient(
            base_url=f"unix://{self.service.socket_path}", timeout=PULL_TIMEOUT_SECONDS
        )

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]

    def present(self, reference: str) -> bool:
        try:
            return bool(self.client.images.exists(reference))
        except (self.errors.PodmanError, OSError) as exc:
            raise BackendError(f"podman: inspecting image {reference} failed: {exc}") from None

    def pull(self, reference: str, progress: Progress) -> str | None:
        try:
            response = self.client.api.post(
                "/images/pull",
                params={"reference": reference, "policy": "always"},
                stream=True,
                timeout=PULL_TIMEOUT_SECONDS,
            )
            if response.status_code >= 400:
                return _podman_error_text(response.text)
            for event in _json_lines(response.iter_lines()):
                if event.get("error"):
                    return str(event["error"])
                if event.get("stream"):
                    progress(str(event["stream"]).rstrip())
        except (self.errors.PodmanError, OSError) as exc:
            return str(exc)
        return None

    def build(self, context: bytes, tag: str, base: str, progress: Progress) -> None:
        lines = _Lines(progress)
        params = {
            "t": tag,
            "dockerfile": "Dockerfile",
            "buildargs": json.dumps({"BASE": base}),
            "layers": "true",  # cache every step: an unchanged rebuild is fast
            "rm": "true",
            "forcerm": "true",  # no build container survives a failed step
            # the base was made present before the build; a build never goes to a registry
            "pullpolicy": "never",
            # Without an explicit format the libpod endpoint leaves it empty and
            # buildah's layer cache never matches (every rebuild reruns apt-get);
            # OCI is what `podman build` uses, so the CLI and harness share a cache.
            "outputformat": "application/vnd.oci.image.manifest.v1+json",
            # RUN steps run through the service's default OCI runtime (the libpod
            # build endpoint has no runtime parameter; podman picks runc when crun
            # is missing, as here). The endpoint does take `ulimits`, a JSON list
            # like `podman build --ulimit`: ask for what the service may grant
            # (see build_ulimits) so no buildah default above it is attempted.
            "ulimits": json.dumps(build_ulimits(*_service_hard_limits(self.service.socket_path))),
        }
        try:
            response = self.client.api.post(
                "/build",
                params=params,
                data=context,
                headers={"Content-Type": "application/x-tar"},
                stream=True,
                timeout=BUILD_READ_TIMEOUT_SECONDS,
            )
            if response.status_code >= 400:
                raise BackendError(
                    f"podman build of {tag} failed: {_podman_error_text(response.text)}"
                )
            for event in _json_lines(response.iter_lines()):
                if event.get("error"):
                    lines.flush()
                    raise BackendError(
                        f"podman build of {tag} failed: {str(event['error']).strip()}"
                    )
                if event.get("stream"):
                    lines.feed(str(event["stream"]))
        except (self.errors.PodmanError, OSError) as exc:
            raise BackendError(f"podman build of {tag} failed: {exc}") from None
        lines.flush()
        if not self.present(tag):
            raise BackendError(
                f"podman build of {tag} ended without an error but the image is missing; "
                "see the build output above."
            )


def _json_lines(lines: Iterable[bytes | str]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            event = json.loads(text)
        except ValueError:
            yield {"stream": text}
            continue
        if isinstance(event, dict):
            yield event


def _podman_error_text(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(data, dict):
        return str(data.get("message") or data.get("cause") or body).strip()
    return body.strip()


def _service_hard_limits(socket_path: str) -> tuple[int, int]:
    """(nofile, nproc) hard limits of the process serving `socket_path`; ours when unknown.

    The build containers inherit the service's limits, not ours (here the service
    runs with nproc 32768 while this shell has 96365). SO_PEERCRED names the
    process that listens on the socket.
    """
    own = (
        resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        resource.getrlimit(resource.RLIMIT_NPROC)[1],
    )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(socket_path)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        text = Path(f"/proc/{pid}/limits").read_text()
    except (OSError, struct.error):
        return own
    return _hard_limit(text, "Max open files", own[0]), _hard_limit(text, "Max processes", own[1])


def _hard_limit(limits_text: str, row: str, default: int) -> int:
    for line in limits_text.splitlines():
        if line.startswith(row):
            fields = line[len(row) :].split()
            if len(fields) >= 2:
                if fields[1] == "unlimited":
                    return resource.RLIM_INFINITY
                if fields[1].isdigit():
                    return int(fields[1])
    return default


def _engine(engine: str, locations: Locations | None) -> _Engine:
    if engine == "docker":
        return _Docker()
    if engine == "podman":
        return _Podman(locations or Locations.from_environment())
    raise BackendError(
        f"unknown engine {engine!r}: harness builds images with {' or '.join(ENGINES)}."
    )


# --- the offline base -------------------------------------------------------------------------


def _build_base_offline(engine: str, pull_error: str | None, progress: Progress) -> None:
    script = base_builder_path()
    argv = [str(script), engine, BASE_IMAGE]
    why = f"{upstream_base(engine)} could not be pulled ({pull_error or 'no reason given'})"
    if os.geteuid() != 0:
        raise BackendUnavailable(
            f"{why}, and building the offline base needs root (debootstrap). Run "
            f"`sudo {shlex.join(argv)}` once, or `{engine} pull {upstream_base(engine)}` "
            "where a registry is reachable, then build again."
        )
    progress(f"{why}; building {BASE_IMAGE} offline with debootstrap: {shlex.join(argv)}")
    env = dict(os.environ)
    path = env.get("PATH", "/usr/bin:/bin").split(":")
    env["PATH"] = ":".join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    tail: list[str] = []
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            cwd=repo_root(),
        )
    except OSError as exc:
        raise BackendError(f"cannot run {script}: {exc}") from None
    with child:
        assert child.stdout is not None  # noqa: S101 - stdout=PIPE above
        for line in child.stdout:
            progress(line.rstrip())
            tail = [*tail[-19:], line.rstrip()]
    if child.returncode != 0:
        detail = "\n".join(tail)
        raise BackendError(
            f"{why}, and `{shlex.join(argv)}` exited with code {child.returncode}:\n{detail}"
        )


# --- public API -------------------------------------------------------------------------------


@contextlib.contextmanager
def _build_lock(locations: Locations, engine: str, progress: Progress) -> Iterator[None]:
    """One image build per engine at a time; a second harness waits, then finds the image."""
    directory = locations.state_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / f"image-build-{engine}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another harness image build on {engine}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_present(engine: str, reference: str, *, locations: Locations | None = None) -> bool:
    """Whether `engine` holds `reference` locally (no registry is asked)."""
    with contextlib.closing(_engine(engine, locations)) as client:
        return client.present(reference)


def build_session_image(
    engine: str,
    reference: str = DEFAULT_IMAGE,
    *,
    progress: Progress = _quiet,
    locations: Locations | None = None,
) -> str:
    """Build the default session image from the Dockerfile; return its reference.

    Works offline (see the module docstring for how the base is chosen);
    build output goes line by line to `progress`.
    """
    locations = locations or Locations.from_environment()
    try:
        dockerfile = dockerfile_path().read_bytes()
    except OSError as exc:
        raise BackendError(
            f"cannot read the session image's Dockerfile at {dockerfile_path()} ({exc.strerror}); "
            "reinstall harness from its repository."
        ) from None
    with (
        contextlib.closing(_engine(engine, locations)) as client,
        _build_lock(locations, engine, progress),
    ):
        base = _ensure_base(client, progress)
        progress(f"building {reference} on {engine} from {base}")
        client.build(context_tar(dockerfile), reference, base, progress)
    return reference


def _ensure_base(client: _Engine, progress: Progress) -> str:
    engine = client.name
    upstream = upstream_base(engine)
    offline = client.present(BASE_IMAGE)
    step = choose_base(
        engine,
        offline_base_present=offline,
        upstream_present=(not offline) and client.present(upstream),
    )
    pull_error: str | None = None
    if step.action == "pull":
        progress(f"pulling {upstream} (giving up after {PULL_TIMEOUT_SECONDS} s of silence)")
        pull_error = client.pull(upstream, progress)
        step = choose_base(
            engine,
            offline_base_present=False,
            upstream_present=False,
            pulled=pull_error is None,
        )
    if step.action == "debootstrap":
        _build_base_offline(engine, pull_error, progress)
        if not client.present(BASE_IMAGE):
            raise BackendError(
                f"{base_builder_path()} finished but {engine} has no {BASE_IMAGE}; "
                f"check `{engine} images`."
            )
    return step.reference


def ensure_image(
    engine: str,
    reference: str,
    *,
    progress: Progress = _quiet,
    locations: Locations | None = None,
) -> str:
    """`reference` when the engine has it; the default image is built on first use."""
    if image_present(engine, reference, locations=locations):
        return reference
    if reference == DEFAULT_IMAGE:
        progress(f"{reference} is not in {engine} yet; building it (first use only)")
        return build_session_image(engine, reference, progress=progress, locations=locations)
    raise BackendUnavailable(
        f"image {reference} is not in {engine}; pull it with `{engine} pull {reference}`, "
        f"or use the default image {DEFAULT_IMAGE} (built by `harness image build`)."
    )
