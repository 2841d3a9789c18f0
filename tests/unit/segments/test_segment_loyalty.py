"""The loyalty object conditions read: the brief view equals the engine's summary on what it covers."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from segment_support import condition, day, facts, profile_of

from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.core.loyalty import LoyaltyEngine, LoyaltyInput, encode, loyalty_summary
from loyalty_cdp.core.loyalty.state import new_state
from loyalty_cdp.core.segments import LoyaltyReader, holds, loyalty_keys
from loyalty_cdp.core.segments.loyalty import BRIEF_KEYS

BOOK = load_program(Path(__file__).parents[3] / "src" / "loyalty_cdp" / "programs" / "retail.yaml")
ENGINE = LoyaltyEngine(BOOK)


def _order(index: int, at: int, amount: float) -> LoyaltyInput:
    line = {"product_id": "p1", "category": "Pet Food", "price": amount, "quantity": 1}
    return LoyaltyInput(f"o{index}", at, "Order Completed", {"order_id": f"o{index}", "products": [line]}, "pos")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 700), st.sampled_from([15.0, 120.0, 480.0, 1300.0])), max_size=12),
       st.integers(0, 900))
def test_the_brief_view_equals_the_summary_on_its_keys(orders: list[tuple[int, float]], later: int) -> None:
    state = new_state("u1")
    ENGINE.apply(state, [_order(index, day(at), amount) for index, (at, amount) in enumerate(orders)])
    blob = encode(state)
    at = max(state.clock, day(later))
    brief = LoyaltyReader(BOOK, ["tier", "milestones"])(blob, at)
    full = loyalty_summary(BOOK, state, at)
    assert brief == {key: full[key] for key in BRIEF_KEYS}
    assert LoyaltyReader(BOOK, ["tier", "points_balance"])(blob, at) == full
    assert LoyaltyReader(BOOK)(None, at) == {}


def test_conditions_read_the_loyalty_object_lazily() -> None:
    state = new_state("u1")
    ENGINE.apply(state, [_order(1, day(1), 1600.0)])
    profile = profile_of([], loyalty={"state": encode(state)})
    gold = condition({"field": "loyalty.tier", "in": ["Gold", "Platinum"]})
    reader = LoyaltyReader(BOOK, loyalty_keys([gold]))
    assert reader.brief
    calls: list[int] = []

    def summary() -> dict:
        calls.append(1)
        return reader(profile.loyalty["state"], day(2))

    member = facts(profile, day(2), loyalty=summary)
    assert calls == []
    assert holds(gold, member) and holds(gold, member) and calls == [1]
    assert loyalty_keys([condition({"field": "loyalty.@count", "gt": 0})]) is None
    assert loyalty_keys([condition({"field": "loyalty.progress.remaining", "lt": 9})]) == {"progress"}
