"""Sessions: configuration → plan → approval → backend → audit, and their lifecycle.

One disposable sandbox per session, labelled `harness.session=<id>` and
`harness.owner=<user>`, recorded in `$XDG_STATE_HOME/harness/sessions/`.
It is removed when harness ends (normally, on ^C, on SIGTERM); when harness
dies instead, the owner process recorded in the labels is gone and the next
`harness prune` (or `harness up`) removes what is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.base import (
    LABEL_MODE,
    LABEL_OWNER,
    LABEL_OWNER_PROCESS,
    LABEL_ROLE,
    LABEL_SESSION,
    LABEL_WORKSPACE,
    Backend,
    ExecSpec,
    Handle,
    SandboxInfo,
    SessionSpec,
)
from harness.errors import HarnessError, PolicyDenied
from harness.paths import Locations
from harness.policy.modes import ApprovalPolicy, NetworkMode, RuleAction, SandboxMode
from harness.procs import ProcessId

if TYPE_CHECKING:  # loaded where used: `harness exec` needs none of these to run a command
    from harness.audit import MultiAuditLog
    from harness.backends.mounts import PreparedMounts
    from harness.policy.plan import SandboxPlan
if TYPE_CHECKING:  # the approval engine loads only where this process decides (not with a gateway)
    from harness.approval.broker import ApprovalBroker, Asker, Outcome
    from harness.approval.engine import ApprovalRequest, PolicyContext
if TYPE_CHECKING:  # pydantic is not needed to run a command in a live session
    from harness.config.settings import Settings
    from harness.gateway.process import SessionGateway

Progress = Callable[[str], None]
DETACHED = "detached"


class SessionError(HarnessError):
    """A session cannot be found, started or reached."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; unwinds like ^C so that cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class SessionRecord:
    """What `exec`, `ls`, `down` and `prune` need to know about a live session."""

    session_id: str
    backend: str
    container_id: str
    image: str
    workspace: str
    mode: str
    policy: str
    created: str
    owner: str  # "pid:start_time" of the harness process that owns it, or "detached"
    user: tuple[int, int]
    workdir: str
    env: dict[str, str]
    context: dict[str, Any]
    created_on_host: tuple[str, ...] = ()
    audit_paths: tuple[str, ...] = ()
    agent: str = ""  # "pid:start_time" of the sandbox's main process when its agent answers
    gateway_control: str = ""  # the session's gateway (host-only socket), where approvals happen
    gateway_token: str = ""

    def owner_alive(self) -> bool:
        if self.owner == DETACHED:
            return True
        process = ProcessId.from_label(self.owner)
        return process is not None and process.alive()

    def policy_context(self) -> PolicyContext:
        return context_from_json(self.context)

    def handle(self) -> Handle:
        return Handle(self.backend, self.container_id, self.session_id)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["user"] = list(self.user)
        data["created_on_host"] = list(self.created_on_host)
        data["audit_paths"] = list(self.audit_paths)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionRecord:
        values = dict(data)
        values["user"] = tuple(values["user"])
        values["created_on_host"] = tuple(values.get("created_on_host", ()))
        values["audit_paths"] = tuple(values.get("audit_paths", ()))
        return cls(**values)


# -- policy context, stored with the session --------------------------------------------


def context_to_json(context: PolicyContext) -> dict[str, Any]:
    return {
        "policy": context.policy.value,
        "mode": context.mode.value,
        "rules": [
            {
                "pattern": r.pattern,
                "action": r.action.value,
                "layer": r.origin.layer,
                "path": r.origin.path,
                "justification": r.justification,
            }
            for r in context.rules
        ],
        "workspace": context.workspace,
        "smart_approvals": context.smart_approvals,
        "reviewer": list(context.reviewer) if context.reviewer else None,
        "reviewer_timeout": context.reviewer_timeout,
    }


def context_from_json(data: Mapping[str, Any]) -> PolicyContext:
    from harness.approval.engine import PolicyContext
    from harness.policy.rules import Origin, PrefixRule

    return PolicyContext(
        policy=ApprovalPolicy.parse(data["policy"]),
        mode=SandboxMode.parse(data["mode"]),
        rules=tuple(
            PrefixRule(
                r["pattern"],
                RuleAction.parse(r["action"]),
                Origin(r["layer"], r.get("path")),
                r.get("justification"),
            )
            for r in data["rules"]
        ),
        workspace=data["workspace"],
        smart_approvals=bool(data["smart_approvals"]),
        reviewer=tuple(data["reviewer"]) if data.get("reviewer") else None,
        reviewer_timeout=float(data["reviewer_timeout"]),
    )


# -- building the sandbox ----------------------------------------------------------------


def invoking_user() -> tuple[int, int]:
    return os.getuid(), os.getgid()


def owner_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def host_ulimits(
    engine_limits: Mapping[str, int] | None = None,
) -> tuple[tuple[str, int, int], ...]:
    """Limits inside the sandbox, never above the hard limits of this process or of the engine.

    The runtime inherits the engine's limits and may lack CAP_SYS_RESOURCE (as here), so
    asking for more fails with "error setting rlimit: operation not permitted".
    """
    limits = []
    for name, kind, ceiling in (
        ("nofile", resource.RLIMIT_NOFILE, 65536),
        ("nproc", resource.RLIMIT_NPROC, 1 << 20),
    ):
        _, hard = resource.getrlimit(kind)
        value = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
        value = min(value, (engine_limits or {}).get(name, value))
        limits.append((name, value, value))
    return tuple(limits)


def plan_for(
    settings: Settings, mode: SandboxMode | None = None, network: NetworkMode | None = None
) -> SandboxPlan:
    chosen = mode or settings.sandbox_mode
    net = network or settings.network_mode
    from harness.policy.plan import Permissions, build_plan

    permissions = Permissions(
        filesystem=settings.filesystem,
        network=net,
        network_rules=settings.network_rules,
        limits=settings.limits,
        env=settings.env,
        protected_paths=settings.protected_paths,
        user=invoking_user(),
    )
    return build_plan(chosen, permissions, str(settings.workspace))


def sandbox_env(
    plan: SandboxPlan, session_id: str, *, tty: bool, host_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    base = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": _guest_home(),
        "LANG": "C.UTF-8",
        "HARNESS_SESSION": session_id,
        "HARNESS_SANDBOX_MODE": plan.mode.value,
    }
    env = plan.env.build(os.environ if host_env is None else host_env, base)
    if plan.network.mode is NetworkMode.ALLOWLIST:
        from harness.net.process import proxy_env

        env.update(proxy_env())  # after the host's: a host HTTP_PROXY must not point elsewhere
    if tty:
        env.setdefault("TERM", "xterm-256color")
    else:
        env.pop("TERM", None)
    return env


def _guest_home() -> str:
    from harness.policy.plan import GUEST_HOME

    return GUEST_HOME


def session_labels(
    session_id: str, plan: SandboxPlan, *, detached: bool, role: str = "session"
) -> dict[str, str]:
    return {
        LABEL_SESSION: session_id,
        LABEL_OWNER: owner_name(),
        LABEL_OWNER_PROCESS: DETACHED if detached else ProcessId.current().label(),
        LABEL_WORKSPACE: plan.workspace,
        LABEL_MODE: plan.mode.value,
        LABEL_ROLE: role,
    }


SANDBOX_BIN = "/opt/harness"


def sandbox_bin_dir(locations: Locations) -> str:
    """harness's own files for inside the sandbox, copied once per version (executable, read-only in)."""
    import hashlib

    from harness.paths import ensure_private_dir

    sources = {
        "agent.py": Path(__file__).with_name("sandbox_agent.py"),
        "harness-sh": Path(__file__).with_name("sandbox_shell.py"),
        "bashrc": Path(__file__).with_name("sandbox_bashrc"),
    }
    contents = {name: path.read_bytes() for name, path in sources.items()}
    digest = hashlib.sha256(b"".join(contents[n] for n in sorted(contents))).hexdigest()[:16]
    target = ensure_private_dir(locations.runtime_dir) / "sandbox-bin" / digest
    if not (target / "harness-sh").exists():
        staging = target.with_name(f".{digest}.{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        for name, data in contents.items():
            (staging / name).write_bytes(data)
            (staging / name).chmod(0o755)
        staging.chmod(0o755)
        target.parent.chmod(0o755)
        with contextlib.suppress(OSError):
            staging.rename(target)
    return str(target)


def new_session_id() -> str:
    return os.urandom(5).hex()  # what secrets.token_hex does, without importing random


def session_spec(
    backend: Backend,
    plan: SandboxPlan,
    session_id: str,
    image: str,
    *,
    command: Sequence[str] | None,
    tty: bool,
    stdin: bool,
    detached: bool = False,
    role: str = "session",
    mounts: PreparedMounts | None = None,
    netns_path: str | None = None,
    gateway: SessionGateway | None = None,
    sandbox_bin: str | None = None,
) -> SessionSpec:
    from harness.backends.mounts import Bind, prepare_mounts
    from harness.policy.seccomp import render

    prepared = mounts or prepare_mounts(plan)
    env = sandbox_env(plan, session_id, tty=tty)
    extra: list[Bind] = []
    if sandbox_bin is not None:  # the agent, harness-sh and its bashrc, read-only
        extra.append(Bind(sandbox_bin, SANDBOX_BIN, True))
    if gateway is not None:
        from harness.gateway.process import GATEWAY_DIR_IN_SANDBOX, GATEWAY_IN_SANDBOX

        extra.append(Bind(gateway.socket_dir, GATEWAY_DIR_IN_SANDBOX, True))
        env.update(
            {
                "SHELL": f"{SANDBOX_BIN}/harness-sh",
                "HARNESS_GATEWAY": GATEWAY_IN_SANDBOX,
                "HARNESS_GATEWAY_TOKEN": gateway.token,
                "HARNESS_APPROVAL_POLICY": gateway.policy,
            }
        )
    prepared = replace(prepared, binds=(*prepared.binds, *extra))
    return SessionSpec(
        session_id=session_id,
        image=image,
        plan=plan,
        env=env,
        labels=session_labels(session_id, plan, detached=detached, role=role),
        seccomp_json=render(plan.seccomp_profile),
        mounts=prepared,
        ulimits=host_ulimits(backend.hard_limits()),
        command=tuple(command) if command is not None else None,
        tty=tty,
        stdin=stdin,
        hostname=f"harness-{session_id[:8]}",
        netns_path=netns_path,
    )


# -- the session store -------------------------------------------------------------------


class SessionStore:
    """Session records on disk: one JSON file per session."""

    def __init__(self, locations: Locations) -> None:
        self.directory = locations.sessions_dir

    def path(self, session_id: str) -> Path:
        return self.directory / f"{session_id}.json"

    def save(self, record: SessionRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path(record.session_id).with_suffix(".tmp")
        temporary.write_text(json.dumps(record.to_json(), indent=2) + "\n")
        temporary.replace(self.path(record.session_id))

    def remove(self, session_id: str) -> None:
        self.path(session_id).unlink(missing_ok=True)

    def load(self, session_id: str) -> SessionRecord | None:
        try:
            return SessionRecord.from_json(json.loads(self.path(session_id).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def all(self) -> list[SessionRecord]:
        if not self.directory.is_dir():
            return []
        records = [self.load(p.stem) for p in sorted(self.directory.glob("*.json"))]
        return [r for r in records if r is not None]


# -- signals -----------------------------------------------------------------------------


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Terminated` in the main thread, so `finally` blocks clean up."""

    def handler(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    from harness.procs import handling

    with handling((signal.SIGTERM, signal.SIGHUP), handler):
        yield


# -- the orchestration -------------------------------------------------------------------


@dataclass(frozen=True)
class _Start:
    """What every new session begins with."""

    session_id: str
    context: PolicyContext
    audit: MultiAuditLog | None
    broker: ApprovalBroker


def _adopts_namespaces(backend: Backend) -> bool:
    """Docker cannot join a namespace by path: its sandbox makes one (network none), which harness names."""
    return backend.name == "docker"


@dataclass
class Sessions:
    """Everything a CLI command needs, with the human (asker) and progress injected."""

    locations: Locations
    asker: Asker | None = None
    progress: Progress = field(default=lambda line: None)
    no_human_reason: str = "no terminal to ask"
    # the approval console for a foreground session (the CLI attaches one when it has a terminal)
    console_factory: Callable[[SessionRecord], Any] | None = None

    @property
    def store(self) -> SessionStore:
        return SessionStore(self.locations)

    # -- helpers

    def _backend(self, name: str) -> tuple[Backend, str]:
        from harness.backends.registry import choose_backend

        choice = choose_backend(name, self.locations)
        return choice.backend, choice.reason

    def _backend_of(self, record: SessionRecord) -> Backend:
        """The backend the session was started on."""
        from harness.backends.registry import BACKENDS

        return BACKENDS[record.backend](self.locations)

    def _audit(self, settings_paths: Sequence[Path]) -> MultiAuditLog | None:
        from harness.audit import MultiAuditLog

        return MultiAuditLog(settings_paths) if settings_paths else None

    def _image(self, backend: Backend, settings: Settings) -> str:
        image = settings.image or "localhost/harness-session:latest"
        if backend.image_exists(image):
            return image
        from harness.images import ensure_image

        return ensure_image(backend.name, image, progress=self.progress, locations=self.locations)

    def _approve(self, broker: ApprovalBroker, request: ApprovalRequest) -> Outcome:
        outcome = broker.submit(request)
        if not outcome.allowed:
            raise PolicyDenied(
                outcome.denial_message().removeprefix("harness: "),
                reason=outcome.reason,
                feedback=outcome.feedback,
            )
        return outcome

    def _record(
        self,
        spec: SessionSpec,
        handle: Handle,
        settings: Settings,
        context: PolicyContext,
    ) -> SessionRecord:
        return SessionRecord(
            session_id=spec.session_id,
            backend=handle.backend,
            container_id=handle.container_id,
            image=spec.image,
            workspace=str(settings.workspace),
            mode=spec.plan.mode.value,
            policy=context.policy.value,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            owner=spec.labels[LABEL_OWNER_PROCESS],
            user=spec.plan.user,
            workdir=spec.plan.workdir,
            env=dict(spec.env),
            context=context_to_json(context),
            created_on_host=spec.mounts.created_on_host,
            audit_paths=tuple(str(p) for p in settings.audit_paths),
        )

    def _teardown(
        self,
        backend: Backend,
        handle: Handle | None,
        session_id: str,
        spec_mounts: PreparedMounts,
        audit: MultiAuditLog | None,
        *,
        network: bool = False,
        gateway: bool = False,
    ) -> None:
        if handle is not None:
            with contextlib.suppress(HarnessError):
                backend.destroy(handle)
        if network:
            from harness.net.process import stop_network

            with contextlib.suppress(HarnessError, OSError):
                stop_network(self.locations, session_id)
        if gateway:
            self._stop_gateway(session_id)
        from harness.backends.mounts import remove_created_mount_points

        remove_created_mount_points(spec_mounts)
        self.store.remove(session_id)
        if audit is not None and handle is not None:
            with contextlib.suppress(HarnessError, OSError):
                audit.append("session.removed", session=session_id, container=handle.container_id)

    def _begin(self, settings: Settings) -> _Start:
        """A session id, its policy, its audit log (with the resolved config) and its broker."""
        from harness.approval.broker import ApprovalBroker
        from harness.approval.engine import PolicyContext

        session_id = new_session_id()
        context = PolicyContext.for_settings(settings)
        audit = self._audit(settings.audit_paths)
        if audit is not None:
            audit.append(
                "config.resolved",
                session=session_id,
                effective=settings.effective(),
                sources=dict(settings.sources),
            )
        broker = ApprovalBroker(
            context,
            session=session_id,
            asker=self.asker,
            audit=audit,
            no_human_reason=self.no_human_reason,
        )
        return _Start(session_id, context, audit, broker)

    # -- run

    def run(self, settings: Settings, argv: Sequence[str], *, tty: bool, stdin: bool) -> int:
        """One-shot: approve, create the sandbox with CMD as its main process, stream, remove."""
        start = self._begin(settings)
        self._approve(start.broker, _approval_request(argv, str(settings.workspace)))
        plan = plan_for(settings)
        backend, _ = self._backend(settings.backend)
        image = self._image(backend, settings)
        if plan.network.mode is NetworkMode.ALLOWLIST:
            # the proxy must listen before CMD starts: a keeper holds the namespace, CMD is exec'd
            return self._session(
                start, settings, plan, backend, image, argv, detach=False, tty=tty, stdin=stdin
            )
        spec = session_spec(
            backend, plan, start.session_id, image, command=argv, tty=tty, stdin=stdin
        )
        return self._run_spec(backend, spec, settings, start.context, start.audit, command=argv)

    def _run_spec(
        self,
        backend: Backend,
        spec: SessionSpec,
        settings: Settings,
        context: PolicyContext,
        audit: MultiAuditLog | None,
        *,
        command: Sequence[str],
    ) -> int:
        with terminate_as_exception():
            handle = backend.create(spec)
            try:
                self.store.save(self._record(spec, handle, settings, context))
                return _audited(
                    audit,
                    spec.session_id,
                    command,
                    backend.name,
                    lambda: backend.attach(handle, spec),
                )
            finally:
                self._teardown(backend, handle, spec.session_id, spec.mounts, audit)

    # -- up

    def up(
        self,
        settings: Settings,
        command: Sequence[str] | None,
        *,
        detach: bool,
        tty: bool,
        stdin: bool,
        on_ready: Callable[[SessionRecord], None] = lambda record: None,
        owned: bool = False,
    ) -> int:
        """Start a session; run CMD (or an interactive shell) in it, or leave it running with -d.

        `owned` keeps this process as the owner of a detached session (the MCP server):
        if it dies, `prune` removes the session, as for a foreground one.
        """
        if detach and command:
            from harness.errors import UsageError

            raise UsageError(
                "`up -d` starts a session and returns; run commands in it with `harness exec`."
            )
        self.prune()
        start = self._begin(settings)
        # no command: harness-sh starts bash with a hook that asks the gateway for every line
        argv = list(command) if command else [f"{SANDBOX_BIN}/harness-sh"]
        if not detach:
            self._approve(start.broker, _approval_request(argv, str(settings.workspace)))
        plan = plan_for(settings)
        backend, _ = self._backend(settings.backend)
        image = self._image(backend, settings)
        return self._session(
            start,
            settings,
            plan,
            backend,
            image,
            argv,
            detach=detach,
            tty=tty,
            stdin=stdin,
            on_ready=on_ready,
            owned=owned,
        )

    def _session(
        self,
        start: _Start,
        settings: Settings,
        plan: SandboxPlan,
        backend: Backend,
        image: str,
        argv: Sequence[str],
        *,
        detach: bool,
        tty: bool,
        stdin: bool,
        on_ready: Callable[[SessionRecord], None] = lambda record: None,
        owned: bool = False,
    ) -> int:
        """A keeper sandbox with its gateway (and its network, for an allowlist); run argv in it
        unless detached."""
        from harness.gateway.process import start_gateway
        from harness.net.process import start_network
        from harness.policy.plan import plan_to_json

        allowlist = plan.network.mode is NetworkMode.ALLOWLIST
        session_id = start.session_id
        handle: Handle | None = None
        from harness.backends.mounts import PreparedMounts

        mounts = PreparedMounts((), ())
        with terminate_as_exception():
            try:
                escalated = plan_for(settings, SandboxMode.DANGER_FULL_ACCESS, NetworkMode.FULL)
                gateway = start_gateway(
                    self.locations,
                    session_id,
                    context_to_json(start.context),
                    settings.audit_paths,
                    {"backend": backend.name, "image": image, "plan": plan_to_json(escalated)},
                    owner=None if detach and not owned else ProcessId.current().label(),
                )
                control = {"socket": gateway.control, "token": gateway.token}
                policy = start.context.policy.value
                netns_path = None
                if allowlist and not _adopts_namespaces(backend):
                    netns_path = start_network(
                        self.locations,
                        session_id,
                        settings.network_rules,
                        settings.audit_paths,
                        control=control,
                        policy=policy,
                    ).netns_path
                spec = session_spec(
                    backend,
                    plan,
                    session_id,
                    image,
                    command=None,
                    tty=False,
                    stdin=False,
                    detached=detach and not owned,
                    netns_path=netns_path,
                    gateway=gateway,
                    sandbox_bin=sandbox_bin_dir(self.locations),
                )
                mounts = spec.mounts
                handle = backend.create(spec)
                if allowlist and _adopts_namespaces(backend):
                    pid = backend.main_pid(handle)
                    if pid is None:
                        raise SessionError("the sandbox stopped before its network could be set up")
                    start_network(
                        self.locations,
                        session_id,
                        settings.network_rules,
                        settings.audit_paths,
                        adopt_pid=pid,
                        control=control,
                        policy=policy,
                    )
                record = replace(
                    self._record(spec, handle, settings, start.context),
                    agent=self._wait_for_agent(backend, handle),
                    gateway_control=gateway.control,
                    gateway_token=gateway.token,
                )
                self.store.save(record)
                if start.audit is not None:
                    start.audit.append(
                        "session.created",
                        session=session_id,
                        backend=backend.name,
                        container=handle.container_id,
                        detached=detach,
                        network=plan.network.mode.value,
                    )
                on_ready(record)
                if detach:
                    return 0
                with self._console(record) as console:
                    return self._exec_in(
                        lambda: backend,
                        record,
                        argv,
                        tty=tty,
                        stdin=stdin,
                        audit=start.audit,
                        interrupt=console,
                    )
            finally:
                if not detach or sys.exc_info()[0] is not None:
                    self._teardown(
                        backend,
                        handle,
                        session_id,
                        mounts,
                        start.audit,
                        network=allowlist,
                        gateway=True,
                    )

    @contextlib.contextmanager
    def _console(self, record: SessionRecord) -> Iterator[Any]:
        if self.console_factory is None or not record.gateway_control:
            yield None
            return
        console = self.console_factory(record)
        try:
            yield console
        finally:
            console.close()

    @staticmethod
    def _wait_for_agent(backend: Backend, handle: Handle, timeout: float = 5.0) -> str:
        """The agent's identity once it answers; "" when the image has no python3 (engine exec then)."""
        from harness.backends.agent_client import agent_ready

        pid = backend.main_pid(handle)
        process = ProcessId.of(pid) if pid else None
        if process is None:
            return ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if agent_ready(process):
                return process.label()
            time.sleep(0.02)
        return ""

    def _exec_in(
        self,
        backend: Callable[[], Backend],
        record: SessionRecord,
        argv: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
        audit: MultiAuditLog | None,
        workdir: str | None = None,
        interrupt: Any = None,
    ) -> int:
        env = dict(record.env)
        if tty:
            env.setdefault("TERM", os.environ.get("TERM", "xterm-256color"))
        spec = ExecSpec(
            tuple(argv), workdir or record.workdir, record.user, env, tty=tty, stdin=stdin
        )
        return _audited(
            audit,
            record.session_id,
            argv,
            record.backend,
            lambda: self._exec_fast_or_engine(backend, record, spec, interrupt),
        )

    @staticmethod
    def _exec_fast_or_engine(
        backend: Callable[[], Backend],
        record: SessionRecord,
        spec: ExecSpec,
        interrupt: Any = None,
    ) -> int:
        """Through the in-sandbox agent when it answers; the engine (made only then) otherwise."""
        from harness.backends.agent_client import AgentUnavailable, run_via_agent

        sandbox = ProcessId.from_label(record.agent) if record.agent else None
        if sandbox is not None:
            try:
                return run_via_agent(
                    sandbox,
                    spec.argv,
                    cwd=spec.workdir,
                    env=spec.env,
                    tty=spec.tty,
                    stdin=spec.stdin,
                    interrupt=interrupt,
                )
            except AgentUnavailable:
                pass  # not started yet, or killed inside the sandbox: the engine can still exec
        return backend().exec(record.handle(), spec)

    # -- exec

    def find(self, session_id: str | None, workspace: Path | None = None) -> SessionRecord:
        records = [r for r in self.store.all() if r.owner_alive()]
        if session_id is not None:
            matches = [
                r
                for r in records
                if r.session_id == session_id or r.session_id.startswith(session_id)
            ]
            if len(matches) == 1:
                return matches[0]
            if not matches:
                raise SessionError(f"no running session {session_id!r}; `harness ls` lists them.")
            raise SessionError(
                f"{session_id!r} matches several sessions ({', '.join(r.session_id for r in matches)}); give more of the id."
            )
        if workspace is not None:
            here = [r for r in records if r.workspace == str(workspace)]
            if len(here) == 1:
                return here[0]
            records = here or records
        if len(records) == 1:
            return records[0]
        if not records:
            raise SessionError(
                "no running session; start one with `harness up -d`, or pass --session ID."
            )
        raise SessionError(
            f"several sessions are running ({', '.join(r.session_id for r in records)}); choose one with --session ID."
        )

    def exec(
        self,
        session_id: str | None,
        argv: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
        cwd: Path | None = None,
        escalate: bool = False,
        justification: str | None = None,
        audit_paths: Sequence[Path] = (),
        settings_for_escalation: Settings | None = None,
    ) -> int:
        """Run one command in a running session, through its approval policy."""
        record = self.find(session_id, cwd)
        # the session's own audit logs (an admin's path included) get its commands
        audit = self._audit([Path(p) for p in record.audit_paths] or list(audit_paths))
        workdir = (
            str(cwd)
            if cwd is not None
            and (str(cwd) == record.workspace or str(cwd).startswith(record.workspace + "/"))
            else record.workdir
        )
        if record.gateway_control:
            # the session's gateway decides: one ID sequence, one "approve for session" memory
            self._approve_at_gateway(record, argv, workdir, escalate, justification, tty=tty)
        else:
            from harness.approval.broker import ApprovalBroker

            broker = ApprovalBroker(
                record.policy_context(),
                session=record.session_id,
                asker=self.asker,
                audit=audit,
                no_human_reason=self.no_human_reason,
            )
            self._approve(
                broker,
                _approval_request(argv, workdir, escalate=escalate, justification=justification),
            )
        if escalate:
            if settings_for_escalation is None:
                raise SessionError(
                    "an escalated command needs the session's configuration; run it from the workspace."
                )
            return self._run_escalated(
                record, settings_for_escalation, argv, tty=tty, stdin=stdin, audit=audit
            )
        return self._exec_in(
            lambda: self._backend_of(record),
            record,
            argv,
            tty=tty,
            stdin=stdin,
            audit=audit,
            workdir=workdir,
        )

    def _approve_at_gateway(
        self,
        record: SessionRecord,
        argv: Sequence[str],
        workdir: str,
        escalate: bool,
        justification: str | None,
        *,
        tty: bool,
    ) -> None:
        """Ask the session's gateway; with a terminal, answer our own question here if it asks."""
        from harness.gateway.client import ask

        message = {
            "op": "run",
            "token": record.gateway_token,
            "argv": list(argv),
            "cwd": workdir,
            "escalate": escalate,
            "justification": justification,
        }
        if not tty or self.console_factory is None:
            raise_unless_allowed(ask(record.gateway_control, message))
            return
        import select
        import threading

        console = self.console_factory(record)
        result: dict[str, Any] = {}
        errors: list[BaseException] = []

        def request() -> None:
            try:
                result.update(ask(record.gateway_control, message))
            except BaseException as error:  # re-raised in this thread below
                errors.append(error)

        worker = threading.Thread(target=request, daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                if select.select([console.fd], [], [], 0.05)[0]:
                    console.handle()
        finally:
            console.close()
        if errors:
            raise errors[0]
        raise_unless_allowed(result)

    def exec_captured(
        self,
        session_id: str,
        argv: Sequence[str] | None = None,
        *,
        shell: str | None = None,
        cwd: str | None = None,
        escalate: bool = False,
        justification: str | None = None,
    ) -> CommandResult:
        """Run one command in a session and return its output (for the MCP server and scripts).

        Approval happens at the session's gateway, exactly as for `harness exec` and
        harness-sh; an approved escalation runs in a sibling sandbox through the gateway.
        """
        record = self.find(session_id)
        if not record.gateway_control:
            raise SessionError(
                f"session {record.session_id} has no gateway; start it with `harness up`."
            )
        workdir = (
            cwd
            if cwd and (cwd == record.workspace or cwd.startswith(record.workspace + "/"))
            else record.workdir
        )
        command = list(argv) if argv is not None else ["bash", "-c", shell or ""]
        if escalate:
            return _escalate_through_gateway(record, command, workdir, justification)
        self._approve_at_gateway(record, command, workdir, False, justification, tty=False)
        from harness.backends.stream import Terminal

        backend = self._backend_of(record)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY)
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        readers = [
            threading.Thread(target=_drain, args=(fd, chunks[fd]), daemon=True)
            for fd in (out_r, err_r)
        ]
        for reader in readers:
            reader.start()
        try:
            spec = ExecSpec(
                tuple(command), workdir, record.user, dict(record.env), tty=False, stdin=False
            )
            audit = self._audit([Path(p) for p in record.audit_paths])
            code = self._exec_captured_run(
                backend, record, spec, Terminal(devnull, out_w, err_w), audit
            )
        finally:
            for fd in (out_w, err_w, devnull):
                os.close(fd)
            for reader in readers:
                reader.join(timeout=30)
        return CommandResult(
            code,
            b"".join(chunks[out_r]).decode(errors="replace"),
            b"".join(chunks[err_r]).decode(errors="replace"),
        )

    def _exec_captured_run(
        self,
        backend: Backend,
        record: SessionRecord,
        spec: ExecSpec,
        terminal: Any,
        audit: MultiAuditLog | None,
    ) -> int:
        from harness.backends.agent_client import AgentUnavailable, run_via_agent

        def run() -> int:
            sandbox = ProcessId.from_label(record.agent) if record.agent else None
            if sandbox is not None:
                with contextlib.suppress(AgentUnavailable):
                    return run_via_agent(
                        sandbox,
                        spec.argv,
                        cwd=spec.workdir,
                        env=spec.env,
                        tty=False,
                        stdin=False,
                        terminal=terminal,
                    )
            raise SessionError(
                "the session's agent is not reachable; capture needs it (an image with python3)"
            )

        return _audited(audit, record.session_id, spec.argv, record.backend, run)

    def _run_escalated(
        self,
        record: SessionRecord,
        settings: Settings,
        argv: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
        audit: MultiAuditLog | None,
    ) -> int:
        """An approved escalation runs in a sibling container with the full plan, sharing the workspace."""
        backend = self._backend_of(record)
        plan = plan_for(settings, SandboxMode.DANGER_FULL_ACCESS, NetworkMode.FULL)
        sibling = f"{record.session_id}-e{new_session_id()[:4]}"
        spec = session_spec(
            backend,
            plan,
            sibling,
            record.image,
            command=argv,
            tty=tty,
            stdin=stdin,
            role="escalation",
        )
        spec = replace(
            spec,
            labels={**spec.labels, LABEL_SESSION: record.session_id, "harness.sibling": sibling},
        )
        return self._run_spec(backend, spec, settings, record.policy_context(), audit, command=argv)

    # -- down, ls, prune

    def down(self, session_id: str | None, *, everything: bool = False) -> list[str]:
        records = self.store.all()
        if not everything:
            if session_id is None:
                raise SessionError("give a session id, or --all.")
            records = [
                r
                for r in records
                if r.session_id == session_id or r.session_id.startswith(session_id)
            ]
            if not records:
                raise SessionError(f"no session {session_id!r}; `harness ls` lists them.")
        removed = []
        for record in records:
            backend = self._backend_of(record)
            with contextlib.suppress(HarnessError):
                for info in backend.list({LABEL_SESSION: record.session_id}):
                    backend.destroy(Handle(backend.name, info.container_id, record.session_id))
            _forget_mount_points(record)
            self._stop_network(record.session_id)
            self._stop_gateway(record.session_id)
            self.store.remove(record.session_id)
            removed.append(record.session_id)
        if everything:
            removed += self._sweep(lambda info: True)
        return removed

    def _stop_gateway(self, session_id: str) -> None:
        from harness.gateway.process import stop_gateway

        with contextlib.suppress(HarnessError, OSError):
            stop_gateway(self.locations, session_id)

    def _stop_network(self, session_id: str) -> None:
        from harness.net.process import stop_network

        with contextlib.suppress(HarnessError, OSError):
            stop_network(self.locations, session_id)

    def list_sessions(self) -> list[tuple[SessionRecord | None, SandboxInfo | None]]:
        """Every session harness knows of, from its records and from the engines' labels."""
        found: dict[str, tuple[SessionRecord | None, SandboxInfo | None]] = {
            r.session_id: (r, None) for r in self.store.all()
        }
        for info in self._engine_sandboxes():
            session_id = info.labels.get(LABEL_SESSION, "?")
            record = found.get(session_id, (None, None))[0]
            found[session_id] = (record, info)
        return list(found.values())

    def _engine_sandboxes(self) -> list[SandboxInfo]:
        from harness.backends.registry import BACKENDS

        found: list[SandboxInfo] = []
        for factory in BACKENDS.values():
            backend = factory(self.locations)
            if backend.check() is not None:
                continue
            with contextlib.suppress(HarnessError):
                found.extend(backend.list({LABEL_SESSION: ""}))
        return found

    def prune(self) -> list[str]:
        """Remove sandboxes whose harness process died, and records of sandboxes that are gone."""
        removed = self._sweep(_orphaned)
        live = {info.labels.get(LABEL_SESSION) for info in self._engine_sandboxes()}
        for record in self.store.all():
            if record.session_id not in live or not record.owner_alive():
                _forget_mount_points(record)
                self.store.remove(record.session_id)
                if record.session_id not in removed:
                    removed.append(record.session_id)
        for session_id in self._stale_networks(live):
            self._stop_network(session_id)
            if session_id not in removed:
                removed.append(session_id)
        for session_id in self._stale_gateways(live):
            self._stop_gateway(session_id)
            if session_id not in removed:
                removed.append(session_id)
        return removed

    def _stale_gateways(self, live: set[str | None]) -> list[str]:
        """Gateway processes whose sandbox is gone (a gateway starts before its sandbox: after a minute)."""
        from harness.daemons import record_age, recorded_sessions
        from harness.gateway.process import KIND

        return [
            session_id
            for session_id in recorded_sessions(self.locations, KIND)
            if session_id not in live and record_age(self.locations, KIND, session_id) > 60
        ]

    def _stale_networks(self, live: set[str | None]) -> list[str]:
        """Network processes and namespaces whose sandbox is gone.

        A namespace with no record here may belong to another harness still starting its
        sandbox (the namespace comes first for Podman): it is left alone for a minute.
        """
        from harness.net.netns import RUN_DIR, name_for
        from harness.net.process import network_sessions, recorded_network

        stale = []
        for session_id in network_sessions(self.locations):
            if session_id in live:
                continue
            if recorded_network(self.locations, session_id) is None:
                try:
                    age = time.time() - (RUN_DIR / name_for(session_id)).stat().st_mtime
                except OSError:
                    continue
                if age < 60:
                    continue
            stale.append(session_id)
        return stale

    def _sweep(self, should_remove: Callable[[SandboxInfo], bool]) -> list[str]:
        from harness.backends.registry import BACKENDS

        removed: list[str] = []
        for info in self._engine_sandboxes():
            if not should_remove(info):
                continue
            backend = BACKENDS[info.backend](self.locations)
            with contextlib.suppress(HarnessError):
                backend.destroy(
                    Handle(info.backend, info.container_id, info.labels.get(LABEL_SESSION, ""))
                )
                removed.append(info.labels.get(LABEL_SESSION, info.container_id[:12]))
        return removed


def _approval_request(
    argv: Sequence[str], cwd: str, *, escalate: bool = False, justification: str | None = None
) -> ApprovalRequest:
    from harness.approval.engine import ApprovalRequest

    return ApprovalRequest.for_argv(argv, cwd, escalate=escalate, justification=justification)


def _audited(
    audit: MultiAuditLog | None,
    session_id: str,
    command: Sequence[str],
    backend: str,
    run: Callable[[], int],
) -> int:
    """Run a command, with its start and its result (exit code, duration) in the audit log."""
    started = time.monotonic()
    if audit is not None:
        audit.append("command.started", session=session_id, command=list(command), backend=backend)
    code = run()
    if audit is not None:
        audit.append(
            "command.finished",
            session=session_id,
            command=list(command),
            exit_code=code,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
    return code


def raise_unless_allowed(answer: Mapping[str, Any]) -> None:
    """A gateway's answer: nothing when allowed, PolicyDenied (126) with reason and feedback when not."""
    if answer.get("error"):
        raise SessionError(f"the session's gateway refused the request: {answer['error']}")
    if answer.get("decision") == "allow":
        return
    reason = str(answer.get("reason") or "denied")
    feedback = answer.get("feedback") if isinstance(answer.get("feedback"), str) else None
    text = f"denied ({answer.get('approval_id', '-')}): {reason}"
    if feedback:
        text += f"\nharness: feedback from the reviewer: {feedback}"
    raise PolicyDenied(text, reason=reason, feedback=feedback)


@dataclass(frozen=True)
class CommandResult:
    """A command's exit code and captured output."""

    exit_code: int
    stdout: str
    stderr: str


def _drain(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 65536):
        into.append(chunk)
    os.close(fd)


def _escalate_through_gateway(
    record: SessionRecord, command: Sequence[str], cwd: str, justification: str | None
) -> CommandResult:
    """Speak to the gateway as harness-sh does: approval, then the sibling sandbox's output."""
    import socket

    from harness.gateway.process import GATEWAY_IN_SANDBOX
    from harness.gateway.protocol import EXIT, FRAME, STDERR, STDOUT, encode, receive

    socket_dir = Path(record.gateway_control).with_suffix("")
    path = socket_dir / Path(GATEWAY_IN_SANDBOX).name
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        sock.sendall(
            encode(
                {
                    "op": "run",
                    "token": record.gateway_token,
                    "argv": list(command),
                    "cwd": cwd,
                    "escalate": True,
                    "justification": justification,
                }
            )
        )
        raise_unless_allowed(receive(sock))
        reader = sock.makefile("rb")
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            head = reader.read(FRAME.size)
            if len(head) < FRAME.size:
                raise SessionError("the gateway closed the connection before the command ended")
            kind, size = FRAME.unpack(head)
            payload = reader.read(size)
            if kind == STDOUT:
                out.append(payload)
            elif kind == STDERR:
                err.append(payload)
            elif kind == EXIT:
                return CommandResult(
                    int(payload or b"125"),
                    b"".join(out).decode(errors="replace"),
                    b"".join(err).decode(errors="replace"),
                )
    except OSError as exc:
        raise SessionError(f"the session's gateway is not reachable ({exc})") from None
    finally:
        sock.close()


def _forget_mount_points(record: SessionRecord) -> None:
    """Remove the empty mount points a session's masks made on the host."""
    from harness.backends.mounts import PreparedMounts, remove_created_mount_points

    remove_created_mount_points(PreparedMounts((), (), record.created_on_host))


def _orphaned(info: SandboxInfo) -> bool:
    owner = info.labels.get(LABEL_OWNER_PROCESS, "")
    if owner == DETACHED:
        return False
    process = ProcessId.from_label(owner)
    return process is None or not process.alive()
