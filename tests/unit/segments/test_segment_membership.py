"""Memberships: transitions, Segment Entered/Exited calls, deterministic ids, definition errors."""

from __future__ import annotations

import msgspec
import pytest
from segment_support import CATALOG, day, facts, order, profile_of, segments

from loyalty_cdp.core.segments import (
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    apply_memberships,
    parse_segment,
    update_memberships,
)
from loyalty_cdp.errors import InvalidInput

DEFINITIONS = [
    {"id": "active-buyers", "name": "Active buyers", "when": {"count": {"event": "Order Completed", "days": 30},
                                                               "gte": 1}},
    {"id": "dog-people", "name": "Dog people", "when": {"field": "signals.affinity.category.@top", "eq": "Dog"}},
]


def _walk(history_days: list[int], checks: list[int]) -> list[dict]:
    """Evaluate after each check day, carrying the memberships like the processor does."""
    defined = segments(DEFINITIONS)
    emitted: list[dict] = []
    profile = profile_of([order(f"o{d}", day(d), "Dog") for d in history_days if d <= checks[0]])
    for at in checks:
        current = profile_of([order(f"o{d}", day(d), "Dog") for d in history_days if d <= at],
                             segments=profile.segments)
        update = update_memberships(defined, facts(current, day(at)))
        emitted.extend(update.events)
        profile = msgspec.structs.replace(current, segments=update.segments)
    return emitted


def test_entering_leaving_and_entering_again() -> None:
    emitted = _walk([0, 50], [0, 10, 40, 50, 90])
    summary = [(e["event"], e["properties"]["segment_id"], e["properties"]["entry"], e["timestamp"][:10])
               for e in emitted]
    assert summary == [
        (SEGMENT_ENTERED, "active-buyers", 1, "2026-01-01"),
        (SEGMENT_ENTERED, "dog-people", 1, "2026-01-01"),
        (SEGMENT_EXITED, "active-buyers", 1, "2026-02-10"),
        (SEGMENT_ENTERED, "active-buyers", 2, "2026-02-20"),
        (SEGMENT_EXITED, "active-buyers", 2, "2026-04-01"),
    ]
    exited = emitted[2]
    assert exited["properties"]["member_since"] == "2026-01-01T00:00:00.000Z"
    assert exited["type"] == "track" and exited["userId"] == "u1" and exited["context"] == {"channel": "segments"}
    assert len({e["messageId"] for e in emitted}) == len(emitted)


def test_replaying_with_other_evaluation_times_gives_the_same_message_ids() -> None:
    first = _walk([0, 50], [0, 10, 40, 50, 90])
    again = _walk([0, 50], [0, 35, 50, 60, 70, 95])
    assert [e["messageId"] for e in first] == [e["messageId"] for e in again]


def test_a_segment_removed_from_the_configuration_ends_its_memberships_but_keeps_the_count() -> None:
    defined = segments(DEFINITIONS)
    profile = profile_of([order("o1", day(0), "Dog")])
    joined = update_memberships(defined, facts(profile, day(0)))
    only_dogs = segments(DEFINITIONS[1:])
    removed = apply_memberships(only_dogs, msgspec.structs.replace(profile, segments=joined.segments),
                                ["active-buyers", "dog-people"], day(1))
    assert removed.exited == ["active-buyers"] and removed.entered == []
    assert removed.segments["active-buyers"] == {"member": False, "since": day(1), "entries": 1}
    back = apply_memberships(defined, msgspec.structs.replace(profile, segments=removed.segments),
                             ["active-buyers", "dog-people"], day(2))
    assert back.events[0]["properties"]["entry"] == 2


def test_segment_set_knows_its_windows_and_time_dependence() -> None:
    defined = segments([*DEFINITIONS, {"id": "pet-food-regulars", "when": {
        "count": {"event": "Order Completed", "category": "Pet Food", "days": 180}, "gte": 3}}])
    assert list(defined.plan.windows) == ["Order Completed|category=Pet Food"]
    assert defined.time_dependent and defined.by_id["pet-food-regulars"].time_dependent
    assert not defined.by_id["dog-people"].time_dependent


@pytest.mark.parametrize(("raw", "field", "reason"), [
    ([{"id": "a", "when": {"field": "traits.x", "exists": True}}, {"id": "a", "when": {"field": "traits.x",
                                                                                        "exists": True}}],
     "segments[1].id", "duplicate segment id 'a'"),
    ([{"id": "a b", "when": {"field": "traits.x", "exists": True}}], "segments[0].id", "an id is"),
    ([{"id": "a"}], "segments[0].when", "required key is missing"),
    ([{"id": "a", "when": {"field": "traits.x", "exists": True}, "colour": 1}], "segments[0].colour", "unknown key"),
    ([{"id": "a", "when": {"any": [{"field": "segments", "contains": "b"}]}}], "segments[0].when.any[0].field",
     "cannot depend on segment membership"),
    ({"id": "a"}, "segments", "expected a list"),
])
def test_definition_errors_name_the_key(raw: object, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as error:
        segments(raw)  # type: ignore[arg-type]
    assert error.value.field == field and reason in error.value.reason


def test_a_draft_from_the_json_api_parses_alone() -> None:
    draft = parse_segment({"id": "draft", "when": {"field": "loyalty.tier", "eq": "Gold"}}, "body", CATALOG)
    assert draft.name == "draft" and draft.when == {"field": "loyalty.tier", "eq": "Gold"}


def test_segment_events_of_a_visitor_who_never_logged_in_carry_their_anonymous_id() -> None:
    visitor = msgspec.structs.replace(profile_of([order("o1", day(0), "Dog")]), user_id=None,
                                      identities={"anonymous_id": ["anon-7"]})
    update = update_memberships(segments(DEFINITIONS), facts(visitor, day(1)))
    assert update.events
    assert all(e["anonymousId"] == "anon-7" and "userId" not in e for e in update.events)
