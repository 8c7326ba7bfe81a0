"""The audit log: append-only, hash-chained JSONL, one record per event.

Each record is one JSON object on its own line::

    {"seq":1,"ts":"2026-11-28T05:17:54.123456Z","event":"command.started","pid":4242,
     "user":"ana", ...caller fields..., "prev":"000...000","hash":"9f2c..."}

`hash` is the sha256 of the record's canonical JSON without `hash` (sorted keys, no
spaces, UTF-8); `prev` is the previous record's `hash` (64 zeros for the first). The
chain shows edits, insertions, reordering and removals anywhere but at the end:
cutting records off the end leaves a valid chain behind. So every append also
rewrites a head anchor, `<log>.head` (`{"seq": N, "hash": "..."}`), which `verify`
holds against the last record.

Writers in any number of processes serialise on an `flock` of `<log>.lock`. A writer
that dies mid-write leaves a torn last line; the next append moves on past it, and
`verify` reports it as a warning rather than an error.

The anchor sits next to the log with the same permissions, so it stops accidents and
careless tampering, not someone who can rewrite both files: copy the log elsewhere
(an admin path, a log server) when that matters.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path, PurePath
from types import MappingProxyType

from harness.errors import AuditError

GENESIS_HASH = "0" * 64
"""The `prev` of the first record."""

RESERVED_FIELDS = frozenset({"seq", "ts", "event", "pid", "user", "prev", "hash"})
"""Field names the log sets itself; a caller giving one would forge a record."""

PROBLEM_KINDS = frozenset(
    {"edited", "removed", "inserted", "reordered", "torn", "head-mismatch", "unparsable"}
)

_TAIL_BLOCK = 64 * 1024
_HEX_DIGITS = frozenset("0123456789abcdef")
_RECORD_FRAME = ("seq", "ts", "event", "prev", "hash")


@dataclass(frozen=True)
class AuditRecord:
    """One event as stored in the log.

    Attributes:
        seq: position in the chain, 1-based and consecutive.
        ts: UTC time of the append, ISO-8601 with microseconds and a `Z`.
        event: what happened, e.g. `approval.decided`.
        fields: everything else the record holds: `pid`, `user` and the caller's fields.
        prev: the previous record's `hash`; 64 zeros for the first record.
        hash: sha256 of the record's canonical JSON without `hash`.
        line: 1-based line in the log file; 0 for a record `append` just returned.
    """

    seq: int
    ts: str
    event: str
    fields: Mapping[str, object]
    prev: str
    hash: str
    # Where a record was read from is not part of what it says.
    line: int = field(default=0, compare=False)

    @property
    def timestamp(self) -> datetime:
        return datetime.fromisoformat(self.ts)

    def to_json(self) -> dict[str, object]:
        """The record as the JSON object stored on its line."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "event": self.event,
            **self.fields,
            "prev": self.prev,
            "hash": self.hash,
        }

    def content_hash(self) -> str:
        """The hash the record's content calls for; differs from `hash` once it is edited."""
        body = self.to_json()
        del body["hash"]
        return _digest(body)


@dataclass(frozen=True)
class VerifyProblem:
    """One thing `verify` found wrong with the log.

    Attributes:
        line: the 1-based line where it shows; one past the last line for records
            missing from the end.
        kind: edited, removed, inserted, reordered, torn, head-mismatch or unparsable.
        message: starts with "line N:" and says what happened.
        fatal: False only for what a crash leaves behind (a torn last write).
    """

    line: int
    kind: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found: the number of readable records and every problem, by line."""

    path: Path
    records: int
    problems: tuple[VerifyProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> tuple[VerifyProblem, ...]:
        return tuple(p for p in self.problems if p.fatal)

    @property
    def warnings(self) -> tuple[VerifyProblem, ...]:
        return tuple(p for p in self.problems if not p.fatal)


class AuditLog:
    """An append-only, hash-chained JSONL file, safe to share between processes."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def head_path(self) -> Path:
        return self._path.with_name(self._path.name + ".head")

    @property
    def lock_path(self) -> Path:
        return self._path.with_name(self._path.name + ".lock")

    def append(self, event: str, /, **fields: object) -> AuditRecord:
        """Write one record and return it as stored.

        Raises:
            ValueError: `event` is empty, a field name is reserved (`RESERVED_FIELDS`)
                or a value has no JSON form.
            AuditError: the log cannot be written, or its end no longer matches its
                head anchor (records were cut off or the anchor replaced): writing on
                would hide that, so the log must be looked at and moved aside first.
        """
        unchecked: object = event  # callers need not run mypy
        if not isinstance(unchecked, str) or not unchecked:
            raise ValueError(f"an audit event must be a non-empty string, not {event!r}")
        clashing = sorted(RESERVED_FIELDS & fields.keys())
        if clashing:
            raise ValueError(
                f"audit field(s) {', '.join(clashing)} are reserved: the log sets them itself"
            )
        payload = {name: _json_value(name, value) for name, value in fields.items()}
        try:
            _make_private_dirs(self._path.parent)
            with self._locked(exclusive=True):
                return self._append_locked(event, payload)
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit log {self._path}: {exc.strerror or exc}. Check that "
                f"{self._path.parent} is writable by this user, or configure another audit path."
            ) from exc

    def records(self) -> Iterator[AuditRecord]:
        """Every readable record in file order, torn and unparsable lines skipped.

        Reading does not check the chain: use `verify` for that.
        """
        try:
            handle = self._path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(f"cannot read the audit log {self._path}: {exc}") from exc
        with handle:
            # Binary iteration splits on b"\n" only; str.splitlines would also split on
            # U+2028 and friends, which JSON leaves unescaped inside strings.
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    yield _parse_record(raw, number)
                except _UnparsableLine:
                    continue

    def verify(self) -> VerifyReport:
        """Check the whole chain and the head anchor; locate every problem by line.

        Raises:
            AuditError: the log or its anchor cannot be read at all.
        """
        try:
            with self._locked(exclusive=False):
                try:
                    data = self._path.read_bytes()
                except FileNotFoundError:
                    data = b""
                head = self._read_head_state()
        except OSError as exc:
            raise AuditError(f"cannot read the audit log {self._path}: {exc}") from exc
        entries: list[_Link | _BadLine] = []
        link_count = 0
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = _parse_record(raw, number)
            except _UnparsableLine as exc:
                entries.append(_BadLine(number, exc.reason, exc.torn))
                continue
            entries.append(
                _Link(
                    index=link_count,
                    line=number,
                    seq=record.seq,
                    prev=record.prev,
                    hash=record.hash,
                    intact=record.content_hash() == record.hash,
                )
            )
            link_count += 1
        problems = _ChainCheck(entries, head, len(lines), self.head_path).run()
        return VerifyReport(
            path=self._path,
            records=link_count,
            problems=tuple(sorted(problems, key=lambda p: (p.line, not p.fatal))),
        )

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        if exclusive:
            fd = _open_private(self.lock_path, os.O_RDWR)
        else:
            try:
                fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                # No lock file means no writer ever ran here (or the reader may not
                # open it); a reader then sees whatever is on disk, which is still safe.
                yield
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            # Closing the descriptor drops the flock. The lock file is opened afresh for
            # every append because flock belongs to the open file description, which a
            # forked child would otherwise share with its parent.
            os.close(fd)

    def _append_locked(self, event: str, payload: Mapping[str, object]) -> AuditRecord:
        fd = _open_private(self._path, os.O_RDWR | os.O_APPEND)
        try:
            last, needs_newline = _read_tail(fd)
            self._refuse_if_head_disagrees(last)
            seq = last.seq + 1 if last else 1
            prev = last.hash if last else GENESIS_HASH
            ts = _utc_now()
            fields = {"pid": os.getpid(), "user": _user_name(os.getuid()), **payload}
            body = {"seq": seq, "ts": ts, "event": event, **fields, "prev": prev}
            digest = _digest(body)
            # A torn fragment from a crashed writer has no newline; giving it one keeps
            # it on a line of its own instead of gluing it to this record.
            line = (b"\n" if needs_newline else b"") + _encode_line({**body, "hash": digest})
            _write_all(fd, line)
            os.fsync(fd)
            log_mode = os.fstat(fd).st_mode & 0o666
        finally:
            os.close(fd)
        record = AuditRecord(seq, ts, event, MappingProxyType(fields), prev, digest)
        self._write_head(_Anchor(record.seq, record.hash), log_mode)
        return record

    def _refuse_if_head_disagrees(self, last: AuditRecord | None) -> None:
        try:
            head = self._read_head()
        except _UnreadableHead as exc:
            raise AuditError(
                f"the head anchor {self.head_path} of the audit log is unreadable "
                f"({exc.reason}); appending would hide whether records were cut off the "
                f"end. Run `harness audit verify`, then move {self._path} and its .head "
                "aside to start a new log."
            ) from exc
        anchor = head or _GENESIS_ANCHOR
        tip = _Anchor(last.seq, last.hash) if last else _GENESIS_ANCHOR
        if anchor == tip:
            return
        if last is not None and anchor == _Anchor(last.seq - 1, last.prev):
            # The previous writer died between writing its record and updating the
            # anchor; this append brings the anchor up to date.
            return
        said = "is missing" if head is None else f"says the log ends at seq {anchor.seq}"
        raise AuditError(
            f"the audit log {self._path} ends at seq {tip.seq} but its head anchor "
            f"{self.head_path} {said}: records were cut off the end or the anchor was "
            "replaced, and appending would hide it. Run `harness audit verify` to see "
            f"what changed, then move {self._path} and its .head aside to start a new log."
        )

    def _read_head(self) -> _Anchor | None:
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise _UnreadableHead("not valid JSON") from exc
        if not isinstance(obj, dict):
            raise _UnreadableHead("not a JSON object")
        seq = _count_or_none(obj.get("seq"), minimum=0)
        digest = _digest_or_none(obj.get("hash"))
        if seq is None or digest is None:
            raise _UnreadableHead("it needs an integer 'seq' and a sha256 'hash'")
        return _Anchor(seq, digest)

    def _read_head_state(self) -> _Anchor | _UnreadableHead | None:
        try:
            return self._read_head()
        except _UnreadableHead as exc:
            return exc

    def _write_head(self, anchor: _Anchor, mode: int) -> None:
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # Whoever may read the log may read its anchor, and nobody else.
            os.fchmod(fd, mode)
            _write_all(fd, json.dumps({"seq": anchor.seq, "hash": anchor.hash}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(self.head_path)
        _fsync_directory(self.head_path.parent)


class MultiAuditLog:
    """The same events written to several logs.

    An admin may fix one audit path and the user keep another; each gets every
    record, with its own chain. Paths naming the same file are written once.
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        logs: dict[Path, AuditLog] = {}
        for path in paths:
            logs.setdefault(Path(path).resolve(), AuditLog(path))
        self._logs = tuple(logs.values())

    @property
    def logs(self) -> tuple[AuditLog, ...]:
        return self._logs

    def append(self, event: str, /, **fields: object) -> tuple[AuditRecord, ...]:
        """Append to every log; one that fails does not stop the others.

        Raises:
            ValueError: as `AuditLog.append`, before anything is written.
            AuditError: naming every log that could not be written, after the others were.
        """
        written: list[AuditRecord] = []
        failures: list[AuditError] = []
        for log in self._logs:
            try:
                written.append(log.append(event, **fields))
            except AuditError as exc:
                failures.append(exc)
        if failures:
            raise AuditError(" Also: ".join(f.message for f in failures)) from failures[0]
        return tuple(written)


def filter_records(
    records: Iterable[AuditRecord],
    *,
    session: str | None = None,
    decision: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[AuditRecord]:
    """The records matching every filter given, for `harness audit show`.

    Args:
        records: e.g. `AuditLog.records()`.
        session: the record's `session` field equals this.
        decision: the record's `decision` field equals this.
        event: a glob on the event name: `approval.decided`, `approval.*`.
        since: records at or after this time (timezone-aware).
        until: records before this time (timezone-aware).

    Raises:
        ValueError: `since` or `until` has no timezone (naive times are ambiguous).
    """
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.tzinfo is None:
            raise ValueError(f"{name}={bound.isoformat()} needs a timezone, e.g. UTC")

    def matches(record: AuditRecord) -> bool:
        if session is not None and record.fields.get("session") != session:
            return False
        if decision is not None and record.fields.get("decision") != decision:
            return False
        if event is not None and not fnmatchcase(record.event, event):
            return False
        if since is not None and record.timestamp < since:
            return False
        return until is None or record.timestamp < until

    return (record for record in records if matches(record))


# --- records on disk -------------------------------------------------------------------


class _UnparsableLine(Exception):
    def __init__(self, reason: str, *, torn: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.torn = torn


class _DuplicateKey(ValueError):
    pass


class _UnreadableHead(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Anchor:
    seq: int
    hash: str


_GENESIS_ANCHOR = _Anchor(0, GENESIS_HASH)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # With duplicate keys a reader that stops at the first one ("decision":"deny") and
    # json.loads, which keeps the last ("decision":"allow"), would see different records.
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _parse_record(raw: bytes, line: int) -> AuditRecord:
    try:
        obj = json.loads(raw, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKey as exc:
        raise _UnparsableLine(str(exc)) from exc
    except ValueError as exc:
        # A write cut short is a prefix of a record: it starts like one and never parses.
        raise _UnparsableLine("not valid JSON", torn=raw.lstrip().startswith(b"{")) from exc
    if not isinstance(obj, dict):
        raise _UnparsableLine("not a JSON object")
    seq = _count_or_none(obj.get("seq"), minimum=1)
    if seq is None:
        raise _UnparsableLine("'seq' is not a positive integer")
    ts = obj.get("ts")
    if not isinstance(ts, str) or not _is_utc_timestamp(ts):
        raise _UnparsableLine("'ts' is not an ISO-8601 time with a timezone")
    event = obj.get("event")
    if not isinstance(event, str) or not event:
        raise _UnparsableLine("'event' is not a non-empty string")
    prev, digest = _digest_or_none(obj.get("prev")), _digest_or_none(obj.get("hash"))
    if prev is None or digest is None:
        raise _UnparsableLine("'prev' or 'hash' is not a sha256 hex digest")
    return AuditRecord(
        seq=seq,
        ts=ts,
        event=event,
        fields=MappingProxyType({k: v for k, v in obj.items() if k not in _RECORD_FRAME}),
        prev=prev,
        hash=digest,
        line=line,
    )


def _count_or_none(value: object, *, minimum: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    return None


def _digest_or_none(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 64 and _HEX_DIGITS.issuperset(value):
        return value
    return None


def _is_utc_timestamp(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _digest(record_without_hash: Mapping[str, object]) -> str:
    canonical = json.dumps(
        record_without_hash, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    # surrogatepass: argv bytes that are not UTF-8 reach Python as lone surrogates
    # (surrogateescape); they must hash the same when written and when read back.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _encode_line(record: Mapping[str, object]) -> bytes:
    try:
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # Lone surrogates have no UTF-8 form; \u escapes keep the file valid UTF-8 and
        # load back to the same string, so the hash still matches.
        return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


def _json_value(name: str, value: object) -> object:
    """`value` as it will read back from the log, so the returned record equals the stored one."""
    try:
        return json.loads(json.dumps(value, default=_json_fallback, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit field {name!r} has no JSON form: {exc}") from exc


def _json_fallback(value: object) -> object:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@cache
def _user_name(uid: int) -> str:
    # From the passwd database, not $USER, which any caller can set.
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        # Containers often run with a uid that has no passwd entry.
        return str(uid)


def _read_tail(fd: int) -> tuple[AuditRecord | None, bool]:
    """The last readable record and whether the file lacks a final newline.

    Reads backwards from the end in blocks, so an append costs the same on a long log.
    """
    size = os.fstat(fd).st_size
    needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    for raw in _lines_backwards(fd, size):
        if not raw.strip():
            continue
        try:
            return _parse_record(raw, 0), needs_newline
        except _UnparsableLine:
            # A torn write: the chain goes on from the last record before it.
            continue
    return None, needs_newline


def _lines_backwards(fd: int, size: int) -> Iterator[bytes]:
    position = size
    partial = b""
    while position > 0:
        length = min(_TAIL_BLOCK, position)
        position -= length
        pieces = (os.pread(fd, length, position) + partial).split(b"\n")
        partial = pieces[0]
        yield from reversed(pieces[1:])
    yield partial


def _write_all(fd: int, data: bytes) -> None:
    # One os.write puts the whole line down on a regular file; the loop only matters
    # when the disk fills or a signal interrupts, and then we hold the lock anyway.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _open_private(path: Path, flags: int) -> int:
    """Open `path`, creating it with mode 0o600; an existing file keeps the mode it has."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return os.open(path, flags | os.O_CLOEXEC)
    # The umask only takes bits away, but an odd one could leave the owner unable to read.
    os.fchmod(fd, 0o600)
    return fd


def _make_private_dirs(directory: Path) -> None:
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another writer made it first
        path.chmod(0o700)  # the umask must not widen or narrow it


def _fsync_directory(directory: Path) -> None:
    # Makes the renamed anchor (and a newly created log) survive a power loss. Some
    # filesystems refuse fsync on a directory; the data itself is already synced.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- verification ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    """What the chain check needs of one readable record."""

    index: int
    line: int
    seq: int
    prev: str
    hash: str
    intact: bool


@dataclass(frozen=True)
class _BadLine:
    line: int
    reason: str
    torn: bool


_GENESIS_LINK = _Link(index=-1, line=0, seq=0, prev="", hash=GENESIS_HASH, intact=True)


def _links_to(child: _Link, parent: _Link) -> bool:
    return child.prev == parent.hash and child.seq == parent.seq + 1


class _ChainCheck:
    """Walks the records in file order, following the chain.

    `base` is the record the chain has reached. After a break the walk re-anchors on
    a record that explains it, so that independent problems are each reported once.
    """

    def __init__(
        self,
        entries: Sequence[_Link | _BadLine],
        head: _Anchor | _UnreadableHead | None,
        line_count: int,
        head_path: Path,
    ) -> None:
        self._entries = entries
        self._links = [entry for entry in entries if isinstance(entry, _Link)]
        self._first_with_hash: dict[str, _Link] = {}
        for link in self._links:
            self._first_with_hash.setdefault(link.hash, link)
        self._head = head
        self._line_count = line_count
        self._head_path = head_path
        self._base = _GENESIS_LINK
        self._previous_was_edited = False
        self._accounted_late: set[int] = set()
        self._pending_bad: list[_BadLine] = []
        self._problems: list[VerifyProblem] = []

    def run(self) -> list[VerifyProblem]:
        for entry in self._entries:
            if isinstance(entry, _BadLine):
                self._pending_bad.append(entry)
            else:
                self._visit(entry)
        for bad in self._pending_bad:
            self._report_bad_line(bad, chain_goes_on=True)
        self._pending_bad = []
        self._check_head()
        return self._problems

    def _report(self, line: int, kind: str, message: str, *, fatal: bool = True) -> None:
        self._problems.append(VerifyProblem(line, kind, f"line {line}: {message}", fatal))

    def _settle_bad_lines(self, *, chain_goes_on: bool) -> None:
        for bad in self._pending_bad:
            self._report_bad_line(bad, chain_goes_on=chain_goes_on)
        self._pending_bad = []

    def _report_bad_line(self, bad: _BadLine, *, chain_goes_on: bool) -> None:
        if bad.torn and chain_goes_on:
            self._report(
                bad.line,
                "torn",
                f"torn or unparsable record ({bad.reason}): a write cut short by a crash; "
                "the chain goes on past it",
                fatal=False,
            )
        elif bad.torn:
            self._report(
                bad.line,
                "torn",
                f"torn or unparsable record ({bad.reason}), and the chain breaks after it",
            )
        else:
            self._report(bad.line, "unparsable", f"not an audit record ({bad.reason})")

    def _next_link(self, link: _Link) -> _Link | None:
        following = link.index + 1
        return self._links[following] if following < len(self._links) else None

    def _head_is(self, link: _Link) -> bool:
        return isinstance(self._head, _Anchor) and self._head == _Anchor(link.seq, link.hash)

    def _is_intruder(self, record: _Link) -> bool:
        """The chain skips `record`: what follows it goes on from the record before it."""
        following = self._next_link(record)
        if following is not None:
            return _links_to(following, self._base)
        return self._base.index >= 0 and self._head_is(self._base)

    def _chain_goes_on_from(self, record: _Link) -> bool:
        following = self._next_link(record)
        if following is not None:
            return _links_to(following, record)
        return self._head_is(record)

    def _visit(self, record: _Link) -> None:
        base = self._base
        excused = self._previous_was_edited
        self._previous_was_edited = False

        if record.index in self._accounted_late:
            if not record.intact:
                self._report(record.line, "edited", _EDITED)
            self._settle_bad_lines(chain_goes_on=False)
            return

        if not record.intact:
            self._report(record.line, "edited", _EDITED)
            self._settle_bad_lines(chain_goes_on=record.prev == base.hash)
            # Its successor still points to the hash it carries; its own seq may be the
            # edited part, so the chain position is taken from the record before it.
            self._base = _Link(
                record.index, record.line, base.seq + 1, record.prev, record.hash, False
            )
            self._previous_was_edited = True
            return

        if _links_to(record, base) or (excused and record.seq == base.seq + 1):
            self._settle_bad_lines(chain_goes_on=True)
            self._base = record
            return

        first = self._first_with_hash[record.hash]
        if first.index < record.index:
            self._settle_bad_lines(chain_goes_on=False)
            self._report(
                record.line,
                "inserted",
                f"record was inserted: it is a copy of the record on line {first.line} "
                f"(seq {record.seq})",
            )
            return

        if base.index >= 0 and record.prev == base.prev and record.seq == base.seq:
            self._settle_bad_lines(chain_goes_on=False)
            if self._chain_goes_on_from(record):
                self._report(
                    base.line,
                    "inserted",
                    f"record was inserted: line {record.line} holds seq {record.seq} after "
                    "the same predecessor, and the chain goes on from that one",
                )
                self._base = record
            else:
                self._report(
                    record.line,
                    "inserted",
                    f"record was inserted: line {base.line} already holds seq {record.seq} "
                    "after the same predecessor",
                )
            return

        if record.seq > base.seq + 1:
            self._visit_forward_jump(record, base)
            return

        self._settle_bad_lines(chain_goes_on=False)
        after = f"the record on line {base.line}" if base.index >= 0 else "the start of the log"
        if self._is_intruder(record):
            self._report(
                record.line,
                "inserted",
                f"record was inserted: seq {record.seq} does not chain to {after} "
                f"(seq {base.seq}), while the chain goes on past it",
            )
            return

        if record.seq <= base.seq:
            parent = self._first_with_hash.get(record.prev)
            if parent is not None and parent.index < record.index and _links_to(record, parent):
                self._report(
                    record.line,
                    "reordered",
                    f"records are out of order: seq {record.seq} belongs right after line "
                    f"{parent.line} (seq {parent.seq}) but comes after seq {base.seq}",
                )
            else:
                self._report(
                    record.line,
                    "inserted",
                    f"record was inserted: seq {record.seq} comes after seq {base.seq} "
                    f"({after}) and chains to no record before it",
                )
            return

        # The seq follows on but `prev` does not: one of the two records was changed
        # and its hash recomputed. When nothing carries the hash `prev` names, the
        # record before was replaced; otherwise this one was.
        if base.index >= 0 and record.prev not in self._first_with_hash:
            self._report(
                base.line,
                "edited",
                f"record was changed and its hash recomputed: the next record (line "
                f"{record.line}) still points to the hash it had",
            )
        else:
            self._report(
                record.line,
                "edited",
                f"record was changed and its hash recomputed: its 'prev' does not match {after}",
            )
        self._base = record

    def _visit_forward_jump(self, record: _Link, base: _Link) -> None:
        parent = self._first_with_hash.get(record.prev)
        if parent is not None and parent.index > record.index:
            self._settle_bad_lines(chain_goes_on=False)
            self._report(
                record.line,
                "reordered",
                f"records are out of order: seq {record.seq} comes before seq {parent.seq} "
                f"(line {parent.line}), which it follows in the chain",
            )
            # The records it jumped over come later; they were reported with it.
            self._accounted_late.update(
                link.index
                for link in self._links[record.index + 1 :]
                if base.seq < link.seq < record.seq
            )
            self._base = record
            return
        if self._is_intruder(record):
            self._settle_bad_lines(chain_goes_on=False)
            self._report(
                record.line,
                "inserted",
                f"record was inserted: seq {record.seq} does not follow seq {base.seq}, "
                "while the chain goes on past it",
            )
            return
        missing = record.seq - base.seq - 1
        if self._pending_bad and missing <= len(self._pending_bad):
            for bad in self._pending_bad:
                self._report(
                    bad.line,
                    "unparsable",
                    f"not an audit record ({bad.reason}) where seq {base.seq + 1} to "
                    f"{record.seq - 1} belong: a record was damaged or replaced",
                )
            self._pending_bad = []
        else:
            self._settle_bad_lines(chain_goes_on=False)
            where = f"after seq {base.seq}" if base.index >= 0 else "at the start of the log"
            self._report(
                record.line,
                "removed",
                f"{missing} record(s) removed before this line: seq {record.seq} comes {where} "
                f"and points to a record that is not in the log",
            )
        self._base = record

    def _check_head(self) -> None:
        tip = self._base
        head = self._head
        if isinstance(head, _UnreadableHead):
            self._report(
                max(tip.line, 1),
                "head-mismatch",
                f"the head anchor {self._head_path} is unreadable ({head.reason}), so "
                "records cut off the end cannot be ruled out",
            )
            return
        if head is None:
            if tip.index >= 0:
                self._report(
                    tip.line,
                    "head-mismatch",
                    f"the head anchor {self._head_path} is missing, so records cut off the "
                    "end cannot be ruled out",
                )
            return
        if head == _Anchor(tip.seq, tip.hash):
            return
        anchored = self._first_with_hash.get(head.hash)
        if anchored is not None and anchored.seq == head.seq and anchored.seq < tip.seq:
            following = self._next_link(anchored)
            line = following.line if following is not None else tip.line
            self._report(
                line,
                "head-mismatch",
                f"records after line {anchored.line} (seq {head.seq}, where the head anchor "
                "says the log ends) were added without updating the anchor: forged, or "
                "their writer crashed before updating it",
            )
            return
        if head.seq > tip.seq:
            ends = f"its last record is seq {tip.seq}" if tip.index >= 0 else "it has none"
            self._report(
                self._line_count + 1,
                "removed",
                f"{head.seq - tip.seq} record(s) removed from the end of the log: its head "
                f"anchor says the last record is seq {head.seq}, but {ends}",
            )
            return
        self._report(
            max(tip.line, 1),
            "head-mismatch",
            f"the last record in the chain (seq {tip.seq}) does not match the head anchor "
            f"(seq {head.seq}): the record or the anchor was replaced",
        )


_EDITED = "record was edited (its hash does not match its content)"
