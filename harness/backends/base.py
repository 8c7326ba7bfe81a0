"""The one small Protocol every sandbox backend implements.

check, create, exec, destroy, list: everything a backend needs to know about
the sandbox is in the `SessionSpec` (the plan, the image, labels); everything
about one command is in the `ExecSpec`. Backends never decide policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # values, not behaviour: keep importing this module cheap for `harness exec`
    from harness.backends.mounts import PreparedMounts
    from harness.backends.stream import Terminal
    from harness.policy.plan import SandboxPlan

LABEL_SESSION = "harness.session"
LABEL_OWNER = "harness.owner"
LABEL_OWNER_PROCESS = "harness.owner-process"
LABEL_WORKSPACE = "harness.workspace"
LABEL_MODE = "harness.mode"
LABEL_ROLE = "harness.role"

AGENT_IN_SANDBOX = "/opt/harness/agent.py"
KEEPER = (
    "sh",
    "-c",
    # the image's own python3 runs the agent; without one, the session still works through
    # the engine's exec
    f"if command -v python3 >/dev/null 2>&1; then exec python3 -I -S {AGENT_IN_SANDBOX} "
    "/run/harness/agent.sock; fi; exec sleep infinity",
)
"""The main process of a session's sandbox (`SessionSpec.command` None): the agent that
runs `harness exec` commands, or an idle sleep."""


@dataclass(frozen=True)
class SessionSpec:
    """What to create: one disposable sandbox for one session.

    Attributes:
        session_id: harness's id for the session (also in the labels).
        image: image reference to run.
        plan: the sandbox plan, rendered by the backend.
        env: the complete environment inside (already filtered by the env policy).
        labels: labels every resource of the session carries.
        command: the main process; None means an idle keeper for `exec`.
        tty / stdin: whether the main process gets a terminal / standard input.
        seccomp_json: the rendered seccomp profile for `plan.seccomp_profile`.
        mounts: the plan's mounts after looking at the host (`mounts.prepare_mounts`).
        ulimits: (name, soft, hard) resource limits, within what the host allows.
    """

    session_id: str
    image: str
    plan: SandboxPlan
    env: Mapping[str, str]
    labels: Mapping[str, str]
    seccomp_json: str
    mounts: PreparedMounts
    ulimits: tuple[tuple[str, int, int], ...] = ()
    command: tuple[str, ...] | None = None
    tty: bool = False
    stdin: bool = False
    hostname: str = "harness"
    netns_path: str | None = (
        None  # a namespace harness made (allowlist), for engines that can join one
    )


@dataclass(frozen=True)
class ExecSpec:
    """One command inside a running session."""

    argv: tuple[str, ...]
    workdir: str
    user: tuple[int, int]
    env: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False
    stdin: bool = False


@dataclass(frozen=True)
class Handle:
    """A created sandbox."""

    backend: str
    container_id: str
    session_id: str


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox found by its labels."""

    backend: str
    container_id: str
    labels: Mapping[str, str]
    state: str  # created | running | exited | ...
    created: str


class Backend(Protocol):
    """A place to run sandboxes (an engine, a VM, the host kernel)."""

    name: str

    def check(self) -> str | None:
        """Why this backend cannot be used right now, with the fix; None when it can."""
        ...

    def create(self, spec: SessionSpec) -> Handle:
        """Create the sandbox. An idle keeper (`spec.command` None) is started at once; a
        sandbox with a command waits for `attach`, so no output is lost."""
        ...

    def attach(self, handle: Handle, spec: SessionSpec, terminal: Terminal | None = None) -> int:
        """Start the main process of a created sandbox with live stdio; return its exit code."""
        ...

    def exec(self, handle: Handle, spec: ExecSpec) -> int:
        """Run one command in a running sandbox with live stdio; return its exit code."""
        ...

    def destroy(self, handle: Handle) -> None:
        """Remove the sandbox and everything it created; idempotent."""
        ...

    def list(self, labels: Mapping[str, str]) -> list[SandboxInfo]:
        """Sandboxes (running or not) that carry all of `labels`."""
        ...

    def image_exists(self, reference: str) -> bool: ...

    def main_pid(self, handle: Handle) -> int | None:
        """The host pid of the sandbox's main process (the in-sandbox agent's socket is reached through it)."""
        ...

    def hard_limits(self) -> dict[str, int]:
        """Hard resource limits of the engine process (name → value), as far as they can be read."""
        ...
