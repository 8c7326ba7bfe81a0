"""The `harness` console script: hot paths first, then the full Typer CLI.

Importing typer and building the whole command tree costs ~80 ms; `harness
exec` runs once per agent command and `harness run` once per CI step, so
their common forms are parsed before that.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["exec"], ["run"]):
        from harness.cli.errors import guarded
        from harness.cli.fast import fast_exec, fast_run

        fast = fast_exec if args[0] == "exec" else fast_run
        handled = guarded(lambda: fast(args[1:]))
        if handled is not None:
            return handled
    from harness.cli.main import main as full

    return full(args)


if __name__ == "__main__":
    sys.exit(main())
