from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.approval.shell import WordKind, normalize_path, parse_argv, parse_shell


def argvs(source: str, cwd: str = "/work") -> list[tuple[str, ...] | None]:
    return [c.argv for c in parse_shell(source, cwd).commands]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("ls -la", [("ls", "-la")]),
        ("a && b || c; d | e\nf", [("a",), ("b",), ("c",), ("d",), ("e",), ("f",)]),
        ("/bin/rm -rf /", [("rm", "-rf", "/")]),
        ('"rm" -rf /', [("rm", "-rf", "/")]),
        ('r""m -rf /', [("rm", "-rf", "/")]),
        ("\\rm -rf /", [("rm", "-rf", "/")]),
        ("$'\\x72m' -rf /", [("rm", "-rf", "/")]),
        ("'r'm -rf /", [("rm", "-rf", "/")]),
        ("sudo -u root -- rm -rf /", [("rm", "-rf", "/")]),
        ("env -i X=1 Y=2 rm -rf /", [("rm", "-rf", "/")]),
        ("timeout -s KILL 10 nice -n 5 ionice -c3 nohup stdbuf -o0 rm x", [("rm", "x")]),
        ("command -p exec -a name rm x", [("rm", "x")]),
        ("time rm x", [("rm", "x")]),
        ("sh -c 'a; b'", [("a",), ("b",)]),
        ("bash -lc 'cd / && rm -rf /'", [("cd", "/"), ("rm", "-rf", "/")]),
        ("bash -o pipefail -ec 'x'", [("x",)]),
        ("eval 'rm -rf /'", [("rm", "-rf", "/")]),
        ("env -S 'rm -rf /'", [("rm", "-rf", "/")]),
        ("busybox rm -rf /", [("rm", "-rf", "/")]),
        ("su -c 'rm -rf /'", [("rm", "-rf", "/")]),
        ("watch -n 1 rm x", [("rm", "x")]),
        ("trap 'rm -rf /' EXIT", [("rm", "-rf", "/")]),
    ],
)
def test_commands_are_split_and_unwrapped(source: str, expected: list[tuple[str, ...]]) -> None:
    assert argvs(source) == expected


def test_wrappers_are_recorded() -> None:
    (command,) = parse_shell("sudo env X=1 rm -rf /", "/").commands
    assert command.wrappers == ("sudo", "env")
    assert command.privileged
    assert ("X", "1") in command.assignments
    assert not command.certain


def test_argv_input_unwraps_shell_strings() -> None:
    parsed = parse_argv(["bash", "-lc", "git status && rm -rf /"], "/w")
    assert [c.argv for c in parsed.commands] == [("git", "status"), ("rm", "-rf", "/")]
    assert parsed.source == shlex.join(["bash", "-lc", "git status && rm -rf /"])


def test_substitutions_yield_their_commands_and_make_words_unknown() -> None:
    parsed = parse_shell("echo $(rm -rf /) `date` <(ls)", "/")
    names = [c.name for c in parsed.commands]
    assert names == ["rm", "date", "ls", "echo"]
    echo = parsed.commands[-1]
    assert [w.kind for w in echo.args] == [WordKind.SPLAT, WordKind.SPLAT, WordKind.UNKNOWN]
    assert "command substitution" in parsed.uncertain


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("cat <<EOF\nx\nEOF", "here-document"),
        ("ls > out.txt", "writes to out.txt"),
        ("$CMD x", "command name is not known"),
        ("eval $X", "eval runs a string"),
        ("source ./x.sh", "runs the commands in"),
        ("bash script.sh", "runs the script file"),
        ("curl x | sh", "reads commands from its input"),
        ("for i in 1; do ls; done", "control flow"),
        ("f() { ls; }", "function definition"),
        ("echo 'unterminated", "could not be parsed"),
        ("PATH=/tmp ls", "sets PATH"),
        ("ls | xargs rm", "xargs adds arguments"),
        ("r\\\nm x", "line continuation"),
    ],
)
def test_uncertain_constructs_are_reported(source: str, reason: str) -> None:
    parsed = parse_shell(source, "/")
    assert not parsed.certain
    assert any(reason in r for r in parsed.reasons()), parsed.reasons()


def test_harmless_redirections_keep_certainty() -> None:
    parsed = parse_shell("ls 2>/dev/null >&2 2>&1", "/")
    assert parsed.certain


def test_brace_expansion_is_never_literal() -> None:
    for source in ("r{m,} -rf /", "{rm,-rf,/}", "echo {1..3}"):
        words = [w for c in parse_shell(source, "/").commands for w in c.words]
        assert any(w.kind is WordKind.SPLAT for w in words), source


def test_line_continuation_is_read_both_ways() -> None:
    assert ("rm", "-rf", "/") in argvs("r\\\nm -rf /")


def test_cd_moves_the_cwd_of_later_commands_only_when_it_lasts() -> None:
    commands = parse_shell("cd / && rm -rf . ; cd sub; ls", "/work").commands
    assert [c.cwd for c in commands] == ["/work", "/", "/", "/sub"]
    in_subshell = parse_shell("(cd /tmp); rm -rf .", "/work").commands
    assert in_subshell[-1].cwd is None  # unknown, never the wrong guess


def test_find_exec_runs_a_command() -> None:
    commands = parse_shell("find / -name x -exec rm -rf {} \\;", "/").commands
    inner = next(c for c in commands if c.name == "rm")
    assert inner.wrappers == ("find -exec",)
    assert inner.words[-1].kind is WordKind.UNKNOWN


def test_xargs_appends_unknown_words() -> None:
    commands = parse_shell("echo / | xargs rm -rf", "/").commands
    assert commands[-1].words[-1].kind is WordKind.SPLAT
    replaced = parse_shell("echo / | xargs -I{} rm -rf {}", "/").commands
    assert replaced[-1].words[-1].kind is WordKind.UNKNOWN


def test_command_v_is_a_lookup_not_an_execution() -> None:
    assert argvs("command -v rm") == [("command", "-v", "rm")]


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("//", "/"),
        ("/./", "/"),
        ("/tmp/..", "/"),
        ("/a//b/", "/a/b"),
        ("/..", "/"),
        ("a/../b", "b"),
    ],
)
def test_normalize_path(path: str, normal: str) -> None:
    assert normalize_path(path) == normal


def test_oversized_and_nul_input_are_unknown_not_errors() -> None:
    assert not parse_shell("ls " + "a" * 70_000, "/").certain
    assert not parse_shell("ls\x00rm", "/").certain


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_crashes_on_any_text(source: str) -> None:
    parsed = parse_shell(source, "/work")
    for command in parsed.commands:
        command.display()


SHELLISH = st.lists(
    st.sampled_from(
        [
            "rm",
            "-rf",
            "/",
            "'",
            '"',
            "$(",
            ")",
            "`",
            "|",
            "&&",
            ";",
            "\n",
            "<<",
            "EOF",
            "{",
            "}",
            ",",
            "\\",
            "$X",
            "*",
            "sudo",
            "sh",
            "-c",
            "xargs",
            "(",
            ">",
            "&",
            "!",
            "[[",
            "]]",
            "if",
            "then",
            "fi",
            "=",
            "${",
        ]
    ),
    max_size=40,
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(SHELLISH)
def test_parser_never_crashes_on_shell_fragments(source: str) -> None:
    parse_shell(source, "/")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=8))
def test_argv_parser_never_crashes(argv: list[str]) -> None:
    parse_argv(argv, "/")


def test_code_points_that_crash_tree_sitter_bash_are_harmless() -> None:
    # tree-sitter-bash 0.25.1 segfaults on `{` + a code point above U+30000;
    # the parser must only ever see ASCII.
    for code_point in range(0x30000, 0xD0000, 331):
        for template in ("{{{0}", "echo {{a{0}}}", "{0}{{"):
            parse_shell(template.format(chr(code_point)), "/")
