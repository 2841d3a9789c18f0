"""One contract suite, run against every event log: each guarantee of ``base.py``, checked."""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_cdp.adapters.eventlog import sqlite as sqlite_log
from loyalty_cdp.adapters.eventlog.base import AppendResult, EventLog, StoredEvent
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.core.events import Event, normalise
from loyalty_cdp.errors import InvalidInput, StorageUnavailable

RECEIVED_AT = 1_767_323_046_000  # 2026-01-02T03:04:06Z

OpenLog = Callable[[], EventLog]


def make_event(
    message_id: str,
    user_id: str | None = "u1",
    anonymous_id: str | None = None,
    *,
    total: float = 10.0,
    call_type: str = "track",
    **extra: Any,
) -> Event:
    call: dict[str, Any] = {
        "type": call_type,
        "messageId": message_id,
        "timestamp": "2026-01-02T03:04:05.678Z",
        "context": {"channel": "pos"},
        **extra,
    }
    if call_type == "track":
        call.setdefault("event", "Order Completed")
        call.setdefault("properties", {"order_id": f"o-{message_id}", "total": total})
    if user_id is not None:
        call["userId"] = user_id
    if anonymous_id is not None:
        call["anonymousId"] = anonymous_id
    return normalise(call, call_type=None, received_at=RECEIVED_AT, default_message_id="unused")


def read_all(log: EventLog, after: int = 0, page: int = 10_000) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    while chunk := log.read(after, page):
        events.extend(chunk)
        after = chunk[-1].offset
    return events


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLog]:
    """Opens a new log object over the same store each time it is called."""
    factory: OpenLog
    if request.param == "sqlite":
        path = tmp_path / "data" / "events.db"
        factory = lambda: SqliteEventLog(path)  # noqa: E731
    else:
        from loyalty_cdp.adapters.eventlog.postgres import PostgresEventLog

        dsn = request.getfixturevalue("postgres_dsn")
        factory = lambda: PostgresEventLog(dsn)  # noqa: E731
    opened: list[EventLog] = []

    def open_() -> EventLog:
        log = factory()
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()


@pytest.fixture()
def log(open_log: OpenLog) -> EventLog:
    return open_log()


def test_round_trip_keeps_every_field(log: EventLog) -> None:
    events = [
        make_event("m-1", "u1", "a1"),
        make_event("m-2", None, "a2", call_type="page", name="Home"),
        make_event("m-3", "u3", None, call_type="identify", traits={"email": "x@example.com"}),
    ]
    assert log.append(events) == AppendResult(appended=3, duplicates=0, conflicts=0)
    stored = log.read()
    assert [s.message_id for s in stored] == ["m-1", "m-2", "m-3"]
    for event, back in zip(events, stored, strict=True):
        assert back.offset > 0
        assert (back.type, back.event, back.user_id, back.anonymous_id) == (
            event.type,
            event.event,
            event.user_id,
            event.anonymous_id,
        )
        assert (back.timestamp, back.received_at, back.channel, back.body) == (
            event.timestamp,
            event.received_at,
            event.channel,
            event.body,
        )
    assert stored[1].event == "Home" and stored[1].user_id is None


def test_empty_log_and_empty_append(log: EventLog) -> None:
    assert (log.last_offset(), log.count(), log.read()) == (0, 0, [])
    assert log.append([]) == AppendResult(appended=0, duplicates=0, conflicts=0)
    assert log.read_member({"u1"}, {"a1"}) == []
    assert log.delete_member({"u1"}, {"a1"}) == 0


def test_offsets_increase_and_paging_reads_everything_once(log: EventLog) -> None:
    ids = [f"m-{n}" for n in range(23)]
    for start in range(0, 23, 7):
        log.append([make_event(i) for i in ids[start : start + 7]])
    paged = read_all(log, page=4)
    assert [e.message_id for e in paged] == ids
    offsets = [e.offset for e in paged]
    assert offsets == sorted(set(offsets)) and offsets[0] > 0
    assert log.last_offset() == offsets[-1]
    assert [e.message_id for e in log.read(after=offsets[9], limit=3)] == ids[10:13]
    assert log.read(after=offsets[-1]) == []


def test_read_rejects_a_limit_below_one(log: EventLog) -> None:
    with pytest.raises(InvalidInput) as caught:
        log.read(0, 0)
    assert caught.value.field == "limit"


def test_duplicates_across_and_within_batches(log: EventLog) -> None:
    first = [make_event("m-1"), make_event("m-2"), make_event("m-1")]
    assert log.append(first) == AppendResult(appended=2, duplicates=1, conflicts=0)
    again = [make_event("m-2"), make_event("m-3"), make_event("m-3"), make_event("m-1")]
    assert log.append(again) == AppendResult(appended=1, duplicates=3, conflicts=0)
    assert [e.message_id for e in read_all(log)] == ["m-1", "m-2", "m-3"]
    assert log.count() == 3


def test_a_conflict_keeps_the_first_version_and_is_counted(log: EventLog) -> None:
    original = make_event("m-1", total=10.0)
    changed = make_event("m-1", total=99.0)
    assert original.payload_hash != changed.payload_hash
    assert log.append([original, changed]) == AppendResult(appended=1, duplicates=1, conflicts=1)
    assert log.append([changed, original]) == AppendResult(appended=0, duplicates=2, conflicts=1)
    assert [e.body for e in log.read()] == [original.body]


def test_read_member_by_user_id_and_anonymous_id_in_offset_order(log: EventLog) -> None:
    log.append([make_event("m-1", None, "a1"), make_event("m-2", "u2", None)])
    log.append([make_event("m-3", "u1", "a1"), make_event("m-4", "u1", None)])
    log.append([make_event("m-5", "u2", "a2"), make_event("m-6", None, "a1")])

    def ids(events: list[StoredEvent]) -> list[str]:
        assert [e.offset for e in events] == sorted(e.offset for e in events)
        return [e.message_id for e in events]

    assert ids(log.read_member({"u1"}, set())) == ["m-3", "m-4"]
    assert ids(log.read_member(set(), {"a1"})) == ["m-1", "m-3", "m-6"]
    assert ids(log.read_member({"u1"}, {"a1"})) == ["m-1", "m-3", "m-4", "m-6"]
    assert ids(log.read_member({"u2", "u9"}, {"a2"})) == ["m-2", "m-5"]
    assert log.read_member({"nobody"}, {"none"}) == []


def test_read_members_reads_each_pair_as_read_member_does(log: EventLog) -> None:
    log.append([make_event("m-1", None, "a1"), make_event("m-2", "u2", None)])
    log.append([make_event("m-3", "u1", "a1"), make_event("m-4", "u1", None)])
    log.append([make_event("m-5", "u2", "a2"), make_event("m-6", None, "a1")])
    pairs: list[tuple[set[str], set[str]]] = [
        ({"u1"}, set()),
        (set(), {"a1"}),  # shares m-3 with the pair before
        ({"nobody"}, {"none"}),
        (set(), set()),
        ({"u2", "u9"}, {"a2"}),
        ({"u1"}, set()),  # the same member twice
    ]
    read = log.read_members(pairs)
    assert read == [log.read_member(*pair) for pair in pairs]
    assert [[e.message_id for e in events] for events in read] == [
        ["m-3", "m-4"], ["m-1", "m-3", "m-6"], [], [], ["m-2", "m-5"], ["m-3", "m-4"]
    ]
    assert log.read_members([]) == []
    assert log.read_members([(set(), set())]) == [[]]


def test_known_names_the_stored_ids_among_those_asked_also_when_another_writer_stored_them(open_log: OpenLog) -> None:
    ours, theirs = open_log(), open_log()
    assert ours.known(["m-1"]) == set()
    ours.append([make_event("m-1"), make_event("m-2")])
    assert ours.known(["m-1", "m-3"]) == {"m-1"}
    theirs.append([make_event("m-3"), make_event("m-1")])  # stored by another writer since ours appended
    assert ours.known(["m-1", "m-2", "m-3", "m-4"]) == {"m-1", "m-2", "m-3"}
    assert ours.known([]) == set()


def test_reads_of_members_through_an_offset_stop_there(log: EventLog) -> None:
    log.append([make_event("m-1", None, "a1"), make_event("m-2", "u1", "a1")])
    log.append([make_event("m-3", "u1", None), make_event("m-4", None, "a1")])
    first, second, third, fourth = (e.offset for e in log.read())
    assert [e.message_id for e in log.read_member({"u1"}, {"a1"}, through=second)] == ["m-1", "m-2"]
    assert [e.message_id for e in log.read_member({"u1"}, {"a1"}, through=third)] == ["m-1", "m-2", "m-3"]
    assert log.read_member({"u1"}, {"a1"}, through=first - 1) == []
    pairs: list[tuple[set[str], set[str]]] = [({"u1"}, set()), (set(), {"a1"})]
    assert [[e.message_id for e in events] for events in log.read_members(pairs, through=third)] == [
        ["m-2", "m-3"], ["m-1", "m-2"]
    ]
    assert log.read_members(pairs, through=fourth) == log.read_members(pairs)


def test_delete_member_removes_exactly_its_events(log: EventLog) -> None:
    log.append([make_event(f"m-{n}", f"u{n % 3}", f"a{n % 5}") for n in range(30)])
    before = {e.message_id: e for e in read_all(log)}
    last = log.last_offset()
    doomed = {i for i, e in before.items() if e.user_id == "u1" or e.anonymous_id == "a2"}
    assert log.delete_member({"u1"}, {"a2"}) == len(doomed)
    remaining = read_all(log)
    assert {e.message_id for e in remaining} == set(before) - doomed
    assert all(before[e.message_id] == e for e in remaining)
    assert log.count() == 30 - len(doomed)
    assert log.read_member({"u1"}, {"a2"}) == []
    assert log.delete_member({"u1"}, {"a2"}) == 0
    # Offsets are never reused, even after the newest events were deleted.
    log.delete_member({"u0", "u2"}, set())
    log.append([make_event("m-new")])
    assert log.read()[-1].offset > last
    # Erasure forgets the ids too: keeping a person out is the suppression list's job.
    assert log.append([make_event("m-1", "u1", "a1")]).appended == 1


def test_count_last_offset_and_size(log: EventLog) -> None:
    empty_size = log.size_bytes()
    noise = random.Random(7)  # incompressible padding, so that no engine can shrink it
    pads = [noise.randbytes(1_000).hex() for _ in range(200)]
    log.append([make_event(f"m-{n}", properties={"pad": pad}) for n, pad in enumerate(pads)])
    assert log.count() == 200
    assert log.last_offset() == read_all(log)[-1].offset
    assert log.size_bytes() >= empty_size + 200 * 2_000


def test_reopening_keeps_everything_and_continues_offsets(open_log: OpenLog) -> None:
    first = open_log()
    first.append([make_event(f"m-{n}") for n in range(10)])
    stored = read_all(first)
    first.close()
    reopened = open_log()
    assert read_all(reopened) == stored
    assert reopened.count() == 10
    result = reopened.append([make_event("m-3"), make_event("m-10")])
    assert result == AppendResult(appended=1, duplicates=1, conflicts=0)
    assert reopened.read(after=stored[-1].offset)[0].message_id == "m-10"


def test_concurrent_appends_of_one_batch_store_each_event_once(open_log: OpenLog) -> None:
    batch = [make_event(f"m-{n}", f"u{n % 7}") for n in range(500)]
    logs = [open_log() for _ in range(4)]
    results: list[AppendResult] = []
    start = threading.Barrier(len(logs) * 2)

    def worker(log: EventLog) -> None:
        start.wait()
        for chunk in (batch[:300], batch[200:]):
            results.append(log.append(chunk))

    threads = [threading.Thread(target=worker, args=(log,)) for log in logs for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.appended for r in results) == 500
    assert sum(r.appended + r.duplicates for r in results) == 8 * 600
    assert sum(r.conflicts for r in results) == 0
    assert logs[0].count() == 500
    assert sorted(e.message_id for e in read_all(logs[1])) == sorted(e.message_id for e in batch)


def _open_together(logs: list[SqliteEventLog]) -> list[StorageUnavailable]:
    """Open every log at once, each in a thread of its own; the failures."""
    together = threading.Barrier(len(logs))
    failures: list[StorageUnavailable] = []

    def open_it(log: SqliteEventLog) -> None:
        together.wait()
        try:
            log.count()
        except StorageUnavailable as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_it, args=(log,)) for log in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_sqlite_logs_opening_one_new_file_together_all_open(tmp_path: Path) -> None:
    # Switching a new file to WAL could fail at once with "database is locked" while another
    # connection opened it (4 trials of 60 failed so): the switch is retried like any busy lock.
    for trial in range(40):
        logs = [SqliteEventLog(tmp_path / f"events-{trial}.db") for _ in range(8)]
        failures = _open_together(logs)
        for log in logs:
            log.close()
        assert failures == [], f"trial {trial}: {failures[0]}"


def test_sqlite_erasure_leaves_no_bytes_in_the_file_or_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = SqliteEventLog(path)
    marker = "erase-me-7f3a9c"
    crowd = [make_event(f"c-{n}", f"u{n % 50}", properties={"n": n}) for n in range(3_000)]
    doomed = [
        make_event(f"{marker}-1", f"{marker}-user", None, properties={"note": marker}),
        make_event(f"m-{marker}", None, f"{marker}-anon", properties={"big": marker * 2_000}),
    ]
    log.append(crowd[:1_500])
    log.append(doomed)
    log.append(crowd[1_500:])

    def files_with_marker() -> list[str]:
        files = [path, path.with_name(path.name + "-wal")]
        return [f.name for f in files if f.exists() and marker.encode() in f.read_bytes()]

    assert files_with_marker()  # the scan below could find the marker if it were left
    assert log.delete_member({f"{marker}-user"}, {f"{marker}-anon"}) == 2
    assert files_with_marker() == []
    assert log.count() == 3_000
    log.close()


examples = itertools.count()


def test_sqlite_fingerprint_collisions_cost_lookups_not_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def colliding(message_ids: Iterable[str]) -> np.ndarray:
        return np.zeros(len(list(message_ids)), dtype="<u8")

    monkeypatch.setattr(sqlite_log, "_message_keys", colliding)
    log = SqliteEventLog(tmp_path / "events.db")
    assert log.append([make_event(f"m-{n}") for n in range(50)]).appended == 50
    repeat = [make_event("m-7"), make_event("m-50"), make_event("m-8", total=1.0)]
    assert log.append(repeat) == AppendResult(appended=1, duplicates=2, conflicts=1)
    log.close()
    assert SqliteEventLog(tmp_path / "events.db").count() == 51


def test_sqlite_member_fingerprint_collisions_cost_rows_not_wrong_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def colliding(identifiers: Iterable[str | None]) -> np.ndarray:
        return np.array([0 if i is None else 1 for i in identifiers], dtype="<u4")

    monkeypatch.setattr(sqlite_log, "_member_keys", colliding)
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([make_event(f"m-{n}", f"u{n % 3}", f"a{n % 4}") for n in range(24)])
    pairs = [({"u0"}, set()), (set(), {"a1"}), ({"u9"}, {"a9"})]
    read = [[e.message_id for e in events] for events in log.read_members(pairs)]
    assert read == [[f"m-{n}" for n in range(0, 24, 3)], [f"m-{n}" for n in range(1, 24, 4)], []]
    assert [e.message_id for e in log.read_member({"u0"}, set())] == read[0]
    log.close()


def test_sqlite_refuses_a_file_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageUnavailable, match="schema version 99"):
        SqliteEventLog(path).count()


batches_of_ids = st.lists(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2)), max_size=12), min_size=1, max_size=6
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=batches_of_ids)
def test_any_sequence_of_batches_keeps_the_first_version_of_each_id(
    log: EventLog, batches: list[list[tuple[int, int]]]
) -> None:
    # Examples share the log, so each uses its own ids and looks only past its start.
    prefix = f"x{next(examples)}"
    start_count, start_offset = log.count(), log.last_offset()
    first_version: dict[int, int] = {}
    expected_conflicts = 0
    conflicts = 0
    for batch in batches:
        events = [make_event(f"{prefix}-{i}", total=float(v)) for i, v in batch]
        conflicts += log.append(events).conflicts
        for i, version in batch:
            expected_conflicts += first_version.setdefault(i, version) != version
    assert log.count() - start_count == len(first_version)
    stored = read_all(log, after=start_offset, page=5)
    assert [e.body for e in stored] == [
        make_event(f"{prefix}-{i}", total=float(v)).body for i, v in first_version.items()
    ]
    assert conflicts == expected_conflicts


ids_of_events = st.lists(
    st.tuples(st.none() | st.integers(0, 5), st.none() | st.integers(0, 5)).filter(lambda ids: ids != (None, None)),
    min_size=1,
    max_size=20,
)
ids_of_members = st.lists(
    st.tuples(st.frozensets(st.integers(0, 6), max_size=3), st.frozensets(st.integers(0, 6), max_size=3)),
    max_size=6,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=ids_of_events, members=ids_of_members)
def test_read_members_reads_each_members_events_and_only_those(
    log: EventLog, events: list[tuple[int | None, int | None]], members: list[tuple[frozenset[int], frozenset[int]]]
) -> None:
    # Examples share the log, so each uses its own ids and looks only past its start.
    prefix = f"x{next(examples)}"
    start_offset = log.last_offset()

    def user(n: int | None) -> str | None:
        return None if n is None else f"{prefix}-u{n}"

    def anonymous(n: int | None) -> str | None:
        return None if n is None else f"{prefix}-a{n}"

    log.append([make_event(f"{prefix}-m{i}", user(u), anonymous(a)) for i, (u, a) in enumerate(events)])
    stored = read_all(log, after=start_offset)
    pairs = [({f"{prefix}-u{n}" for n in users}, {f"{prefix}-a{n}" for n in anonymous_ids})
             for users, anonymous_ids in members]
    expected = [[e for e in stored if e.user_id in user_ids or e.anonymous_id in anonymous_ids]
                for user_ids, anonymous_ids in pairs]
    assert log.read_members(pairs) == expected
    assert [log.read_member(*pair) for pair in pairs] == expected
