"""The one top-level handler: every failure becomes a message and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from harness.errors import EXIT_HARNESS, HarnessError

EXIT_INTERRUPTED = 130


def guarded(action: Callable[[], int | None]) -> int | None:
    """Run a fast path with the same error mapping as the full CLI."""
    try:
        return action()
    except HarnessError as error:
        sys.stderr.write(f"harness: {error.message}\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("harness: interrupted\n")
        return EXIT_INTERRUPTED


def run_guarded(app: Any, argv: list[str] | None) -> int:
    """Run the Typer app; map HarnessError, usage errors, ^C and bugs to exit codes."""
    import typer

    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="harness", standalone_mode=False)
    except HarnessError as error:
        sys.stderr.write(f"harness: {error.message}\n")
        return error.exit_code
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.TyperException as error:  # usage errors (exit 2) and the like, with help hints
        show = getattr(error, "show", None)
        if callable(show):
            show()
        else:
            sys.stderr.write(f"harness: {error.message}\n")
        return int(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("harness: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception:  # a bug: keep the details, tell the user where they are
        report = _write_crash_report()
        sys.stderr.write(
            f"harness: internal error ({sys.exc_info()[1]!r}); details in {report}. "
            "Please report it with that file.\n"
        )
        return EXIT_HARNESS
    return result if isinstance(result, int) else 0


def _write_crash_report() -> str:
    import tempfile
    import traceback

    from harness.paths import Locations

    text = traceback.format_exc()
    try:
        directory = Locations.from_environment().state_dir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "crash.log"
        path.write_text(text, encoding="utf-8")
        return str(path)
    except OSError:
        handle, name = tempfile.mkstemp(prefix="harness-crash-", suffix=".log")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        return name
