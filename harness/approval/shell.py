"""Shell parsing: a command line or argv into the simple commands it would run.

A real parser (tree-sitter-bash) splits compound commands; this module then
unwraps wrappers (`sudo`, `env`, `sh -c`, `xargs`, ...) and records, for every
simple command, what could not be known for certain. Nothing here decides:
the rule matcher and the decision engine read what this module reports, and
treat every unknown as "could be anything" when a rule would deny.
"""

from __future__ import annotations

import enum
import functools
import itertools
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MAX_SOURCE_BYTES = 64 * 1024
MAX_DEPTH = 8


class WordKind(enum.Enum):
    """How much we know about one word of a command."""

    LITERAL = "literal"  # its exact value is known
    GLOB = "glob"  # a literal pattern the shell expands into zero or more paths
    UNKNOWN = "unknown"  # exactly one word whose value is not known ("$X")
    SPLAT = "splat"  # any number of words of any value ($X unquoted, $(cmd), xargs input)


@dataclass(frozen=True)
class Word:
    """One word of a simple command.

    Attributes:
        kind: how much is known about it.
        value: the word after quote removal; for GLOB the pattern; for the
            unknown kinds the literal text we could recover ("" if none).
        raw: the source text.
    """

    kind: WordKind
    value: str
    raw: str = ""

    @property
    def is_literal(self) -> bool:
        return self.kind is WordKind.LITERAL

    @classmethod
    def literal(cls, value: str) -> Word:
        return cls(WordKind.LITERAL, value, value)

    @classmethod
    def splat(cls, raw: str = "") -> Word:
        return cls(WordKind.SPLAT, "", raw)


@dataclass(frozen=True)
class Redirect:
    """A redirection attached to a simple command."""

    operator: str
    target: Word

    @property
    def writes(self) -> bool:
        return ">" in self.operator and not self.is_fd_duplication

    @property
    def is_fd_duplication(self) -> bool:
        return self.operator in (">&", "<&") and self.target.value.isdigit()

    @property
    def harmless(self) -> bool:
        """Redirections that write nothing and open no socket: fd duplication,
        /dev/null, and reading a named file (`< f` is `cat f`)."""
        if self.is_fd_duplication or self.operator == ">&-":
            return True
        if not self.target.is_literal:
            return False
        if self.target.value == "/dev/null":
            return True
        # bash opens a socket for /dev/tcp/HOST/PORT and /dev/udp/HOST/PORT
        return self.operator == "<" and not self.target.value.startswith(("/dev/tcp/", "/dev/udp/"))


@dataclass(frozen=True)
class SimpleCommand:
    """One command the shell would execute, after unwrapping wrappers.

    Attributes:
        words: the command and its arguments.
        wrappers: the wrappers that were peeled off, outermost first (e.g. ("sudo", "env")).
        assignments: NAME=VALUE pairs set for this command only (prefix or `env`).
        redirects: redirections on this command.
        uncertain: why this command cannot be known fully; empty when it can.
        cwd: the directory it runs in, when known (tracks `cd` in a list).
        source: the source text it came from.
    """

    words: tuple[Word, ...]
    wrappers: tuple[str, ...] = ()
    assignments: tuple[tuple[str, str | None], ...] = ()
    redirects: tuple[Redirect, ...] = ()
    uncertain: tuple[str, ...] = ()
    cwd: str | None = None
    source: str = ""

    @property
    def name(self) -> str | None:
        """The program's base name when it is known (`/bin/rm` → `rm`)."""
        if not self.words or not self.words[0].is_literal:
            return None
        return program_name(self.words[0].value)

    @property
    def argv(self) -> tuple[str, ...] | None:
        """All words when every one is a known literal, else None."""
        if all(w.is_literal for w in self.words):
            return (self.name or "", *(w.value for w in self.words[1:]))
        return None

    @property
    def args(self) -> tuple[Word, ...]:
        return self.words[1:]

    @property
    def certain(self) -> bool:
        return not self.uncertain and self.argv is not None

    @property
    def privileged(self) -> bool:
        # wrappers are labels such as "sudo" or "su -c": the program is the first word
        return any(w.split(" ", 1)[0] in PRIVILEGE_WRAPPERS for w in self.wrappers)

    def display(self) -> str:
        """A readable one-line form for messages and the audit log."""
        parts = [w.raw or w.value or "…" for w in self.words]
        if self.words and self.words[0].is_literal:
            parts[0] = self.name or parts[0]
        return " ".join(parts)


@dataclass(frozen=True)
class ParsedCommand:
    """Everything a request would run.

    Attributes:
        source: the shell string, or the shlex-joined argv.
        commands: every simple command, in order, including those inside
            substitutions, subshells, control flow and wrapper scripts.
        uncertain: reasons that apply to the whole request (syntax error,
            control flow, here-documents, ...).
    """

    source: str
    commands: tuple[SimpleCommand, ...]
    uncertain: tuple[str, ...] = ()

    @property
    def certain(self) -> bool:
        return not self.uncertain and all(c.certain for c in self.commands)

    def reasons(self) -> tuple[str, ...]:
        """Every uncertainty, request-level first, without repeats."""
        seen: dict[str, None] = dict.fromkeys(self.uncertain)
        for command in self.commands:
            seen.update(dict.fromkeys(command.uncertain))
        return tuple(seen)


def program_name(path: str) -> str:
    """`/usr/bin/rm` → `rm`; a trailing slash or empty path stays as it is."""
    base = path.rstrip("/").rsplit("/", 1)[-1]
    return base or path


# -- entry points --------------------------------------------------------------


def parse_shell(source: str, cwd: str | None = None) -> ParsedCommand:
    """Parse a shell string the way `bash -c SOURCE` would run it."""
    return _Walker(cwd).parse_source(source, depth=0)


def parse_argv(argv: Sequence[str], cwd: str | None = None) -> ParsedCommand:
    """Parse an argv list (no shell involved), unwrapping wrappers such as `bash -lc`."""
    import shlex

    walker = _Walker(cwd)
    if not argv:
        return ParsedCommand("", (), ("empty command",))
    base = SimpleCommand(
        words=tuple(Word.literal(a) for a in argv), cwd=cwd, source=shlex.join(argv)
    )
    commands = tuple(walker.unwrap(base, depth=0))
    return ParsedCommand(shlex.join(argv), commands, tuple(walker.request_reasons))


# -- tree-sitter plumbing -------------------------------------------------------


@functools.cache
def _parser() -> Any:
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))


_GLOB_CHARS = re.compile(r"(?<!\\)[*?]|(?<!\\)\[[^\]]*\]")
# `{a,b}` and `{1..3}` turn one word into several: `r{m,} -rf /` runs `rm r -rf /`.
_BRACE_EXPANSION = re.compile(r"(?<!\\)\{[^{}]*(,|\.\.)[^{}]*\}")
_SAFE_ASSIGNMENTS = frozenset(
    {"LANG", "LANGUAGE", "TZ", "TERM", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "CLICOLOR"}
)
PRIVILEGE_WRAPPERS = frozenset({"sudo", "doas", "su", "runuser", "pkexec"})
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish", "yash", "rbash"})

# tree-sitter-bash 0.25 crashes (SIGSEGV) on some code points above U+30000.
# Bash's syntax is ASCII, so the parser sees every non-ASCII byte as the letter
# `a`: same length, same word structure; text is always sliced from the original.
_ASCII_ONLY = bytes(range(128)) + b"a" * 128

_STATEMENTS = frozenset(
    {
        "command",
        "redirected_statement",
        "list",
        "pipeline",
        "variable_assignment",
        "declaration_command",
        "unset_command",
    }
)
_BLOCKS = frozenset({"do_group", "else_clause", "elif_clause", "case_item", "compound_statement"})
# Grouping that runs its commands as they are: no reason to distrust it by itself.
_TRANSPARENT = frozenset({"negated_command", "compound_statement"})
_DIRECTORY_CHANGERS = frozenset({"cd", "pushd", "popd"})

_CONTROL_FLOW = {
    "if_statement": "control flow (if)",
    "while_statement": "control flow (while/until)",
    "for_statement": "control flow (for)",
    "c_style_for_statement": "control flow (for)",
    "case_statement": "control flow (case)",
    "function_definition": "function definition",
    "subshell": "subshell",
    "compound_statement": "compound command",
    "negated_command": "negated command",
}


class _Walker:
    """One parse: walks tree-sitter nodes and collects simple commands."""

    def __init__(self, cwd: str | None) -> None:
        self.initial_cwd = cwd
        self.request_reasons: list[str] = []

    def reason(self, text: str) -> None:
        if text not in self.request_reasons:
            self.request_reasons.append(text)

    # -- sources

    def parse_source(self, source: str, depth: int) -> ParsedCommand:
        commands = list(self.commands_in_source(source, depth, self.initial_cwd))
        return ParsedCommand(source, tuple(commands), tuple(self.request_reasons))

    def commands_in_source(
        self, source: str, depth: int, cwd: str | None
    ) -> Iterator[SimpleCommand]:
        if depth > MAX_DEPTH:
            self.reason("nested too deeply to analyse")
            yield _unknown_command("nested too deeply", source)
            return
        if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
            self.reason("too long to analyse")
            yield _unknown_command("too long to analyse", source)
            return
        if "\x00" in source:
            self.reason("contains a NUL byte")
            yield _unknown_command("contains a NUL byte", source)
            return
        variants = [source]
        # bash joins `\<newline>` before it splits words; tree-sitter does not,
        # so `r\<newline>m` would hide an `rm`. Analyse both readings.
        if "\\\n" in source:
            self.reason("line continuation")
            variants.append(source.replace("\\\n", ""))
        for variant in variants:
            data = variant.encode("utf-8", "surrogatepass")
            tree = _parser().parse(data.translate(_ASCII_ONLY))
            root = tree.root_node
            if root.has_error:
                self.reason("could not be parsed")
                yield _unknown_command("could not be parsed", variant)
            yield from self.walk_sequence(root, data, depth, cwd)

    # -- statements

    def walk_sequence(
        self, node: Any, data: bytes, depth: int, cwd: str | None
    ) -> Iterator[SimpleCommand]:
        """Statements in order; a literal `cd DIR` moves the cwd of those after it."""
        current = cwd
        for child in node.named_children:
            persists = child.type in ("command", "redirected_statement", "list")
            for command in self.walk_statement(child, data, depth, current):
                if command.name in _DIRECTORY_CHANGERS and not command.wrappers:
                    # A cd inside a subshell or pipeline does not last; we cannot
                    # tell where the shell ends up, so we stop pretending to know.
                    current = _cd_target(command, current) if persists else None
                yield command

    def walk_block(
        self, node: Any, data: bytes, depth: int, cwd: str | None
    ) -> Iterator[SimpleCommand]:
        """The inside of control flow: every statement runs, in no order we can rely on."""
        for child in node.named_children:
            if child.type in _STATEMENTS or child.type in _CONTROL_FLOW:
                yield from self.walk_statement(child, data, depth, None)
            elif child.type in _BLOCKS:
                yield from self.walk_block(child, data, depth, None)
            else:
                yield from self.walk_words_for_substitutions(child, data, depth, None)

    def walk_statement(
        self, node: Any, data: bytes, depth: int, cwd: str | None
    ) -> Iterator[SimpleCommand]:
        kind = node.type
        if kind == "comment":
            return
        if kind == "command":
            yield from self.walk_command(node, data, depth, cwd, (), ())
            return
        if kind == "redirected_statement":
            yield from self.walk_redirected(node, data, depth, cwd)
            return
        if kind in ("list", "pipeline"):
            yield from self.walk_sequence(node, data, depth, cwd)
            return
        if kind == "variable_assignment":
            yield from self.walk_words_for_substitutions(node, data, depth, cwd)
            yield SimpleCommand(
                words=(Word.literal("export"),),
                assignments=(_assignment(node, data),),
                uncertain=() if _assignment_is_safe(node, data) else ("sets a shell variable",),
                cwd=cwd,
                source=_text(node, data),
            )
            return
        if kind in ("declaration_command", "unset_command"):
            yield from self.walk_words_for_substitutions(node, data, depth, cwd)
            yield SimpleCommand(
                words=(Word.literal(_text(node.children[0], data)),),
                uncertain=("changes shell variables",),
                cwd=cwd,
                source=_text(node, data),
            )
            return
        if kind == "test_command":
            # `[[ ... ]]` only evaluates; what could run is inside substitutions.
            yield from self.walk_words_for_substitutions(node, data, depth, cwd)
            yield SimpleCommand(words=(Word.literal("test"),), cwd=cwd, source=_text(node, data))
            return
        if kind not in _TRANSPARENT:
            self.reason(_CONTROL_FLOW.get(kind, f"unsupported shell construct ({kind})"))
        yield from self.walk_block(node, data, depth, cwd)

    def walk_redirected(
        self, node: Any, data: bytes, depth: int, cwd: str | None
    ) -> Iterator[SimpleCommand]:
        redirects: list[Redirect] = []
        reasons: list[str] = []
        body = None
        for child in node.named_children:
            if child.type == "heredoc_redirect":
                reasons.append("here-document")
                redirects.append(Redirect("<<", Word(WordKind.UNKNOWN, "", _text(child, data))))
                yield from self.walk_words_for_substitutions(child, data, depth, cwd)
            elif child.type in ("file_redirect", "herestring_redirect"):
                redirect, extra = self.read_redirect(child, data, depth, cwd)
                redirects.append(redirect)
                yield from extra
                if not redirect.harmless:
                    reasons.append(_redirect_reason(redirect))
            elif body is None:
                body = child
        if body is None:
            return
        if body.type == "command":
            yield from self.walk_command(body, data, depth, cwd, tuple(redirects), tuple(reasons))
            return
        for reason in reasons:
            self.reason(reason)
        yield from self.walk_statement(body, data, depth, cwd)

    def read_redirect(
        self, node: Any, data: bytes, depth: int, cwd: str | None
    ) -> tuple[Redirect, list[SimpleCommand]]:
        operator = ""
        target = Word(WordKind.UNKNOWN, "", "")
        extra: list[SimpleCommand] = []
        for child in node.children:
            if not child.is_named:
                operator += child.type
            elif child.type != "file_descriptor":
                target, subs = self.read_word(child, data, depth, cwd)
                extra.extend(subs)
        return Redirect(operator, target), extra

    def walk_words_for_substitutions(
        self, node: Any, data: bytes, depth: int, cwd: str | None
    ) -> Iterator[SimpleCommand]:
        """Commands hidden in substitutions anywhere below `node`."""
        for child in node.named_children:
            if child.type in ("command_substitution", "process_substitution"):
                self.reason("command substitution")
                yield from self.walk_sequence(child, data, depth, cwd)
            elif child.type in _STATEMENTS:
                yield from self.walk_statement(child, data, depth, cwd)
            else:
                yield from self.walk_words_for_substitutions(child, data, depth, cwd)

    def walk_command(
        self,
        node: Any,
        data: bytes,
        depth: int,
        cwd: str | None,
        redirects: tuple[Redirect, ...],
        reasons_from_redirects: tuple[str, ...],
    ) -> Iterator[SimpleCommand]:
        if _splits_across_lines(node, data):
            # tree-sitter sometimes runs a command on past a newline (`ls | ls\nrm x` read as
            # `ls` with arguments `rm x`); bash would start a new command there.
            self.reason("could not be parsed")
            yield _unknown_command("could not be parsed", _text(node, data))
        words: list[Word] = []
        assignments: list[tuple[str, str | None]] = []
        reasons: list[str] = list(reasons_from_redirects)
        all_redirects: list[Redirect] = list(redirects)
        subs: list[SimpleCommand] = []
        for child in node.named_children:
            if child.type == "variable_assignment":
                assignment = _assignment(child, data)
                assignments.append(assignment)
                if not _assignment_is_safe(child, data):
                    reasons.append(f"sets {assignment[0]} for the command")
                subs.extend(self.walk_words_for_substitutions(child, data, depth, cwd))
            elif child.type in ("file_redirect", "herestring_redirect"):
                redirect, found = self.read_redirect(child, data, depth, cwd)
                all_redirects.append(redirect)
                subs.extend(found)
                if not redirect.harmless:
                    reasons.append(_redirect_reason(redirect))
            elif child.type == "comment":
                continue
            else:
                word_node = child
                if child.type == "command_name":
                    word_node = child.named_children[0] if child.named_children else child
                word, found = self.read_word(word_node, data, depth, cwd)
                words.append(word)
                subs.extend(found)
        yield from subs
        if not words:
            return
        if words[0].kind is not WordKind.LITERAL:
            reasons.append("the command name is not known before it runs")
        command = SimpleCommand(
            words=tuple(words),
            assignments=tuple(assignments),
            redirects=tuple(all_redirects),
            uncertain=tuple(dict.fromkeys(reasons)),
            cwd=cwd,
            source=_text(node, data),
        )
        yield from self.unwrap(command, depth)

    # -- words

    def read_word(
        self, node: Any, data: bytes, depth: int, cwd: str | None
    ) -> tuple[Word, list[SimpleCommand]]:
        """One argument word: its value if it is literal, and commands hidden inside."""
        raw = _text(node, data)
        subs: list[SimpleCommand] = []
        value, kind = self._word_value(node, data, subs, depth, cwd, quoted=False)
        return Word(kind, value, raw), subs

    def _word_value(
        self,
        node: Any,
        data: bytes,
        subs: list[SimpleCommand],
        depth: int,
        cwd: str | None,
        *,
        quoted: bool,
    ) -> tuple[str, WordKind]:
        kind = node.type
        raw = _text(node, data)
        if kind in ("word", "number"):
            if not quoted and _has_unescaped_metacharacter(raw):
                # bash would have split here; tree-sitter did not (`ls\n\\rm x` is read
                # as one command). The parse cannot be trusted: assume anything runs.
                self.reason("could not be parsed")
                subs.append(_unknown_command("could not be parsed", raw))
                return raw, WordKind.SPLAT
            if not quoted and _BRACE_EXPANSION.search(raw):
                return raw, WordKind.SPLAT
            if not quoted and _GLOB_CHARS.search(raw):
                return _unescape_unquoted(raw), WordKind.GLOB
            return _unescape_unquoted(raw), WordKind.LITERAL
        if kind == "raw_string":
            return raw[1:-1], WordKind.LITERAL
        if kind == "ansi_c_string":
            decoded = _decode_ansi_c(raw[2:-1])
            return (decoded, WordKind.LITERAL) if decoded is not None else ("", WordKind.UNKNOWN)
        if kind in ("string", "translated_string"):
            parts: list[str] = []
            result = WordKind.LITERAL
            for child in node.named_children:
                if child.type == "string_content":
                    parts.append(_unescape_double_quoted(_text(child, data)))
                else:
                    value, inner = self._word_value(child, data, subs, depth, cwd, quoted=True)
                    parts.append(value)
                    if inner is not WordKind.LITERAL:
                        result = WordKind.UNKNOWN
            return "".join(parts), result
        if kind == "concatenation":
            parts = []
            result = WordKind.LITERAL
            if not quoted and _BRACE_EXPANSION.search(raw):
                return raw, WordKind.SPLAT
            for child in node.named_children:
                value, inner = self._word_value(child, data, subs, depth, cwd, quoted=quoted)
                parts.append(value)
                result = _combine(result, inner)
            return "".join(parts), result
        if kind in ("command_substitution", "process_substitution"):
            self.reason("command substitution")
            subs.extend(self.walk_sequence(node, data, depth, cwd))
            if kind == "process_substitution":
                return "", WordKind.UNKNOWN  # expands to exactly one /dev/fd path
            return "", WordKind.UNKNOWN if quoted else WordKind.SPLAT
        if kind in ("simple_expansion", "expansion", "arithmetic_expansion"):
            subs.extend(self.walk_words_for_substitutions(node, data, depth, cwd))
            if kind == "arithmetic_expansion":
                return "", WordKind.UNKNOWN
            return "", WordKind.UNKNOWN if quoted else WordKind.SPLAT
        if kind == "brace_expression":
            return raw, WordKind.SPLAT
        self.reason(f"unsupported word ({kind})")
        subs.extend(self.walk_words_for_substitutions(node, data, depth, cwd))
        return "", WordKind.SPLAT

    # -- wrappers

    def unwrap(self, command: SimpleCommand, depth: int) -> Iterator[SimpleCommand]:
        """Peel wrappers off; yield the real command(s) it runs, innermost last."""
        for _ in range(32):
            name = command.name
            if name is None:
                yield command
                return
            unwrapper = _UNWRAPPERS.get(name)
            if unwrapper is None:
                break
            step = unwrapper(self, command, depth)
            if step is None:
                break
            if isinstance(step, _Script):
                yield from self._run_script(command, step, depth)
                return
            yield from step.extra
            command = step.command
        else:
            command = replace(command, uncertain=_merge(command.uncertain, ["too many wrappers"]))
        yield from self._exec_children(command, depth)
        yield command

    def _run_script(
        self, wrapper: SimpleCommand, script: _Script, depth: int
    ) -> Iterator[SimpleCommand]:
        """A wrapper that runs a shell string (`sh -c`, `eval`, `su -c`, `watch`)."""
        wrappers = (*wrapper.wrappers, script.wrapper)
        if script.source is None:
            reason = script.reason or "runs commands that are not known before it runs"
            yield replace(
                _unknown_command(reason, wrapper.source),
                wrappers=wrappers,
                cwd=wrapper.cwd,
            )
            return
        for inner in self.commands_in_source(script.source, depth + 1, wrapper.cwd):
            yield replace(
                inner,
                wrappers=(*wrappers, *inner.wrappers),
                assignments=wrapper.assignments + inner.assignments,
                redirects=wrapper.redirects + inner.redirects,
                uncertain=_merge(wrapper.uncertain, inner.uncertain),
            )

    def _exec_children(self, command: SimpleCommand, depth: int) -> Iterator[SimpleCommand]:
        """`find ... -exec CMD {} ;` runs CMD: analyse it as a command of its own."""
        if command.name != "find":
            return
        words = command.words[1:]
        index = 0
        while index < len(words):
            word = words[index]
            if word.is_literal and word.value in ("-exec", "-execdir", "-ok", "-okdir"):
                end = index + 1
                while end < len(words) and not (
                    words[end].is_literal and words[end].value in (";", "+")
                ):
                    end += 1
                inner_words = tuple(
                    Word(WordKind.UNKNOWN, "", w.raw) if w.is_literal and "{}" in w.value else w
                    for w in words[index + 1 : end]
                )
                if inner_words:
                    inner = SimpleCommand(
                        words=inner_words,
                        wrappers=(*command.wrappers, f"find {word.value}"),
                        cwd=None if word.value.endswith("dir") else command.cwd,
                        uncertain=command.uncertain,
                        source=command.source,
                    )
                    yield from self.unwrap(inner, depth)
                index = end
            index += 1


@dataclass(frozen=True)
class _Step:
    """A wrapper peeled off: the inner command plus any commands found on the way."""

    command: SimpleCommand
    extra: tuple[SimpleCommand, ...] = ()


@dataclass(frozen=True)
class _Script:
    """A wrapper that runs a shell string; `source` is None when it is not known."""

    wrapper: str
    source: str | None
    reason: str | None = None


@dataclass(frozen=True)
class _OptionSpec:
    """How a wrapper's options look, so its inner command can be found."""

    with_value: frozenset[str] = frozenset()  # short or long options that take the next word
    positional_before_command: int = 0  # e.g. `timeout DURATION CMD`
    stop_at_assignment: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _peel(
    command: SimpleCommand, spec: _OptionSpec
) -> tuple[list[Word], list[Word], list[tuple[str, str | None]]] | None:
    """Split `wrapper [options] [positionals] CMD...` into (options, command words, assignments).

    Returns None when the words cannot be split with certainty.
    """
    words = list(command.words[1:])
    options: list[Word] = []
    assignments: list[tuple[str, str | None]] = []
    index = 0
    positionals = spec.positional_before_command
    while index < len(words):
        word = words[index]
        if not word.is_literal:
            return None
        value = word.value
        if value == "--":
            index += 1
            break
        if value.startswith("-") and value != "-":
            options.append(word)
            key = value.split("=", 1)[0]
            if key in spec.with_value and "=" not in value:
                if index + 1 >= len(words):
                    return None
                options.append(words[index + 1])
                index += 2
                continue
            # `-n5`: a short option with its value glued on
            index += 1
            continue
        if spec.stop_at_assignment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", value, re.S):
            name, _, val = value.partition("=")
            assignments.append((name, val))
            index += 1
            continue
        if positionals:
            positionals -= 1
            options.append(word)
            index += 1
            continue
        break
    while positionals and index < len(words):
        options.append(words[index])
        index += 1
        positionals -= 1
    return options, words[index:], assignments


def _inner(
    command: SimpleCommand,
    wrapper: str,
    words: Sequence[Word],
    assignments: Sequence[tuple[str, str | None]] = (),
    uncertain: Sequence[str] = (),
) -> _Step | None:
    if not words:
        return None
    return _Step(
        replace(
            command,
            words=tuple(words),
            wrappers=(*command.wrappers, wrapper),
            assignments=command.assignments + tuple(assignments),
            uncertain=_merge(command.uncertain, uncertain),
        )
    )


Unwrapper = Callable[["_Walker", SimpleCommand, int], "_Step | _Script | None"]


def _generic(spec: _OptionSpec) -> Unwrapper:
    def unwrap(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
        name = command.name or ""
        peeled = _peel(command, spec)
        if peeled is None:
            return _Step(
                replace(
                    command,
                    uncertain=_merge(command.uncertain, [f"{name} arguments are not known"]),
                ),
                (),
            )
        _, inner_words, assignments = peeled
        reasons = [
            f"sets {n} for the command" for n, _ in assignments if n not in _SAFE_ASSIGNMENTS
        ]
        return _inner(command, name, inner_words, assignments, reasons)

    return unwrap


def _unwrap_shell(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    name = command.name or "sh"
    words = command.words[1:]
    script_index: int | None = None
    has_c = False
    index = 0
    while index < len(words):
        word = words[index]
        if not word.is_literal:
            return _Script(name, None, f"{name} is given options that are not known")
        value = word.value
        if value == "--":
            index += 1
            break
        if value.startswith("--"):
            if value in ("--rcfile", "--init-file"):
                index += 2
                continue
            index += 1
            continue
        if value.startswith(("-", "+")) and len(value) > 1:
            letters = value[1:]
            if "c" in letters:
                has_c = True
            if "o" in letters or "O" in letters:
                index += 2
                continue
            index += 1
            continue
        break
    if has_c and index < len(words):
        script_index = index
    if script_index is not None:
        script = words[script_index]
        if script.is_literal:
            return _Script(f"{name} -c", script.value)
        return _Script(
            f"{name} -c", None, f"{name} -c runs a script that is not known before it runs"
        )
    if index < len(words):
        return _Script(name, None, f"{name} runs the script file {words[index].raw or '…'}")
    return _Script(name, None, f"{name} reads commands from its input")


def _unwrap_eval(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    args = command.words[1:]
    if all(w.is_literal for w in args):
        return _Script("eval", " ".join(w.value for w in args))
    return _Script("eval", None, "eval runs a string that is not known before it runs")


def _unwrap_source(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    target = command.words[1].raw if len(command.words) > 1 else "…"
    return _Script(command.name or "source", None, f"runs the commands in {target}")


def _unwrap_command_builtin(
    walker: _Walker, command: SimpleCommand, depth: int
) -> _Step | _Script | None:
    words = command.words[1:]
    index = 0
    while index < len(words) and words[index].is_literal and words[index].value.startswith("-"):
        if words[index].value in ("-v", "-V"):
            return None  # `command -v x` only looks x up
        index += 1
    return _inner(command, "command", words[index:])


def _unwrap_exec(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    peeled = _peel(command, _OptionSpec(with_value=frozenset({"-a"})))
    if peeled is None:
        return None
    return _inner(command, "exec", peeled[1])


def _unwrap_env(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    words = list(command.words[1:])
    assignments: list[tuple[str, str | None]] = []
    index = 0
    while index < len(words):
        word = words[index]
        if not word.is_literal:
            return _Step(
                replace(
                    command, uncertain=_merge(command.uncertain, ["env arguments are not known"])
                )
            )
        value = word.value
        if value in ("-S", "--split-string") or value.startswith(("--split-string=", "-S")):
            if value in ("-S", "--split-string"):
                rest = words[index + 1 :]
                if not rest or not rest[0].is_literal:
                    return _Script("env -S", None, "env -S splits a string that is not known")
                split = rest[0].value
                tail = rest[1:]
            else:
                split = value.split("=", 1)[1] if value.startswith("--") else value[2:]
                tail = words[index + 1 :]
            if any(not w.is_literal for w in tail):
                return _Script("env -S", None, "env -S arguments are not known")
            import shlex

            return _Script("env -S", shlex.join([*shlex.split(split), *(w.value for w in tail)]))
        if value in ("-u", "--unset", "-C", "--chdir"):
            index += 2
            continue
        if value == "--":
            index += 1
            break
        if value.startswith("-") and value != "-":
            index += 1
            continue
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", value, re.S):
            name, _, val = value.partition("=")
            assignments.append((name, val))
            index += 1
            continue
        break
    reasons = [f"sets {n} for the command" for n, _ in assignments if n not in _SAFE_ASSIGNMENTS]
    return _inner(command, "env", words[index:], assignments, reasons)


def _unwrap_xargs(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    spec = _OptionSpec(
        with_value=frozenset(
            {
                "-a",
                "-d",
                "-E",
                "-I",
                "-L",
                "-n",
                "-P",
                "-s",
                "--arg-file",
                "--delimiter",
                "--max-args",
                "--max-procs",
                "--max-chars",
                "--max-lines",
                "--replace",
                "--eof",
                "--process-slot-var",
            }
        )
    )
    peeled = _peel(command, spec)
    if peeled is None:
        return _Step(
            replace(command, uncertain=_merge(command.uncertain, ["xargs arguments are not known"]))
        )
    options, words, _ = peeled
    placeholder: str | None = None
    for i, option in enumerate(options):
        if option.value in ("-I", "--replace") and i + 1 < len(options):
            placeholder = options[i + 1].value
        elif option.value.startswith("--replace="):
            placeholder = option.value.split("=", 1)[1]
        elif option.value.startswith("-I") and len(option.value) > 2:
            placeholder = option.value[2:]
        elif option.value in ("-i",):
            placeholder = "{}"
    if not words:
        words = [Word.literal("echo")]
    reason = "xargs adds arguments read from its input"
    if placeholder:
        inner_words = [
            Word(WordKind.UNKNOWN, "", w.raw) if w.is_literal and placeholder in w.value else w
            for w in words
        ]
        if inner_words[0].kind is WordKind.UNKNOWN:
            inner_words[0] = Word.splat(words[0].raw)
        return _inner(command, "xargs", inner_words, uncertain=[reason])
    return _inner(command, "xargs", [*words, Word.splat("<input>")], uncertain=[reason])


def _unwrap_sudo(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    name = command.name or "sudo"
    spec = _OptionSpec(
        with_value=frozenset(
            {
                "-u",
                "-g",
                "-h",
                "-p",
                "-C",
                "-D",
                "-r",
                "-t",
                "-T",
                "-U",
                "-R",
                "--user",
                "--group",
                "--host",
                "--prompt",
                "--close-from",
                "--chdir",
                "--role",
                "--type",
                "--command-timeout",
                "--other-user",
                "--chroot",
            }
        ),
        stop_at_assignment=True,
    )
    peeled = _peel(command, spec)
    if peeled is None:
        return _Script(name, None, f"{name} arguments are not known")
    options, words, assignments = peeled
    shell_flags = {"-s", "-i", "--shell", "--login"}
    if any(o.value in shell_flags for o in options):
        if not words:
            return _Script(name, None, f"{name} opens a shell")
        joined = " ".join(w.value for w in words if w.is_literal)
        return _Script(name, joined if all(w.is_literal for w in words) else None)
    if not words:
        return None
    return _inner(command, name, words, assignments, ["runs with elevated privileges"])


def _unwrap_su(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    words = command.words[1:]
    for i, word in enumerate(words):
        if word.is_literal and word.value in ("-c", "--command") and i + 1 < len(words):
            target = words[i + 1]
            return _Script(
                "su -c",
                target.value if target.is_literal else None,
                "su -c runs a script that is not known",
            )
        if word.is_literal and word.value.startswith("--command="):
            return _Script("su -c", word.value.split("=", 1)[1])
    return _Script("su", None, "su opens a shell")


def _unwrap_busybox(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    words = command.words[1:]
    if not words or (words[0].is_literal and words[0].value.startswith("-")):
        return None
    return _inner(command, "busybox", words)


def _unwrap_watch(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    peeled = _peel(
        command, _OptionSpec(with_value=frozenset({"-n", "--interval", "-d", "-q", "--equexit"}))
    )
    if peeled is None or not peeled[1]:
        return None
    words = peeled[1]
    if not all(w.is_literal for w in words):
        return _Script("watch", None, "watch runs a command that is not known")
    return _Script("watch", " ".join(w.value for w in words))


def _unwrap_flock(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    words = command.words[1:]
    for i, word in enumerate(words):
        if word.is_literal and word.value in ("-c", "--command") and i + 1 < len(words):
            target = words[i + 1]
            return _Script(
                "flock -c",
                target.value if target.is_literal else None,
                "flock -c runs an unknown script",
            )
    peeled = _peel(
        command,
        _OptionSpec(
            with_value=frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}),
            positional_before_command=1,
        ),
    )
    if peeled is None:
        return None
    return _inner(command, "flock", peeled[1])


def _unwrap_deferred(walker: _Walker, command: SimpleCommand, depth: int) -> _Step | _Script | None:
    """`alias x='...'` and `trap '...' SIG` store a script that runs later: analyse it now."""
    name = command.name or ""
    args = command.words[1:]
    if name == "alias":
        bodies = [w.value.partition("=")[2] for w in args if w.is_literal and "=" in w.value]
        if any(not w.is_literal for w in args):
            return _Script("alias", None, "alias defines a command that is not known")
        return _Script("alias", "; ".join(bodies)) if bodies else None
    if args and args[0].is_literal and not args[0].value.startswith("-"):
        return _Script("trap", args[0].value)
    if args and not args[0].is_literal:
        return _Script("trap", None, "trap runs a command that is not known")
    return None


_UNWRAPPERS: dict[str, Unwrapper] = {
    "alias": _unwrap_deferred,
    "trap": _unwrap_deferred,
    **dict.fromkeys(SHELLS, _unwrap_shell),
    "eval": _unwrap_eval,
    "source": _unwrap_source,
    ".": _unwrap_source,
    "command": _unwrap_command_builtin,
    "builtin": _generic(_OptionSpec()),
    "exec": _unwrap_exec,
    "env": _unwrap_env,
    "xargs": _unwrap_xargs,
    "sudo": _unwrap_sudo,
    "doas": _unwrap_sudo,
    "su": _unwrap_su,
    "runuser": _unwrap_sudo,
    "pkexec": _unwrap_sudo,
    "nice": _generic(_OptionSpec(with_value=frozenset({"-n", "--adjustment"}))),
    "ionice": _generic(_OptionSpec(with_value=frozenset({"-c", "-n", "--class", "--classdata"}))),
    "timeout": _generic(
        _OptionSpec(
            with_value=frozenset({"-s", "-k", "--signal", "--kill-after"}),
            positional_before_command=1,
        )
    ),
    "nohup": _generic(_OptionSpec()),
    "time": _generic(_OptionSpec(with_value=frozenset({"-f", "-o", "--format", "--output"}))),
    "stdbuf": _generic(_OptionSpec(with_value=frozenset({"-i", "-o", "-e"}))),
    "setsid": _generic(_OptionSpec()),
    "coproc": _generic(_OptionSpec()),
    "unbuffer": _generic(_OptionSpec()),
    "chrt": _generic(_OptionSpec(positional_before_command=1)),
    "taskset": _generic(_OptionSpec(positional_before_command=1)),
    "chroot": _generic(
        _OptionSpec(with_value=frozenset({"--userspec", "--groups"}), positional_before_command=1)
    ),
    "busybox": _unwrap_busybox,
    "watch": _unwrap_watch,
    "flock": _unwrap_flock,
}


# -- helpers --------------------------------------------------------------------


def _unknown_command(reason: str, source: str) -> SimpleCommand:
    """A command we cannot see into: it could be any command with any arguments."""
    return SimpleCommand(words=(Word.splat(source),), uncertain=(reason,), source=source)


def _text(node: Any, data: bytes) -> str:
    return data[node.start_byte : node.end_byte].decode("utf-8", "surrogateescape")


def _merge(existing: Sequence[str], more: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*existing, *more]))


def _combine(left: WordKind, right: WordKind) -> WordKind:
    order = [WordKind.LITERAL, WordKind.GLOB, WordKind.UNKNOWN, WordKind.SPLAT]
    return max(left, right, key=order.index)


def _assignment(node: Any, data: bytes) -> tuple[str, str | None]:
    name = ""
    value: str | None = None
    for child in node.named_children:
        if child.type == "variable_name" and not name:
            name = _text(child, data)
        elif child.type != "variable_name":
            raw = _text(child, data)
            value = raw if child.type in ("word", "number") and "$" not in raw else None
    return name, value


def _assignment_is_safe(node: Any, data: bytes) -> bool:
    name, _ = _assignment(node, data)
    return name in _SAFE_ASSIGNMENTS or name.startswith("LC_")


def _redirect_reason(redirect: Redirect) -> str:
    target = redirect.target.raw or redirect.target.value or "…"
    if redirect.writes:
        return f"writes to {target} through a redirection"
    return f"redirection {redirect.operator} {target}"


def _cd_target(command: SimpleCommand, cwd: str | None) -> str | None:
    """Where `cd` leaves the shell, or None when it cannot be known."""
    args = [
        w for w in command.args if not (w.is_literal and w.value.startswith("-") and w.value != "-")
    ]
    if command.name != "cd" or not args:
        return None  # pushd/popd use a stack; bare cd goes $HOME
    target = args[0]
    if not target.is_literal or target.value == "-" or target.value.startswith("~"):
        return None
    if target.value.startswith("/"):
        return normalize_path(target.value)
    if cwd is None:
        return None
    return normalize_path(posixpath.join(cwd, target.value))


def _splits_across_lines(node: Any, data: bytes) -> bool:
    """True when the gap between two parts of one simple command holds an unescaped newline."""
    children = node.children
    for left, right in itertools.pairwise(children):
        gap = data[left.end_byte : right.start_byte]
        if b"\n" in gap.replace(b"\\\n", b""):
            return True
    return False


_METACHARACTERS = frozenset("\n;&|()<> \t")


def _has_unescaped_metacharacter(raw: str) -> bool:
    """True when an unquoted word holds a character bash would have split it at."""
    escaped = False
    for char in raw:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _METACHARACTERS:
            return True
    return False


def normalize_path(path: str) -> str:
    """Lexically normalise: `//`, `/./`, `/x/..` and trailing slashes go."""
    collapsed = re.sub(r"/+", "/", path)
    normal = posixpath.normpath(collapsed)
    return "/" if normal.startswith("//") else normal


_UNQUOTED_ESCAPE = re.compile(r"\\(.)", re.S)
_DQ_ESCAPE = re.compile(r'\\([$`"\\\n])')


def _unescape_unquoted(raw: str) -> str:
    return _UNQUOTED_ESCAPE.sub(lambda m: "" if m.group(1) == "\n" else m.group(1), raw)


def _unescape_double_quoted(raw: str) -> str:
    return _DQ_ESCAPE.sub(lambda m: "" if m.group(1) == "\n" else m.group(1), raw)


_ANSI_SIMPLE = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "e": "\x1b",
    "E": "\x1b",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def _decode_ansi_c(body: str) -> str | None:
    """Decode bash's $'...' escapes; None for forms we do not model."""
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        index += 1
        if index >= len(body):
            return None
        code = body[index]
        if code in _ANSI_SIMPLE:
            out.append(_ANSI_SIMPLE[code])
            index += 1
            continue
        match = None
        if code == "x":
            match = re.match(r"x([0-9a-fA-F]{1,2})", body[index:])
            base = 16
        elif code in "01234567":
            match = re.match(r"([0-7]{1,3})", body[index:])
            base = 8
        elif code in "uU":
            match = re.match(r"[uU]([0-9a-fA-F]{1,8})", body[index:])
            base = 16
        else:
            return None
        if match is None:
            return None
        digits = match.group(1)
        value = int(digits, base)
        if value > 0x10FFFF or value == 0:
            return None
        out.append(chr(value))
        index += match.end()
    return "".join(out)
