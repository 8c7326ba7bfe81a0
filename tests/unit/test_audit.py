"""The audit log: chain, head anchor, tamper detection, torn writes, concurrency."""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import stat
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.audit import (
    GENESIS_HASH,
    RESERVED_FIELDS,
    AuditLog,
    AuditRecord,
    MultiAuditLog,
    filter_records,
)
from harness.audit_chain import PROBLEM_KINDS, VerifyReport
from harness.errors import AuditError

TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# --- helpers ---------------------------------------------------------------------------


def canonical_hash(record: dict[str, object]) -> str:
    """The hash as the format defines it, computed here independently of the module."""
    body = {k: v for k, v in record.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def make_log(directory: Path, count: int = 10) -> AuditLog:
    log = AuditLog(directory / "audit.jsonl")
    for number in range(count):
        log.append(
            "command.finished" if number % 2 else "command.started",
            session=f"s{number % 3}",
            command=["echo", str(number)],
            exit_code=number % 2,
        )
    return log


def read_lines(log: AuditLog) -> list[str]:
    # Not splitlines(): JSON leaves U+0085 and U+2028 unescaped inside strings.
    return log.path.read_text(encoding="utf-8").split("\n")[:-1]


def write_lines(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def dump(record: dict[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def forged(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "seq": 1,
        "ts": "2026-11-28T05:17:54.123456Z",
        "event": "approval.decided",
        "pid": 1,
        "user": "mallory",
        "decision": "allow",
        "prev": GENESIS_HASH,
        **overrides,
    }
    record["hash"] = canonical_hash(record)
    return record


def convincing_forgery(lines: list[str], position: int) -> str:
    """A record that claims the place before `lines[position]`, chained and hashed right."""
    if position == 0:
        return dump(forged())
    before = json.loads(lines[position - 1])
    return dump(forged(seq=before["seq"] + 1, prev=before["hash"]))


def first_error(report: VerifyReport) -> tuple[int, str]:
    assert not report.ok, report
    assert {p.kind for p in report.problems} <= PROBLEM_KINDS
    problem = report.errors[0]
    assert problem.message.startswith(f"line {problem.line}: "), problem.message
    return problem.line, problem.kind


# --- writing and reading ---------------------------------------------------------------


def test_append_and_read_back(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    first = log.append("config.resolved", session="s1", profile="auto")
    second = log.append(
        "approval.decided", session="s1", approval_id="a1", decision="deny", feedback="no"
    )

    read = list(log.records())

    assert read == [first, second]
    assert [r.line for r in read] == [1, 2]
    assert read[1].fields["decision"] == "deny"
    assert read[1].to_json() == json.loads(read_lines(log)[1])


def test_chain_fields(tmp_path: Path) -> None:
    log = make_log(tmp_path, 5)
    stored = [json.loads(line) for line in read_lines(log)]

    assert [r["seq"] for r in stored] == [1, 2, 3, 4, 5]
    assert stored[0]["prev"] == GENESIS_HASH
    for previous, record in itertools.pairwise(stored):
        assert record["prev"] == previous["hash"]
    for record in stored:
        assert record["hash"] == canonical_hash(record)
        assert TS_FORMAT.match(record["ts"])
        assert record["pid"] == os.getpid()
        assert isinstance(record["user"], str)
        assert record["user"]
    head = json.loads(log.head_path.read_text())
    assert head == {"seq": 5, "hash": stored[-1]["hash"]}


def test_new_files_are_private(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a" / "b" / "audit.jsonl")
    log.append("config.resolved")

    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.head_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.lock_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_an_existing_log_keeps_its_mode_and_the_anchor_follows_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.touch(mode=0o640)
    path.chmod(0o640)
    log = AuditLog(path)
    log.append("config.resolved")

    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(log.head_path.stat().st_mode) == 0o640


@pytest.mark.parametrize("name", sorted(RESERVED_FIELDS))
def test_reserved_field_names_are_refused(tmp_path: Path, name: str) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="reserved"):
        log.append("command.started", **{name: "forged"})
    assert not log.path.exists()


@pytest.mark.parametrize("value", [object(), float("nan"), {1, 2}])
def test_values_without_json_form_are_refused(tmp_path: Path, value: object) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="'bad'"):
        log.append("command.started", bad=value)
    assert not log.path.exists()


def test_empty_event_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="event"):
        AuditLog(tmp_path / "audit.jsonl").append("")


def test_values_are_stored_as_they_read_back(tmp_path: Path) -> None:
    class Decision(enum.Enum):
        DENY = "deny"

    log = AuditLog(tmp_path / "audit.jsonl")
    record = log.append(
        "approval.decided",
        decision=Decision.DENY,
        cwd=Path("/work"),
        argv=("rm", "-rf", "x"),
        at=datetime(2026, 1, 2, tzinfo=UTC),
    )

    assert record.fields["decision"] == "deny"
    assert record.fields["cwd"] == "/work"
    assert record.fields["argv"] == ["rm", "-rf", "x"]
    assert record.fields["at"] == "2026-01-02T00:00:00+00:00"
    assert list(log.records()) == [record]


def test_undecodable_argv_survives_the_round_trip(tmp_path: Path) -> None:
    # A non-UTF-8 file name reaches Python as a lone surrogate (surrogateescape).
    name = os.fsdecode(b"caf\xe9")
    log = AuditLog(tmp_path / "audit.jsonl")
    record = log.append("command.started", command=["cat", name], note="déjà vu")

    assert list(log.records()) == [record]
    assert log.verify().ok
    log.path.read_bytes().decode("utf-8")  # the file stays valid UTF-8


def test_records_of_a_missing_log_are_empty(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "nothing.jsonl")
    assert list(log.records()) == []
    report = log.verify()
    assert report.ok
    assert report.records == 0
    assert not log.path.exists()


def test_append_reads_only_the_end_of_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for _ in range(40):
        log.append("command.finished", output="x" * 20_000)
    size = log.path.stat().st_size
    read = 0
    real_pread = os.pread

    def counting_pread(fd: int, length: int, offset: int) -> bytes:
        nonlocal read
        read += length
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    record = log.append("command.finished", output="done")

    assert record.seq == 41
    assert read < size / 4


# --- verify: clean logs and single mutations --------------------------------------------


def test_clean_log_verifies(tmp_path: Path) -> None:
    report = make_log(tmp_path).verify()
    assert report.ok
    assert report.records == 10
    assert report.problems == ()


@pytest.mark.parametrize("index", range(10))
def test_edited_record_is_located(tmp_path: Path, index: int) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    record = json.loads(lines[index])
    record["exit_code"] = 99
    lines[index] = dump(record)
    write_lines(log, lines)

    report = log.verify()

    assert first_error(report) == (index + 1, "edited")
    assert len(report.problems) == 1
    assert report.problems[0].message == (
        f"line {index + 1}: record was edited (its hash does not match its content)"
    )


@pytest.mark.parametrize("key", ["seq", "ts", "event", "pid", "user", "session", "prev", "hash"])
def test_any_edited_field_is_located(tmp_path: Path, key: str) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    record = json.loads(lines[4])
    replacements: dict[str, object] = {
        "seq": 7,
        "ts": "2020-01-01T00:00:00.000000Z",
        "event": "command.denied",
        "pid": 1,
        "user": "root2",
        "session": "other",
        "prev": "f" * 64,
        "hash": "e" * 64,
    }
    record[key] = replacements[key]
    lines[4] = dump(record)
    write_lines(log, lines)

    report = log.verify()

    assert first_error(report) == (5, "edited")
    assert len(report.errors) == 1


@pytest.mark.parametrize("index", range(10))
def test_removed_record_is_located(tmp_path: Path, index: int) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    del lines[index]
    write_lines(log, lines)

    report = log.verify()

    assert first_error(report) == (index + 1, "removed")
    assert len(report.errors) == 1


@pytest.mark.parametrize("position", range(11))
def test_inserted_forgery_is_located(tmp_path: Path, position: int) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    lines.insert(position, convincing_forgery(lines, position))
    write_lines(log, lines)

    report = log.verify()

    line, kind = first_error(report)
    assert line == position + 1
    # After the last record only the head anchor can tell.
    assert kind == ("head-mismatch" if position == 10 else "inserted")
    assert len(report.errors) == 1


@pytest.mark.parametrize("position", range(11))
def test_inserted_copy_is_detected(tmp_path: Path, position: int) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    lines.insert(position, lines[3])
    write_lines(log, lines)

    line, _ = first_error(log.verify())

    assert abs(line - (position + 1)) <= 1


@pytest.mark.parametrize("index", range(9))
def test_swapped_records_are_located(tmp_path: Path, index: int) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    write_lines(log, lines)

    report = log.verify()

    assert first_error(report) == (index + 1, "reordered")
    assert len(report.errors) == 1


def test_record_rehashed_after_an_edit_is_located(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    record = json.loads(lines[3])
    record["decision"] = "allow"
    record["hash"] = canonical_hash(record)
    lines[3] = dump(record)
    write_lines(log, lines)

    assert first_error(log.verify()) == (4, "edited")


def test_several_independent_problems_are_each_reported(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    lines = read_lines(log)
    edited = json.loads(lines[1])
    edited["exit_code"] = 5
    lines[1] = dump(edited)
    lines[5], lines[6] = lines[6], lines[5]
    del lines[8]  # the record that was seq 9
    write_lines(log, lines)

    report = log.verify()

    assert [(p.line, p.kind) for p in report.errors] == [
        (2, "edited"),
        (6, "reordered"),
        (9, "removed"),
    ]


def test_duplicate_keys_are_not_a_record(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    lines = read_lines(log)
    lines[1] = (
        lines[1]
        .replace('{"seq"', '{"decision":"deny","seq"', 1)
        .replace('"prev"', '"decision":"allow","prev"', 1)
    )
    write_lines(log, lines)

    line, kind = first_error(log.verify())

    assert (line, kind) == (2, "unparsable")


def test_garbage_in_place_of_a_record_is_one_error(tmp_path: Path) -> None:
    log = make_log(tmp_path, 5)
    lines = read_lines(log)
    lines[2] = '{"seq": 3, "note": "not a record"}'
    write_lines(log, lines)

    report = log.verify()

    assert [(p.line, p.kind) for p in report.errors] == [(3, "unparsable")]


# --- the head anchor ---------------------------------------------------------------------


def test_cut_off_end_is_found_through_the_head_anchor(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    write_lines(log, read_lines(log)[:7])

    report = log.verify()

    assert first_error(report) == (8, "removed")
    assert "3 record(s) removed from the end" in report.errors[0].message


def test_emptied_log_is_found_through_the_head_anchor(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.path.unlink()

    assert first_error(log.verify()) == (1, "removed")


@pytest.mark.parametrize("anchor", [None, "not json", '{"seq": "x"}'])
def test_missing_or_broken_head_anchor(tmp_path: Path, anchor: str | None) -> None:
    log = make_log(tmp_path, 3)
    if anchor is None:
        log.head_path.unlink()
    else:
        log.head_path.write_text(anchor)

    _, kind = first_error(log.verify())

    assert kind == "head-mismatch"
    with pytest.raises(AuditError, match="head anchor"):
        log.append("command.started")


def test_anchor_replaced_with_another_record(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    log.head_path.write_text(json.dumps({"seq": 3, "hash": "a" * 64}))

    assert first_error(log.verify()) == (3, "head-mismatch")


def test_append_refuses_to_hide_a_cut_off_end(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    write_lines(log, read_lines(log)[:7])
    before = log.path.read_bytes()

    with pytest.raises(AuditError, match="ends at seq 7"):
        log.append("command.started")

    assert log.path.read_bytes() == before
    assert first_error(log.verify()) == (8, "removed")


def test_append_recovers_from_a_crash_before_the_anchor_update(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    anchor = log.head_path.read_text()
    log.append("command.started")
    log.head_path.write_text(anchor)  # as if the writer died right after its fsync

    assert first_error(log.verify()) == (4, "head-mismatch")
    record = log.append("command.finished")

    assert record.seq == 5
    assert log.verify().ok


# --- property: any single mutation is caught near where it happened ------------------------

field_values = st.one_of(
    st.integers(-5, 50), st.text(max_size=8), st.none(), st.lists(st.text(max_size=3), max_size=3)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_single_mutation_is_caught_near_its_line(data: st.DataObject) -> None:
    events = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {"event": st.sampled_from(["command.started", "approval.decided"])},
                optional={"session": st.text(max_size=6), "exit_code": field_values},
            ),
            min_size=1,
            max_size=8,
        ),
        label="events",
    )
    with tempfile.TemporaryDirectory() as directory:
        log = AuditLog(Path(directory) / "audit.jsonl")
        for event in events:
            fields = {k: v for k, v in event.items() if k != "event"}
            log.append(str(event["event"]), **fields)
        lines = read_lines(log)
        count = len(lines)
        kinds = ["edit", "rehash", "delete", "insert"] + (["swap"] if count > 1 else [])
        mutation = data.draw(st.sampled_from(kinds), label="mutation")

        if mutation in ("edit", "rehash"):
            index = data.draw(st.integers(0, count - 1), label="index")
            record = json.loads(lines[index])
            # Recomputing the hash after editing the hash itself would change nothing.
            keys = sorted(k for k in record if mutation == "edit" or k != "hash")
            key = data.draw(st.sampled_from(keys), label="key")
            value = data.draw(
                field_values.filter(lambda v: dump({"v": v}) != dump({"v": record[key]})),
                label="value",
            )
            record[key] = value
            if mutation == "rehash":
                record["hash"] = canonical_hash(record)
            lines[index] = dump(record)
            mutated_line = index + 1
        elif mutation == "delete":
            index = data.draw(st.integers(0, count - 1), label="index")
            del lines[index]
            mutated_line = index + 1
        elif mutation == "swap":
            index = data.draw(st.integers(0, count - 2), label="index")
            lines[index], lines[index + 1] = lines[index + 1], lines[index]
            mutated_line = index + 1
        else:
            position = data.draw(st.integers(0, count), label="position")
            style = data.draw(st.sampled_from(["convincing", "random", "copy"]), label="style")
            if style == "convincing":
                intruder = convincing_forgery(lines, position)
            elif style == "copy":
                intruder = lines[data.draw(st.integers(0, count - 1), label="copied")]
            else:
                intruder = dump(
                    forged(
                        seq=data.draw(st.integers(1, count + 3), label="seq"),
                        prev=data.draw(
                            st.sampled_from([GENESIS_HASH, "ab" * 32, "cd" * 32]), label="prev"
                        ),
                    )
                )
            lines.insert(position, intruder)
            mutated_line = position + 1
        write_lines(log, lines)

        report = log.verify()

    line, _ = first_error(report)
    assert abs(line - mutated_line) <= 1, report


# --- torn writes --------------------------------------------------------------------------


def test_torn_last_line_is_a_warning_and_appending_goes_on(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    complete = log.path.read_bytes()
    whole_line = read_lines(log)[-1]
    with log.path.open("ab") as handle:
        handle.write(whole_line[: len(whole_line) // 2].encode())

    report = log.verify()
    assert report.ok
    assert [(p.line, p.kind, p.fatal) for p in report.problems] == [(4, "torn", False)]
    assert "torn or unparsable record" in report.problems[0].message

    record = log.append("command.started", session="after-crash")

    assert record.seq == 4
    assert record.prev == json.loads(whole_line)["hash"]
    assert log.path.read_bytes().startswith(complete)
    assert [r.seq for r in log.records()] == [1, 2, 3, 4]
    assert [r.line for r in log.records()] == [1, 2, 3, 5]
    report = log.verify()
    assert report.ok
    assert [(p.line, p.kind, p.fatal) for p in report.problems] == [(4, "torn", False)]


def test_two_crashes_in_a_row_leave_two_warnings(tmp_path: Path) -> None:
    log = make_log(tmp_path, 2)
    for _ in range(2):
        with log.path.open("ab") as handle:
            handle.write(b'{"seq":3,"ts":"2026-')
        log.path.write_bytes(log.path.read_bytes() + b"\n")
    log.append("command.started")

    report = log.verify()

    assert report.ok
    assert [(p.line, p.kind) for p in report.warnings] == [(3, "torn"), (4, "torn")]


def test_torn_line_where_the_chain_breaks_is_an_error(tmp_path: Path) -> None:
    log = make_log(tmp_path, 5)
    lines = read_lines(log)
    lines[2] = lines[2][:40]
    write_lines(log, lines)

    report = log.verify()

    assert first_error(report) == (3, "unparsable")


def test_torn_last_record_the_anchor_had_is_an_error(tmp_path: Path) -> None:
    # The anchor is updated only after the whole line is on disk, so a cut-short last
    # record that the anchor already names was cut afterwards.
    log = make_log(tmp_path, 5)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-30])

    report = log.verify()

    assert not report.ok
    assert [(p.line, p.kind, p.fatal) for p in report.problems] == [
        (5, "torn", False),
        (6, "removed", True),
    ]


# --- concurrency --------------------------------------------------------------------------


def _append_many(path: str, start: multiprocessing.synchronize.Event, count: int) -> None:
    start.wait()
    log = AuditLog(Path(path))
    for number in range(count):
        log.append("command.started", number=number)


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_append_many, args=(str(path), start, 50)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    log = AuditLog(path)
    records = list(log.records())

    assert [r.seq for r in records] == list(range(1, 201))
    assert sorted(Counter(r.fields["pid"] for r in records).values()) == [50, 50, 50, 50]
    report = log.verify()
    assert report.ok
    assert report.problems == ()


# --- filtering and several logs -------------------------------------------------------------


def test_filter_records(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("approval.requested", session="s1", approval_id="a1")
    log.append("approval.decided", session="s1", approval_id="a1", decision="deny")
    log.append("approval.decided", session="s2", approval_id="a2", decision="allow")
    log.append("command.started", session="s2", command=["ls"])
    records = list(log.records())

    def seqs(**filters: object) -> list[int]:
        return [r.seq for r in filter_records(records, **filters)]  # type: ignore[arg-type]

    assert seqs(session="s1") == [1, 2]
    assert seqs(decision="deny") == [2]
    assert seqs(event="approval.decided") == [2, 3]
    assert seqs(event="approval.*") == [1, 2, 3]
    assert seqs(session="s2", event="approval.*") == [3]
    third = records[2].timestamp
    assert seqs(since=third) == [3, 4]
    assert seqs(until=third) == [1, 2]
    assert seqs(since=third, until=third + timedelta(microseconds=1)) == [3]
    assert seqs(since=datetime.now(UTC) + timedelta(days=1)) == []
    with pytest.raises(ValueError, match="timezone"):
        seqs(since=datetime(2026, 1, 1))


def test_multi_log_writes_every_log(tmp_path: Path) -> None:
    admin = tmp_path / "admin" / "audit.jsonl"
    user = tmp_path / "user" / "audit.jsonl"
    logs = MultiAuditLog([admin, user, tmp_path / "admin" / ".." / "admin" / "audit.jsonl"])

    written = logs.append("approval.decided", decision="allow")

    assert len(written) == 2
    for path in (admin, user):
        assert [r.fields["decision"] for r in AuditLog(path).records()] == ["allow"]


def test_multi_log_writes_the_others_when_one_fails(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory should be")
    good = tmp_path / "good.jsonl"
    logs = MultiAuditLog([blocked / "audit.jsonl", good])

    with pytest.raises(AuditError, match="blocked"):
        logs.append("command.started")

    assert len(list(AuditLog(good).records())) == 1


def test_multi_log_refuses_reserved_fields_before_writing(tmp_path: Path) -> None:
    logs = MultiAuditLog([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    with pytest.raises(ValueError, match="reserved"):
        logs.append("command.started", seq=1)
    assert not (tmp_path / "a.jsonl").exists()


def test_record_is_a_frozen_value(tmp_path: Path) -> None:
    record = AuditLog(tmp_path / "audit.jsonl").append("command.started", session="s")
    assert isinstance(record, AuditRecord)
    with pytest.raises(AttributeError):
        record.seq = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.fields["session"] = "other"  # type: ignore[index]
