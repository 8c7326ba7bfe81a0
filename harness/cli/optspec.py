"""The sandbox options as plain data: typer's options and the fast parser are both built from it.

Kept free of typer so that `harness run` and `harness exec` can parse their
arguments without importing it (~60 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.config.options import CliOptions


@dataclass(frozen=True)
class OptionSpec:
    """One sandbox option as both the fast parser and typer describe it."""

    name: str  # the CliOptions field it fills (allow_domain → allow_domains)
    flags: tuple[str, ...]
    help: str
    kind: str  # "text" | "flag" | "path" | "multiple"
    metavar: str | None = None


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "profile",
        ("--profile", "-p"),
        "Named profile (strict, auto, review, ci, infra, yolo, or yours).",
        "text",
    ),
    OptionSpec(
        "approval",
        ("--approval", "-a"),
        "Approval policy: untrusted | on-request | never.",
        "text",
        "POLICY",
    ),
    OptionSpec(
        "sandbox",
        ("--sandbox", "-s"),
        "Sandbox mode: read-only | workspace-write | danger-full-access.",
        "text",
        "MODE",
    ),
    OptionSpec(
        "full_auto", ("--full-auto",), "= --approval on-request --sandbox workspace-write.", "flag"
    ),
    OptionSpec(
        "yolo",
        ("--yolo",),
        "= --approval never --sandbox danger-full-access, in a throwaway VM.",
        "flag",
    ),
    OptionSpec("backend", ("--backend",), "auto | docker | podman | vm | native.", "text", "NAME"),
    OptionSpec("image", ("--image",), "Session image to run.", "text"),
    OptionSpec(
        "workspace",
        ("--workspace", "-w"),
        "Workspace directory (default: the current directory).",
        "path",
    ),
    OptionSpec("network", ("--network",), "Network: none | allowlist | full.", "text", "PLAN"),
    OptionSpec(
        "allow_domain", ("--allow-domain",), "Allow a domain (repeatable).", "multiple", "DOMAIN"
    ),
    OptionSpec(
        "deny_domain", ("--deny-domain",), "Deny a domain (repeatable).", "multiple", "DOMAIN"
    ),
)


def cli_options(values: dict[str, object], lists: dict[str, list[str]]) -> CliOptions:
    """CliOptions from option values keyed by OptionSpec.name (`lists` for repeatable ones)."""

    def text(name: str) -> str | None:
        value = values.get(name)
        return str(value) if value is not None else None

    workspace = values.get("workspace")
    return CliOptions(
        profile=text("profile"),
        approval=text("approval"),
        sandbox=text("sandbox"),
        full_auto=bool(values.get("full_auto")),
        yolo=bool(values.get("yolo")),
        backend=text("backend"),
        image=text("image"),
        workspace=Path(str(workspace)) if workspace is not None else None,
        network=text("network"),
        allow_domains=tuple(lists.get("allow_domain", ())),
        deny_domains=tuple(lists.get("deny_domain", ())),
    )


def parse_sandbox_options(args: Sequence[str]) -> tuple[CliOptions, list[str]] | None:
    """`[OPTIONS] -- CMD...` → (options, CMD), or None when the full CLI should handle it."""
    by_flag = {flag: spec for spec in OPTIONS for flag in spec.flags}
    values: dict[str, object] = {}
    lists: dict[str, list[str]] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            command = list(args[index + 1 :])
            return (cli_options(values, lists), command) if command else None
        flag, has_inline, inline = arg.partition("=")
        spec = by_flag.get(flag)
        if spec is None:
            return None  # --help, a typo, a short bundle: typer explains better
        if spec.kind == "flag":
            if has_inline:
                return None
            values[spec.name] = True
            index += 1
            continue
        if has_inline:
            value = inline
            index += 1
        elif index + 1 < len(args):
            value = args[index + 1]
            index += 2
        else:
            return None
        if spec.kind == "multiple":
            lists.setdefault(spec.name, []).append(value)
        else:
            values[spec.name] = value
    return None
