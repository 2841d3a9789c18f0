"""Processor start-up over a SQLite profile store: it walks the profiles in chunks, so its peak memory
does not grow with the members' encoded profiles, and it learns the same loyalty due times."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import msgspec

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.base import Changes
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.core.loyalty import LoyaltyEngine, encode
from loyalty_cdp.core.loyalty.state import new_state
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.loyalty_stage import STATE_KEY
from loyalty_cdp.services.processor import Processor

BLOB_BYTES = 8_000  # about what a year of a member's activity encodes to (mostly the folded message ids)


def _store(path: Path, members: int) -> SqliteProfileStore:
    """A store of ``members`` profiles of about ``BLOB_BYTES`` each; every other member is enrolled,
    with its next transition due at a time of its own."""
    store = SqliteProfileStore(path)
    profiles: dict[str, bytes] = {}
    for n in range(members):
        member_id = f"m-{n:06d}"
        loyalty = {}
        if n % 2:
            state = new_state(member_id)
            state.due = 1_700_000_000_000 + n
            loyalty = {STATE_KEY: encode(state)}
        profile = Profile(member_id=member_id, user_id=f"u-{n}", seen=n.to_bytes(8, "little") * (BLOB_BYTES // 8),
                          loyalty=loyalty)
        profiles[member_id] = msgspec.msgpack.encode(profile)
    store.commit(Changes(offset=7, profiles=profiles))
    return store


def _start(tmp_path: Path, members: int) -> tuple[Processor, int]:
    """A processor started over a store of ``members`` members, and the peak memory its start took."""
    log = SqliteEventLog(tmp_path / f"events-{members}.db")
    store = _store(tmp_path / f"profiles-{members}.db", members)
    engine = LoyaltyEngine(load_program(retail_program_path()))
    tracemalloc.start()
    try:
        processor = Processor(log, store, loyalty=engine)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    store.close()
    log.close()
    return processor, peak


def test_start_up_peak_memory_does_not_grow_with_the_encoded_profiles(tmp_path: Path) -> None:
    # Both stores are larger than the chunks start-up reads at a time: the peak is a few chunks of profiles.
    _, small = _start(tmp_path, 2_000)
    _, large = _start(tmp_path, 6_000)
    # 4,000 more members are 32 MB of encoded profiles; start-up may hold their ids (and due times), not them.
    assert large - small < 4_000 * 1_000, (small, large)


def test_start_up_learns_every_member_and_every_due_time(tmp_path: Path) -> None:
    processor, _ = _start(tmp_path, 2_345)
    assert processor.offset == 7
    assert len(processor.view) == 2_345
    assert processor.loyalty is not None
    assert processor.loyalty.due == {f"m-{n:06d}": 1_700_000_000_000 + n for n in range(1, 2_345, 2)}
