"""The vectorised path agrees with the per-member path, member by member."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_support import condition, consents, day, facts, order, profile_of, segments

from loyalty_cdp.core.segments import MemberTable, WindowPlan, estimate_size, holds, in_sample
from loyalty_cdp.core.segments.conditions import counts_of
from loyalty_cdp.errors import InvalidInput

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 2.0, 2**60]),
                    st.sampled_from(["a", "b", "Gold"]))
VALUES = st.one_of(SCALARS, st.lists(st.sampled_from(["a", "b", 1]), max_size=3),
                   st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2))
CATEGORIES = ["Dog", "Cat"]


@st.composite
def members(draw: st.DrawFn, index: int) -> Any:
    user = f"u{index}"
    days = draw(st.lists(st.tuples(st.integers(0, 200), st.sampled_from(CATEGORIES)), max_size=4,
                         unique_by=lambda t: t[0]))
    history = [order(f"{user}-{d}", day(d), category, user=user) for d, category in days]
    profile = profile_of(history, user=user,
                         traits={},
                         scores={"x": draw(VALUES)},
                         loyalty={"tier": draw(st.sampled_from(["Gold", "Silver", None, 3]))},
                         consent=draw(st.sampled_from([consents(email_marketing=True), consents(email_marketing=False), {},
                                                       {"email_marketing": True}])),
                         segments={"vip": {"member": draw(st.booleans()), "since": 0, "entries": 1}})
    from loyalty_cdp.core.profile import Trait
    traits = {"a": draw(VALUES), "tags": draw(VALUES)}
    profile.traits.update({key: Trait(value, 0, "m") for key, value in traits.items() if value is not None})
    return profile, history


LEAVES = st.one_of(
    st.builds(lambda path, op, operand: {"field": path, op: operand},
              st.sampled_from(["traits.a", "traits.tags", "scores.x", "loyalty.tier"]),
              st.sampled_from(["eq", "ne"]), st.sampled_from(["a", "Gold", 1, 2.0, True, False, 0.5])),
    st.builds(lambda path, op, operand: {"field": path, op: operand},
              st.sampled_from(["traits.a", "scores.x", "signals.purchase.orders", "signals.purchase.days_since_last_order"]),
              st.sampled_from(["lt", "lte", "gt", "gte"]), st.sampled_from([-1, 0, 1, 2.5, 30])),
    st.builds(lambda path, op, operand: {"field": path, op: operand},
              st.sampled_from(["traits.a", "loyalty.tier", "traits.tags"]), st.sampled_from(["in", "not_in"]),
              st.sampled_from([["a", "Gold"], [1, 2], [True]])),
    st.builds(lambda path, flag: {"field": path, "exists": flag},
              st.sampled_from(["traits.a", "scores.x", "consent.email_marketing", "signals.purchase.mean_interval_days"]),
              st.booleans()),
    st.builds(lambda path, item: {"field": path, "contains": item},
              st.sampled_from(["traits.tags", "traits.a", "signals.affinity.category", "segments"]),
              st.sampled_from(["a", "b", "Dog", "vip"])),
    st.builds(lambda path, bounds: {"field": path, "between": bounds},
              st.sampled_from(["traits.a", "signals.affinity.category.Dog", "scores.x.@max"]),
              st.sampled_from([[0, 1], [-3, 0.5], [1, 3]])),
    st.builds(lambda path, operand: {"field": path, "eq": operand},
              st.sampled_from(["signals.affinity.category.@top", "traits.tags.@count", "scores.x.@sum"]),
              st.sampled_from(["Dog", "Cat", 1, 2])),
    st.builds(lambda category, days, op, n: {"count": {"event": "Order Completed", "category": category,
                                                       "days": days}, op: n},
              st.sampled_from(CATEGORIES), st.sampled_from([30, 90, 180]),
              st.sampled_from(["eq", "ne", "gte", "lt"]), st.integers(0, 2)),
    st.builds(lambda days, op, n: {"count": {"event": "Order Completed", "days": days}, op: n},
              st.sampled_from([30, 365]), st.sampled_from(["eq", "gt"]), st.integers(0, 2)),
)
CONDITIONS = st.recursive(
    LEAVES,
    lambda children: st.one_of(st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=1, max_size=3)),
                               st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
                               st.builds(lambda x: {"not": x}, children)),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.data(), st.lists(CONDITIONS, min_size=1, max_size=4))
def test_vectorised_evaluation_equals_per_member_evaluation(data: st.DataObject, raws: list[dict]) -> None:
    parsed = [condition(raw) for raw in raws]
    drawn = [data.draw(members(i)) for i in range(12)]
    plan = WindowPlan(spec for c in parsed for spec in counts_of(c))
    as_of = day(210)
    per_member = [facts(profile, as_of, windows=plan.record(None, history)) for profile, history in drawn]
    table = MemberTable.build(per_member, parsed)
    for cond in parsed:
        expected = [holds(cond, member) for member in per_member]
        assert table.evaluate(cond).tolist() == expected


def test_a_table_refuses_a_condition_it_was_not_built_for() -> None:
    profile = profile_of([order("o1", day(0), "Dog")])
    table = MemberTable.build([facts(profile, day(1))], [condition({"field": "traits.a", "exists": True})])
    with pytest.raises(InvalidInput, match=r"lacks scores\.x"):
        table.evaluate(condition({"field": "scores.x", "exists": True}))


def test_segment_set_over_a_table_and_a_size_estimate() -> None:
    defined = segments([
        {"id": "dog-people", "when": {"field": "signals.affinity.category.@top", "eq": "Dog"}},
        {"id": "buyers", "when": {"field": "signals.purchase.orders", "gte": 1}},
    ])
    population = [profile_of([order(f"o{i}", day(0), "Dog" if i % 4 == 0 else "Cat", user=f"m{i}")], user=f"m{i}")
                  for i in range(400)]
    table = MemberTable.build((facts(p, day(1)) for p in population),
                              [d.condition for d in defined.definitions])
    masks = defined.evaluate_table(table)
    assert int(masks["dog-people"].sum()) == 100 and bool(masks["buyers"].all())
    exact = estimate_size(masks["dog-people"], len(population))
    assert exact.exact and exact.estimate == exact.low == exact.high == 100
    sample = np.array([in_sample(member, 0.5) for member in table.member_ids])
    assert 150 <= sample.sum() <= 250
    assert sample.tolist() == [in_sample(member, 0.5) for member in table.member_ids]  # stable
    estimate = estimate_size(masks["dog-people"][sample], len(population))
    assert estimate.low <= 100 <= estimate.high and not estimate.exact
