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
    # The identifier index the view reads holds every identifier of every member, as the graph placed it.
    for store in (incremental_store, replay_store):
        owners = {key: p.member_id for p in incremental.values() for kind, values in p.identities.items()
                  for key in (f"{kind}:{value}" for value in values)}
        assert {key: store.owner(key) for key in owners} == owners


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


BUDGET_PROGRAM = """
program: budget-test
version: 1
effective_from: 2025-01-01
currency: USD
earn:
  points_per_unit: 1
  rules:
    - id: launch-bonus
      type: order_bonus
      points: 100
      budget: {total_points: 250}
"""


def test_campaign_budgets_are_shared_across_members_and_survive_a_restart(tmp_path: Path) -> None:
    from loyalty_cdp.adapters.program_yaml import parse_program
    from loyalty_cdp.core.loyalty import LoyaltyEngine
    from loyalty_cdp.services.loyalty_stage import loyalty_state

    def book():  # type: ignore[no-untyped-def]
        return parse_program(BUDGET_PROGRAM, "budget.yaml").book

    def order(n: int) -> Event:
        return normalise({"type": "track", "userId": f"m{n}", "event": "Order Completed", "messageId": f"o{n}",
                          "timestamp": f"2026-03-0{n}T10:00:00Z",
                          "properties": {"order_id": f"o{n}", "total": 10.0, "products": []}},
                         call_type=None, received_at=0, default_message_id="")

    log = SqliteEventLog(tmp_path / "events.db")
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, loyalty=LoyaltyEngine(book()))
    log.append([order(1), order(2)])
    processor.catch_up()
    store.close()
    # A new process: the budget already spent (200 of 250) comes back from the store.
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, loyalty=LoyaltyEngine(book()))
    log.append([order(3), order(4)])
    processor.catch_up()
    lifetime = {}
    for n in range(1, 5):
        profile = processor.view.profile(f"m{n}")
        assert profile is not None
        state = loyalty_state(profile)
        assert state is not None
        lifetime[n] = state.lifetime_points
    assert lifetime == {1: 110, 2: 110, 3: 60, 4: 10}  # 10 base points each; the bonus stops at 250
