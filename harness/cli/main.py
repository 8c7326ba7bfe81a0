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
