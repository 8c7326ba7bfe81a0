"""The sandbox options `run`, `up`, `config show` and `policy check` share.

`sandbox_options` adds them to a command's signature once, so every command
spells them the same way and receives them as one `CliOptions` value.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from harness.config.options import CliOptions

F = TypeVar("F", bound=Callable[..., Any])

PANEL = "Sandbox options"

_OPTIONS: dict[str, tuple[Any, Any]] = {
    "profile": (
        Annotated[
            str | None,
            typer.Option(
                "--profile",
                "-p",
                help="Named profile (strict, auto, review, ci, infra, yolo, or yours).",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    "approval": (
        Annotated[
            str | None,
            typer.Option(
                "--approval",
                "-a",
                metavar="POLICY",
                help="Approval policy: untrusted | on-request | never.",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    "sandbox": (
        Annotated[
            str | None,
            typer.Option(
                "--sandbox",
                "-s",
                metavar="MODE",
                help="Sandbox mode: read-only | workspace-write | danger-full-access.",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    "full_auto": (
        Annotated[
            bool,
            typer.Option(
                "--full-auto",
                help="= --approval on-request --sandbox workspace-write.",
                rich_help_panel=PANEL,
            ),
        ],
        False,
    ),
    "yolo": (
        Annotated[
            bool,
            typer.Option(
                "--yolo",
                help="= --approval never --sandbox danger-full-access, in a throwaway VM.",
                rich_help_panel=PANEL,
            ),
        ],
        False,
    ),
    "backend": (
        Annotated[
            str | None,
            typer.Option(
                "--backend",
                metavar="NAME",
                help="auto | docker | podman | vm | native.",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    "image": (
        Annotated[
            str | None, typer.Option("--image", help="Session image to run.", rich_help_panel=PANEL)
        ],
        None,
    ),
    "workspace": (
        Annotated[
            Path | None,
            typer.Option(
                "--workspace",
                "-w",
                help="Workspace directory (default: the current directory).",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    "network": (
        Annotated[
            str | None,
            typer.Option(
                "--network",
                metavar="PLAN",
                help="Network: none | allowlist | full.",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    "allow_domain": (
        Annotated[
            list[str] | None,
            typer.Option(
                "--allow-domain",
                metavar="DOMAIN",
                help="Allow a domain (repeatable).",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    "deny_domain": (
        Annotated[
            list[str] | None,
            typer.Option(
                "--deny-domain",
                metavar="DOMAIN",
                help="Deny a domain (repeatable).",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
}


def sandbox_options(func: F) -> F:
    """Give `func` the shared options; it receives them as `options: CliOptions`."""
    signature = inspect.signature(func)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )
        for name, (annotation, default) in _OPTIONS.items()
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _OPTIONS}
        options = CliOptions(
            profile=values["profile"],
            approval=values["approval"],
            sandbox=values["sandbox"],
            full_auto=values["full_auto"],
            yolo=values["yolo"],
            backend=values["backend"],
            image=values["image"],
            workspace=values["workspace"],
            network=values["network"],
            allow_domains=tuple(values["allow_domain"] or ()),
            deny_domains=tuple(values["deny_domain"] or ()),
        )
        return func(*args, options=options, **kwargs)

    hints = {k: v for k, v in _resolved_hints(func).items() if k != "options"}
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*(p.replace(annotation=hints.get(p.name, p.annotation)) for p in own), *added]
    )
    wrapper.__annotations__ = {
        **hints,
        **{name: annotation for name, (annotation, _) in _OPTIONS.items()},
    }
    return wrapper  # type: ignore[return-value]


def _resolved_hints(func: Callable[..., Any]) -> dict[str, Any]:
    from typing import get_type_hints

    return get_type_hints(func, include_extras=True)
