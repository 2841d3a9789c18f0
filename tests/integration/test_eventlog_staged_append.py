"""SqliteEventLog.stage: an append inserted now and committed later, possibly from another thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from loyalty_cdp.adapters.eventlog.base import AppendResult
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.core.events import Event, normalise
from loyalty_cdp.errors import StorageUnavailable

RECEIVED_AT = 1_767_323_046_000  # 2026-01-02T03:04:06Z


def event(message_id: str, total: float = 10.0) -> Event:
    call: dict[str, Any] = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": message_id,
                            "properties": {"order_id": message_id, "total": total}}
    return normalise(call, call_type=None, received_at=RECEIVED_AT, default_message_id="unused")


def test_a_staged_append_is_invisible_until_committed_from_another_thread(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    staged = log.stage([event("m1"), event("m2")])
    assert log.read() == [] and log.count() == 0  # readers see nothing before the commit
    results: list[AppendResult] = []
    committer = threading.Thread(target=lambda: results.append(staged.commit()))
    committer.start()
    committer.join()
    assert results == [AppendResult(appended=2, duplicates=0, conflicts=0)]
    assert [e.message_id for e in log.read()] == ["m1", "m2"]
    log.close()


def test_the_next_append_waits_for_the_commit_and_is_deduplicated_against_it(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    staged = log.stage([event("m1")])
    second: list[AppendResult] = []
    appender = threading.Thread(target=lambda: second.append(log.append([event("m1"), event("m3")])))
    appender.start()
    appender.join(0.3)
    assert appender.is_alive() and not second  # blocked on the write lock the staged append holds
    staged.commit()
    appender.join(10)
    assert second == [AppendResult(appended=1, duplicates=1, conflicts=0)]
    assert [(e.offset, e.message_id) for e in log.read()] == [(1, "m1"), (2, "m3")]
    log.close()


def test_a_failed_commit_rolls_back_and_leaves_the_log_usable(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([event("m0")])
    staged = log.stage([event("m1"), event("m2")])
    # Break the transaction under the staged append: its COMMIT then fails.
    writer = log._writer
    assert writer is not None
    writer.execute("ROLLBACK")
    with pytest.raises(StorageUnavailable):
        staged.commit()
    # Nothing of it was stored or indexed: the same ids append as new, at the next offsets.
    assert log.append([event("m1"), event("m2")]) == AppendResult(appended=2, duplicates=0, conflicts=0)
    assert [(e.offset, e.message_id) for e in log.read()] == [(1, "m0"), (2, "m1"), (3, "m2")]
    log.close()


def test_a_failed_stage_releases_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([event("m0")])

    def broken_insert(*_: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteEventLog, "_insert", staticmethod(broken_insert))
    with pytest.raises(StorageUnavailable, match="disk I/O error"):
        log.stage([event("m1")])
    monkeypatch.undo()
    assert log.append([event("m1")]) == AppendResult(appended=1, duplicates=0, conflicts=0)  # not deadlocked
    assert [e.message_id for e in log.read()] == ["m0", "m1"]
    log.close()


def test_a_new_log_has_16_kib_pages_and_multi_row_inserts_keep_order(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    events = [event(f"m{i}", total=float(i)) for i in range(64 * 3 + 5)]  # whole statements and a remainder
    assert log.append(events).appended == len(events)
    stored = log.read()
    assert [e.message_id for e in stored] == [e.message_id for e in events]
    assert [e.body for e in stored] == [e.body for e in events]
    assert [e.offset for e in stored] == list(range(1, len(events) + 1))
    log.close()
    conn = sqlite3.connect(tmp_path / "events.db")
    try:
        assert conn.execute("PRAGMA page_size").fetchone() == (16384,)
    finally:
        conn.close()
