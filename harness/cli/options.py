"""The sandbox options `run`, `up`, `config show` and `policy check` share.

`sandbox_options` adds them to a command's signature once, so every command
spells them the same way and receives them as one `CliOptions` value. The
options themselves are data in optspec.py, shared with the fast parser.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from harness.cli.optspec import OPTIONS, OptionSpec, cli_options

F = TypeVar("F", bound=Callable[..., Any])

PANEL = "Sandbox options"
_TYPES: dict[str, Any] = {
    "text": str | None,
    "flag": bool,
    "path": Path | None,
    "multiple": list[str] | None,
}


def _annotation(spec: OptionSpec) -> Any:
    option = typer.Option(*spec.flags, help=spec.help, metavar=spec.metavar, rich_help_panel=PANEL)
    return Annotated[_TYPES[spec.kind], option]


_OPTIONS: dict[str, tuple[Any, Any]] = {
    spec.name: (_annotation(spec), False if spec.kind == "flag" else None) for spec in OPTIONS
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
        lists = {name: list(values.pop(name) or ()) for name in ("allow_domain", "deny_domain")}
        return func(*args, options=cli_options(values, lists), **kwargs)

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
