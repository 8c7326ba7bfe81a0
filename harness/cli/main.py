"""The `harness` command line: parse, call one core function, render.

This package is the only place that prints for the user or exits. Heavy
modules (pydantic, the engine SDKs, tree-sitter) are imported inside the
commands so that `harness --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.options import sandbox_options
from harness.config.options import CliOptions

app = typer.Typer(
    name="harness",
    help="Run coding agents and untrusted commands in a disposable, policy-enforced sandbox.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help imports markdown-it and costs ~180 ms per start.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _group(name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(rich_markup_mode=None, help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


config_app = _group("config", "Show the effective configuration.")
profile_app = _group("profile", "List and show named profiles.")
policy_app = _group("policy", "Ask the approval engine what it would decide.")
audit_app = _group("audit", "Read and verify the hash-chained audit log.")
seccomp_app = _group("seccomp", "Generate the OCI seccomp profiles.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _locations() -> Any:
    from harness.paths import Locations

    return Locations.from_environment()


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _notices(notices: tuple[str, ...] | list[str]) -> None:
    for notice in notices:
        sys.stderr.write(f"harness: note: {notice}\n")


# -- config --------------------------------------------------------------------------


@config_app.command("show")
@sandbox_options
def config_show(options: CliOptions, as_json: JsonFlag = False) -> None:
    """Show every effective setting and the layer it came from."""
    from harness.config.resolve import resolve

    settings = resolve(options, _locations())
    _notices(settings.notices)
    effective = settings.effective()
    sources = {key: settings.sources.get(key, "default") for key in effective}
    if as_json:
        _emit_json({"effective": effective, "sources": sources})
        return
    from harness.cli.render import settings_table

    settings_table(effective, sources)


# -- profiles ------------------------------------------------------------------------


@profile_app.command("list")
def profile_list(as_json: JsonFlag = False) -> None:
    """List built-in and user profiles."""
    from harness.config.profiles import list_profiles

    profiles = list_profiles(_locations().config_home)
    if as_json:
        _emit_json(
            [
                {
                    "name": p.name,
                    "builtin": p.builtin,
                    "path": str(p.path) if p.path else None,
                    "description": p.description,
                }
                for p in profiles
            ]
        )
        return
    width = max(len(p.name) for p in profiles)
    for profile in profiles:
        kind = "built-in" if profile.builtin else "user"
        sys.stdout.write(f"{profile.name:<{width}}  {kind:<8}  {profile.description}\n")


@profile_app.command("show")
def profile_show(name: Annotated[str, typer.Argument(help="Profile name.")]) -> None:
    """Print a profile's TOML."""
    from harness.config.profiles import find_profile
    from harness.config.schema import parse_config

    profile = find_profile(name, _locations().config_home)
    parse_config(profile.text, str(profile.path or f"built-in profile {name}"))
    origin = profile.path or "built-in"
    sys.stdout.write(f"# profile {profile.name} ({origin}): {profile.description}\n{profile.text}")


# -- trust ---------------------------------------------------------------------------


@app.command("trust")
def trust(
    directory: Annotated[
        Path, typer.Argument(help="Project directory (default: current).")
    ] = Path(),
    revoke: Annotated[bool, typer.Option("--revoke", help="Stop trusting it.")] = False,
    show: Annotated[bool, typer.Option("--list", help="List trusted directories.")] = False,
) -> None:
    """Trust a project's .harness/config.toml (until then it can only tighten)."""
    from harness.config.trust import set_trusted, trusted_directories

    locations = _locations()
    if show:
        for entry in trusted_directories(locations.trust_file):
            sys.stdout.write(entry + "\n")
        return
    canonical = set_trusted(directory, locations.trust_file, trusted=not revoke)
    verb = "no longer trusted" if revoke else "trusted"
    sys.stdout.write(f"{canonical}: {verb}\n")


# -- policy --------------------------------------------------------------------------


@policy_app.command(
    "check",
    context_settings={"allow_interspersed_args": False},
)
@sandbox_options
def policy_check(
    options: CliOptions,
    command: Annotated[list[str] | None, typer.Argument(help="The command, after `--`.")] = None,
    shell: Annotated[
        str | None, typer.Option("-c", help="A shell string instead of an argv.")
    ] = None,
    cwd: Annotated[
        Path | None, typer.Option("--cwd", help="Directory the command would run in.")
    ] = None,
    escalate: Annotated[
        bool, typer.Option("--escalate", help="The request asks to leave the sandbox.")
    ] = False,
    justification: Annotated[
        str | None, typer.Option("--justification", help="Why it asks.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print allow / prompt / forbidden for a command, and why."""
    from harness.policy_check import check_policy

    result = check_policy(
        options,
        _locations(),
        argv=tuple(command or ()),
        shell=shell,
        cwd=cwd,
        escalate=escalate,
        justification=justification,
    )
    _notices(result.settings.notices)
    if as_json:
        _emit_json(result.to_json())
        return
    from harness.cli.render import policy_report

    policy_report(result.to_json())


# -- audit ---------------------------------------------------------------------------

AuditPath = Annotated[
    list[Path] | None, typer.Option("--path", help="Audit log file (default: the configured logs).")
]


def _audit_paths(paths: list[Path] | None) -> list[Path]:
    if paths:
        return paths
    from harness.config.resolve import resolve

    settings = resolve(CliOptions(), _locations())
    if not settings.audit_paths:
        from harness.errors import ConfigError

        raise ConfigError(
            "the audit log is disabled (audit.enabled = false); pass --path FILE to read one."
        )
    return list(settings.audit_paths)


@audit_app.command("show")
def audit_show(
    paths: AuditPath = None,
    session: Annotated[str | None, typer.Option("--session", help="Only this session.")] = None,
    decision: Annotated[
        str | None, typer.Option("--decision", help="allow | prompt | forbidden | denied ...")
    ] = None,
    event: Annotated[
        str | None, typer.Option("--event", help="Event name or glob, e.g. 'approval.*'.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO time or age such as 2h, 30m, 7d.")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time or age.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print audit records, filtered."""
    from harness.audit import AuditLog, filter_records
    from harness.cli.render import audit_lines
    from harness.timeparse import parse_when

    for path in _audit_paths(paths):
        records = filter_records(
            AuditLog(path).records(),
            session=session,
            decision=decision,
            event=event,
            since=parse_when(since) if since else None,
            until=parse_when(until) if until else None,
        )
        if as_json:
            for record in records:
                sys.stdout.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        else:
            audit_lines(records)


@audit_app.command("verify")
def audit_verify(paths: AuditPath = None, as_json: JsonFlag = False) -> None:
    """Check the hash chain; name the line of every edited, removed, inserted or reordered record."""
    from harness.audit import AuditLog

    failed = False
    reports = []
    for path in _audit_paths(paths):
        report = AuditLog(path).verify()
        failed = failed or not report.ok
        reports.append(report)
        if not as_json:
            state = "ok" if report.ok else "FAILED"
            sys.stdout.write(f"{path}: {state} ({report.records} records)\n")
            for problem in report.problems:
                level = "error" if problem.fatal else "warning"
                sys.stdout.write(f"  {level}: {problem.message}\n")
    if as_json:
        _emit_json(
            [
                {
                    "path": str(r.path),
                    "ok": r.ok,
                    "records": r.records,
                    "problems": [
                        {"line": p.line, "kind": p.kind, "message": p.message, "fatal": p.fatal}
                        for p in r.problems
                    ],
                }
                for r in reports
            ]
        )
    if failed:
        raise typer.Exit(1)


# -- sessions ------------------------------------------------------------------------

CommandArg = Annotated[
    list[str] | None, typer.Argument(help="The command, after `--`.", show_default=False)
]


def _progress(line: str) -> None:
    from harness.cli.fast import progress

    progress(line)


def _sessions() -> Any:
    from harness.cli.fast import sessions_for_cli

    return sessions_for_cli(_locations())


def _tty() -> bool:
    from harness.cli.console import has_terminal

    return has_terminal()


@app.command("run", context_settings={"allow_interspersed_args": False})
@sandbox_options
def run(options: CliOptions, command: CommandArg = None) -> None:
    """One-shot: up, run CMD through approval, down. The exit code is CMD's."""
    if not command:
        from harness.errors import UsageError

        raise UsageError("give the command after `--`, e.g. `harness run -- make test`.")
    from harness.config.cache import resolve_cached

    settings = resolve_cached(options, _locations())
    _notices(settings.notices)
    tty = _tty()
    code = _sessions().run(settings, command, tty=tty, stdin=True)
    raise typer.Exit(code)


@app.command("up", context_settings={"allow_interspersed_args": False})
@sandbox_options
def up(
    options: CliOptions,
    command: CommandArg = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start the session and return its id.")
    ] = False,
) -> None:
    """Start a session: an interactive shell, or CMD (an agent); -d leaves it running."""
    from harness.config.cache import resolve_cached

    settings = resolve_cached(options, _locations())
    _notices(settings.notices)
    tty = _tty()
    if not detach and not command and not tty:
        from harness.errors import UsageError

        raise UsageError(
            "an interactive shell needs a terminal; give a command after `--` or use -d."
        )

    def ready(record: Any) -> None:
        if detach:
            sys.stdout.write(record.session_id + "\n")
        else:
            _progress(
                f"session {record.session_id} ({record.backend}, {record.mode}, {record.policy})"
            )

    code = _sessions().up(settings, command, detach=detach, tty=tty, stdin=True, on_ready=ready)
    raise typer.Exit(code)


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    command: CommandArg = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Session id (default: the one running here).")
    ] = None,
    escalate: Annotated[
        bool, typer.Option("--escalate", help="Ask to run outside the session's sandbox.")
    ] = False,
    justification: Annotated[
        str | None, typer.Option("--justification", help="Why the escalation is needed.")
    ] = None,
) -> None:
    """Run CMD in a running session, through its approval policy."""
    from harness.errors import UsageError

    if not command:
        raise UsageError("give the command after `--`, e.g. `harness exec -- ls`.")
    if justification and not escalate:
        raise UsageError("--justification goes with --escalate.")
    settings = None
    audit_paths: list[Path] = []
    cwd = Path.cwd()
    if escalate:
        from harness.config.resolve import resolve

        settings = resolve(CliOptions(), _locations())
        audit_paths = list(settings.audit_paths)
    code = _sessions().exec(
        session,
        command,
        tty=_tty(),
        stdin=True,
        cwd=cwd,
        escalate=escalate,
        justification=justification,
        audit_paths=audit_paths,
        settings_for_escalation=settings,
    )
    raise typer.Exit(code)


@app.command("down")
def down(
    session: Annotated[str | None, typer.Argument(help="Session id.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every session.")] = False,
) -> None:
    """Stop and remove a session (or all)."""
    for removed in _sessions().down(session, everything=everything):
        sys.stdout.write(f"removed {removed}\n")


@app.command("ls")
def ls(as_json: JsonFlag = False) -> None:
    """List sessions: id, backend, state, owner, workspace."""
    rows = []
    for record, info in _sessions().list_sessions():
        rows.append(
            {
                "session": (
                    record.session_id
                    if record
                    else (info.labels.get("harness.session") if info else "?")
                ),
                "backend": record.backend if record else (info.backend if info else "?"),
                "state": info.state if info else "gone",
                "owner": (
                    "detached"
                    if record and record.owner == "detached"
                    else ("alive" if record and record.owner_alive() else "dead")
                ),
                "mode": record.mode
                if record
                else (info.labels.get("harness.mode") if info else "?"),
                "workspace": record.workspace
                if record
                else (info.labels.get("harness.workspace") if info else "?"),
                "created": record.created if record else (info.created if info else ""),
            }
        )
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        sys.stdout.write(
            "  ".join(
                str(row[k]) for k in ("session", "backend", "state", "owner", "mode", "workspace")
            )
            + "\n"
        )


@app.command("prune")
def prune() -> None:
    """Remove sessions whose harness process died, and stale records."""
    for removed in _sessions().prune():
        sys.stdout.write(f"removed {removed}\n")


image_app = _group("image", "Build the session image.")


@image_app.command("build")
def image_build(
    backend: Annotated[str, typer.Option("--backend", help="docker | podman | auto.")] = "auto",
    image: Annotated[str | None, typer.Option("--image", help="Reference to build.")] = None,
) -> None:
    """Build the default session image (offline with debootstrap when no registry answers)."""
    from harness.backends.registry import choose_backend
    from harness.images import DEFAULT_IMAGE, build_session_image

    chosen = choose_backend(backend, _locations())
    reference = build_session_image(
        chosen.backend.name, image or DEFAULT_IMAGE, progress=_progress, locations=_locations()
    )
    sys.stdout.write(reference + "\n")


# -- approvals -----------------------------------------------------------------------


@app.command("approvals")
def approvals(
    session: Annotated[str | None, typer.Option("--session", help="Only this session.")] = None,
    paths: AuditPath = None,
    as_json: JsonFlag = False,
) -> None:
    """The approval history: ID, command, decision, decider, feedback, time."""
    from harness.approval.history import approval_history
    from harness.audit import AuditLog

    logs = _audit_paths(paths)
    entries = approval_history(
        (record for path in logs for record in AuditLog(path).records()),
        session=session,
        where=", ".join(map(str, logs)),
    )
    if as_json:
        _emit_json([e.to_json() for e in entries])
        return
    from harness.cli.render import approval_table

    approval_table(entries)


# -- mcp -----------------------------------------------------------------------------


@app.command("mcp")
def mcp() -> None:
    """An MCP server over stdio: sessions as tools; approvals through elicitation."""
    from harness.mcp_server import serve_stdio

    serve_stdio()


# -- doctor --------------------------------------------------------------------------


@app.command("doctor")
def doctor(as_json: JsonFlag = False) -> None:
    """What this host can do: engines, seccomp, Landlock, user namespaces, KVM; and the fixes."""
    from harness.doctor import diagnose

    report = diagnose(_locations())
    if as_json:
        _emit_json(report.to_json())
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else "FAIL"
            sys.stdout.write(f"{mark} {check.name:<15} {check.detail}\n")
            if not check.ok and check.fix:
                sys.stdout.write(f"     {'':<15} fix: {check.fix}\n")
        backend = report.backend or "none usable"
        sys.stdout.write(f"\nbackend: {backend} ({report.backend_reason})\n")
    if not report.ok:
        raise typer.Exit(1)


# -- seccomp -------------------------------------------------------------------------


@seccomp_app.command("generate")
def seccomp_generate(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder (default: the repo's seccomp/).")
    ] = None,
) -> None:
    """Write the OCI seccomp profiles, one file per variant."""
    from harness.policy.seccomp import default_directory, write_profiles

    directory = output or default_directory()
    directory.mkdir(parents=True, exist_ok=True)
    for path in write_profiles(directory):
        sys.stdout.write(f"{path}\n")


# -- entry point ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; HarnessError becomes one paragraph on stderr and its exit code."""
    from harness.cli.errors import run_guarded

    return run_guarded(app, argv)


if __name__ == "__main__":
    sys.exit(main())
