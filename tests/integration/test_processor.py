"""The processor over real SQLite files: incremental equals replay, crashes lose nothing, merges follow."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.base import Changes
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.core.events import Event, normalise, parse_time
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.services.processor import Processor
from loyalty_cdp.simulator.generator import simulate

_decode = msgspec.msgpack.Decoder(Profile).decode


def simulated_events(members: int, days: int, seed: int) -> list[Event]:
    return [
        normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "timestamp"),
                  default_message_id=f"gen-{n}")
        for n, call in enumerate(simulate(members, days, seed))
    ]


def profiles(store: SqliteProfileStore) -> dict[str, Profile]:
    return {member_id: _decode(blob) for member_id, blob in store.iter_profiles()}


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return simulated_events(60, 90, seed=11)


def test_incremental_processing_equals_full_replay(tmp_path: Path, events: list[Event]) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    incremental_store = SqliteProfileStore(tmp_path / "incremental.db")
    processor = Processor(log, incremental_store, batch_size=97)
    rng = random.Random(3)
    position = 0
    while position < len(events):  # appends and processing interleaved, in uneven slices
        size = rng.randint(1, 400)
        log.append(events[position:position + size])
        position += size
        if rng.random() < 0.5:
            processor.step()
    processor.catch_up()

    replay_store = SqliteProfileStore(tmp_path / "replay.db")
    Processor(log, replay_store, batch_size=50_000).catch_up()
    incremental, replayed = profiles(incremental_store), profiles(replay_store)
    assert len(incremental) > 60
    assert incremental == replayed
    assert incremental_store.load().offset == replay_store.load().offset == log.last_offset()


class CrashingStore(SqliteProfileStore):
    """A store whose commit dies once, as a process killed mid-batch would."""

    def __init__(self, path: Path, crash_on: int) -> None:
        super().__init__(path)
        self.commits = 0
        self.crash_on = crash_on

    def commit(self, changes: Changes) -> None:
        self.commits += 1
        if self.commits == self.crash_on:
            raise RuntimeError("killed mid-batch")
        super().commit(changes)


def test_a_crash_mid_batch_neither_skips_nor_repeats_a_batch(tmp_path: Path, events: list[Event]) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append(events)
    crashing = CrashingStore(tmp_path / "crash.db", crash_on=5)
    processor = Processor(log, crashing, batch_size=500)
    with pytest.raises(RuntimeError):
        processor.catch_up()
    crashing.close()
    # A new process: state and offset come from the last commit, so the batch is redone once.
    resumed = SqliteProfileStore(tmp_path / "crash.db")
    assert resumed.load().offset == 4 * 500  # offsets start at 1 and are contiguous
    Processor(log, resumed, batch_size=500).catch_up()
    clean = SqliteProfileStore(tmp_path / "clean.db")
    Processor(log, clean, batch_size=500).catch_up()
    assert profiles(resumed) == profiles(clean)


def test_anonymous_history_follows_the_member_and_history_records_the_merge(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, batch_size=10)
    at = parse_time("2026-03-01T10:00:00Z", "t")

    def call(n: int, **fields: object) -> Event:
        return normalise({"messageId": f"m{n}", "timestamp": "2026-03-01T10:00:00Z", **fields},
                         call_type=None, received_at=at + n, default_message_id="")

    log.append([call(1, type="page", anonymousId="a-1", name="Dog Food", properties={"category": "Pet Food"})])
    processor.catch_up()
    assert processor.view.find("anonymous_id", "a-1") == "anon:a-1"
    log.append([call(2, type="identify", anonymousId="a-1", userId="u-1", traits={"email": "U1@Example.com"})])
    processor.catch_up()
    assert processor.view.find("anonymous_id", "a-1") == "u-1"
    assert processor.view.find("email", "u1@example.com") == "u-1"
    assert processor.view.profile("anon:a-1") is None
    profile = processor.view.profile("u-1")
    assert profile is not None and profile.activity.events == 2
    actions = [(r.action, r.kind) for r in store.history("u-1")]
    assert ("merge", "anonymous_id") in actions and ("link", "email") in actions
