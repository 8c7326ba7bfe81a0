"""Commands that only read, which `untrusted` lets run without asking.

A command is known-safe only when it is fully known (no substitution, no
unknown word, no redirection into a file, no privilege wrapper) and none of
its dangerous forms is used: `find -exec`, `rg --pre`, `git -c`, `sed -i`, ...
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from harness.approval.shell import SimpleCommand

Check = Callable[[Sequence[str]], bool]


def _always(_: Sequence[str]) -> bool:
    return True


def _without(*options: str, prefixes: Sequence[str] = ()) -> Check:
    """Safe unless one of these options (in any spelling) is present."""

    def check(args: Sequence[str]) -> bool:
        for arg in args:
            if arg == "--":
                break
            key = arg.split("=", 1)[0]
            if key in options or any(arg.startswith(p) for p in prefixes):
                return False
            if arg.startswith("-") and not arg.startswith("--"):
                letters = {f"-{c}" for c in arg[1:]}
                if letters & set(options):
                    return False
        return True

    return check


def _operands(args: Sequence[str]) -> list[str]:
    return [a for a in args if not a.startswith("-") or a == "-"]


def _at_most_operands(count: int, check: Check = _always) -> Check:
    """`uniq IN OUT` and `xxd IN OUT` write OUT: allow only the reading forms."""
    return lambda args: len(_operands(args)) <= count and check(args)


def _find(args: Sequence[str]) -> bool:
    unsafe = {
        "-exec",
        "-execdir",
        "-ok",
        "-okdir",
        "-delete",
        "-fprint",
        "-fprint0",
        "-fprintf",
        "-fls",
    }
    return not any(a in unsafe for a in args)


def _rg(args: Sequence[str]) -> bool:
    return _without("--pre", "--hostname-bin", "--search-zip", "-z")(args)


_SED_PRINT = re.compile(r"^(\d+|\$)?(,(\d+|\$))?p$")
_SED_SUBSTITUTE = re.compile(r"^s(.)((?:(?!\1).)*)\1((?:(?!\1).)*)\1[gip0-9]*$", re.S)


def _sed(args: Sequence[str]) -> bool:
    """Only printing and plain substitution to stdout; no -i, no w/e/r commands."""
    if not _without("-i", "--in-place", "-s", "--separate", "-f", "--file")(args):
        return False
    scripts: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-e", "--expression") and rest:
            scripts.append(rest.pop(0))
        elif arg.startswith("--expression="):
            scripts.append(arg.split("=", 1)[1])
        elif not arg.startswith("-") and not scripts:
            scripts.append(arg)
            break
    return bool(scripts) and all(_SED_PRINT.match(s) or _SED_SUBSTITUTE.match(s) for s in scripts)


_GIT_READ_SUBCOMMANDS = frozenset(
    {
        "status",
        "log",
        "diff",
        "show",
        "branch",
        "rev-parse",
        "ls-files",
        "blame",
        "describe",
        "shortlog",
        "cat-file",
        "ls-tree",
        "merge-base",
        "rev-list",
        "tag",
        "remote",
    }
)
# Options that run programs, write files or point git at other configuration.
_GIT_UNSAFE = (
    "--output",
    "--ext-diff",
    "--textconv",
    "--exec",
    "-O",
    "--open-files-in-pager",
    "--upload-pack",
    "--receive-pack",
)
_GIT_BRANCH_MUTATIONS = (
    "-d",
    "-D",
    "-m",
    "-M",
    "-c",
    "-C",
    "-f",
    "-u",
    "--delete",
    "--move",
    "--copy",
    "--force",
    "--set-upstream-to",
    "--unset-upstream",
    "--edit-description",
    "--track",
    "--no-track",
)


def _git(args: Sequence[str]) -> bool:
    index = 0
    while index < len(args) and args[index].startswith("-"):
        if args[index] not in ("--no-pager", "-P", "--no-optional-locks"):
            return False  # -c, -C, --git-dir, --exec-path, ... change what git runs or reads
        index += 1
    if index >= len(args):
        return False
    subcommand, rest = args[index], list(args[index + 1 :])
    if subcommand not in _GIT_READ_SUBCOMMANDS:
        return False
    if not _without(*_GIT_UNSAFE)(rest) or any(a.startswith("--output=") for a in rest):
        return False
    listing = any(a in ("-l", "--list", "--show-current", "-v", "-vv", "-a", "-r") for a in rest)
    if subcommand == "branch":
        return _without(*_GIT_BRANCH_MUTATIONS)(rest) and (listing or not _operands(rest))
    if subcommand == "tag":
        return not rest or (
            listing and _without("-d", "--delete", "-f", "--force", "-s", "-m")(rest)
        )
    if subcommand == "remote":
        return all(
            a in ("-v", "--verbose", "show", "get-url") or not a.startswith("-") for a in rest
        ) and (not rest or rest[0] in ("-v", "--verbose", "show", "get-url"))
    return True


_SAFE: dict[str, Check] = {
    **dict.fromkeys(
        [
            "cat",
            "cd",
            "cut",
            "echo",
            "expr",
            "false",
            "grep",
            "egrep",
            "fgrep",
            "head",
            "id",
            "ls",
            "nl",
            "paste",
            "pwd",
            "rev",
            "seq",
            "stat",
            "tail",
            "tr",
            "true",
            "uname",
            "wc",
            "which",
            "whoami",
            "numfmt",
            "tac",
            "basename",
            "dirname",
            "realpath",
            "readlink",
            "printf",
            "sleep",
            "diff",
            "cmp",
            "comm",
            "md5sum",
            "sha1sum",
            "sha256sum",
            "sha512sum",
            "cksum",
            "b2sum",
            "nproc",
            "arch",
            "printenv",
            "locale",
            "type",
            "groups",
            "column",
            "fold",
            "fmt",
            "expand",
            "unexpand",
            "od",
            "hexdump",
            "strings",
            "test",
            "[",
            "du",
            "df",
            "jq",
            "wc",
            "ps",
            "uptime",
            "tty",
            "getconf",
        ],
        _always,
    ),
    "uniq": _at_most_operands(1),
    "xxd": _at_most_operands(1, _without("-r", "--revert")),
    "sort": _without("-o", "--output", "--compress-program"),
    "tree": _without("-o", "-R"),
    "date": _without("-s", "--set"),
    "hostname": lambda args: not _operands(args) and _without("-F", "--file", "-b", "--boot")(args),
    "base64": _without("-o", "--output"),
    "file": _without("-C", "--compile"),
    "env": lambda args: not args,
    "find": _find,
    "rg": _rg,
    "sed": _sed,
    "git": _git,
}


def is_known_safe(command: SimpleCommand) -> bool:
    """True when `command` only reads and is known in full."""
    argv = command.argv
    if argv is None or not command.certain or command.privileged:
        return False
    check = _SAFE.get(argv[0])
    if check is None:
        return False
    return check(list(argv[1:]))


def safe_command_names() -> tuple[str, ...]:
    """The programs that can be known-safe (for documentation and `policy check`)."""
    return tuple(sorted(_SAFE))
