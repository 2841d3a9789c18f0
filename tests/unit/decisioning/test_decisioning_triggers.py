"""Triggers: what fires, when, with which key; at most once per occurrence under replay and reordering."""

from __future__ import annotations

import random

import msgspec
from decisioning_support import config, consents, day, facts, member, order, track
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.decisioning import decide, due, next_due_at, on_event, price_changed_product
from loyalty_cdp.core.decisioning.triggers import Occurrence
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.loyalty.emit import message_id as loyalty_message_id
from loyalty_cdp.core.segments import update_memberships

CONFIG = config()


def test_event_triggers_filter_on_properties() -> None:
    profile = member([order("o1", day(0))], loyalty={"tier": "Gold"})
    gold = track("t1", day(1), "Tier Upgraded", "loyalty", from_tier="Silver", to_tier="Gold")
    silver = track("t2", day(1), "Tier Upgraded", "loyalty", from_tier="Member", to_tier="Silver")
    fired = on_event(CONFIG.triggers, gold, facts(profile, day(1)))
    assert [(o.trigger_id, o.key, o.at) for o in fired] == [("tier-up", "event:t1", day(1))]
    assert fired[0].event == {"name": "Tier Upgraded", "message_id": "t1",
                              "properties": {"from_tier": "Silver", "to_tier": "Gold"}}
    assert on_event(CONFIG.triggers, silver, facts(profile, day(1))) == []
    identify = DecodedEvent("i1", "identify", None, "u1", None, day(1), "web", traits={"a": 1})
    assert on_event(CONFIG.triggers, identify, facts(profile, day(1))) == []


def test_segment_triggers_read_the_transition_and_its_properties() -> None:
    profile = member([order("o1", day(0))])
    update = update_memberships(CONFIG.segments, facts(profile, day(1)))
    assert update.entered == ["new-members"]
    call = update.events[0]
    entered = track(call["messageId"], day(1), call["event"], "segments", **call["properties"])
    fired = on_event(CONFIG.triggers, entered, facts(profile, day(1)))
    assert [o.trigger_id for o in fired] == ["joined"] and fired[0].key == f"event:{call['messageId']}"
    second_entry = track("s2", day(90), "Segment Entered", "segments", segment_id="new-members", entry=2)
    assert on_event(CONFIG.triggers, second_entry, facts(profile, day(90))) == []  # when: event.entry == 1


def test_a_condition_trigger_fires_once_per_lapse_episode() -> None:
    history = [order("o1", day(0)), order("o2", day(10))]
    at_risk = facts(member(history), day(32))  # 22 days after the last order, cadence 10: at risk
    occurrences = due(CONFIG.triggers, at_risk)
    assert [(o.trigger_id, o.key) for o in occurrences] == [("at-risk", f"episode:{day(10)}")]
    again = due(CONFIG.triggers, facts(member(history), day(38)))
    assert [o.key for o in again] == [f"episode:{day(10)}"]  # same episode, same key
    assert due(CONFIG.triggers, facts(member(history), day(20))) == []  # still new
    later = [*history, order("o3", day(40))]  # cadence 20: at risk after 30 days without an order
    assert due(CONFIG.triggers, facts(member(later), day(65))) == []
    assert [o.key for o in due(CONFIG.triggers, facts(member(later), day(75)))] == [f"episode:{day(40)}"]


def test_replenishment_is_due_lead_days_before_the_predicted_date() -> None:
    """The dog-food buyer on a 30-day cycle hears from us on day 28."""
    prediction = {"product_id": "PET-1", "name": "Dry Dog Food 12kg", "category": "Pet Food", "interval_days": 30.0,
                  "purchases": 4, "last_purchase": "2026-01-01", "predicted_date": "2026-01-31", "due": False}
    profile = member([order("o1", day(0))], scores={"replenishment": [prediction, {"product_id": 3}]})
    assert due(CONFIG.triggers, facts(profile, day(27.9))) == []
    assert next_due_at(CONFIG.triggers, facts(profile, day(20))) == day(28)
    fired = due(CONFIG.triggers, facts(profile, day(28)))
    assert [(o.trigger_id, o.key, o.at) for o in fired] == [("refill", f"item:PET-1:{day(0)}", day(28))]
    assert fired[0].item == {"product_id": "PET-1", "name": "Dry Dog Food 12kg", "category": "Pet Food",
                             "due_at": "2026-01-31", "days_left": 2, "last_purchase": "2026-01-01"}
    assert due(CONFIG.triggers, facts(profile, day(37))) == []  # expired 7 days after the date
    in_ms = {**prediction, "last_purchase": day(0), "predicted_date": day(30)}
    assert due(CONFIG.triggers, facts(member([], scores={"replenishment": [in_ms]}), day(29)))[0].key == \
        f"item:PET-1:{day(0)}"
    per_category = {"category": "Pet Food", "last_purchase": "2026-01-01", "predicted_date": "2026-01-31"}
    (category,) = due(CONFIG.triggers, facts(member([], scores={"replenishment": [per_category]}), day(29)))
    assert category.key == f"item:Pet Food:{day(0)}" and category.item["name"] == "Pet Food"  # type: ignore[index]
    from_store = facts(member([]), day(29), scores={"replenishment": [prediction]})  # scores kept beside the profile
    assert [o.trigger_id for o in due(CONFIG.triggers, from_store)] == ["refill"]
    opted_out = member([], scores={"replenishment": [prediction]}, consent=consents(profiling=False))
    assert due(CONFIG.triggers, facts(opted_out, day(29))) == []  # predictions are automated decisions


def test_a_price_drop_fires_for_members_with_the_product_on_their_wishlist() -> None:
    wished = track("w1", day(0), "Product Added to Wishlist", product_id="HOM-2", name="Linen throw",
                   category="Home", price=60)
    profile = member([wished])
    drop = track("p1", day(5), "Product Price Changed", "catalog", product_id="HOM-2", price=45)
    assert price_changed_product(CONFIG.triggers, drop) == "HOM-2"
    fired = on_event(CONFIG.triggers, drop, facts(profile, day(5)))
    assert [(o.trigger_id, o.key) for o in fired] == [("drop", "price:HOM-2:event:p1")]
    assert fired[0].item == {"product_id": "HOM-2", "name": "Linen throw", "category": "Home", "old_price": 60.0,
                             "new_price": 45.0, "drop_percent": 25.0}
    small = track("p2", day(6), "Product Price Changed", "catalog", product_id="HOM-2", price=58)
    assert on_event(CONFIG.triggers, small, facts(profile, day(6))) == []  # 3.3% < 5%
    other = track("p3", day(6), "Product Price Changed", "catalog", product_id="HOM-9", price=1)
    assert on_event(CONFIG.triggers, other, facts(profile, day(6))) == []
    assert price_changed_product(CONFIG.triggers, track("x", day(1), "Product Viewed", product_id="HOM-2")) is None


# --- at most once, under replay and reordering ----------------------------------------------

def _loyalty_events(seed: int) -> list[DecodedEvent]:
    """Tier upgrades as the loyalty engine emits them: message ids derived from member and cause."""
    rng = random.Random(seed)
    events = []
    for index in range(rng.randint(1, 6)):
        tier = rng.choice(["Silver", "Gold", "Platinum"])
        cause = f"review:{index}"
        events.append(track(loyalty_message_id("u1", "Tier Upgraded", cause), day(index * 20), "Tier Upgraded",
                            "loyalty", from_tier="Member", to_tier=tier))
    return events


def _process(stream: list[DecodedEvent], checks: list[float], store: dict[str, dict]) -> int:
    """What the processor does: events (any order, duplicates) and scheduler sweeps, deciding each
    occurrence and storing decisions by id (insert if absent). Returns how many decides ran."""
    profile = member([order("o1", day(0)), order("o2", day(10))], loyalty={"tier": "Gold"})
    decided = 0
    occurrences: list[Occurrence] = []
    for event in stream:
        occurrences += on_event(CONFIG.triggers, event, facts(profile, event.timestamp))
    for at in checks:
        occurrences += due(CONFIG.triggers, facts(profile, day(at)))
    for occurrence in occurrences:
        decision = decide(CONFIG, occurrence, facts(profile, occurrence.at), [], occurrence.at)
        decided += 1
        store.setdefault(decision.decision_id, msgspec.to_builtins(decision))
    return decided


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.randoms(use_true_random=False), st.lists(st.floats(11, 120), max_size=5))
def test_a_trigger_fires_at_most_once_per_occurrence_under_replay_and_shuffling(
        seed: int, rng: random.Random, checks: list[float]) -> None:
    events = _loyalty_events(seed)
    first: dict[str, dict] = {}
    _process(events, sorted(checks), first)
    replayed = [*events, *rng.sample(events, len(events))]  # a replay, reordered, with every event twice
    rng.shuffle(replayed)
    again = dict(first)
    runs = _process(replayed, [*checks, *checks], again)
    assert again == first  # no new decision: every occurrence was already decided
    assert runs >= len(first)
    gold_or_better = [e for e in events if e.properties["to_tier"] in ("Gold", "Platinum")]
    upgrades = [d for d in first.values() if d["trigger_id"] == "tier-up"]
    assert len(upgrades) == len({e.message_id for e in gold_or_better})
