"""Prefix rules matched against parsed commands.

Rules that deny (forbidden, prompt) match broadly: flags are compared as sets
in every spelling (`-rf` = `-fr` = `-r -f` = `--recursive --force`), the
rule's operands need only appear in order, paths are normalised, and any word
whose value is not known counts as a possible match. Rules that allow match
narrowly: the command must be fully known and start with the rule's words.
The asymmetry is the point: a mistake in a deny rule costs a prompt, a mistake
in an allow rule costs the host.
"""

from __future__ import annotations

import enum
import fnmatch
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.approval.shell import SimpleCommand, Word, WordKind, normalize_path, program_name
from harness.policy.modes import RuleAction
from harness.policy.rules import PrefixRule


class Match(enum.Enum):
    NO = "no"
    POSSIBLE = "possible"
    CERTAIN = "certain"


# Long options and upper-case twins that mean the same as a short flag.
_FLAG_ALIASES: dict[str, dict[str, str]] = {
    "rm": {"--recursive": "-r", "-R": "-r", "--force": "-f", "--dir": "-d", "--verbose": "-v"},
    "cp": {"--recursive": "-r", "-R": "-r", "--force": "-f", "--archive": "-a"},
    "mv": {"--force": "-f"},
    "chmod": {"--recursive": "-R"},
    "chown": {"--recursive": "-R"},
    "chgrp": {"--recursive": "-R"},
    "git": {"--force": "-f", "--delete": "-d", "--hard": "--hard", "--all": "-a"},
    "rsync": {"--recursive": "-r", "--archive": "-a"},
    "shred": {"--remove": "-u", "--zero": "-z"},
    "kill": {"--signal": "-s"},
}
# Programs whose single-dash options are whole words, not bundles of letters.
_WORD_OPTIONS = frozenset(
    {"find", "java", "gcc", "cc", "clang", "go", "dd", "tar", "ps", "test", "["}
)


@dataclass(frozen=True)
class _Shape:
    """A command (or rule) seen as name + flag set + operands in order."""

    flags: frozenset[str]
    operands: tuple[Word, ...]
    unknown_words: int  # single words that could be a flag or an operand
    open_ended: bool  # a SPLAT: any number of further words


def command_shape(name: str, words: Sequence[Word]) -> _Shape:
    """Split argument words into canonical flags and operands."""
    flags: set[str] = set()
    operands: list[Word] = []
    unknown = 0
    open_ended = False
    after_double_dash = False
    for word in words:
        if word.kind is WordKind.SPLAT:
            open_ended = True
            continue
        if word.kind is WordKind.UNKNOWN:
            unknown += 1
            operands.append(word)
            continue
        value = word.value
        if (
            after_double_dash
            or word.kind is WordKind.GLOB
            or not value.startswith("-")
            or value == "-"
        ):
            if name == "git" and value.startswith("+") and len(value) > 1:
                flags.add("-f")  # `git push origin +main` force-pushes
            operands.append(word)
            continue
        if value == "--":
            after_double_dash = True
            continue
        flags.update(canonical_flags(name, value))
    return _Shape(frozenset(flags), tuple(operands), unknown, open_ended)


def canonical_flags(name: str, option: str) -> set[str]:
    """`-rf` → {-r, -f}; `--recursive` → {-r} for rm; `--x=1` → {--x}."""
    aliases = _FLAG_ALIASES.get(name, {})
    if option.startswith("--"):
        key = option.split("=", 1)[0]
        return {aliases.get(key, key)}
    if name in _WORD_OPTIONS:
        return {aliases.get(option, option)}
    return {aliases.get(f"-{letter}", f"-{letter}") for letter in option[1:]}


def _is_pathlike(token: str) -> bool:
    return token.startswith(("/", "~", "./", "../")) or token in (".", "..")


def _operand_match(expected: str, word: Word, cwd: str | None) -> Match:
    """Could `word` be the operand `expected` of a rule?"""
    if word.kind in (WordKind.UNKNOWN, WordKind.SPLAT):
        return Match.POSSIBLE
    actual = word.value
    if word.kind is WordKind.GLOB:
        candidate = _absolute(actual, cwd) if _is_pathlike(expected) else actual
        if candidate is None:
            return Match.POSSIBLE
        if fnmatch.fnmatchcase(expected, candidate) or fnmatch.fnmatchcase(
            normalize_path(expected) if _is_pathlike(expected) else expected, candidate
        ):
            return Match.POSSIBLE
        return Match.NO
    if actual == expected:
        return Match.CERTAIN
    if _is_pathlike(expected) and expected.startswith("/"):
        resolved = _absolute(actual, cwd)
        if resolved is None:
            return Match.POSSIBLE  # relative path, unknown directory: could be anything
        return Match.CERTAIN if resolved == normalize_path(expected) else Match.NO
    if _is_pathlike(expected) and _is_pathlike(actual):
        return Match.CERTAIN if normalize_path(actual) == normalize_path(expected) else Match.NO
    return Match.NO


def _absolute(path: str, cwd: str | None) -> str | None:
    if path.startswith("/"):
        return normalize_path(path)
    if path.startswith("~"):
        return None
    if cwd is None:
        return None
    return normalize_path(posixpath.join(cwd, path))


def deny_match(rule_tokens: Sequence[str], command: SimpleCommand) -> Match:
    """Whether a forbidding or prompting rule applies to `command`, erring towards yes."""
    if not rule_tokens or not command.words:
        return Match.NO
    rule_name = program_name(rule_tokens[0])
    first = command.words[0]
    certain = True
    if first.kind is WordKind.SPLAT:
        return Match.POSSIBLE
    if first.kind is WordKind.UNKNOWN:
        certain = False
    elif first.kind is WordKind.GLOB:
        if not fnmatch.fnmatchcase(rule_name, program_name(first.value)):
            return Match.NO
        certain = False
    elif program_name(first.value) != rule_name:
        return Match.NO
    name = rule_name
    rule = command_shape(name, [Word.literal(t) for t in rule_tokens[1:]])
    shape = command_shape(name, command.words[1:])

    missing_flags = rule.flags - shape.flags
    if missing_flags:
        if not (shape.open_ended or shape.unknown_words):
            return Match.NO
        certain = False

    wanted = [w.value for w in rule.operands]
    index = 0
    for word in shape.operands:
        if index >= len(wanted):
            break
        found = _operand_match(wanted[index], word, command.cwd)
        if found is Match.NO:
            continue
        if found is Match.POSSIBLE:
            certain = False
        index += 1
    if index < len(wanted):
        if not shape.open_ended:
            return Match.NO
        certain = False
    return Match.CERTAIN if certain else Match.POSSIBLE


def allow_match(rule_tokens: Sequence[str], command: SimpleCommand) -> bool:
    """Whether an allow rule covers `command`: a fully known command starting with the rule."""
    argv = command.argv
    if argv is None or not command.certain or command.privileged or not rule_tokens:
        return False
    expected = (program_name(rule_tokens[0]), *rule_tokens[1:])
    return argv[: len(expected)] == expected


@dataclass(frozen=True)
class RuleHit:
    """A rule that applies to one simple command."""

    rule: PrefixRule
    command: SimpleCommand
    match: Match


def strictest_hit(rules: Iterable[PrefixRule], commands: Iterable[SimpleCommand]) -> RuleHit | None:
    """The strictest deny hit (forbidden > prompt; certain before possible; managed first)."""
    best: RuleHit | None = None
    for command in commands:
        for rule in rules:
            if rule.action is RuleAction.ALLOW:
                continue
            found = deny_match(rule.tokens, command)
            if found is Match.NO:
                continue
            hit = RuleHit(rule, command, found)
            if best is None or _rank(hit) > _rank(best):
                best = hit
    return best


def _rank(hit: RuleHit) -> tuple[int, int, int]:
    return (hit.rule.action.strictness, hit.match is Match.CERTAIN, hit.rule.is_managed)


def allowing_rule(rules: Iterable[PrefixRule], command: SimpleCommand) -> PrefixRule | None:
    for rule in rules:
        if rule.action is RuleAction.ALLOW and allow_match(rule.tokens, command):
            return rule
    return None
