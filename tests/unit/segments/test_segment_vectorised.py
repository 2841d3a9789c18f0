"""The batch path's signals equal compute_signals exactly, member by member and path by path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_support import day, order, profile_of, track

from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.segments import FieldCatalog, MemberFacts
from loyalty_cdp.core.segments.column import Column
from loyalty_cdp.core.segments.vectorised import MAPS, SCALARS, SignalGatherer, vectorised
from loyalty_cdp.core.signals import SignalSettings
from loyalty_cdp.errors import InvalidInput

CATALOG = FieldCatalog()
CATEGORIES = ["Dog", "Cat", "Fish", "Bird"]
MAP_PATHS = [f"signals.{'.'.join(key)}{suffix}" for key in MAPS
             for suffix in ("", ".Dog", ".Cat", ".Acme", ".Dog.x", ".@count", ".@max", ".@min", ".@sum", ".@top")]
PATHS = [CATALOG.parse(text, "p") for text in [*(f"signals.{name}" for name in sorted(SCALARS)), *MAP_PATHS]]


@st.composite
def histories(draw: st.DrawFn, user: str) -> list[DecodedEvent]:
    events: list[DecodedEvent] = []
    for index in range(draw(st.integers(0, 14))):
        at = day(draw(st.integers(0, 900)) / 3)
        kind = draw(st.integers(0, 9))
        mid = f"{user}-{index}"
        if kind <= 2:
            extra: dict[str, Any] = {}
            if draw(st.booleans()):
                extra["discount"] = draw(st.sampled_from([0, 2.5, 7]))
            if draw(st.booleans()):
                extra["coupon"] = "SAVE"
            categories = draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3))
            events.append(order(mid, at, *categories, total=draw(st.sampled_from([9.99, 20, 133.7])), user=user,
                                **extra))
        elif kind == 3:
            events.append(track(mid, at, "Order Refunded", "web", user, total=draw(st.sampled_from([5, 20]))))
        elif kind == 4:
            events.append(track(mid, at, "Points Redeemed", "loyalty", user, points=draw(st.integers(1, 900))))
        elif kind == 5:
            events.append(track(mid, at, "Points Earned", "loyalty", user, points=draw(st.integers(1, 900))))
        elif kind == 6:
            events.append(track(mid, at, draw(st.sampled_from(["Email Delivered", "Email Opened",
                                                               "Email Link Clicked"])), "email", user))
        elif kind == 7:
            events.append(track(mid, at, "Application Opened", "app", user))
        elif kind == 8:
            events.append(track(mid, at, "Product Viewed", "web", user, category=draw(st.sampled_from(CATEGORIES))))
        else:
            events.append(track(mid, at, "Product Reviewed", "web", user, rating=draw(st.sampled_from([1, 4.5, 5]))))
    return events


def _cell(column: Column, row: int) -> Any:
    """A column's content at one row, as comparable Python values."""
    label = int(column.labels[row])
    codes = {code: name for name, code in column.vocabulary.items()}
    items = sorted(codes[int(c)] for r, c in zip(column.item_rows, column.item_codes, strict=True) if r == row)
    number = float(column.numbers[row])
    return (bool(column.present[row]), codes.get(label) if label >= 0 else None,
            None if number != number else number, items)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.data(), st.sampled_from([day(150), day(300), day(1000)]),
       st.sampled_from([SignalSettings(), SignalSettings(top=2, new_days=10, at_risk_factor=1.2)]))
def test_every_vectorised_signal_equals_compute_signals(data: st.DataObject, as_of: int,
                                                        signal_settings: SignalSettings) -> None:
    members = [MemberFacts(profile_of(data.draw(histories(f"u{i}")), user=f"u{i}"), as_of, settings=signal_settings)
               for i in range(8)]
    assert all(vectorised(path) for path in PATHS)
    gatherer = SignalGatherer(PATHS)
    for member in members:
        gatherer.add(member)
    at_once = gatherer.columns()
    for path in PATHS:
        one_by_one = Column.of_values([member.value(path) for member in members])
        for row in range(len(members)):
            assert _cell(at_once[path], row) == _cell(one_by_one, row), (path.text, row)


def test_paths_outside_the_vectorised_set_are_read_member_by_member() -> None:
    for text in ("signals.channel_mix.orders.pos", "signals.wishlist", "signals.lifecycle", "signals.as_of",
                 "signals.channel_mix.orders.@count", "traits.a", "scores.lapse_risk"):
        assert not vectorised(CATALOG.parse(text, "p"))
    members = [MemberFacts(profile_of([order("o1", day(0), "Dog")]), day(5)), MemberFacts(profile_of([]), day(6))]
    gatherer = SignalGatherer([CATALOG.parse("signals.purchase.orders", "p")])
    gatherer.add(members[0])
    with pytest.raises(InvalidInput, match="one instant"):
        gatherer.add(members[1])
