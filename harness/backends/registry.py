"""Which backends exist, and which one `--backend auto` picks (podman, then docker)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.backends.base import Backend
from harness.errors import BackendUnavailable, UsageError
from harness.paths import Locations

AUTO_ORDER = ("podman", "docker")


def _docker(locations: Locations) -> Backend:
    from harness.backends.docker import DockerBackend

    return DockerBackend(locations)


def _podman(locations: Locations) -> Backend:
    from harness.backends.podman import PodmanBackend

    return PodmanBackend(locations)


BACKENDS: dict[str, Callable[[Locations], Backend]] = {"docker": _docker, "podman": _podman}
PLANNED = {
    "vm": "the VM backend (qemu) is planned next; use --backend docker or podman for now",
    "native": "the native backend (bubblewrap + Landlock + seccomp) is planned; use --backend docker or podman",
}


@dataclass(frozen=True)
class Choice:
    """The backend picked, and why (`harness doctor` shows the reason)."""

    backend: Backend
    reason: str


def choose_backend(requested: str, locations: Locations) -> Choice:
    """The backend to use for `requested` (a name or "auto"), with why; raises when none is usable."""
    if requested in PLANNED:
        raise BackendUnavailable(f"--backend {requested}: {PLANNED[requested]}.")
    if requested != "auto":
        factory = BACKENDS.get(requested)
        if factory is None:
            raise UsageError(
                f"--backend {requested!r} is unknown; choose one of auto, {', '.join(BACKENDS)}."
            )
        backend = factory(locations)
        problem = backend.check()
        if problem is not None:
            raise BackendUnavailable(problem)
        return Choice(backend, f"{requested} was asked for")
    problems: list[str] = []
    for name in AUTO_ORDER:
        backend = BACKENDS[name](locations)
        problem = backend.check()
        if problem is None:
            skipped = f" ({'; '.join(problems)})" if problems else ""
            return Choice(
                backend, f"auto picks {name}: the first usable of {', '.join(AUTO_ORDER)}{skipped}"
            )
        problems.append(f"{name}: {problem}")
    raise BackendUnavailable("no container engine is usable. " + " ".join(problems))
