"""The segment registry over a real decision store file: the segments in force, API definitions that survive a
restart, batch recomputation agreeing member by member with the real-time path, deletion, previews."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from loyalty_cdp.adapters.decisionstore import DecisionStore
from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox
from loyalty_cdp.adapters.program_yaml import load_program_source
from loyalty_cdp.core.decisioning import DecisioningBook
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.identity import Member
from loyalty_cdp.core.profile import DAY_MS, Profile, fold
from loyalty_cdp.core.segments import holds, update_memberships
from loyalty_cdp.errors import Conflict, InvalidInput, NotFound
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.segments import SegmentRegistry

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW = T0 + 200 * DAY_MS
BIG_SPENDERS = {"id": "big-spenders", "name": "Big spenders",
                "when": {"field": "signals.monetary.total_spend", "gte": 300}}



def decoded_profiles(profiles: dict[str, bytes]) -> Iterator[Profile]:
    """The profiles of a member view's encoded profiles, decoded one by one (as ``MemberView.all_profiles``)."""
    return (msgspec.msgpack.decode(blob, type=Profile) for blob in profiles.values())

def order(member: int, n: int, at: int, total: float, category: str) -> DecodedEvent:
    properties = {"order_id": f"o-{member}-{n}", "total": total,
                  "products": [{"product_id": f"p-{category}", "category": category, "price": total, "quantity": 1}]}
    return DecodedEvent(f"o-{member}-{n}", "track", "Order Completed", f"u{member}", None, at, "pos",
                        properties=properties)


def member_profile(member: int) -> Profile:
    """Member ``m``: ``m % 7`` orders of ``40 + 10 * (m % 5)`` each, Coffee or Pet Food, the last ``m`` days before NOW."""
    orders = member % 7
    category = "Pet Food" if member % 3 == 0 else "Coffee"
    events = [order(member, n, NOW - (member + 5 * n) * DAY_MS, 40.0 + 10 * (member % 5), category)
              for n in range(orders)]
    events.append(DecodedEvent(f"id-{member}", "identify", None, f"u{member}", None, T0, "web",
                               traits={"first_name": f"M{member}"}))
    user = f"u{member}"
    return fold(None, events, Member(id=user, identities={"user_id": [user]}))


@pytest.fixture()
def profiles() -> dict[str, bytes]:
    encode = msgspec.msgpack.Encoder().encode
    return {f"u{m}": encode(member_profile(m)) for m in range(80)}


@pytest.fixture()
def parts(tmp_path: Path) -> Iterator[tuple[DecisioningBook, Any, DecisionStore]]:
    source = load_program_source(retail_program_path())
    outbox = Outbox(tmp_path / OUTBOX_FILE)
    store = DecisionStore(outbox)
    try:
        yield DecisioningBook.from_book(source.book), source.book, store
    finally:
        store.close()
        outbox.close()


def members_of(registry: SegmentRegistry, profiles: Any, at: int, segment_id: str = "big-spenders") -> set[str]:
    """The members the per-member evaluation puts in the segment (the reference for the batch path)."""
    condition = registry.current(at).by_id[segment_id].condition
    return {p.member_id for p in profiles if holds(condition, registry.facts(p, at))}


def registry_of(parts: tuple[DecisioningBook, Any, DecisionStore], clock: int = NOW) -> SegmentRegistry:
    book, program, store = parts
    return SegmentRegistry(book, store, program=program, clock=lambda: clock)


def test_the_segments_in_force_are_the_programs_then_the_apis_cached_until_a_definition_changes(parts) -> None:
    registry = registry_of(parts)
    program_ids = [d.id for d in parts[0].at(NOW).segments.definitions]
    first = registry.current(NOW)
    assert [d.id for d in first.definitions] == program_ids
    assert registry.current(NOW) is first  # cached
    info, created = registry.define(BIG_SPENDERS)
    assert created and info.source == "api" and info.created_at == NOW
    second = registry.current(NOW)
    assert second is not first and [d.id for d in second.definitions] == [*program_ids, "big-spenders"]
    assert registry.current(NOW) is second
    sources = {i.definition.id: i.source for i in registry.segments(NOW)}
    assert sources["big-spenders"] == "api" and sources[program_ids[0]] == "program"
    # a new registry on the same file (a restart) finds the API segment
    again = registry_of(parts, NOW + 1)
    assert again.get("big-spenders", NOW).definition.when == BIG_SPENDERS["when"]
    _, created = again.define({**BIG_SPENDERS, "when": {"field": "signals.monetary.total_spend", "gte": 100}})
    assert not created
    replaced = registry_of(parts).get("big-spenders", NOW)
    assert replaced.definition.when["gte"] == 100 and replaced.created_at == NOW and replaced.updated_at == NOW + 1


def test_definitions_are_checked_and_program_ids_are_refused(parts) -> None:
    registry = registry_of(parts)
    with pytest.raises(InvalidInput) as bad:
        registry.define({"id": "x", "when": {"all": [{"field": "signals.purchase.order", "gte": 1}]}})
    assert bad.value.field == "body.when.all[0].field" and "did you mean 'orders'" in bad.value.reason
    with pytest.raises(InvalidInput) as days:
        registry.define({"id": "x", "when": {"count": {"event": "Order Completed", "days": 9999}, "gte": 1}})
    assert days.value.field == "body.when.count.days"
    with pytest.raises(InvalidInput) as segments:
        registry.define({"id": "x", "when": {"field": "segments", "contains": "at-risk"}})
    assert segments.value.field == "body.when.field"
    with pytest.raises(InvalidInput) as loyalty:
        registry.define({"id": "x", "when": {"field": "loyalty.tierr", "eq": "Gold"}})
    assert loyalty.value.field == "body.when.field"
    with pytest.raises(Conflict) as clash:
        registry.define({"id": "at-risk", "when": {"field": "signals.purchase.orders", "gte": 1}})
    assert clash.value.details == {"field": "body.id"}
    assert [d.id for d in registry.current(NOW).definitions] == [d.id for d in parts[0].at(NOW).segments.definitions]


def test_batch_recomputation_matches_the_real_time_path_and_moves_the_stored_memberships(parts, profiles) -> None:
    registry = registry_of(parts)
    store = parts[2]
    registry.define(BIG_SPENDERS)
    segments = registry.current(NOW)
    decoded = list(decoded_profiles(profiles))
    expected = members_of(registry, decoded, NOW)
    # the real-time path (what the processor's stage runs per member) agrees with the batch verdicts
    realtime = {p.member_id for p in decoded
                if "big-spenders" in update_memberships(segments, registry.facts(p, NOW)).entered}
    assert realtime == expected and 5 < len(expected) < 75

    result = registry.recompute("big-spenders", decoded_profiles(profiles), NOW)
    assert result.evaluated == 80 and result.size == len(expected) == result.entered and result.exited == 0
    assert set(store.segment_member_ids("big-spenders")) == expected
    assert {t.entry for t in result.transitions} == {1}
    assert registry.recompute("big-spenders", decoded_profiles(profiles), NOW + 1).transitions == []

    # edit the definition: the threshold moves up, some members exit; back down, they re-enter as entry 2
    registry.define({**BIG_SPENDERS, "when": {"field": "signals.monetary.total_spend", "gte": 400}})
    higher = members_of(registry, decoded, NOW + 2)
    edited = registry.recompute("big-spenders", decoded_profiles(profiles), NOW + 2)
    assert set(store.segment_member_ids("big-spenders")) == higher
    assert {t.member_id for t in edited.transitions if t.kind == "exited"} == expected - higher
    registry.define(BIG_SPENDERS)
    back = registry.recompute("big-spenders", decoded_profiles(profiles), NOW + 3)
    assert {(t.member_id, t.entry) for t in back.transitions} == {(m, 2) for m in expected - higher}
    history = store.segment_size_history("big-spenders", DAY_MS)
    assert sum(entered - exited for _, entered, exited in history) == len(expected)

    # a member that left the profiles (erased, merged away) exits; a profile's own entry count is continued
    fewer = dict(profiles)
    gone = sorted(expected)[0]
    del fewer[gone]
    kept = sorted(expected - {gone})[0]
    profile = msgspec.msgpack.decode(fewer[kept], type=Profile)
    fewer[kept] = msgspec.msgpack.encode(msgspec.structs.replace(
        profile, segments={"big-spenders": {"member": False, "since": NOW, "entries": 7}}))
    registry.define({**BIG_SPENDERS, "when": {"field": "signals.monetary.total_spend", "gte": 100000}})
    registry.recompute("big-spenders", decoded_profiles(fewer), NOW + 4)
    registry.define(BIG_SPENDERS)
    final = registry.recompute("big-spenders", decoded_profiles(fewer), NOW + 5)
    assert gone not in store.segment_member_ids("big-spenders")
    assert {t.member_id: t.entry for t in final.transitions}[kept] == 8


def test_deleting_an_api_segment_ends_every_membership(parts, profiles) -> None:
    registry = registry_of(parts)
    store = parts[2]
    registry.define(BIG_SPENDERS)
    size = registry.recompute("big-spenders", decoded_profiles(profiles), NOW).size
    exits = registry.delete("big-spenders")
    assert len(exits) == size and {t.kind for t in exits} == {"exited"} and {t.entry for t in exits} == {1}
    assert store.segment_member_ids("big-spenders") == {}
    assert "big-spenders" not in registry.current(NOW).by_id
    with pytest.raises(NotFound):
        registry.delete("big-spenders")
    with pytest.raises(NotFound):
        registry.get("big-spenders", NOW)
    with pytest.raises(Conflict):
        registry.delete("at-risk")
    assert "big-spenders" not in registry_of(parts).current(NOW).by_id  # gone from the file too


def test_previews_estimate_drafts_from_a_stable_sample_and_name_unkept_counts(parts, profiles) -> None:
    registry = registry_of(parts)
    draft = {"when": {"field": "signals.monetary.total_spend", "gte": 300}}
    registry.define(BIG_SPENDERS)
    true_size = len(members_of(registry, decoded_profiles(profiles), NOW))
    exact = registry.preview(draft, decoded_profiles(profiles), len(profiles), NOW)
    assert exact.estimate.exact and exact.estimate.estimate == true_size and exact.unkept_counts == []
    sampled = registry.preview(draft, decoded_profiles(profiles), len(profiles), NOW, sample=40)
    assert not sampled.estimate.exact and sampled.estimate.sampled < 80
    assert sampled.estimate.low <= true_size <= sampled.estimate.high
    assert registry.preview(draft, decoded_profiles(profiles), len(profiles), NOW, sample=40) == sampled  # stable
    counted = registry.preview({"when": {"count": {"event": "Order Completed", "category": "Coffee", "days": 90},
                                         "gte": 1}}, decoded_profiles(profiles), len(profiles), NOW)
    assert counted.unkept_counts == ["count(Order Completed|category=Coffee, 90d)"]
    # the program plans Pet Food orders over 180 days: kept; over a longer window: not
    planned = registry.preview({"when": {"count": {"event": "Order Completed", "category": "Pet Food", "days": 180},
                                         "gte": 3}}, decoded_profiles(profiles), len(profiles), NOW)
    assert planned.unkept_counts == []
    with pytest.raises(InvalidInput) as bad:
        registry.preview({"when": {"field": "signals.purchase.orders", "gte": "three"}}, decoded_profiles(profiles),
                         len(profiles), NOW)
    assert bad.value.field.startswith("body.when")
    with pytest.raises(InvalidInput) as empty:
        registry.preview(draft, iter(()), 0, NOW)
    assert empty.value.field == "population"
