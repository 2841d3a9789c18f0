"""Writer processes sharing one SqliteEventLog file: they take turns at the write lock, a waiting
writer sees what the other committed (deduplication holds across them), and a writer killed while
holding the lock does not block the others."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loyalty_cdp.adapters.eventlog.base import AppendResult
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.core.events import Event, normalise

RECEIVED_AT = 1_767_323_046_000  # 2026-01-02T03:04:06Z


def event(message_id: str) -> Event:
    call: dict[str, Any] = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": message_id,
                            "properties": {"order_id": message_id, "total": 10.0}}
    return normalise(call, call_type=None, received_at=RECEIVED_AT, default_message_id="unused")


def stage_then_wait(path: Path, message_ids: list[str], channel: Connection) -> None:
    """A writer process: stage an append (holding the write lock), say so, commit when told."""
    log = SqliteEventLog(path)
    staged = log.stage([event(m) for m in message_ids])
    channel.send("staged")
    if channel.recv() == "commit":
        staged.commit()
        channel.send("committed")
    log.close()


def start_staging_writer(path: Path, message_ids: list[str]) -> tuple[multiprocessing.Process, Connection]:
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=stage_then_wait, args=(path, message_ids, theirs))
    process.start()
    assert ours.poll(30) and ours.recv() == "staged"
    return process, ours


def append_in_thread(log: SqliteEventLog, message_ids: list[str]) -> tuple[threading.Thread, list[AppendResult]]:
    results: list[AppendResult] = []
    thread = threading.Thread(target=lambda: results.append(log.append([event(m) for m in message_ids])))
    thread.start()
    return thread, results


def test_an_append_waits_for_another_process_staged_append_and_is_deduplicated_against_it(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SqliteEventLog(path).close()  # the file exists before the two writers race to create it
    process, channel = start_staging_writer(path, ["m1", "m2"])
    log = SqliteEventLog(path)
    thread, results = append_in_thread(log, ["m2", "m3"])
    thread.join(0.3)
    assert thread.is_alive() and not results  # the other process holds the write lock
    channel.send("commit")
    assert channel.poll(30) and channel.recv() == "committed"
    thread.join(30)
    process.join(30)
    assert results == [AppendResult(appended=1, duplicates=1, conflicts=0)]
    assert [(e.offset, e.message_id) for e in log.read()] == [(1, "m1"), (2, "m2"), (3, "m3")]
    log.close()


def test_a_writer_killed_while_holding_the_write_lock_does_not_block_the_others(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SqliteEventLog(path).close()
    process, _ = start_staging_writer(path, ["m1", "m2"])
    log = SqliteEventLog(path)
    thread, results = append_in_thread(log, ["m1", "m3"])
    thread.join(0.3)
    assert thread.is_alive() and not results
    process.kill()
    process.join(30)
    thread.join(30)
    # The kernel released the dead writer's lock and SQLite rolled its transaction back.
    assert results == [AppendResult(appended=2, duplicates=0, conflicts=0)]
    assert [(e.offset, e.message_id) for e in log.read()] == [(1, "m1"), (2, "m3")]
    log.close()
