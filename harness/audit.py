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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING

from harness.errors import AuditError

if TYPE_CHECKING:
    from harness.audit_chain import VerifyReport

GENESIS_HASH = "0" * 64
"""The `prev` of the first record."""

RESERVED_FIELDS = frozenset({"seq", "ts", "event", "pid", "user", "prev", "hash"})
"""Field names the log sets itself; a caller giving one would forge a record."""

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
                    yield parse_record(raw, number)
                except UnparsableLine:
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
        from harness.audit_chain import check_chain

        return check_chain(self._path, data, head, self.head_path)

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
        self._write_head(HeadAnchor(record.seq, record.hash), log_mode)
        return record

    def _refuse_if_head_disagrees(self, last: AuditRecord | None) -> None:
        try:
            head = self._read_head()
        except UnreadableHead as exc:
            raise AuditError(
                f"the head anchor {self.head_path} of the audit log is unreadable "
                f"({exc.reason}); appending would hide whether records were cut off the "
                f"end. Run `harness audit verify`, then move {self._path} and its .head "
                "aside to start a new log."
            ) from exc
        anchor = head or GENESIS_ANCHOR
        tip = HeadAnchor(last.seq, last.hash) if last else GENESIS_ANCHOR
        if anchor == tip:
            return
        if last is not None and anchor == HeadAnchor(last.seq - 1, last.prev):
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

    def _read_head(self) -> HeadAnchor | None:
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise UnreadableHead("not valid JSON") from exc
        if not isinstance(obj, dict):
            raise UnreadableHead("not a JSON object")
        seq = _count_or_none(obj.get("seq"), minimum=0)
        digest = _digest_or_none(obj.get("hash"))
        if seq is None or digest is None:
            raise UnreadableHead("it needs an integer 'seq' and a sha256 'hash'")
        return HeadAnchor(seq, digest)

    def _read_head_state(self) -> HeadAnchor | UnreadableHead | None:
        try:
            return self._read_head()
        except UnreadableHead as exc:
            return exc

    def _write_head(self, anchor: HeadAnchor, mode: int) -> None:
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


class UnparsableLine(Exception):
    """A line that is no audit record; `torn` when it looks like a write cut short."""

    def __init__(self, reason: str, *, torn: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.torn = torn


class _DuplicateKey(ValueError):
    pass


class UnreadableHead(Exception):
    """The head anchor exists but cannot be read as one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class HeadAnchor:
    """What `<log>.head` says: the seq and hash of the log's last record."""

    seq: int
    hash: str


GENESIS_ANCHOR = HeadAnchor(0, GENESIS_HASH)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # With duplicate keys a reader that stops at the first one ("decision":"deny") and
    # json.loads, which keeps the last ("decision":"allow"), would see different records.
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def parse_record(raw: bytes, line: int) -> AuditRecord:
    """The record on 1-based `line`; raises UnparsableLine for anything else."""
    try:
        obj = json.loads(raw, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKey as exc:
        raise UnparsableLine(str(exc)) from exc
    except ValueError as exc:
        # A write cut short is a prefix of a record: it starts like one and never parses.
        raise UnparsableLine("not valid JSON", torn=raw.lstrip().startswith(b"{")) from exc
    if not isinstance(obj, dict):
        raise UnparsableLine("not a JSON object")
    seq = _count_or_none(obj.get("seq"), minimum=1)
    if seq is None:
        raise UnparsableLine("'seq' is not a positive integer")
    ts = obj.get("ts")
    if not isinstance(ts, str) or not _is_utc_timestamp(ts):
        raise UnparsableLine("'ts' is not an ISO-8601 time with a timezone")
    event = obj.get("event")
    if not isinstance(event, str) or not event:
        raise UnparsableLine("'event' is not a non-empty string")
    prev, digest = _digest_or_none(obj.get("prev")), _digest_or_none(obj.get("hash"))
    if prev is None or digest is None:
        raise UnparsableLine("'prev' or 'hash' is not a sha256 hex digest")
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
            return parse_record(raw, 0), needs_newline
        except UnparsableLine:
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
