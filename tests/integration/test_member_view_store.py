"""The member view over the embedded profile store: the encoded profiles and the identifier index
stay in the store, only ids and an LRU are in memory, and readers see what a dict-backed view
showed (the newest published profile, and an absorbed member readable once its identifiers moved)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.base import Changes
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.core.events import Event, normalise, parse_time
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.services.processor import MemberView, Processor, StoredProfiles
from loyalty_cdp.simulator.generator import simulate

_decode = msgspec.msgpack.Decoder(Profile).decode


def event(n: int, **call: Any) -> Event:
    call.setdefault("timestamp", f"2026-05-01T09:{n // 60:02d}:{n % 60:02d}Z")
    call.setdefault("context", {"channel": "web"})
    return normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "timestamp"),
                     default_message_id=f"m-{n}")


def simulated(members: int, days: int) -> list[Event]:
    return [normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "timestamp"),
                      default_message_id=f"gen-{n}") for n, c in enumerate(simulate(members, days, 3))]


def test_the_view_reads_the_store_and_keeps_only_a_bounded_cache(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append(simulated(30, 30))
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, batch_size=400)
    processor.catch_up()
    profiles = processor.view.profiles
    assert isinstance(profiles, StoredProfiles)
    committed = dict(store.iter_profiles())
    assert set(profiles) == set(committed) and len(processor.view) == len(committed) > 20
    assert dict(profiles.items()) == committed and sorted(profiles.values()) == sorted(committed.values())
    profiles.cache_size = 5
    for member_id in committed:
        assert profiles[member_id] == committed[member_id]
    assert len(profiles._cache) == 5  # the latest five read
    assert profiles.get("nobody") is None and "nobody" not in profiles
    # A restarted processor resumes with the same view.
    again = Processor(log, store)
    assert dict(again.view.profiles.items()) == committed
    assert processor.view.owner is None and again.view.owner is None  # the index is the store's
    for member in store.load().members:
        for kind, values in member.identities.items():
            assert all(again.view.find(kind, value) == member.id for value in values)
    store.close()
    log.close()


def test_a_cached_profile_is_replaced_when_the_member_changes(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([event(0, type="identify", userId="u-1", traits={"first_name": "Ann"})])
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store)
    processor.catch_up()
    first = processor.view.profile("u-1")
    assert first is not None and first.traits["first_name"].value == "Ann"  # now cached
    log.append([event(1, type="identify", userId="u-1", traits={"first_name": "Anne"})])
    processor.catch_up()
    changed = processor.view.profile("u-1")
    assert changed is not None and changed.traits["first_name"].value == "Anne"
    store.close()
    log.close()


class WatchedStore(SqliteProfileStore):
    """Checks, the instant a commit has removed profiles, that the view answers for them and for
    the member that absorbed them: a reader who found either id reads a profile."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.view: MemberView | None = None
        self.checked: list[str] = []

    def commit(self, changes: Changes) -> None:
        super().commit(changes)
        if self.view is None:
            return
        for old_id in changes.removed_profiles:
            assert self.read_profile(old_id) is None  # gone from the store...
            assert self.view.profile(old_id) is not None  # ...still readable by who found it before...
            new_id = self.view.find("anonymous_id", "a-1")
            assert new_id == changes.renamed[old_id]  # ...while the index finds the new member...
            assert self.view.profile(new_id) is not None  # ...readable before the view published it
            self.checked.append(old_id)


def test_a_member_absorbed_by_a_merge_stays_readable_until_its_identifiers_move(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([event(0, type="page", anonymousId="a-1", name="Home")])
    store = WatchedStore(tmp_path / "profiles.db")
    processor = Processor(log, store)
    processor.catch_up()
    assert processor.view.find("anonymous_id", "a-1") == "anon:a-1"
    assert isinstance(processor.view.profiles, StoredProfiles)
    processor.view.profiles.cache_size = 0  # nothing cached: only the hold keeps it readable
    store.view = processor.view
    log.append([event(1, type="identify", anonymousId="a-1", userId="u-1")])
    processor.catch_up()
    assert store.checked == ["anon:a-1"]
    assert processor.view.find("anonymous_id", "a-1") == "u-1"
    assert processor.view.profile("anon:a-1") is None and "anon:a-1" not in processor.view.profiles
    assert processor.view.profiles._held == {}
    store.close()
    log.close()


def test_a_store_without_single_reads_keeps_every_profile_in_the_view() -> None:
    assert MemberView("US", object()).profiles == {}
    assert MemberView("US").profiles == {}
