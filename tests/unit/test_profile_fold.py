"""The profile fold: order independence, idempotence, merges, windows and last-writer-wins."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.events import format_time, normalise
from loyalty_cdp.core.identifiers import DecodedEvent, decode_event
from loyalty_cdp.core.identity import IdentityGraph, Member
from loyalty_cdp.core.profile import (
    DAY_MS,
    DECAY_CAP,
    RECENT_SEARCHES,
    Decayed,
    Profile,
    fold,
    merge_profiles,
)
from loyalty_cdp.errors import Conflict, InvalidInput

T0 = 1_700_000_000_000
MEMBER = Member(id="u1", identities={"user_id": ["u1"], "email": ["ann@example.com"]})


def track(message_id: str, at: int, name: str, channel: str | None = "web", /,
          **properties: Any) -> DecodedEvent:
    return DecodedEvent(message_id, "track", name, "u1", None, at, channel,
                        properties=properties)


def identify(message_id: str, at: int, **traits: Any) -> DecodedEvent:
    return DecodedEvent(message_id, "identify", None, "u1", None, at, "web", traits=traits)


def canonical_order(events: list[DecodedEvent]) -> list[DecodedEvent]:
    return sorted(events, key=lambda e: (e.timestamp, e.message_id))


# --- a generator of realistic, overlapping event histories ------------------------------

CATEGORIES = ["Dog", "Cat", "Fish"]
BRANDS = ["Acme", "Bolt"]
PRODUCTS = ["p1", "p2", "p3"]
DAYS = st.integers(0, 900).map(lambda d: T0 + d * DAY_MS // 3)  # many equal timestamps


@st.composite
def any_event(draw: st.DrawFn) -> DecodedEvent:
    at = draw(DAYS)
    channel = draw(st.sampled_from(["web", "app", "pos", None]))
    kind = draw(st.integers(0, 12))
    line = st.fixed_dictionaries({
        "product_id": st.sampled_from(PRODUCTS),
        "category": st.sampled_from(CATEGORIES),
        "brand": st.sampled_from(BRANDS),
        "price": st.sampled_from([1, 2.5, 19.99, "3.10", None]),
        "quantity": st.sampled_from([1, 2, None]),
    })
    message_id = f"m{draw(st.integers(0, 10**9))}"
    if kind == 0:
        return identify(message_id, at, **draw(st.dictionaries(
            st.sampled_from(["name", "tier", "city"]), st.sampled_from(["a", "b", 1, None]))))
    properties: dict[str, Any]
    name, properties = {
        1: ("Order Completed", {
            "total": draw(st.sampled_from([10, 25.5, None, "bad"])),
            "products": draw(st.lists(line, max_size=3)),
            "discount": draw(st.sampled_from([0, 2, None])),
            "coupon": draw(st.sampled_from(["", "SAVE", None])),
        }),
        2: ("Order Refunded", {"total": draw(st.sampled_from([5, None]))}),
        3: ("Product Viewed", {"category": draw(st.sampled_from(CATEGORIES))}),
        4: ("Products Searched", {"query": draw(st.sampled_from([f"q{i}" for i in range(14)]))}),
        5: ("Product Added to Wishlist", {"product_id": draw(st.sampled_from(PRODUCTS)),
                                          "price": draw(st.sampled_from([5, 6]))}),
        6: ("Product Removed from Wishlist", {"product_id": draw(st.sampled_from(PRODUCTS))}),
        7: ("Email Opened", {}),
        8: ("Application Opened", {}),
        9: ("Product Reviewed", {"rating": draw(st.sampled_from([3, 5, None]))}),
        10: ("Points Earned", {"points": draw(st.sampled_from([10, 50]))}),
        11: ("Points Redeemed", {"points": draw(st.sampled_from([20, 40]))}),
        12: ("Email Delivered", {}),
    }[kind]
    return track(message_id, at, name, channel, **properties)


def unique(events: list[DecodedEvent]) -> list[DecodedEvent]:
    return list({e.message_id: e for e in events}.values())


def fold_in_batches(events: list[DecodedEvent], rng: random.Random) -> Profile:
    profile = None
    start = 0
    while start < len(events):
        size = rng.randint(1, 8)
        profile = fold(profile, events[start : start + size], MEMBER)
        start += size
    return profile or fold(None, [], MEMBER)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(any_event(), max_size=45), st.randoms(use_true_random=False))
def test_fold_is_order_independent_and_idempotent(
    events: list[DecodedEvent], rng: random.Random
) -> None:
    events = unique(events)
    expected = fold(None, canonical_order(events), MEMBER)
    noisy = events + rng.sample(events, k=len(events) // 2)
    rng.shuffle(noisy)
    assert fold_in_batches(noisy, rng) == expected
    assert fold(expected, events, MEMBER) == expected, "re-folding changes nothing"
    assert msgspec.json.decode(msgspec.json.encode(expected), type=Profile) == expected
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(expected), type=Profile) == expected


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(any_event(), max_size=40), st.randoms(use_true_random=False))
def test_merging_profiles_of_disjoint_events_equals_folding_them_together(
    events: list[DecodedEvent], rng: random.Random
) -> None:
    events = unique(events)
    split = rng.randint(0, len(events))
    rng.shuffle(events)
    anonymous = Member(id="anon:a1", identities={"anonymous_id": ["a1"]})
    left = fold(None, events[:split], MEMBER)
    right = fold(None, events[split:], anonymous)
    assert merge_profiles(left, right, MEMBER) == fold(None, canonical_order(events), MEMBER)


def test_merging_profiles_that_share_an_event_is_refused() -> None:
    shared = track("m1", T0, "Order Completed", total=5)
    with pytest.raises(Conflict, match="share 1 events"):
        merge_profiles(fold(None, [shared], MEMBER), fold(None, [shared], MEMBER), MEMBER)


# --- worked examples -------------------------------------------------------------------


def test_the_issue_scenario_puts_every_event_on_one_profile() -> None:
    def call(at: int, message_id: str, **fields: Any) -> DecodedEvent:
        body = {"timestamp": format_time(at), "messageId": message_id, **fields}
        return decode_event(normalise(body, call_type=None, received_at=at,
                                      default_message_id=message_id))

    events = [
        call(T0, "w1", type="page", anonymousId="a1", context={"channel": "web"},
             properties={"category": "Dog"}),
        call(T0 + 1000, "w2", type="identify", userId="u1", anonymousId="a1",
             context={"channel": "web"}, traits={"email": "ann@example.com",
                                                 "loyalty_card": "LC1"}),
        call(T0 + DAY_MS, "p1", type="track", event="Order Completed", anonymousId="pos-77",
             context={"channel": "pos", "traits": {"loyalty_card": "LC1"}},
             properties={"total": 30, "products": [{"category": "Dog", "price": 30}]}),
        call(T0 + 2 * DAY_MS, "a1", type="track", event="Application Opened", userId="u1",
             context={"channel": "app", "device": {"id": "d1"}}),
    ]
    graph = IdentityGraph()
    assert set(graph.resolve(events).assignments) == {"u1"}
    profile = fold(None, events, graph.member("u1"))
    assert profile.member_id == profile.user_id == "u1"
    assert profile.identities == {
        "user_id": ["u1"], "email": ["ann@example.com"], "card": ["LC1"],
        "anonymous_id": ["a1", "pos-77"], "device_id": ["d1"],
    }
    assert profile.activity.events == 4
    assert {name: c.events for name, c in profile.activity.channels.items()} == {
        "web": 2, "pos": 1, "app": 1}
    assert profile.activity.purchases.orders == 1
    assert profile.traits["email"].value == "ann@example.com"
    assert profile.traits["email"].updated_at == T0 + 1000


def test_traits_are_last_writer_wins_on_event_time_then_message_id() -> None:
    newer = identify("m1", T0 + 10, tier="gold", city="Oslo")
    older = identify("m2", T0, tier="silver", name="Ann")
    tie_small = identify("a", T0 + 10, city="Bergen")
    profile = fold(fold(None, [newer], MEMBER), [older, tie_small], MEMBER)
    assert {k: (t.value, t.updated_at) for k, t in profile.traits.items()} == {
        "tier": ("gold", T0 + 10), "city": ("Oslo", T0 + 10), "name": ("Ann", T0)}


def test_order_window_keeps_a_year_of_timestamps_and_counts_everything() -> None:
    orders = [track(f"o{d}", T0 + d * DAY_MS, "Order Completed", total=10) for d in (0, 100, 500)]
    profile = fold(None, orders, MEMBER)
    buy = profile.activity.purchases
    assert (buy.orders, buy.spend, buy.first_at, buy.last_at) == (3, 30_000, T0, T0 + 500 * DAY_MS)
    assert buy.recent == [T0 + 500 * DAY_MS], "orders a year before the last are aggregated"
    late = fold(profile, [track("late", T0 + 200 * DAY_MS, "Order Completed", total=1)], MEMBER)
    assert late.activity.purchases.recent == [T0 + 200 * DAY_MS, T0 + 500 * DAY_MS]


def test_order_values_fall_back_from_total_to_revenue_to_lines() -> None:
    profile = fold(None, [
        track("a", T0, "Order Completed", total=12.5, revenue=99),
        track("b", T0, "Order Completed", revenue="7.25"),
        track("c", T0, "Order Completed", products=[{"price": 2, "quantity": 3}, {"price": 1},
                                                    "junk", {"price": "x"}]),
        track("d", T0, "Order Completed", total=float("nan"), products="junk"),
        track("e", T0, "Order Completed", total=1e300),
    ], MEMBER)
    assert profile.activity.purchases.spend == 12_500 + 7_250 + 7_000
    assert profile.activity.purchases.orders == 5


def test_wishlist_keeps_the_latest_action_and_forgets_stale_items() -> None:
    events = [
        track("w1", T0, "Product Added to Wishlist", product_id="p1", price=20, name="Bed"),
        track("w2", T0 + 5, "Product Added to Wishlist", product_id="p1", price=18),
        track("w3", T0 + 1, "Product Added to Wishlist", product_id="p2", price=9),
        track("w4", T0 + 2, "Product Removed from Wishlist", product_id="p2"),
    ]
    wishlist = fold(None, events[::-1], MEMBER).activity.wishlist
    assert (wishlist["p1"].price, wishlist["p1"].updated_at, wishlist["p1"].on_list) == (
        18, T0 + 5, True)
    assert wishlist["p2"].on_list is False
    later = fold(None, [*events, track("x", T0 + 400 * DAY_MS, "Email Opened")], MEMBER)
    assert later.activity.wishlist == {}


def test_recent_searches_keep_the_latest_distinct_queries() -> None:
    searches = [track(f"s{i}", T0 + i, "Products Searched", query=f"  Query  {i} ")
                for i in range(RECENT_SEARCHES + 3)]
    profile = fold(None, searches, MEMBER)
    browse = profile.activity.browse
    assert browse.searches == RECENT_SEARCHES + 3
    backwards = None
    for start in range(0, len(searches), 3):
        backwards = fold(backwards, searches[::-1][start : start + 3], MEMBER)
    assert backwards == profile
    assert sorted(browse.recent_searches, key=browse.recent_searches.__getitem__) == [
        f"query {i}" for i in range(3, RECENT_SEARCHES + 3)]


def test_fold_carries_other_owners_slots_and_needs_a_member_to_start() -> None:
    with pytest.raises(InvalidInput, match="member"):
        fold(None, [])
    profile = fold(None, [track("m1", T0, "Email Opened")], MEMBER)
    owned = msgspec.structs.replace(profile, loyalty={"points_balance": 5}, consent={"a": True})
    after = fold(owned, [track("m2", T0 + 1, "Email Opened")])
    assert (after.loyalty, after.consent, after.member_id) == ({"points_balance": 5}, {"a": True},
                                                             "u1")
    assert after.activity.engagement.email_opens == 2
    assert owned.activity.engagement.email_opens == 1, "the input state is not modified"


def test_member_changes_flow_into_the_profile() -> None:
    profile = fold(None, [track("m1", T0, "Email Opened")], Member(id="anon:a1", identities={
        "anonymous_id": ["a1"]}))
    assert (profile.member_id, profile.user_id) == ("anon:a1", None)
    renamed = fold(profile, [], MEMBER)
    assert (renamed.member_id, renamed.user_id) == ("u1", "u1")
    assert renamed.identities == MEMBER.identities


# --- the decayed sums ------------------------------------------------------------------


def test_decayed_sums_are_exact_whatever_the_order() -> None:
    adds = [("Dog", 1000 * (i % 7 + 1), T0 + i * DAY_MS * 11) for i in range(60)]
    forward, backward = Decayed(90), Decayed(90)
    for key, weight, at in adds:
        forward.add(key, weight, at)
    for key, weight, at in reversed(adds):
        backward.add(key, weight, at)
    assert forward == backward
    assert len(forward.sums["Dog"]) <= 4, "only the latest eras are kept"
    halves = Decayed(90), Decayed(90)
    for index, (key, weight, at) in enumerate(adds):
        halves[index % 2].add(key, weight, at)
    halves[1].merge(halves[0])
    assert halves[1] == forward


def test_decayed_sums_saturate_instead_of_overflowing() -> None:
    decayed = Decayed(30)
    for i in range(40):
        decayed.add("k", 1e15, T0 + i)
    assert decayed.sums["k"][0] == DECAY_CAP
    msgspec.msgpack.encode(decayed)


def test_trait_values_too_large_for_messagepack_are_kept_as_text() -> None:
    huge = 1 << 70
    profile = fold(None, [identify("m1", T0, big=huge, nested={"n": [huge, 1]}, ok=5)], MEMBER)
    assert profile.traits["big"].value == str(huge)
    assert profile.traits["nested"].value == {"n": [str(huge), 1]}
    assert profile.traits["ok"].value == 5
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(profile), type=Profile) == profile
