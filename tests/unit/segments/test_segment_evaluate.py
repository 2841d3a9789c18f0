"""Evaluating conditions for one member: worked examples, counts in windows, missing values."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_support import condition, consents, day, facts, order, profile_of, track

from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.segments import CountSpec, EventWindows, WindowPlan, holds, window_count
from loyalty_cdp.core.segments.counts import parse_count
from loyalty_cdp.core.segments.evaluate import compare

PET_OWNERS_LAPSING = {"all": [
    {"count": {"event": "Order Completed", "category": "Pet Food", "days": 180}, "gte": 3},
    {"count": {"event": "Order Completed", "days": 45}, "eq": 0},
]}


def _windows(events: list, *conditions: dict) -> EventWindows:
    specs = [leaf for c in conditions for leaf in _count_specs(condition(c))]
    return WindowPlan(specs).record(None, events)


def _count_specs(parsed: object) -> list[CountSpec]:
    from loyalty_cdp.core.segments.conditions import counts_of
    return counts_of(parsed)  # type: ignore[arg-type]


def test_bought_pet_food_three_times_in_180_days_and_nothing_in_45() -> None:
    history = [order("o1", day(0), "Pet Food"), order("o2", day(30), "Pet Food", "Snacks"),
               order("o3", day(60), "Snacks"), order("o4", day(90), "Pet Food")]
    profile = profile_of(history)
    windows = _windows(history, PET_OWNERS_LAPSING)
    rule = condition(PET_OWNERS_LAPSING)
    # Three Pet Food orders (days 0, 30, 90) within 180 days; the last order 44 days ago.
    assert not holds(rule, facts(profile, day(134), windows=windows))
    # 46 days after the last order: lapsing, and all three Pet Food orders still in the window.
    assert holds(rule, facts(profile, day(136), windows=windows))
    # Day 181: the first Pet Food order has left the 180-day window.
    assert not holds(rule, facts(profile, day(181), windows=windows))


def test_counts_the_profile_keeps_need_no_windows_and_others_are_unknown_without_them() -> None:
    history = [order("o1", day(0), "Dog"), track("a1", day(1), "Application Opened", "app"),
               track("a2", day(2), "Application Opened", "app")]
    profile = profile_of(history)
    assert window_count(parse_count({"event": "Order Completed", "days": 30}, "c"), profile, None, day(2)) == 1
    assert window_count(parse_count({"event": "Application Opened", "days": 7}, "c"), profile, None, day(2)) == 2
    dog = parse_count({"event": "Order Completed", "category": "Dog", "days": 30}, "c")
    assert window_count(dog, profile, None, day(2)) is None  # nothing keeps category counts
    assert not holds(condition({"count": {"event": "Order Completed", "category": "Dog", "days": 30}, "eq": 0}),
                     facts(profile, day(2)))  # unknown is not zero
    assert WindowPlan([dog]).windows and not WindowPlan([parse_count({"event": "Order Completed", "days": 30}, "c")])


def test_count_filters_match_lines_properties_and_channel() -> None:
    spec = parse_count({"event": "Order Completed", "brand": "Acme", "channel": "POS", "days": 10}, "c")
    plan = WindowPlan([spec])
    windows = plan.record(None, [order("o1", day(0), "Dog"), order("o2", day(1), "Cat", channel="web"),
                                 track("v1", day(1), "Product Viewed", brand="Acme")])
    assert windows.times == {spec.key: [day(0)]}
    viewed = parse_count({"event": "Product Viewed", "category": "Dog", "days": 10}, "c")
    views = WindowPlan([viewed]).record(None, [track("v1", day(1), "Product Viewed", category="Dog"),
                                               track("v2", day(2), "Product Viewed", category="Cat")])
    assert window_count(viewed, Profile(member_id="u1"), views, day(3)) == 1


EVENTS = st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["Dog", "Cat"]), st.booleans()),
                  min_size=0, max_size=40, unique_by=lambda t: t[0])


@settings(max_examples=80, deadline=None, derandomize=True)
@given(EVENTS, st.randoms(use_true_random=False), st.integers(1, 5))
def test_windows_do_not_depend_on_order_or_batches(spec_events: list, rng: random.Random, batches: int) -> None:
    events = [order(f"o{d}", day(d), category) if is_order else track(f"v{d}", day(d), "Product Viewed",
                                                                          category=category)
              for d, category, is_order in spec_events]
    plan = WindowPlan([parse_count({"event": "Order Completed", "category": "Dog", "days": 90}, "c"),
                       parse_count({"event": "Order Completed", "category": "Dog", "days": 30}, "c"),
                       parse_count({"event": "Product Viewed", "category": "Cat", "days": 60}, "c")])
    reference = plan.record(None, sorted(events, key=lambda e: e.timestamp))
    shuffled = list(events)
    rng.shuffle(shuffled)
    windows = None
    for index in range(batches):
        windows = plan.record(windows, shuffled[index::batches])
    assert windows == reference
    half = len(shuffled) // 2
    merged = plan.merge(plan.record(None, shuffled[:half]), plan.record(None, shuffled[half:]))
    assert merged == reference


def test_fields_from_every_namespace() -> None:
    profile = profile_of([order("o1", day(0), "Pet Food", total=60), order("o2", day(10), "Toys", total=20)],
                         loyalty={"tier": "Gold", "points_balance": 1200, "progress": {"remaining": 300.0}},
                         scores={"lapse_risk": 0.8, "propensity": {"redeem": 0.3}},
                         consent=consents(email_marketing=True, sms=False, profiling=True),
                         segments={"vip": {"member": True, "since": day(0), "entries": 1}})
    member = facts(profile, day(11))
    cases = [
        ({"field": "loyalty.tier", "in": ["Gold", "Platinum"]}, True),
        ({"field": "loyalty.progress.remaining", "lte": 300}, True),
        ({"field": "scores.lapse_risk", "gte": 0.7}, True),
        ({"field": "scores.propensity.redeem", "between": [0.2, 0.4]}, True),
        ({"field": "consent.email_marketing", "eq": True}, True),
        ({"field": "consent.sms", "eq": False}, True),
        ({"field": "consent.push", "eq": False}, True),  # no record: the strict default refuses
        ({"field": "consent.sale_sharing", "exists": True}, True),
        ({"field": "signals.affinity.category.@top", "eq": "Pet Food"}, True),
        ({"field": "signals.affinity.category", "contains": "Toys"}, True),
        ({"field": "signals.affinity.category.@count", "eq": 2}, True),
        ({"field": "signals.purchase.orders", "eq": 2.0}, True),
        ({"field": "segments", "contains": "vip"}, True),
        ({"field": "signals.lifecycle.stage", "eq": "new"}, True),
    ]
    for raw, expected in cases:
        assert holds(condition(raw), member) is expected, raw
    assert member.accessed["scores.lapse_risk"] == 0.8


def test_opting_out_of_automated_decisions_hides_scores() -> None:
    profile = profile_of([order("o1", day(0), "Dog")], scores={"lapse_risk": 0.9},
                         consent=consents(profiling=False))
    member = facts(profile, day(1))
    assert not member.automated
    assert not holds(condition({"field": "scores.lapse_risk", "gte": 0.5}), member)
    assert holds(condition({"field": "scores.lapse_risk", "exists": False}), member)


@pytest.mark.parametrize(("op", "actual", "operand", "expected"), [
    ("eq", None, 1, False), ("ne", None, 1, False), ("not_in", None, ("a",), False),
    ("ne", "1", 1, False), ("eq", True, 1, False), ("eq", 1, 1.0, True), ("ne", "a", "b", True),
    ("lt", "a", 3, False), ("gt", True, 0, False), ("in", 2, (1, 2), True), ("in", True, (1,), False),
    ("not_in", "c", ("a", "b"), True), ("contains", ["a", 1], "a", True), ("contains", "abc", "a", False),
    ("contains", {"k": 1}, "k", True), ("exists", 0, True, True), ("exists", None, False, True),
    ("between", 5, (5, 6), True), ("between", "5", (5, 6), False), ("eq", float("nan"), 1, False),
    ("eq", 2**60, 2**60, False),
])
def test_comparison_semantics(op: str, actual: object, operand: object, expected: bool) -> None:
    assert compare(op, actual, operand) is expected
