"""Verifying an audit log: the hash chain followed record by record, and the head anchor.

Separate from writing (`harness.audit`): every command appends, only `harness audit
verify` walks the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.audit import GENESIS_HASH, HeadAnchor, UnparsableLine, UnreadableHead, parse_record

PROBLEM_KINDS = frozenset(
    {"edited", "removed", "inserted", "reordered", "torn", "head-mismatch", "unparsable"}
)


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


def check_chain(
    path: Path, data: bytes, head: HeadAnchor | UnreadableHead | None, head_path: Path
) -> VerifyReport:
    """Every problem in the log's bytes `data`, by line, held against its head anchor."""
    entries: list[_Link | _BadLine] = []
    link_count = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = parse_record(raw, number)
        except UnparsableLine as exc:
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
    problems = _ChainCheck(entries, head, len(lines), head_path).run()
    return VerifyReport(
        path=path,
        records=link_count,
        problems=tuple(sorted(problems, key=lambda p: (p.line, not p.fatal))),
    )


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
    """A line that is no readable record, and whether it looks torn by a crash."""

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
        head: HeadAnchor | UnreadableHead | None,
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
        return isinstance(self._head, HeadAnchor) and self._head == HeadAnchor(link.seq, link.hash)

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
        if isinstance(head, UnreadableHead):
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
        if head == HeadAnchor(tip.seq, tip.hash):
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
