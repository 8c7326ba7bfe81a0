"""Guardian: a deterministic risk score for a parsed command, plus an optional reviewer.

With `[features] smart_approvals = true` the decision engine asks `assess` how
risky a request looks. The scorer reads only what `shell.py` parsed: command
names, flags, paths, redirections, wrappers and every recorded uncertainty. It
never runs anything and gives the same answer for the same input.

How the engine uses the level:

- LOW auto-approves only when the command also matches an established pattern;
- MEDIUM goes to the human together with the assessment;
- HIGH always asks.

Scoring, in short (every finding is an `Evidence` with a stable category slug):

HIGH
  destructive-delete      `rm -r` on `/`, `~`, a path outside the workspace, the
                          whole workspace, or a target that is not known;
                          `shred` outside; `find / -delete`; cloud deletes
                          (`kubectl delete`, `terraform destroy`, `aws s3 rm` ...)
  disk-overwrite          `dd of=/dev/sdX`, `mkfs*`, `wipefs`, `fdisk`, `parted` ...
  download-to-shell       a downloader earlier in the request and then a shell or
                          interpreter running code nobody can see (`curl | sh`,
                          `bash <(curl)`, `sh -c "$(curl)"`, `python3 -`, or the
                          downloaded file itself)
  privilege-escalation    `sudo`, `doas`, `su`, `pkexec`, `runuser`, setuid bits,
                          `setcap`, account changes, writes to `/etc/sudoers`
  credential-access       `~/.ssh`, `~/.aws`, `~/.config/gcloud`, `~/.kube`,
                          `~/.docker/config.json`, `.netrc`, `~/.gnupg`, `.env`,
                          `/etc/shadow`, `id_rsa`, `*.pem`/`*.key`, `credentials`,
                          token printers (`gh auth token`, `gcloud auth print-*`)
  history-rewrite         `git push --force|-f|--force-with-lease|--mirror|--delete`,
                          `+refspec`, `:refspec`, `git filter-branch|filter-repo`
  security-tool-disabled  `setenforce 0`, stopping apparmor/auditd/firewalls,
                          `ufw disable`, `iptables -F`, `aa-teardown`, `chattr -i`,
                          world-writable system paths (`chmod 777 /`)
  container-escape        `nsenter`, `unshare`, `chroot`, `mount`, `insmod`,
                          `modprobe`, `docker`, container sockets, `/proc/1/root`,
                          writes to `/proc/sys` or `/sys`
  network-exfiltration    `curl -d @f|-F x=@f|-T f`, `wget --post-file`, `nc`/`ssh`
                          fed by a file or a pipe, `> /dev/tcp/HOST/PORT`,
                          `scp`/`rsync` to `host:`, `aws s3 cp` / `gsutil cp` to a
                          bucket, `git push URL`, `gh gist create`
  persistence             `crontab`, `at`, `systemctl enable`, writes to shell
                          start-up files, cron, systemd units, `.git/hooks`,
                          `.git/config`, `authorized_keys`, `.pth` files
  remote-publish          `npm publish`, `twine upload`, `cargo publish` ...
  system-shutdown         `reboot`, `shutdown`, `systemctl poweroff`, `kill -9 -1`
  permission-change       recursive `chmod`/`chown` outside the workspace

MEDIUM
  package-install         new packages by name (`pip install x`, `npm i x`,
                          `apt-get install`, `cargo install`, `npx`, `uvx` ...)
  package-remove          system package removal
  destructive-delete      `rm -r` inside the workspace or scratch space
  discard-changes         `git reset --hard`, `git clean -f`, `git checkout -- .`,
                          `git restore`, `git stash drop|clear`, `git branch -D`
  write-outside-workspace a write (redirection, `tee`, `cp`, `sed -i`, ...) to a
                          path outside the workspace or one that is not known
  network-access          `curl`, `wget`, `ssh`, `nc`, cloud CLIs (loopback URLs
                          stay LOW)
  remote-publish          `git push`, `gh pr create` ...
  process-kill            `kill`, `pkill`, `killall`
  service-change          `systemctl start|stop|restart` of ordinary units
  env-injection           `LD_PRELOAD`, `PATH`, `BASH_ENV`, `NODE_OPTIONS` ... set
                          for a command
  inline-code             `python -c` code that spawns, deletes or networks;
                          commands hidden in options (`ssh -o ProxyCommand`,
                          `git -c core.sshCommand`, `tar --to-command`)
  permission-change       `chmod`/`chown` outside the workspace; recursive
                          world-writable modes inside it
  uncertain-parse         whatever the parser could not know (substitutions,
                          `eval`, control flow, unknown command names, unknown
                          arguments), naming the first reason
  sandbox-escalation      the request asks to leave the sandbox

Everything else (reads, builds, tests, local edits, `git commit`, `git add`) is
LOW: "low: reads or local changes inside the workspace only".

Decisions worth knowing:

- Paths: relative paths resolve against the command's own cwd (tracked through
  `cd` by the parser), else the `cwd` given here; once the request changed
  directory in a way the parser lost, relative paths count as "not known".
  `~` and `$HOME` are outside the workspace. `/tmp`, `/var/tmp` and `/dev/shm`
  are scratch space: writes there are not findings, `rm -r` below them is
  MEDIUM like inside the workspace, removing the scratch root itself is HIGH.
- Deleting the workspace itself (`rm -rf .` at its root) is HIGH: it takes the
  repository and its history with it.
- Installing what the project already declares (`npm ci`, `npm install` with
  no names, `pip install -r requirements.txt`, `pip install -e .`, `uv sync`,
  `poetry install`) is LOW; naming new packages or a custom index is MEDIUM.
- `git rebase`, `git commit --amend` and `git reset` without `--hard` are LOW:
  local and recoverable through the reflog. `git push` without force is MEDIUM
  because it publishes; any force push is HIGH.
- `echo`/`printf` arguments are data, and so are `git commit -m` messages: they
  are not scanned for credential paths (their redirections are).
- The parser keeps no pipeline structure, so "fed by a pipe" means a `|` right
  before the command's text, and a download counts as feeding a later shell or
  interpreter anywhere in the same request (`curl -o x.sh URL && bash x.sh`).

The external reviewer (`[guardian] command = [...]`) gets one JSON object on
stdin (see `review_request`) and must print one JSON object on stdout:
`{"risk": "low|medium|high", "rationale": "...", "evidence": ["..."]}`. Any
failure (cannot start, timeout, non-zero exit, more than 64 KiB of output,
invalid JSON, missing or invalid fields) gives None, and `combine` then keeps
the scorer's findings at MEDIUM or above so that a human decides: fail closed.
The stricter of scorer and reviewer always wins; a reviewer can raise the level
but never talk the scorer down.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import os
import posixpath
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from harness.approval.shell import (
    PRIVILEGE_WRAPPERS,
    SHELLS,
    ParsedCommand,
    SimpleCommand,
    Word,
    WordKind,
    normalize_path,
)

MAX_REVIEW_OUTPUT = 64 * 1024
LOW_RATIONALE = "reads or local changes inside the workspace only"
_DISPLAY_LIMIT = 160
_REVIEWER_TEXT_LIMIT = 1000


class Risk(enum.Enum):
    """How risky a request looks; ordered LOW < MEDIUM < HIGH."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANKS[self.value]

    @classmethod
    def max(cls, *levels: Risk) -> Risk:
        """The strictest of `levels`; LOW when none are given."""
        strictest = cls.LOW
        for level in levels:
            if level.rank > strictest.rank:
                strictest = level
        return strictest


_RANKS = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True)
class Evidence:
    """One finding.

    Attributes:
        category: a short stable slug ("history-rewrite", "credential-access", ...).
        detail: what the command does, phrased to follow the command
            ("rewrites remote history").
        risk: the level this finding alone deserves.
        command: the command it was found in, as one display line.
    """

    category: str
    detail: str
    risk: Risk
    command: str

    def describe(self) -> str:
        return f"`{self.command}` {self.detail}" if self.command else self.detail

    def to_json(self) -> dict[str, str]:
        return {
            "category": self.category,
            "detail": self.detail,
            "risk": self.risk.value,
            "command": self.command,
        }


@dataclass(frozen=True)
class RiskAssessment:
    """A verdict: the level, one readable sentence, and what it rests on.

    Attributes:
        level: the overall level (the strictest evidence).
        rationale: one sentence naming the strictest finding.
        evidence: every finding, strictest first.
        source: "scorer" or "reviewer": who set the level.
    """

    level: Risk
    rationale: str
    evidence: tuple[Evidence, ...]
    source: str = "scorer"

    def to_json(self) -> dict[str, object]:
        return {
            "level": self.level.value,
            "rationale": self.rationale,
            "evidence": [item.to_json() for item in self.evidence],
            "source": self.source,
        }


# -- entry points --------------------------------------------------------------


def assess(
    parsed: ParsedCommand, *, cwd: str, workspace: str, escalate: bool = False
) -> RiskAssessment:
    """Score a parsed request deterministically; see the module docstring for the table."""
    context = _Context.build(parsed, cwd=cwd, workspace=workspace)
    found: list[Evidence] = []
    for command in parsed.commands:
        for rule in _COMMAND_RULES:
            found.extend(rule(command, context))
    found.extend(_download_to_shell(context))
    found.extend(_uncertainty(context))
    if escalate:
        found.append(
            Evidence(
                "sandbox-escalation",
                "asks to run outside the sandbox",
                Risk.MEDIUM,
                _one_line(parsed.source),
            )
        )
    unique = dict.fromkeys(found)
    evidence = tuple(sorted(unique, key=lambda item: -item.risk.rank))
    return _summarise(evidence)


def review_request(
    parsed: ParsedCommand,
    *,
    cwd: str,
    workspace: str,
    escalate: bool,
    justification: str | None,
    scorer: RiskAssessment,
) -> dict[str, object]:
    """The JSON object an external reviewer receives on stdin.

    Keys: `command` (the source string), `commands` (one display string per
    simple command the parser found, wrappers unwrapped), `cwd`, `workspace`,
    `escalate` (the request asks to leave the sandbox), `justification` (the
    agent's reason, or null) and `scorer` (`RiskAssessment.to_json()` of the
    deterministic score).
    """
    return {
        "command": parsed.source,
        "commands": [command.display() for command in parsed.commands],
        "cwd": cwd,
        "workspace": workspace,
        "escalate": escalate,
        "justification": justification,
        "scorer": scorer.to_json(),
    }


def review_external(
    command: Sequence[str], request: Mapping[str, object], *, timeout: float
) -> RiskAssessment | None:
    """Ask an external reviewer; None whenever it fails to give a clear verdict.

    The reviewer runs as an argv list (never through a shell) in a session of
    its own, so that on timeout or oversized output the whole process group is
    killed, helpers included.
    """
    argv = [str(part) for part in command]
    if not argv or timeout <= 0:
        return None
    try:
        payload = json.dumps(dict(request), sort_keys=True, default=str).encode("utf-8")
    except (TypeError, ValueError):
        return None
    deadline = time.monotonic() + timeout
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except (OSError, ValueError):
        return None
    try:
        output = _exchange(process, payload, deadline)
    finally:
        if process.returncode is None:
            _kill_group(process)
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
    if output is None or process.returncode != 0:
        return None
    return _parse_verdict(output, request)


def combine(scorer: RiskAssessment, reviewer: RiskAssessment | None) -> RiskAssessment:
    """Merge the scorer's and the reviewer's verdicts; the stricter wins.

    A reviewer can raise the level but never lower it below the scorer's.
    Without a reviewer verdict the result is at least MEDIUM, so a human is
    asked rather than trusting a silent or broken reviewer.
    """
    if reviewer is None:
        failure = Evidence(
            "reviewer-failed",
            "the external reviewer gave no usable verdict, so a human decides",
            Risk.MEDIUM,
            "",
        )
        level = Risk.max(scorer.level, Risk.MEDIUM)
        if level is scorer.level:
            rationale = f"{scorer.rationale}; {failure.detail}"
        else:
            rationale = f"{failure.detail} (scorer: {scorer.level.value}, {scorer.rationale})"
        return RiskAssessment(level, rationale, (*scorer.evidence, failure), scorer.source)
    evidence = tuple(dict.fromkeys((*scorer.evidence, *reviewer.evidence)))
    evidence = tuple(sorted(evidence, key=lambda item: -item.risk.rank))
    if reviewer.level.rank > scorer.level.rank:
        rationale = f"{reviewer.rationale} (scorer: {scorer.level.value})"
        return RiskAssessment(reviewer.level, rationale, evidence, "reviewer")
    rationale = f"{scorer.rationale} (reviewer: {reviewer.level.value})"
    return RiskAssessment(scorer.level, rationale, evidence, scorer.source)


# -- summary and display -------------------------------------------------------


def _summarise(evidence: tuple[Evidence, ...]) -> RiskAssessment:
    if not evidence:
        return RiskAssessment(Risk.LOW, LOW_RATIONALE, ())
    top = evidence[0]
    rationale = top.describe()  # the level is shown beside it, not repeated in it
    more = len(evidence) - 1
    if more:
        rationale += f" (and {more} more finding{'s' if more > 1 else ''})"
    return RiskAssessment(top.risk, rationale, evidence)


def _one_line(text: str, limit: int = _DISPLAY_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _shown(command: SimpleCommand) -> str:
    """The command as the user wrote it, with redirections the parser kept apart."""
    text = command.source or command.display()
    for redirect in command.redirects:
        if redirect.operator == "<<":
            continue
        piece = f"{redirect.operator} {redirect.target.raw or redirect.target.value}"
        if (redirect.target.raw or redirect.target.value) not in text:
            text = f"{text} {piece}"
    return _one_line(text)


def _finding(category: str, risk: Risk, detail: str, command: SimpleCommand) -> Evidence:
    return Evidence(category, detail, risk, _shown(command))


def _high(category: str, detail: str, command: SimpleCommand) -> Evidence:
    return _finding(category, Risk.HIGH, detail, command)


def _medium(category: str, detail: str, command: SimpleCommand) -> Evidence:
    return _finding(category, Risk.MEDIUM, detail, command)


def _words(text: str) -> frozenset[str]:
    """A set of names written as whitespace-separated words, to keep long tables short."""
    return frozenset(text.split())


# -- arguments -----------------------------------------------------------------


@dataclass(frozen=True)
class _Args:
    """A command's arguments split into options (with their values) and operands."""

    options: tuple[tuple[str, Word | None], ...]
    operands: tuple[Word, ...]
    double_dash: bool = False

    def has(self, *names: str) -> bool:
        return any(name in names for name, _ in self.options)

    def has_prefix(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name, _ in self.options)

    def values(self, *names: str) -> list[Word]:
        return [value for name, value in self.options if name in names and value is not None]

    def operand_values(self) -> list[str]:
        return [word.value for word in self.operands if word.is_literal]


def _parse_args(
    words: Sequence[Word],
    *,
    long_with_value: Iterable[str] = (),
    short_with_value: str = "",
) -> _Args:
    """Split getopt-style arguments; unknown words count as operands."""
    long_names = frozenset(long_with_value)
    options: list[tuple[str, Word | None]] = []
    operands: list[Word] = []
    index = 0
    only_operands = False
    double_dash = False
    while index < len(words):
        word = words[index]
        index += 1
        text = word.value
        if only_operands or not word.is_literal or not text.startswith("-") or text == "-":
            operands.append(word)
            continue
        if text == "--":
            only_operands = True
            double_dash = True
            continue
        if text.startswith("--"):
            name, equals, value = text.partition("=")
            if equals:
                options.append((name, Word.literal(value)))
            elif name in long_names and index < len(words):
                options.append((name, words[index]))
                index += 1
            else:
                options.append((name, None))
            continue
        letters = text[1:]
        for position, letter in enumerate(letters):
            flag = "-" + letter
            if letter in short_with_value:
                rest = letters[position + 1 :]
                if rest:
                    options.append((flag, Word.literal(rest)))
                elif index < len(words):
                    options.append((flag, words[index]))
                    index += 1
                else:
                    options.append((flag, None))
                break
            options.append((flag, None))
    return _Args(tuple(options), tuple(operands), double_dash)


def _is_known(word: Word) -> bool:
    return word.kind in (WordKind.LITERAL, WordKind.GLOB)


# -- places --------------------------------------------------------------------


class _Where(enum.Enum):
    WORKSPACE = "the whole workspace"
    INSIDE = "inside the workspace"
    SCRATCH = "scratch space"
    OUTSIDE = "outside the workspace"
    ROOT = "the filesystem root"
    UNKNOWN = "a path that is not known before it runs"


_SEVERITY = {
    _Where.INSIDE: 0,
    _Where.SCRATCH: 1,
    _Where.WORKSPACE: 2,
    _Where.OUTSIDE: 3,
    _Where.UNKNOWN: 4,
    _Where.ROOT: 5,
}
_SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - classified, never created
_GLOB_CHAR = re.compile(r"[*?\[]")
_HOME_REFERENCE = re.compile(r"~|\$HOME\b|\$\{HOME\}")


@dataclass(frozen=True)
class _Place:
    """Where a path a command touches lies, relative to the workspace."""

    where: _Where
    path: str  # normalised absolute path, "~…" as written, or the raw word

    @property
    def outside(self) -> bool:
        return self.where in (_Where.OUTSIDE, _Where.ROOT, _Where.UNKNOWN)


def _worst(places: Iterable[_Place]) -> _Place | None:
    worst: _Place | None = None
    for place in places:
        if worst is None or _SEVERITY[place.where] > _SEVERITY[worst.where]:
            worst = place
    return worst


@dataclass(frozen=True)
class _Context:
    """What every rule needs besides the command itself."""

    parsed: ParsedCommand
    workspace: str
    cwd: str
    directory_lost: bool
    find_roots: Mapping[str, tuple[_Place, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, parsed: ParsedCommand, *, cwd: str, workspace: str) -> _Context:
        root = normalize_path(workspace) if workspace else "/"
        base = normalize_path(posixpath.join(root, cwd)) if cwd else root
        lost = any(command.name in ("cd", "pushd", "popd") for command in parsed.commands)
        context = cls(parsed, root, base, lost)
        roots: dict[str, tuple[_Place, ...]] = {}
        for command in parsed.commands:
            if command.name == "find":
                roots[command.source] = tuple(
                    context.place(command, word) for word in _find_roots(command)
                )
        return replace(context, find_roots=roots)

    def base_dir(self, command: SimpleCommand) -> str | None:
        if command.cwd is not None:
            return normalize_path(command.cwd)
        if self.directory_lost:
            return None
        return self.cwd

    def where(self, path: str) -> _Where:
        workspace = self.workspace
        if path == workspace:
            return _Where.WORKSPACE
        if workspace == "/" or path.startswith(workspace + "/"):
            return _Where.INSIDE
        if path == "/":
            return _Where.ROOT
        if any(path.startswith(scratch + "/") for scratch in _SCRATCH_DIRS):
            return _Where.SCRATCH
        return _Where.OUTSIDE

    def place_of(self, command: SimpleCommand, text: str) -> _Place:
        if text == "":
            return _Place(_Where.INSIDE, "''")  # names no file at all
        if text.startswith("~"):
            return _Place(_Where.OUTSIDE, text)
        if text.startswith("/"):
            path = normalize_path(text)
        else:
            base = self.base_dir(command)
            if base is None:
                return _Place(_Where.UNKNOWN, text)
            path = normalize_path(posixpath.join(base, text))
        return _Place(self.where(path), path)

    def below(self, parent: _Place, shown: str) -> _Place:
        """Where the entries under `parent` are (what a glob or `find` reaches)."""
        if parent.where in (_Where.WORKSPACE, _Where.INSIDE):
            return _Place(_Where.INSIDE, shown)
        if parent.where is _Where.OUTSIDE and parent.path in _SCRATCH_DIRS:
            return _Place(_Where.SCRATCH, shown)
        return _Place(parent.where, shown)

    def place(self, command: SimpleCommand, word: Word) -> _Place:
        if word.kind in (WordKind.UNKNOWN, WordKind.SPLAT):
            found = self.found_by_find(command, word)
            if found is not None:
                return found
            if _HOME_REFERENCE.match(word.raw.lstrip("\"'")):
                return _Place(_Where.OUTSIDE, word.raw)
            return _Place(_Where.UNKNOWN, word.raw or "…")
        if word.kind is WordKind.GLOB:
            match = _GLOB_CHAR.search(word.value)
            prefix = word.value[: match.start()] if match else word.value
            directory, slash, _ = prefix.rpartition("/")
            if slash and not directory:
                directory = "/"
            parent = self.place_of(command, directory or ".")
            shown = word.value
            if parent.where is not _Where.UNKNOWN and not word.value.startswith(("/", "~")):
                base = self.base_dir(command)
                if base is not None:
                    shown = normalize_path(posixpath.join(base, word.value))
            return self.below(parent, shown)
        return self.place_of(command, word.value)

    def found_by_find(self, command: SimpleCommand, word: Word) -> _Place | None:
        """`{}` in `find ROOTS -exec CMD {} +` is something below ROOTS."""
        if "{}" not in word.raw or not any(w.startswith("find -") for w in command.wrappers):
            return None
        roots = self.find_roots.get(command.source, ())
        return _worst(self.below(root, f"{root.path}/…") for root in roots)

    def fed_by_pipe(self, command: SimpleCommand) -> bool:
        """Whether the command's input may come from a pipe.

        The parser keeps no pipeline structure, so look for `|` right before
        the command's text; when the text cannot be found, assume it may.
        """
        piece = command.source
        source = self.parsed.source
        if not piece:
            return True
        starts = [match.start() for match in re.finditer(re.escape(piece), source)]
        if not starts:
            return True
        for start in starts:
            before = source[:start].rstrip(" \t\n({")  # `x | (nc h p)` is fed too
            if before.endswith("|&") or (before.endswith("|") and not before.endswith("||")):
                return True
        return False


def _find_roots(command: SimpleCommand) -> list[Word]:
    words = list(command.args)
    index = 0
    while index < len(words) and words[index].is_literal:
        value = words[index].value
        if value in ("-H", "-L", "-P") or value.startswith("-O"):
            index += 1
        elif value == "-D":
            index += 2
        else:
            break
    roots: list[Word] = []
    for word in words[index:]:
        if word.is_literal and (word.value.startswith("-") or word.value in ("(", "!", ")", ",")):
            break
        roots.append(word)
    return roots or [Word.literal(".")]


def _wrapper_program(wrapper: str) -> str:
    return wrapper.split(maxsplit=1)[0] if wrapper.strip() else ""


# -- rule: privilege escalation ------------------------------------------------

_ACCOUNT_TOOLS = _words(
    """
    useradd usermod userdel adduser deluser groupadd groupmod groupdel gpasswd passwd
    chpasswd visudo newgrp
    """
)


def _privilege(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    # `su -c` is recorded as the wrapper "su -c": look at the program, not the label.
    escalators = [p for p in map(_wrapper_program, command.wrappers) if p in PRIVILEGE_WRAPPERS]
    if escalators:
        yield _high(
            "privilege-escalation",
            f"runs with elevated privileges through `{escalators[0]}`",
            command,
        )
    name = command.name
    if name in PRIVILEGE_WRAPPERS:
        yield _high("privilege-escalation", f"uses `{name}` to gain privileges", command)
    elif name in _ACCOUNT_TOOLS:
        yield _high("privilege-escalation", "changes user accounts, groups or sudo", command)
    elif name == "setcap":
        yield _high("privilege-escalation", "grants file capabilities", command)


# -- rule: deletion ------------------------------------------------------------


def _deletion_risk(where: _Where, *, recursive: bool, shred: bool) -> Risk | None:
    if where is _Where.ROOT:
        return Risk.HIGH
    if where is _Where.WORKSPACE:
        return Risk.HIGH if recursive else None
    if where in (_Where.OUTSIDE, _Where.UNKNOWN):
        return Risk.HIGH if recursive or shred else Risk.MEDIUM
    return Risk.MEDIUM if recursive or shred else None


def _deletions(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name
    places: list[_Place]
    if name in ("rm", "unlink", "srm", "shred"):
        args = _parse_args(
            command.args,
            long_with_value=("--iterations", "--size", "--random-source"),
            short_with_value="ns" if name == "shred" else "",
        )
        if args.has("--no-preserve-root"):
            yield _high("destructive-delete", "deletes without protecting `/`", command)
        recursive = name != "shred" and args.has("-r", "-R", "--recursive")
        shred = name == "shred"
        places = [context.place(command, word) for word in args.operands]
    elif name == "find" and any(w.is_literal and w.value == "-delete" for w in command.args):
        recursive, shred = True, False
        roots = context.find_roots.get(command.source, ())
        places = [context.below(root, f"{root.path}/…") for root in roots]
    else:
        return
    best: tuple[Risk, _Place] | None = None
    for place in places:
        risk = _deletion_risk(place.where, recursive=recursive, shred=shred)
        if risk is not None and (best is None or risk.rank > best[0].rank):
            best = (risk, place)
    if best is None:
        return
    risk, place = best
    verb = "shreds" if shred else "recursively deletes" if recursive else "deletes"
    if place.where is _Where.WORKSPACE:
        detail = f"{verb} the whole workspace, history included"
    else:
        detail = f"{verb} {place.path} ({place.where.value})"
    yield _finding("destructive-delete", risk, detail, command)


# -- rule: disks ---------------------------------------------------------------

_DISK_TOOL = re.compile(
    r"mkfs(?:\..+)?|mke2fs|mkswap|mkntfs|mkdosfs|wipefs|fdisk|sfdisk|cfdisk|gdisk|sgdisk|"
    r"cgdisk|parted|blkdiscard"
)
_DISK_DEVICE = re.compile(
    r"^/dev/(?:[sh]d[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|md\d|dm-\d|loop\d|sr\d|"
    r"mapper/|disk/|root$)"
)
_KERNEL_MEMORY = re.compile(r"^/dev/(?:mem|kmem|port|kmsg)$")
_HARMLESS_DEVICE = re.compile(
    r"^/dev/(?:null|zero|full|random|urandom|stdin|stdout|stderr|tty\w*|console|ptmx|"
    r"fd/\d+|pts/\d+)$|^/proc/self/fd/\d+$|^/dev/shm(?:/|$)"
)


def _disks(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name or ""
    if _DISK_TOOL.fullmatch(name):
        listing = any(w.is_literal and w.value in ("-l", "--list", "print") for w in command.args)
        if not listing:
            yield _high("disk-overwrite", "formats, partitions or wipes a disk", command)
    if name == "dd":
        for word in command.args:
            if word.is_literal and word.value.startswith("if="):
                source = normalize_path(word.value[3:]) if word.value[3:].startswith("/") else ""
                if _DISK_DEVICE.match(source) or _KERNEL_MEMORY.match(source):
                    yield _high("container-escape", f"reads the raw device {source}", command)


# -- rule: writes --------------------------------------------------------------

_PERSISTENCE: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), what)
    for pattern, what in (
        (
            r"(?:^|/)\.(?:bashrc|bash_profile|bash_login|bash_logout|profile|zshrc|zprofile|"
            r"zshenv|zlogin|zlogout|kshrc|mkshrc|cshrc|tcshrc|login|xprofile|xinitrc|"
            r"xsessionrc)$",
            "a shell start-up file",
        ),
        (r"(?:^|/)\.config/fish/", "a shell start-up file"),
        (
            r"^/etc/(?:profile|bash\.bashrc|bashrc|zsh/|zshrc|zprofile|zshenv|environment)",
            "a system-wide shell start-up file",
        ),
        (r"^/etc/(?:cron|anacrontab)|^/var/spool/cron", "a cron schedule"),
        (r"^/(?:etc|usr/lib|lib|run)/systemd/|(?:^|/)\.config/systemd/", "a systemd unit"),
        (r"^/etc/(?:init\.d|rc\.local|rc\d\.d|init/)", "a boot script"),
        (r"(?:^|/)\.config/autostart/|^/etc/xdg/autostart/", "a desktop autostart entry"),
        (r"^/etc/ld\.so\.(?:preload|conf)", "the dynamic loader configuration"),
        (r"(?:^|/)\.ssh/(?:authorized_keys2?|rc|config)$", "SSH login configuration"),
        (r"(?:^|/)\.git/hooks(?:/|$)", "a git hook"),
        (r"(?:^|/)\.git/config$", "the repository's git configuration"),
        (r"(?:^|/)\.gitconfig$|^/etc/gitconfig$|(?:^|/)\.config/git/config$", "git settings"),
        (r"Library/Launch(?:Agents|Daemons)/", "a launchd job"),
        (
            r"(?:^|/)(?:site|dist)-packages/[^/]*\.pth$|(?:^|/)(?:site|user)customize\.py$",
            "a Python start-up hook",
        ),
    )
)
_PRIVILEGE_FILES = re.compile(
    r"^/etc/(?:sudoers|sudoers\.d/|passwd$|group$|shadow$|gshadow$|pam\.d/|security/|doas\.conf)"
)
_KERNEL_FILES = re.compile(r"^/proc/(?:sys/|sysrq-trigger|\d+/)|^/sys/")


def _write_targets(command: SimpleCommand) -> list[Word]:
    targets = [
        redirect.target
        for redirect in command.redirects
        if redirect.writes and not redirect.harmless
    ]
    name = command.name
    args = command.args
    if name == "tee":
        targets.extend(_parse_args(args).operands)
    elif name in ("cp", "mv", "install", "ln"):
        parsed = _parse_args(
            args,
            long_with_value=("--target-directory", "--suffix", "--mode", "--owner", "--group"),
            short_with_value="tSmog" if name == "install" else "tS",
        )
        directories = parsed.values("-t", "--target-directory")
        if directories:
            targets.extend(directories)
        elif name == "install" and parsed.has("-d", "--directory"):
            targets.extend(parsed.operands)
        elif len(parsed.operands) >= 2:
            targets.append(parsed.operands[-1])
    elif name in ("touch", "mkdir", "truncate", "mkfifo"):
        parsed = _parse_args(
            args,
            long_with_value=("--reference", "--date", "--size", "--mode"),
            short_with_value="rdtsm",
        )
        targets.extend(parsed.operands)
    elif name == "sed":
        parsed = _parse_args(
            args,
            long_with_value=("--expression", "--file", "--line-length"),
            short_with_value="efl",
        )
        if parsed.has("-i") or parsed.has_prefix("--in-place"):
            scripts = parsed.values("-e", "--expression", "-f", "--file")
            targets.extend(parsed.operands if scripts else parsed.operands[1:])
    elif name == "perl":
        parsed = _parse_args(args, short_with_value="eEIMm")
        if parsed.has("-i"):
            code_given = parsed.values("-e", "-E")
            targets.extend(parsed.operands if code_given else parsed.operands[1:])
    elif name == "dd":
        for word in args:
            if word.raw.startswith("of="):
                targets.append(Word(word.kind, word.value[3:], word.raw[3:]))
    elif name == "curl":
        targets.extend(_curl_args(command).values("-o", "--output", "--output-dir"))
    elif name == "wget":
        parsed = _parse_args(
            args,
            long_with_value=("--output-document", "--directory-prefix"),
            short_with_value=_WGET_SHORT_WITH_VALUE,
        )
        targets.extend(
            word
            for word in parsed.values("-O", "--output-document", "-P", "--directory-prefix")
            if word.value != "-"
        )
    elif name == "unzip":
        targets.extend(_parse_args(args, short_with_value="dxP").values("-d"))
    elif name == "ssh-keygen":
        targets.extend(_parse_args(args, short_with_value="bCfNtZmnOIVzrEeKaDsY").values("-f"))
    elif name in ("scp", "rsync"):
        parsed = _remote_copy_args(command)
        if len(parsed.operands) >= 2 and not _is_remote(parsed.operands[-1]):
            targets.append(parsed.operands[-1])
    return [word for word in targets if not (word.is_literal and word.value == "-")]


def _writes(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    for word in _write_targets(command):
        place = context.place(command, word)
        path = place.path
        if path.startswith("/dev/") or path.startswith("/proc/self/fd/"):
            if _HARMLESS_DEVICE.match(path) or _BASH_SOCKET.match(path):
                continue  # bash's sockets are the network rule's
            if _DISK_DEVICE.match(path):
                yield _high("disk-overwrite", f"writes to the disk device {path}", command)
            elif _KERNEL_MEMORY.match(path):
                yield _high("container-escape", f"writes to kernel memory {path}", command)
            else:
                yield _medium("write-outside-workspace", f"writes to the device {path}", command)
            continue
        if _KERNEL_FILES.match(path):
            yield _high("container-escape", f"writes kernel settings at {path}", command)
            continue
        if _PRIVILEGE_FILES.match(path):
            yield _high(
                "privilege-escalation", f"writes {path}, which controls who may do what", command
            )
            continue
        persistent = next((what for rx, what in _PERSISTENCE if rx.search(path)), None)
        if persistent is not None:
            yield _high("persistence", f"writes {path}, {persistent} that runs code later", command)
        elif place.where is _Where.UNKNOWN:
            yield _medium(
                "write-outside-workspace",
                f"writes to {path}, which may be outside the workspace",
                command,
            )
        elif place.outside:
            yield _medium(
                "write-outside-workspace", f"writes {path} ({place.where.value})", command
            )


# -- rule: credentials ---------------------------------------------------------

_NAME_START = r"(?<![\w.-])"
_NAME_END = r"(?![\w-])"
_CREDENTIALS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), what)
    for pattern, what in (
        (_NAME_START + r"\.ssh" + _NAME_END, "SSH keys"),
        (_NAME_START + r"\.aws" + _NAME_END, "AWS credentials"),
        (_NAME_START + r"\.azure" + _NAME_END, "Azure credentials"),
        (r"\.config/gcloud" + _NAME_END, "Google Cloud credentials"),
        (r"\.config/gh/hosts\.yml", "GitHub CLI tokens"),
        (_NAME_START + r"\.kube" + _NAME_END, "Kubernetes credentials"),
        (r"\.docker/config\.json", "container registry credentials"),
        (_NAME_START + r"[._]netrc" + _NAME_END, "netrc passwords"),
        (_NAME_START + r"\.gnupg" + _NAME_END, "GnuPG keys"),
        (
            _NAME_START + r"\.(?:git-credentials|pgpass|npmrc|pypirc|vault-token|my\.cnf)"
            r"(?![\w.-])",
            "stored tokens",
        ),
        (r"/etc/(?:g?shadow|master\.passwd)" + _NAME_END, "password hashes"),
        (r"/etc/ssh/ssh_host_\w+_key", "SSH host keys"),
        (r"/proc/[^/\s]+/environ", "a process environment"),
        (r"(?:^|/)run/secrets(?:/|$)", "mounted secrets"),
        (_NAME_START + r"id_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?" + _NAME_END, "SSH private keys"),
        (
            _NAME_START
            + r"\.env(?:\.(?!(?:example|sample|template|dist|defaults?)\b)[\w-]+)?(?![\w.-])",
            "environment secrets",
        ),
        (
            _NAME_START + r"[\w./~-]*\w\.(?:pem|key|p8|p12|pfx|jks|keystore|kdbx|ppk)"
            r"(?=$|[\s'\"`),;])",
            "private keys or certificates",
        ),
        (_NAME_START + r"credentials(?:\.\w+)?(?![\w.-])", "a credentials file"),
        (_NAME_START + r"secrets?\.(?:json|ya?ml|toml|ini|txt|env)(?![\w.-])", "a secrets file"),
    )
)
# (program, words that must follow in this order) → what the command prints.
_TOKEN_PRINTERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("gh", ("auth", "token"), "a GitHub token"),
    ("gh", ("auth", "status", "--show-token"), "a GitHub token"),
    ("gcloud", ("print-access-token",), "a Google Cloud token"),
    ("gcloud", ("print-identity-token",), "a Google Cloud token"),
    ("aws", ("configure", "get"), "AWS credentials"),
    ("aws", ("configure", "export-credentials"), "AWS credentials"),
    ("aws", ("get-login-password",), "a registry password"),
    ("az", ("get-access-token",), "an Azure token"),
    ("kubectl", ("config", "view", "--raw"), "Kubernetes credentials"),
    ("kubectl", ("get", "secret"), "Kubernetes secrets"),
    ("kubectl", ("get", "secrets"), "Kubernetes secrets"),
    ("security", ("find-generic-password",), "keychain passwords"),
    ("security", ("find-internet-password",), "keychain passwords"),
    ("security", ("dump-keychain",), "keychain passwords"),
    ("secret-tool", ("lookup",), "stored secrets"),
    ("git", ("credential", "fill"), "git credentials"),
    ("gpg", ("--export-secret-keys",), "GnuPG private keys"),
    ("gpg", ("--export-secret-subkeys",), "GnuPG private keys"),
    ("op", ("read",), "1Password secrets"),
    ("vault", ("read",), "Vault secrets"),
    ("vault", ("kv", "get"), "Vault secrets"),
)
_DATA_ONLY = frozenset({"echo", "printf"})  # arguments are text, not file names
# Unknown arguments change nothing for these.
_NO_SIDE_EFFECTS = _DATA_ONLY | {"true", "false", ":", "test", "["}
_MESSAGE_OPTIONS = _words("-m --message --title --body -t -b")
_MESSAGE_PROGRAMS = frozenset({"git", "gh", "hg", "jj", "svn"})


def _scanned_words(command: SimpleCommand) -> Iterator[Word]:
    """Arguments that may name files; data (echo text, commit messages) is skipped."""
    if command.name not in _DATA_ONLY:
        skip_next = False
        for word in command.args:
            if skip_next:
                skip_next = False
                continue
            if (
                command.name in _MESSAGE_PROGRAMS
                and word.is_literal
                and (word.value in _MESSAGE_OPTIONS or word.value.startswith("--message="))
            ):
                skip_next = word.value in _MESSAGE_OPTIONS
                continue
            yield word
    if command.name is None:
        yield from command.words
    if command.name == "test" and len(command.words) == 1:
        # The parser keeps no operands for `[ ... ]` and `[[ ... ]]`: read the text.
        yield Word(WordKind.SPLAT, "", command.source)
    for redirect in command.redirects:
        yield redirect.target
    for _, value in command.assignments:
        if value:
            yield Word.literal(value)


def _credentials(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    hit = _first_credential(_scanned_words(command))
    if hit is not None:
        what, text = hit
        yield _high("credential-access", f"touches {what} ({text})", command)
    name = command.name
    if name is None:
        return
    values = [w.value for w in command.args if w.is_literal]
    for program, sequence, what in _TOKEN_PRINTERS:
        if name == program and _in_order(values, sequence):
            yield _high("credential-access", f"prints {what}", command)
            return


def _first_credential(words: Iterable[Word]) -> tuple[str, str] | None:
    for word in words:
        for text in dict.fromkeys((word.value, word.raw)):
            if not text:
                continue
            for pattern, what in _CREDENTIALS:
                if pattern.search(text):
                    return what, _one_line(text, 80)
    return None


def _in_order(values: Sequence[str], sequence: Sequence[str]) -> bool:
    position = 0
    for value in values:
        if position < len(sequence) and value == sequence[position]:
            position += 1
    return position == len(sequence)


# -- rule: git -----------------------------------------------------------------

_GIT_GLOBAL_WITH_VALUE = _words(
    """
    -C -c --git-dir --work-tree --namespace --config-env --super-prefix
    """
)
_GIT_PROGRAM_KEYS = re.compile(r"core\.(?:pager|editor)|sequence\.editor|pager\..*")
_ORDINARY_PROGRAMS = _words("cat less more true vi vim nvim nano emacs code delta")
_GIT_CODE_KEYS = re.compile(
    r"core\.(?:hookspath|fsmonitor|sshcommand|pager|editor|askpass|gitproxy)|"
    r"sequence\.editor|diff\.external|credential\.helper|include\.path|includeif\..*|"
    r"filter\..*\.(?:clean|smudge|process)|diff\..*\.(?:textconv|command)|merge\..*\.driver|"
    r"uploadpack\.packobjectshook|gpg\.(?:\w+\.)?program|pager\..*|"
    r"remote\..*\.(?:uploadpack|receivepack)"
)


def _git_setting_runs_code(key: str, value: str) -> bool:
    if key.startswith("alias."):
        return value.startswith("!")
    if not _GIT_CODE_KEYS.fullmatch(key):
        return False
    if _GIT_PROGRAM_KEYS.fullmatch(key):
        return (value.split() or [""])[0] not in _ORDINARY_PROGRAMS
    return True


def _git_invocation(command: SimpleCommand) -> tuple[str | None, tuple[Word, ...], list[str]]:
    """(subcommand, its arguments, `-c` settings) of a `git` command."""
    words = command.args
    configs: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if not word.is_literal:
            return None, words[index:], configs
        value = word.value
        if value in _GIT_GLOBAL_WITH_VALUE:
            if value == "-c" and index + 1 < len(words):
                configs.append(words[index + 1].value if words[index + 1].is_literal else "?")
            index += 2
            continue
        if value.startswith("--config-env="):
            configs.append(value.split("=", 1)[1])
        if value.startswith("-"):
            index += 1
            continue
        return value, words[index + 1 :], configs
    return None, (), configs


def _looks_like_url(text: str) -> bool:
    return "://" in text or bool(re.match(r"^[\w.-]+@[\w.-]+:", text))


def _git(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    if command.name != "git":
        return
    sub, rest, configs = _git_invocation(command)
    for setting in configs:
        key, _, value = setting.partition("=")
        key = key.lower()
        if _git_setting_runs_code(key, value):
            yield _medium("inline-code", f"runs a command hidden in git setting {key}", command)
    if sub is None:
        return
    args = _parse_args(
        rest,
        long_with_value=("--repo", "--receive-pack", "--exec", "--push-option", "--message"),
        short_with_value="om" if sub in ("push", "commit") else "",
    )
    operands = args.operand_values()
    if sub == "push":
        yield from _git_push(command, args)
    elif sub == "reset" and args.has("--hard"):
        yield _medium("discard-changes", "discards uncommitted changes for good", command)
    elif sub == "clean" and args.has("-f", "--force") and not args.has("-n", "--dry-run"):
        ignored = " and ignored" if args.has("-x", "-X") else ""
        yield _medium("discard-changes", f"deletes untracked{ignored} files", command)
    elif _overwrites_worktree(sub, args):
        yield _medium("discard-changes", "overwrites uncommitted changes", command)
    elif sub == "stash" and operands[:1] in (["drop"], ["clear"]):
        yield _medium("discard-changes", "deletes stashed changes", command)
    elif sub == "branch" and (
        args.has("-D", "-M", "-C") or (args.has("-d", "--delete") and args.has("-f", "--force"))
    ):
        yield _medium("discard-changes", "deletes or overwrites unmerged branches", command)
    elif sub in ("filter-branch", "filter-repo"):
        yield _high("history-rewrite", "rewrites the repository's whole history", command)
    elif (
        (sub == "reflog" and operands[:1] in (["expire"], ["delete"]))
        or (sub == "gc" and any(name.startswith("--prune") for name, _ in args.options))
        or sub == "prune"
        or (sub == "update-ref" and args.has("-d"))
    ):
        yield _medium("discard-changes", "removes the reflog safety net for lost commits", command)
    elif sub == "commit" and args.has("-n", "--no-verify"):
        yield _medium("security-tool-disabled", "skips the repository's commit hooks", command)
    elif sub == "config":
        yield from _git_config(command, args)
    elif (sub == "submodule" and "foreach" in operands) or (
        sub == "rebase" and args.has("-x", "--exec")
    ):
        yield _medium("inline-code", "runs shell commands git passes to a shell", command)


def _overwrites_worktree(sub: str, args: _Args) -> bool:
    if sub == "checkout":
        return args.has("-f", "--force") or args.double_dash or "." in args.operand_values()
    if sub == "restore":  # `--staged` alone only unstages
        return args.has("-W", "--worktree") or not args.has("-S", "--staged")
    return False


def _git_push(command: SimpleCommand, args: _Args) -> Iterator[Evidence]:
    operands = args.operand_values()
    rewrites: list[str] = []
    if args.has("-f", "--force") or args.has_prefix("--force-with-lease"):
        rewrites.append("force-pushes, rewriting remote history")
    if args.has("--mirror"):
        rewrites.append("mirrors every ref, overwriting the remote")
    if args.has("-d", "--delete", "--prune"):
        rewrites.append("deletes remote branches")
    for refspec in operands[1:]:
        if refspec.startswith("+"):
            rewrites.append(f"force-pushes {refspec}, rewriting remote history")
        elif refspec.startswith(":"):
            rewrites.append(f"deletes the remote branch {refspec[1:]}")
    for detail in rewrites[:1]:
        yield _high("history-rewrite", detail, command)
    if operands and _looks_like_url(operands[0]):
        yield _high(
            "network-exfiltration",
            f"pushes the repository to {operands[0]}, an address not configured as a remote",
            command,
        )
    if args.has("--receive-pack", "--exec"):
        yield _medium("inline-code", "runs a remote command given on the command line", command)
    if args.has("--no-verify"):
        yield _medium("security-tool-disabled", "skips the repository's push hooks", command)
    if not rewrites:
        yield _medium("remote-publish", "publishes commits to a remote", command)


def _git_config(command: SimpleCommand, args: _Args) -> Iterator[Evidence]:
    operands = args.operand_values()
    if operands[:1] in (["set"], ["add"]):
        operands = operands[1:]
    writing = len(operands) >= 2 or args.has("--add", "--replace-all")
    if not writing:
        return
    key = operands[0].lower() if operands else ""
    value = operands[1] if len(operands) > 1 else ""
    if _git_setting_runs_code(key, value):
        yield _high("persistence", f"sets {key}, making git run a command later", command)
    if args.has("--global", "--system"):
        yield _medium(
            "write-outside-workspace", "changes git settings outside the workspace", command
        )


# -- rule: security tools ------------------------------------------------------

_SECURITY_SERVICE = re.compile(
    r"(?:apparmor|auditd?|firewalld|ufw|selinux|fail2ban|clamav\S*|clamd|falco|crowdsec|"
    r"osqueryd?|wazuh\S*|ossec|sshguard|nftables|iptables|ip6tables|netfilter-persistent|"
    r"aide|tripwire|snort|suricata|sysdig|tetragon|tracee|auditbeat|falcon-sensor|mdatp)"
    r"(?:\.service)?"
)
_SECURITY_SYSCTL = re.compile(
    r"kernel\.(?:randomize_va_space|yama\.ptrace_scope|kptr_restrict|dmesg_restrict|"
    r"unprivileged_bpf_disabled|modules_disabled|perf_event_paranoid)"
)


def _security_tools(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name
    values = [w.value for w in command.args if w.is_literal]
    lowered = [value.lower() for value in values]
    detail: str | None = None
    if name == "setenforce" and lowered[:1] in (["0"], ["permissive"]):
        detail = "switches SELinux to permissive"
    elif name in ("systemctl", "service"):
        operands = [v for v in values if not v.startswith("-")]
        stopping = {"stop", "disable", "mask", "kill"}
        if any(v in stopping for v in operands) and any(
            _SECURITY_SERVICE.fullmatch(v) for v in operands
        ):
            detail = "stops or disables a security service"
    elif name == "ufw" and lowered[:1] in (["disable"], ["reset"]):
        detail = "turns the firewall off"
    elif name == "ufw" and lowered[:2] == ["default", "allow"]:
        detail = "opens the firewall by default"
    elif name in ("iptables", "ip6tables", "iptables-legacy", "iptables-nft"):
        if any(v in ("-F", "--flush", "-X", "--delete-chain") for v in values) or any(
            values[i] in ("-P", "--policy") and "ACCEPT" in values[i + 1 : i + 3]
            for i in range(len(values))
        ):
            detail = "flushes or opens the firewall"
    elif name == "nft" and (
        lowered[:2] == ["flush", "ruleset"] or lowered[:2] == ["delete", "table"]
    ):
        detail = "flushes the firewall"
    elif name in ("aa-teardown", "aa-disable", "aa-complain"):
        detail = "turns AppArmor confinement off"
    elif name == "apparmor_parser" and any(v in ("-R", "--remove") for v in values):
        detail = "removes an AppArmor profile"
    elif name == "auditctl" and ("-D" in values or ("-e" in values and "0" in values)):
        detail = "turns auditing off"
    elif name == "chattr" and any(re.fullmatch(r"-[a-zA-Z]*[ia][a-zA-Z]*", v) for v in values):
        detail = "removes the immutable or append-only protection"
    elif name == "spctl" and any(v in ("--master-disable", "--global-disable") for v in values):
        detail = "turns Gatekeeper off"
    elif name == "csrutil" and "disable" in lowered:
        detail = "turns System Integrity Protection off"
    elif name == "sysctl" and any(_SECURITY_SYSCTL.match(v) and "=" in v for v in values):
        detail = "weakens a kernel hardening setting"
    elif name in ("pkill", "killall") and any(
        _SECURITY_SERVICE.fullmatch(v) for v in values if not v.startswith("-")
    ):
        detail = "kills a security service"
    if detail is not None:
        yield _high("security-tool-disabled", detail, command)


# -- rule: container escape ----------------------------------------------------

_ESCAPE_TOOLS = _words(
    """
    nsenter unshare chroot pivot_root switch_root mount umount insmod rmmod modprobe
    kexec debugfs capsh systemd-nspawn machinectl lxc lxc-attach lxc-execute runc crun
    ctr crictl nerdctl docker docker-compose
    """
)
_CONTAINER_SOCKET = re.compile(
    r"(?:docker|containerd|podman|crio|cri-dockerd|buildkitd?)\.sock\b|/proc/[^/\s]+/root\b"
)
_ONLY_ASKING = _words("--version -v --help -h version help")


def _container_escape(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name
    values = [w.value for w in command.args if w.is_literal]
    if "chroot" in map(_wrapper_program, command.wrappers):
        yield _high("container-escape", "changes the root directory", command)
    if name in _ESCAPE_TOOLS:
        only_asking = bool(values) and all(v in _ONLY_ASKING for v in values)
        if name == "mount" and not values:
            pass  # only lists mounts
        elif not only_asking:
            what = (
                "talks to the container engine"
                if name in ("docker", "nerdctl")
                else ("can reach the host kernel, namespaces or mounts")
            )
            yield _high("container-escape", what, command)
    elif name == "podman":
        global_options = list(itertools.takewhile(lambda v: v.startswith("-"), values))
        remote = any(
            v in ("-r", "--remote", "--url", "--connection", "-c", "--identity")
            or v.startswith(("--url=", "--connection="))
            for v in global_options
        )
        host_access = any(
            v == "--privileged"
            or re.match(r"--(?:pid|net|network|ipc|uts|userns)=host$", v)
            or re.match(r"^(?:--volume=)?/(?::|$)", v)
            for v in values
        )
        if remote or host_access:
            yield _high(
                "container-escape", "talks to a container engine socket or shares the host", command
            )
        elif values and not all(v in _ONLY_ASKING for v in values):
            yield _medium("container-escape", "starts nested containers", command)
    for variable, _ in command.assignments:
        if variable in ("DOCKER_HOST", "CONTAINER_HOST"):
            yield _high("container-escape", f"points {variable} at a container engine", command)
    texts = [w.raw for w in command.words] + [w.value for w in command.words]
    texts += [r.target.value for r in command.redirects]
    if any(_CONTAINER_SOCKET.search(text) for text in texts):
        yield _high(
            "container-escape",
            "touches a container engine socket or another process's root",
            command,
        )


# -- rule: network -------------------------------------------------------------

_DOWNLOADERS = _words(
    """
    curl wget fetch aria2c axel http https xh xhs lwp-download lwp-request GET
    """
)
_SOCKET_TOOLS = _words("nc ncat netcat socat telnet websocat")
_CURL_SHORT_WITH_VALUE = "AbcCdDeEFHKmoPQrtTuUwxXyYz"
_CURL_LONG_WITH_VALUE = _words(
    """
    --data --data-binary --data-raw --data-ascii --data-urlencode --json --form
    --form-string --upload-file --output --output-dir --header --request --user
    --user-agent --url --cookie --cookie-jar --config --proxy --cert --key --cacert
    --capath --connect-timeout --max-time --retry --retry-delay --retry-max-time
    --resolve --connect-to --referer --write-out --range --unix-socket
    --abstract-unix-socket --interface --dns-servers --limit-rate --max-filesize
    --oauth2-bearer --proxy-user --variable --trace --trace-ascii --stderr --netrc-file
    --dump-header --continue-at --quote --time-cond --max-redirs --local-port
    --aws-sigv4
    """
)
_WGET_SHORT_WITH_VALUE = "aABDeiIlOoPQRtTUwX"
_BASH_SOCKET = re.compile(r"/dev/(?:tcp|udp)/")
_LOOPBACK_HOSTS = re.compile(r"^(?:localhost|127(?:\.\d{1,3}){3}|\[?::1\]?|0\.0\.0\.0)$", re.I)
_REMOTE_COPY_WITH_VALUE = {"scp": "cDFiJloPS", "rsync": "efTBM"}
_CLOUD_TOOLS = _words(
    """
    aws gcloud gsutil az kubectl helm terraform tofu pulumi doctl heroku flyctl fly
    vercel netlify firebase oc eksctl rclone
    """
)
_PUBLISHERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("npm", ("publish",)),
    ("yarn", ("publish",)),
    ("pnpm", ("publish",)),
    ("twine", ("upload",)),
    ("cargo", ("publish",)),
    ("gem", ("push",)),
    ("poetry", ("publish",)),
    ("uv", ("publish",)),
    ("flit", ("publish",)),
    ("hatch", ("publish",)),
    ("mvn", ("deploy",)),
    ("dotnet", ("nuget", "push")),
)


def _curl_args(command: SimpleCommand) -> _Args:
    return _parse_args(
        command.args,
        long_with_value=_CURL_LONG_WITH_VALUE,
        short_with_value=_CURL_SHORT_WITH_VALUE,
    )


def _host_of(url: str) -> str:
    rest = url.split("://", 1)[1] if "://" in url else url
    rest = re.split(r"[/?#]", rest, maxsplit=1)[0]
    rest = rest.rsplit("@", 1)[-1]
    if rest.startswith("["):
        return rest.split("]", 1)[0] + "]"
    return rest.split(":", 1)[0]


def _loopback_only(targets: Sequence[Word]) -> bool:
    if not targets:
        return False
    return all(t.is_literal and _LOOPBACK_HOSTS.match(_host_of(t.value)) for t in targets)


def _is_remote(word: Word) -> bool:
    if not word.is_literal:
        return True
    text = word.value
    if re.match(r"^(?:rsync|scp|sftp|ssh)://", text):
        return True
    return bool(re.match(r"^(?:[^/\s@:]+@)?(?:\[[^\]]+\]|[^/\s:]+):", text))


def _remote_copy_args(command: SimpleCommand) -> _Args:
    return _parse_args(
        command.args,
        long_with_value=("--rsh", "--port", "--exclude", "--include", "--filter", "--chmod"),
        short_with_value=_REMOTE_COPY_WITH_VALUE.get(command.name or "", ""),
    )


def _input_from_file(command: SimpleCommand) -> Word | None:
    """The file a command reads as its input; `Redirect.harmless` counts that as
    harmless, but for a network tool it is the data that leaves."""
    for redirect in command.redirects:
        if redirect.operator in ("<", "<>") and redirect.target.value != "/dev/null":
            return redirect.target
        if redirect.operator == "<<<" and not _is_known(redirect.target):
            return redirect.target
    return None


def _network(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    for redirect in command.redirects:
        if _BASH_SOCKET.match(redirect.target.value):
            if redirect.writes:
                yield _high(
                    "network-exfiltration",
                    f"sends data through bash's {redirect.target.value}",
                    command,
                )
            else:
                yield _medium(
                    "network-access", f"reads from bash's {redirect.target.value}", command
                )
    name = command.name
    if name is None:
        return
    if name == "curl":
        yield from _curl(command)
    elif name == "wget":
        yield from _wget(command)
    elif name in ("http", "https", "xh", "xhs"):
        yield from _httpie(command)
    elif name in _DOWNLOADERS:
        yield _medium("network-access", "downloads from the network", command)
    elif name in _SOCKET_TOOLS or (
        name == "openssl" and any(w.value == "s_client" for w in command.args)
    ):
        yield from _socket_tool(command, context)
    elif name in ("ssh", "mosh"):
        source = _input_from_file(command)
        if source is not None or (name == "ssh" and context.fed_by_pipe(command)):
            sent = source.raw if source is not None else "its piped input"
            yield _high("network-exfiltration", f"sends {sent} to a remote host", command)
        else:
            yield _medium("network-access", "opens a connection to a remote host", command)
        yield from _ssh_hidden_command(command)
    elif name in ("scp", "rsync"):
        yield from _remote_copy(command)
    elif name in ("sftp", "ftp", "lftp", "tftp", "nmap", "masscan", "grpcurl"):
        yield _medium("network-access", "talks to the network", command)
    elif name in _CLOUD_TOOLS:
        yield from _cloud(command)
    elif name == "gh":
        yield from _github_cli(command)
    values = [w.value for w in command.args if w.is_literal]
    for program, sequence in _PUBLISHERS:
        if name == program and _in_order(values, sequence):
            yield _high("remote-publish", "publishes a package to a registry", command)


def _curl(command: SimpleCommand) -> Iterator[Evidence]:
    args = _curl_args(command)
    for option, value in args.options:
        sent = _curl_upload(option, value)
        if sent is not None:
            yield _high("network-exfiltration", f"uploads {sent}", command)
            return
    targets = [*args.operands, *args.values("--url")]
    if not _loopback_only(targets):
        yield _medium("network-access", "talks to the network", command)


def _curl_upload(option: str, value: Word | None) -> str | None:
    if value is None:
        return None
    data_options = ("-d", "--data", "--data-binary", "--data-ascii", "--json", "--data-raw")
    sending = (*data_options, "--data-urlencode", "-F", "--form", "-T", "--upload-file")
    if option in sending and not _is_known(value):
        return f"data that is not known before it runs ({value.raw})"
    text = value.value
    if option in ("-T", "--upload-file"):
        return "its input" if text in ("-", ".") else text
    if option in data_options and option != "--data-raw" and text.startswith("@"):
        return "its input" if text == "@-" else text[1:]
    if option == "--data-urlencode" and re.match(r"^[^=@]*@", text):
        return text.split("@", 1)[1]
    if option in ("-F", "--form") and re.search(r"=[@<]", text):
        return re.split(r"=[@<]", text, maxsplit=1)[1].split(";", 1)[0]
    return None


def _wget(command: SimpleCommand) -> Iterator[Evidence]:
    args = _parse_args(
        command.args,
        long_with_value=("--post-file", "--body-file", "--post-data", "--body-data"),
        short_with_value=_WGET_SHORT_WITH_VALUE,
    )
    for word in args.values("--post-file", "--body-file"):
        yield _high("network-exfiltration", f"uploads {word.raw}", command)
        return
    for word in args.values("--post-data", "--body-data"):
        if not _is_known(word):
            yield _high(
                "network-exfiltration",
                f"uploads data that is not known before it runs ({word.raw})",
                command,
            )
            return
    if not _loopback_only(args.operands):
        yield _medium("network-access", "downloads from the network", command)


def _httpie(command: SimpleCommand) -> Iterator[Evidence]:
    args = _parse_args(command.args)
    operands = list(args.operands)
    if operands and operands[0].is_literal and operands[0].value.isupper():
        operands = operands[1:]
    url, items = operands[:1], operands[1:]
    for item in items:
        text = item.value
        if (
            not _is_known(item)
            or re.match(r"^(?:[^=:@]*:?=)?@", text)
            or re.match(r"^[\w.-]+@[^=:]", text)
        ):
            yield _high("network-exfiltration", f"uploads {item.raw}", command)
            return
    source = _input_from_file(command)
    if source is not None:
        yield _high("network-exfiltration", f"uploads {source.raw}", command)
    elif not _loopback_only(url):
        yield _medium("network-access", "talks to the network", command)


def _socket_tool(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    values = [w.value for w in command.args if w.is_literal]
    if command.name == "socat" and any(v.upper().startswith(("EXEC:", "SYSTEM:")) for v in values):
        yield _medium("inline-code", "connects a network socket to a command", command)
    source = _input_from_file(command)
    if source is not None or context.fed_by_pipe(command):
        sent = source.raw if source is not None else "its piped input"
        yield _high("network-exfiltration", f"sends {sent} over a raw socket", command)
        return
    hosts = [w for w in command.args if not (w.is_literal and w.value.startswith("-"))]
    if not hosts or not _loopback_only(hosts[:1]):
        yield _medium("network-access", "opens a raw network connection", command)


def _ssh_hidden_command(command: SimpleCommand) -> Iterator[Evidence]:
    for word in command.args:
        text = word.value.lower()
        if re.search(r"(?:^|-o\s*)(?:proxycommand|localcommand|permitlocalcommand)", text):
            yield _medium("inline-code", "runs a local command hidden in an SSH option", command)
            return


def _remote_copy(command: SimpleCommand) -> Iterator[Evidence]:
    args = _remote_copy_args(command)
    operands = list(args.operands)
    if command.name == "rsync":
        for shell in args.values("-e", "--rsh"):
            if not (shell.is_literal and shell.value.split()[:1] == ["ssh"]):
                yield _medium("inline-code", "runs a command given as the remote shell", command)
    if len(operands) >= 2 and _is_remote(operands[-1]):
        yield _high(
            "network-exfiltration", f"copies files to the remote {operands[-1].raw}", command
        )
    elif any(_is_remote(word) for word in operands):
        yield _medium("network-access", "copies files from a remote host", command)


def _cloud(command: SimpleCommand) -> Iterator[Evidence]:
    name = command.name or ""
    values = [w.value for w in command.args if w.is_literal]
    operands = [v for v in values if not v.startswith("-")]
    destroying = (
        (name == "kubectl" and "delete" in operands[:1])
        or (name == "helm" and operands[:1] in (["uninstall"], ["delete"]))
        or (name in ("terraform", "tofu") and ("destroy" in operands[:1] or "-destroy" in values))
        or (name == "pulumi" and "destroy" in operands[:1])
        or (name == "aws" and (operands[:2] in (["s3", "rm"], ["s3", "rb"])))
        or (
            name == "aws"
            and any(re.match(r"(?:delete|terminate|remove|deregister)-", v) for v in operands[1:2])
        )
        or (name in ("gcloud", "az", "doctl") and "delete" in operands)
        or (name == "gsutil" and operands[:1] in (["rm"], ["rb"]))
        or (name in ("rclone",) and operands[:1] in (["purge"], ["delete"]))
        or (name == "heroku" and any(v.endswith(":destroy") for v in operands))
        or (name in ("flyctl", "fly") and "destroy" in operands)
    )
    if destroying:
        yield _high("destructive-delete", "deletes remote infrastructure or data", command)
        return
    uploads = (
        (name == "aws" and operands[:2] in (["s3", "cp"], ["s3", "mv"], ["s3", "sync"]))
        or (name == "gsutil" and operands[:1] in (["cp"], ["mv"], ["rsync"]))
        or (name == "rclone" and operands[:1] in (["copy"], ["sync"], ["move"], ["copyto"]))
    )
    if uploads and len(operands) >= 3:
        source, destination = operands[-2], operands[-1]
        remote = re.compile(r"^(?:s3|gs)://|^[\w-]+:")
        if remote.match(destination) and not remote.match(source):
            yield _high("network-exfiltration", f"uploads {source} to {destination}", command)
            return
    yield _medium("network-access", "acts on remote infrastructure", command)


_GITHUB_GROUPS = _words("pr issue release repo workflow secret variable run")
_GITHUB_CHANGES = _words(
    """
    create merge close comment edit delete run set upload review reopen fork rerun cancel
    """
)


def _github_cli(command: SimpleCommand) -> Iterator[Evidence]:
    operands = [w.value for w in command.args if w.is_literal and not w.value.startswith("-")]
    group, verb = [*operands, "", ""][:2]
    if group in ("repo", "release") and verb == "delete":
        yield _high("destructive-delete", f"deletes a GitHub {group}", command)
    elif group == "gist" and verb == "create":
        yield _high("network-exfiltration", "uploads files to a GitHub gist", command)
    elif group in _GITHUB_GROUPS and verb in _GITHUB_CHANGES:
        yield _medium("remote-publish", f"changes GitHub ({group} {verb})", command)
    elif group == "api":
        yield _medium("network-access", "calls the GitHub API", command)


# -- rule: persistence commands ------------------------------------------------


_SYSTEMCTL_PERSISTS = _words("enable link reenable preset edit set-default add-wants add-requires")
_SYSTEMCTL_SHUTS_DOWN = _words(
    "reboot poweroff halt kexec suspend hibernate emergency rescue isolate"
)
_SYSTEMCTL_CHANGES = _words(
    """
    start stop restart reload try-restart disable mask kill daemon-reload reload-or-restart
    """
)


def _persistence(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name
    values = [w.value for w in command.args if w.is_literal]
    operands = [v for v in values if not v.startswith("-")]
    if name == "crontab" and "-l" not in values:
        yield _high("persistence", "installs or changes cron jobs", command)
    elif name in ("at", "batch") and not any(v in ("-l", "-r", "-d", "-c") for v in values):
        yield _high("persistence", "schedules a command to run later", command)
    elif name == "systemctl":
        action = operands[0] if operands else ""
        if action in _SYSTEMCTL_PERSISTS:
            yield _high("persistence", f"makes a service start on its own ({action})", command)
        elif action in _SYSTEMCTL_SHUTS_DOWN:
            yield _high("system-shutdown", f"takes the system down ({action})", command)
        elif action in _SYSTEMCTL_CHANGES:
            yield _medium("service-change", f"changes services ({action})", command)
    elif name == "service" and len(operands) >= 2:
        yield _medium("service-change", f"changes services ({operands[1]})", command)
    elif (
        name == "launchctl"
        and operands[:1]
        and operands[0] in ("load", "bootstrap", "enable", "submit")
    ):
        yield _high("persistence", "installs a launchd job", command)
    elif (name == "update-rc.d" and operands[1:2] in (["defaults"], ["enable"])) or (
        name == "chkconfig" and "on" in operands
    ):
        yield _high("persistence", "makes a service start at boot", command)
    elif name == "systemd-run" and any(v.startswith("--on-") for v in values):
        yield _high("persistence", "schedules a command to run later", command)


# -- rule: processes -----------------------------------------------------------

_SHUTDOWN = _words("reboot shutdown halt poweroff telinit killall5")


def _processes(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name
    if name in _SHUTDOWN or (name == "init" and any(w.value in ("0", "6") for w in command.args)):
        yield _high("system-shutdown", "stops or restarts the system", command)
        return
    if name == "kill":
        targets = _kill_targets(command.args)
        if targets is None:
            return
        if any(t in ("-1", "1") for t in targets):
            yield _high("system-shutdown", "signals every process (or init)", command)
        else:
            yield _medium("process-kill", "kills processes", command)
    elif name in ("pkill", "killall", "skill", "slay"):
        yield _medium("process-kill", "kills processes by name", command)


def _kill_targets(words: Sequence[Word]) -> list[str] | None:
    """The process ids `kill` would signal; None when it only lists signals."""
    values = [w.value if w.is_literal else "?" for w in words]
    if any(v in ("-l", "-L", "--list", "--table") for v in values):
        return None
    targets: list[str] = []
    signal_seen = False
    index = 0
    while index < len(values):
        value = values[index]
        index += 1
        if value == "--":
            targets.extend(values[index:])
            break
        if value in ("-s", "-n", "--signal"):
            index += 1
            signal_seen = True
        elif value.startswith("-") and not signal_seen and len(values) > 1:
            signal_seen = True
        else:
            targets.append(value)
    return targets


# -- rule: permissions ---------------------------------------------------------

_SYSTEM_DIRS = re.compile(
    r"^/(?:etc|usr|bin|sbin|lib|lib32|lib64|libx32|boot|root|var|home|opt|srv|dev|proc|sys|run)"
    r"(?:/|$)"
)
_SYMBOLIC_MODE = re.compile(r"^(?:[ugoa]*[-+=][rwxXstugo]*)(?:,[ugoa]*[-+=][rwxXstugo]*)*$")


def _mode_flags(mode: str) -> tuple[bool, bool]:
    """(world-writable, setuid/setgid) for a chmod mode."""
    if re.fullmatch(r"[0-7]{1,4}", mode):
        digits = mode.zfill(4)
        return int(digits[3]) & 2 == 2, int(digits[0]) & 6 != 0
    world = False
    special = False
    for clause in mode.split(","):
        match = re.match(r"^([ugoa]*)([-+=])(.*)$", clause)
        if match is None:
            continue
        who, operator, permissions = match.groups()
        if operator == "-":
            continue
        if "w" in permissions and ("o" in who or "a" in who):
            world = True
        if "s" in permissions:
            special = True
    return world, special


def _permissions(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name
    if name not in ("chmod", "chown", "chgrp"):
        return
    words = list(command.args)
    recursive = False
    operands: list[Word] = []
    for word in words:
        text = word.value
        if word.is_literal and text in ("-R", "--recursive"):
            recursive = True
        elif word.is_literal and re.fullmatch(r"-[RfvcHLPh]+", text):
            recursive = recursive or "R" in text
        elif word.is_literal and text.startswith("--"):
            continue
        else:
            operands.append(word)
    if len(operands) < 2:
        return
    setting, targets = operands[0], operands[1:]
    world = special = False
    if (
        name == "chmod"
        and setting.is_literal
        and (_SYMBOLIC_MODE.match(setting.value) or re.fullmatch(r"[0-7]{1,4}", setting.value))
    ):
        world, special = _mode_flags(setting.value)
    if special:
        yield _high("privilege-escalation", "sets a setuid or setgid bit", command)
    places = [context.place(command, word) for word in targets]
    place = _worst(places)
    if place is None:
        return
    verb = "recursively changes" if recursive else "changes"
    what = "permissions" if name == "chmod" else "ownership"
    if world and place.outside and (place.where is _Where.ROOT or _SYSTEM_DIRS.match(place.path)):
        yield _high("security-tool-disabled", f"makes {place.path} writable by everyone", command)
    elif place.outside:
        risk = Risk.HIGH if recursive or world else Risk.MEDIUM
        yield _finding(
            "permission-change",
            risk,
            f"{verb} {what} of {place.path} ({place.where.value})",
            command,
        )
    elif recursive and world:
        yield _medium(
            "permission-change", f"makes {place.path} writable by everyone, recursively", command
        )


# -- rule: packages ------------------------------------------------------------

_NAMED = "named"  # new packages only when names are given
_ALWAYS = "always"  # the verb itself adds packages
_RUNS = "runs"  # downloads and runs a package
_REMOVES = "removes"


def _same_verbs(names: Iterable[str], verbs: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {name: dict(verbs) for name in names}


_PACKAGE_VERBS: dict[str, dict[str, str]] = {
    "npm": {
        # npm accepts every prefix of `install` and a few typos of it
        **dict.fromkeys(
            _words("install i in ins inst insta instal isnt isntal isntall add install-test it"),
            _NAMED,
        ),
        "update": _ALWAYS,
        "exec": _RUNS,
        "x": _RUNS,
    },
    "pnpm": {
        "add": _ALWAYS,
        "install": _NAMED,
        "i": _NAMED,
        "dlx": _RUNS,
        "update": _ALWAYS,
        "up": _ALWAYS,
    },
    "yarn": {"add": _ALWAYS, "global": _ALWAYS, "dlx": _RUNS, "up": _ALWAYS, "upgrade": _ALWAYS},
    "bun": {"add": _ALWAYS, "install": _NAMED, "i": _NAMED, "x": _RUNS},
    **_same_verbs(
        ("apt", "apt-get", "aptitude"),
        {
            "install": _ALWAYS,
            "reinstall": _ALWAYS,
            "build-dep": _ALWAYS,
            "remove": _REMOVES,
            "purge": _REMOVES,
            "autoremove": _REMOVES,
        },
    ),
    **_same_verbs(
        ("dnf", "yum", "microdnf", "tdnf"),
        {
            "install": _ALWAYS,
            "reinstall": _ALWAYS,
            "groupinstall": _ALWAYS,
            "localinstall": _ALWAYS,
            "remove": _REMOVES,
            "erase": _REMOVES,
            "autoremove": _REMOVES,
        },
    ),
    "zypper": {"install": _ALWAYS, "in": _ALWAYS, "remove": _REMOVES, "rm": _REMOVES},
    "apk": {"add": _ALWAYS, "del": _REMOVES},
    "brew": {
        "install": _ALWAYS,
        "reinstall": _ALWAYS,
        "tap": _ALWAYS,
        "uninstall": _REMOVES,
        "remove": _REMOVES,
    },
    "port": {"install": _ALWAYS, "uninstall": _REMOVES},
    "snap": {"install": _ALWAYS, "remove": _REMOVES},
    "flatpak": {"install": _ALWAYS, "uninstall": _REMOVES},
    "gem": {"install": _ALWAYS},
    "cargo": {"install": _NAMED, "add": _ALWAYS},
    "go": {"install": _NAMED, "get": _ALWAYS},
    "composer": {"require": _ALWAYS, "global": _ALWAYS},
    "poetry": {"add": _ALWAYS},
    "pdm": {"add": _ALWAYS},
    "pipenv": {"install": _NAMED},
    **_same_verbs(("conda", "mamba", "micromamba"), {"install": _ALWAYS, "create": _ALWAYS}),
    "bundle": {"add": _ALWAYS},
    "dotnet": {"add": _ALWAYS, "tool": _ALWAYS},
    "luarocks": {"install": _ALWAYS},
    "pipx": {"install": _ALWAYS, "run": _RUNS, "inject": _ALWAYS},
    "nix": {"profile": _ALWAYS, "shell": _ALWAYS, "run": _RUNS},
}
_PACKAGE_RUNNERS = frozenset({"npx", "pnpx", "bunx", "uvx"})
_ALWAYS_INSTALLERS = frozenset({"cpan", "cpanm", "easy_install"})
_CUSTOM_SOURCE_OPTIONS = _words(
    """
    -i --index-url --extra-index-url -f --find-links --registry --git --index --source
    --default-index
    """
)
_PIP_WITH_VALUE = _words(
    """
    -r --requirement -c --constraint -e --editable -i --index-url --extra-index-url -f
    --find-links -t --target --prefix --root --src --upgrade-strategy --python-version
    --platform --implementation --abi --only-binary --no-binary --progress-bar --report
    -C --config-settings --global-option --trusted-host --cache-dir --log --proxy
    --retries --timeout --exists-action --cert --client-cert --python -p
    """
)
_PYTHON = re.compile(r"(?:python|pypy)(?:\d+(?:\.\d+)*)?")


def _packages(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name
    if name is None:
        return
    args = list(command.args)
    if _PYTHON.fullmatch(name) and [w.value for w in args[:2]] in (["-m", "pip"], ["-m", "pip3"]):
        yield from _pip(command, args[2:], context)
        return
    if re.fullmatch(r"pip\d*(?:\.\d+)?", name):
        yield from _pip(command, args, context)
        return
    if name == "uv":
        words = [w.value for w in args if w.is_literal and not w.value.startswith("-")]
        if words[:1] == ["pip"]:
            index = next(i for i, w in enumerate(args) if w.is_literal and w.value == "pip")
            yield from _pip(command, args[index + 1 :], context)
        elif words[:1] == ["add"] or words[:2] == ["tool", "install"]:
            yield _install(command, "adds Python packages")
        elif words[:2] == ["tool", "run"]:
            yield _install(command, "downloads and runs a package")
        return
    if name in _PACKAGE_RUNNERS:
        if not any(w.value in ("--no-install", "--no", "--offline") for w in args):
            yield _install(command, "downloads and runs a package")
        return
    if name in _ALWAYS_INSTALLERS:
        yield _install(command, "installs packages")
        return
    if name in ("nix-env",) and any(
        w.is_literal and (w.value == "--install" or re.fullmatch(r"-i\w*", w.value)) for w in args
    ):
        yield _install(command, "installs packages")
        return
    if name == "pacman":
        yield from _pacman(command)
        return
    verbs = _PACKAGE_VERBS.get(name)
    if verbs is None:
        return
    parsed = _parse_args(args, long_with_value=("--registry", "--prefix", "--index"))
    operands = list(parsed.operands)
    if not operands or not operands[0].is_literal:
        return
    mode = verbs.get(operands[0].value)
    custom_source = any(option in _CUSTOM_SOURCE_OPTIONS for option, _ in parsed.options)
    if mode is None:
        return
    if mode == _REMOVES:
        yield _medium("package-remove", "removes system packages", command)
    elif mode == _RUNS:
        yield _install(command, "downloads and runs a package")
    elif mode == _ALWAYS or custom_source:
        yield _install(command, "installs or updates packages")
    else:
        new = [word for word in operands[1:] if not _declared(command, word, context)]
        if new:
            yield _install(command, f"installs new packages ({_names(new)})")


def _pip(command: SimpleCommand, args: Sequence[Word], context: _Context) -> Iterator[Evidence]:
    parsed = _parse_args(args, long_with_value=_PIP_WITH_VALUE, short_with_value="rceiftC")
    operands = list(parsed.operands)
    if not operands or operands[0].value != "install":
        return
    if any(option in _CUSTOM_SOURCE_OPTIONS for option, _ in parsed.options):
        yield _install(command, "installs Python packages from an index named on the command line")
        return
    requirements = parsed.values("-r", "--requirement", "-c", "--constraint")
    packages = [*operands[1:], *parsed.values("-e", "--editable")]
    new = [w for w in packages if not _declared(command, w, context)]
    new += [w for w in requirements if not _declared(command, w, context, path_only=True)]
    if new:
        yield _install(command, f"installs Python packages ({_names(new)})")


def _pacman(command: SimpleCommand) -> Iterator[Evidence]:
    for word in command.args:
        text = word.value if word.is_literal else ""
        # `-Ss`, `-Si`, `-Sl`, `-Sg`, `-Sp` only search or print.
        if (text.startswith("-S") and not set(text[2:]) & set("silgp")) or text.startswith("-U"):
            yield _install(command, "installs system packages")
            return
        if text.startswith("-R"):
            yield _medium("package-remove", "removes system packages", command)
            return


def _declared(
    command: SimpleCommand, word: Word, context: _Context, *, path_only: bool = False
) -> bool:
    """Whether a package argument is a path inside the workspace (the project itself)."""
    if not _is_known(word):
        return False
    # `user/repo` (npm) and `example.com/cmd` (go) are remote names, not paths.
    if not path_only and not word.value.startswith((".", "/", "~")):
        return False
    place = context.place(command, word)
    return place.where in (_Where.WORKSPACE, _Where.INSIDE)


def _names(words: Sequence[Word]) -> str:
    shown = ", ".join(word.raw or word.value for word in words[:3])
    return shown + (", …" if len(words) > 3 else "")


def _install(command: SimpleCommand, detail: str) -> Evidence:
    return _medium("package-install", detail, command)


# -- rule: environment ---------------------------------------------------------

_INJECTING_VARIABLES = _words(
    """
    LD_PRELOAD LD_LIBRARY_PATH LD_AUDIT DYLD_INSERT_LIBRARIES DYLD_LIBRARY_PATH
    DYLD_FRAMEWORK_PATH BASH_ENV ENV PROMPT_COMMAND SHELLOPTS BASHOPTS PS4 IFS PATH
    NODE_OPTIONS PERL5OPT PERL5LIB PERLLIB RUBYOPT RUBYLIB PYTHONSTARTUP PYTHONINSPECT
    PYTHONHOME JAVA_TOOL_OPTIONS _JAVA_OPTIONS JDK_JAVA_OPTIONS GIT_SSH GIT_SSH_COMMAND
    GIT_EXEC_PATH GIT_EXTERNAL_DIFF GIT_ASKPASS SSH_ASKPASS GIT_CONFIG_PARAMETERS
    GIT_CONFIG_GLOBAL GIT_CONFIG_SYSTEM GIT_TEMPLATE_DIR LESSOPEN LESSCLOSE BROWSER
    """
)
_PAGER_VARIABLES = _words("PAGER GIT_PAGER MANPAGER EDITOR VISUAL GIT_EDITOR")
_HARMLESS_PAGERS = _ORDINARY_PROGRAMS | {":", ""}


def _environment(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    for variable, value in command.assignments:
        if variable in _PAGER_VARIABLES:
            if value is not None and (value.split() or [""])[0] in _HARMLESS_PAGERS:
                continue
        elif variable not in _INJECTING_VARIABLES and not variable.startswith("GIT_CONFIG_"):
            continue
        yield _medium(
            "env-injection",
            f"sets {variable}, which can make the command load or run other code",
            command,
        )
        return


# -- rule: code given inline ---------------------------------------------------

_INTERPRETER = re.compile(
    r"(?:python|pypy)(?:\d+(?:\.\d+)*)?|perl|ruby|node|nodejs|php|lua(?:jit|\d+(?:\.\d+)?)?|"
    r"tclsh|Rscript|osascript|pwsh|powershell|deno|bun"
)
_CODE_OPTIONS: dict[str, frozenset[str]] = {
    "python": frozenset({"-c"}),
    "node": frozenset({"-e", "--eval", "-p", "--print"}),
    "perl": frozenset({"-e", "-E"}),
    "ruby": frozenset({"-e"}),
    "php": frozenset({"-r"}),
    "lua": frozenset({"-e"}),
    "Rscript": frozenset({"-e"}),
    "osascript": frozenset({"-e"}),
    "pwsh": frozenset({"-c", "-Command", "-command"}),
    "bun": frozenset({"-e", "--eval", "-p", "--print"}),
    "deno": frozenset({"eval"}),
    "tclsh": frozenset(),
}
_INTERPRETER_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "-I", "--require", "--input-type"})
_INFORMATION_OPTIONS = _words("-V --version -h --help -VV -v")
_RISKY_CODE = re.compile(
    r"os\.system|os\.popen|os\.exec\w*|subprocess|pty\.spawn|shutil\.rmtree|os\.remove|"
    r"os\.unlink|os\.rmdir|urlopen|urllib|requests\.|http\.client|socket|ctypes|__import__|"
    r"\bexec\s*\(|\beval\s*\(|child_process|execSync|spawnSync|fs\.rm|rmSync|unlinkSync|"
    r"\bsystem\s*\(|\bunlink\s*\(|FileUtils\.rm|rmtree|\bfetch\s*\(|IO\.popen|Kernel\.exec"
)
_AWK = frozenset({"awk", "gawk", "mawk", "nawk"})
_TAR_HIDDEN = re.compile(
    r"--to-command|--checkpoint-action=exec|--use-compress-program|--info-script|"
    r"--new-volume-script|^-I$"
)


def _interpreter_family(name: str) -> str:
    if _PYTHON.fullmatch(name):
        return "python"
    if name == "nodejs":
        return "node"
    if name == "powershell":
        return "pwsh"
    if name.startswith("lua"):
        return "lua"
    return name


def _interpreter_code(command: SimpleCommand) -> tuple[str, Word | None] | None:
    """How an interpreter gets its program.

    ("inline", code) for `-c CODE`, ("stdin", None) when it reads its program
    from its input, ("unknown", word) when the program is not known before it
    runs; None for a script file, a module or an informational flag.
    """
    name = command.name or ""
    family = _interpreter_family(name)
    code_options = _CODE_OPTIONS.get(family, frozenset())
    is_python = family == "python"
    args = command.args
    index = 0
    while index < len(args):
        word = args[index]
        if not word.is_literal:
            return "unknown", word
        value = word.value
        if value == "-":
            return "stdin", None
        if value in _INFORMATION_OPTIONS:
            return None
        if value in code_options:
            code = args[index + 1] if index + 1 < len(args) else None
            if code is None:
                return None
            return ("inline", code) if code.is_literal else ("unknown", code)
        if value == "-m" or (is_python and value.startswith("-m")):
            return None
        if is_python and value.startswith("-c") and len(value) > 2:
            return "inline", Word.literal(value[2:])
        if value.startswith("-"):
            index += 2 if value in _INTERPRETER_OPTIONS_WITH_VALUE else 1
            continue
        if value in ("/dev/stdin", "/proc/self/fd/0") or value.startswith("/dev/fd/"):
            return "stdin", None
        return None
    return "stdin", None


def _inline_code(command: SimpleCommand, context: _Context) -> Iterator[Evidence]:
    name = command.name or ""
    if _INTERPRETER.fullmatch(name):
        how = _interpreter_code(command)
        if how is not None and how[0] == "inline" and how[1] is not None:
            code = how[1].value
            match = _RISKY_CODE.search(code)
            if match is None and name in ("perl", "ruby", "php") and "`" in code:
                yield _medium("inline-code", f"runs inline {name} code with backticks", command)
            elif match is not None:
                yield _medium(
                    "inline-code",
                    f"runs inline {name} code that uses {match.group(0).strip()}",
                    command,
                )
        if name == "deno" and any(
            w.is_literal and w.value.startswith(("http://", "https://")) for w in command.args
        ):
            yield _high("download-to-shell", "runs a script straight from the network", command)
    elif name in _AWK:
        programs = [w.value for w in command.args if w.is_literal and not w.value.startswith("-")]
        if programs and re.search(r"system\s*\(|\|\s*getline|\|\s*\"|\|&", programs[0]):
            yield _medium("inline-code", "runs shell commands from an awk program", command)
    elif name in ("tar", "bsdtar", "gtar") and any(
        w.is_literal and _TAR_HIDDEN.search(w.value) for w in command.args
    ):
        yield _medium("inline-code", "runs a command hidden in a tar option", command)
    elif name == "zip" and any(
        w.is_literal and w.value in ("-TT", "--unzip-command") for w in command.args
    ):
        yield _medium("inline-code", "runs a command hidden in a zip option", command)
    elif name in ("vi", "vim", "nvim", "ex") and any(
        w.is_literal and w.value.startswith(("+", "-c")) and "!" in w.value for w in command.args
    ):
        yield _medium("inline-code", "runs shell commands through the editor", command)


_COMMAND_RULES: tuple[Callable[[SimpleCommand, _Context], Iterable[Evidence]], ...] = (
    _privilege,
    _deletions,
    _disks,
    _git,
    _security_tools,
    _container_escape,
    _persistence,
    _network,
    _writes,
    _permissions,
    _processes,
    _packages,
    _environment,
    _inline_code,
    _credentials,  # last: on equal levels, the more specific finding leads the rationale
)


# -- request-wide rules --------------------------------------------------------

_SCRIPT_RUNNERS = SHELLS | {"eval", "source", "."}


def _download_to_shell(context: _Context) -> Iterator[Evidence]:
    """A downloader, then code nobody can see: the classic `curl | sh`."""
    downloader: SimpleCommand | None = None
    downloaded: set[str] = set()
    for command in context.parsed.commands:
        if downloader is not None:
            runner = _runs_unseen_code(command, context, downloaded)
            if runner is not None:
                yield Evidence(
                    "download-to-shell",
                    f"feeds a download (`{_shown(downloader)}`) to {runner}",
                    Risk.HIGH,
                    _one_line(context.parsed.source),
                )
                return
        reads_socket = any(
            _BASH_SOCKET.match(r.target.value) and not r.writes for r in command.redirects
        )
        if command.name in _DOWNLOADERS or reads_socket:
            downloader = command
            for word in _write_targets(command):
                place = context.place(command, word)
                downloaded.add(place.path)
            if command.name == "wget" and not _write_targets(command):
                for url in _parse_args(
                    command.args, short_with_value=_WGET_SHORT_WITH_VALUE
                ).operand_values():
                    basename = url.rstrip("/").rsplit("/", 1)[-1]
                    if basename:
                        downloaded.add(context.place_of(command, basename).path)


def _runs_unseen_code(
    command: SimpleCommand, context: _Context, downloaded: set[str]
) -> str | None:
    if command.name is None:
        shells = [p for p in map(_wrapper_program, command.wrappers) if p in _SCRIPT_RUNNERS]
        return f"`{shells[-1]}`" if shells else "a command that is not known before it runs"
    if _INTERPRETER.fullmatch(command.name):
        how = _interpreter_code(command)
        if how is not None and how[0] in ("stdin", "unknown"):
            return f"`{command.name}`"
    program = command.words[0]
    if (
        program.is_literal
        and "/" in program.value
        and context.place(command, program).path in downloaded
    ):
        return f"the downloaded file {program.value}"
    return None


_ACCOUNTED_PREFIXES = ("writes to ", "redirection ", "sets ")


def _uncertainty(context: _Context) -> Iterator[Evidence]:
    """What the parser could not know, minus what the rules above analysed in full."""
    reasons: dict[str, None] = {}
    for reason in context.parsed.uncertain:
        if reason != "line continuation":  # the parser analysed both readings
            reasons[reason] = None
    for command in context.parsed.commands:
        for reason in command.uncertain:
            if not _accounted_for(reason, command):
                reasons[reason] = None
        for reason in _unknown_inputs(command, context):
            reasons[reason] = None
    if not reasons:
        return
    ordered = list(reasons)
    detail = f"cannot be analysed with certainty: {ordered[0]}"
    if len(ordered) > 1:
        detail += f" (and {len(ordered) - 1} more)"
    yield Evidence("uncertain-parse", detail, Risk.MEDIUM, _one_line(context.parsed.source))


def _accounted_for(reason: str, command: SimpleCommand) -> bool:
    if reason == "runs with elevated privileges":
        return True  # the privilege rule scores it
    if reason.startswith(_ACCOUNTED_PREFIXES):
        return True  # the write, credential and environment rules read these in full
    if reason == "here-document":
        # A here-document is data for `cat > f <<EOF`, but code for a shell
        # or an interpreter.
        name = command.name
        return name is not None and name not in SHELLS and not _INTERPRETER.fullmatch(name)
    return False


def _unknown_inputs(command: SimpleCommand, context: _Context) -> Iterator[str]:
    name = command.name
    if name is None:
        return
    if _INTERPRETER.fullmatch(name):
        how = _interpreter_code(command)
        heredoc = any(r.operator == "<<" for r in command.redirects)
        if how is not None and how[0] == "stdin" and not heredoc:
            yield f"{name} reads its program from its input"
        elif how is not None and how[0] == "unknown":
            yield f"{name} runs code that is not known before it runs"
    if name in _NO_SIDE_EFFECTS:
        return
    for word in command.args:
        if word.kind in (WordKind.UNKNOWN, WordKind.SPLAT):
            if context.found_by_find(command, word) is not None:
                continue
            yield f"`{name}` gets arguments that are not known before it runs ({word.raw or '…'})"
            return


# -- external reviewer ---------------------------------------------------------


def _exchange(process: subprocess.Popen[bytes], payload: bytes, deadline: float) -> bytes | None:
    """Write the request, read at most MAX_REVIEW_OUTPUT bytes, wait for the exit.

    None on timeout or oversized output; the caller kills the group then.
    """
    stdin, stdout = process.stdin, process.stdout
    if stdin is None or stdout is None:
        return None
    chunks: list[bytes] = []
    size = 0
    pending = memoryview(payload)
    os.set_blocking(stdin.fileno(), False)
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        if pending:
            selector.register(stdin, selectors.EVENT_WRITE)
        else:
            stdin.close()
        reading = True
        while reading:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            events = selector.select(remaining)
            if not events:
                return None
            for key, _ in events:
                if key.fileobj is stdin:
                    try:
                        written = os.write(stdin.fileno(), pending[:65536])
                    except BlockingIOError:
                        continue
                    except OSError:  # the reviewer does not read its input: its choice
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(stdin)
                        stdin.close()
                    continue
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    reading = False
                    break
                size += len(chunk)
                if size > MAX_REVIEW_OUTPUT:
                    return None
                chunks.append(chunk)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        process.wait(timeout=remaining)
    except subprocess.TimeoutExpired:
        return None
    return b"".join(chunks)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the reviewer and everything it started, then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    # A process stuck in the kernel cannot be reaped; give up rather than hang.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _parse_verdict(output: bytes, request: Mapping[str, object]) -> RiskAssessment | None:
    try:
        verdict = json.loads(output.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(verdict, dict):
        return None
    risk = verdict.get("risk")
    rationale = verdict.get("rationale")
    items = verdict.get("evidence", [])
    if not isinstance(risk, str) or risk not in _RANKS:
        return None
    if not isinstance(rationale, str) or not rationale.strip():
        return None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        return None
    level = Risk(risk)
    source = request.get("command")
    shown = _one_line(source) if isinstance(source, str) else ""
    evidence = tuple(
        Evidence("reviewer", _one_line(item, _REVIEWER_TEXT_LIMIT), level, shown)
        for item in items
        if item.strip()
    )
    text = _one_line(rationale, _REVIEWER_TEXT_LIMIT)
    return RiskAssessment(level, f"{level.value}: {text} (external reviewer)", evidence, "reviewer")
