"""The fold as a whole: emitted events, inputs, late events and replay, versions, state
serialisation, the profile summary and the liability report."""

from __future__ import annotations

import re

import msgspec
from loyalty_support import DAY, Events, at, balance, book, line, of_kind, run

from loyalty_cdp.core.events import normalise
from loyalty_cdp.core.loyalty import (
    COMMAND_EVENTS,
    EMITTED_EVENTS,
    LoyaltyEngine,
    LoyaltyInput,
    decode,
    encode,
    from_call,
    from_event,
    liability_report,
    loyalty_summary,
    snapshot,
)


def test_emitted_events_are_segment_track_calls_with_deterministic_ids() -> None:
    events = Events()
    history = [
        events.order(at("2026-03-01T10:00"), "o1", line(25)),
        events.refund(at("2026-03-02T10:00"), "o1", "r1", amount=5),
    ]
    program_book = book(milestones=[{"id": "first", "type": "nth_purchase", "n": 1}])
    _, emitted = run(program_book, history)
    assert [e["event"] for e in emitted] == ["Points Earned", "Milestone Achieved", "Points Reversed"]
    first = emitted[0]
    assert set(first) == {"type", "userId", "event", "properties", "timestamp", "messageId",
                          "context"}
    assert (first["type"], first["userId"], first["context"]) == ("track", "u1",
                                                                   {"channel": "loyalty"})
    assert first["timestamp"] == "2026-03-01T10:00:00.000Z"
    assert re.fullmatch(r"loy-[0-9a-f]{32}", first["messageId"])
    assert len({e["messageId"] for e in emitted}) == len(emitted)
    _, again = run(program_book, list(reversed(history)))
    assert again == emitted
    assert {e["event"] for e in emitted} <= EMITTED_EVENTS
    assert frozenset({"Reward Redeemed", "Points Adjusted"}) == COMMAND_EVENTS


def test_inputs_from_segment_calls_and_logged_events() -> None:
    track = {"type": "track", "event": "Order Completed", "messageId": "m1",
             "properties": {"order_id": "o1"}, "context": {"channel": "pos"}, "userId": "u1"}
    assert from_call(track, 123) == LoyaltyInput("m1", 123, "Order Completed", {"order_id": "o1"},
                                                 "pos")
    identify = {"type": "identify", "messageId": "m2", "traits": {"birthday": "1990-01-01"}}
    assert from_call(identify, 5) == LoyaltyInput("m2", 5, "identify", {"birthday": "1990-01-01"})
    assert from_call({"type": "page", "name": "Home"}, 5) is None
    event = normalise({**track, "timestamp": "2026-03-01T10:00:00Z"}, call_type=None,
                      received_at=at("2026-03-01T10:00"), default_message_id="x")
    assert from_event(event) == LoyaltyInput("m1", at("2026-03-01T10:00"), "Order Completed",
                                             {"order_id": "o1"}, "pos")


def test_irrelevant_and_self_emitted_events_change_nothing_even_when_late() -> None:
    program_book = book()
    engine = LoyaltyEngine(program_book)
    events = Events()
    state, emitted = run(program_book, [events.order(at("2026-03-02T10:00"), "o1", line(10))])
    before = encode(state)
    echoed = LoyaltyInput(emitted[0]["messageId"], at("2026-03-01"), "Points Earned",
                          emitted[0]["properties"], "loyalty")
    viewed = events.track("Product Viewed", at("2026-03-01"), {"product_id": "p"})
    plain_identify = events.identify(at("2026-03-01"), email="a@example.com")
    folded = engine.apply(state, [echoed, viewed, plain_identify])
    assert (folded.emitted, folded.replay_needed) == ([], False)
    assert encode(state) == before


def test_late_events_ask_for_a_replay_and_apply_or_replay_gives_the_replayed_state() -> None:
    program_book = book(ledger={"pending_days": 30})
    engine = LoyaltyEngine(program_book)
    events = Events()
    first = events.order(at("2026-03-10T10:00"), "o1", line(50))
    late = events.order(at("2026-03-01T10:00"), "o0", line(30))
    state = engine.new_state("u1")
    engine.apply(state, [first])
    engine.advance(state, at("2026-04-20"))
    before = encode(state)
    folded = engine.apply(state, [late])
    assert folded.replay_needed and folded.emitted == [] and encode(state) == before
    rebuilt, emitted = engine.apply_or_replay(state, [late], lambda: [first, late])
    expected, expected_emitted = engine.replay("u1", [late, first], until=at("2026-04-20"))
    assert encode(rebuilt) == encode(expected)
    assert emitted == expected_emitted
    assert balance(rebuilt) == 80


def test_duplicates_in_a_batch_and_of_the_last_event_are_skipped() -> None:
    engine = LoyaltyEngine(book())
    events = Events()
    order = events.order(at("2026-03-01T10:00"), "o1", line(10))
    state = engine.new_state("u1")
    assert len(engine.apply(state, [order, order]).emitted) == 1
    assert engine.apply(state, [order]).emitted == []
    assert balance(state) == 10


def test_events_are_evaluated_under_the_version_in_force_at_their_time() -> None:
    program_book = book(
        {"version": 1, "effective_from": "2026-01-01"},
        {"version": 2, "effective_from": "2026-06-01", "earn": {"points_per_unit": 2}},
    )
    events = Events()
    history = [
        events.order(at("2026-05-31T23:59"), "o1", line(10)),
        events.order(at("2026-06-01T00:00"), "o2", line(10)),
    ]
    state, emitted = run(program_book, history[::-1])
    assert [(e["points"], e["program_version"]) for e in of_kind(emitted, "Points Earned")] == [
        (10, 1), (20, 2)
    ]
    assert balance(state) == 30


def test_state_round_trips_and_snapshots_are_independent() -> None:
    events = Events()
    state, _ = run(book(ledger={"pending_days": 30}), [
        events.order(at("2026-03-01T10:00"), "o1", line(10, 2), line(5)),
        events.identify(at("2026-03-02T10:00"), birthday="1990-07-04"),
    ])
    assert decode(encode(state)) == state
    copy = snapshot(state)
    LoyaltyEngine(book(ledger={"pending_days": 30})).advance(state, at("2026-05-01"))
    assert copy != state
    assert copy.lots[0].pending and not state.lots[0].pending


def test_summary_of_the_member_profile() -> None:
    program_book = book(
        ledger={"pending_days": 30, "expiry": {"policy": "end_of_month", "months": 2}},
    )
    events = Events()
    state, _ = run(program_book, [
        events.order(at("2026-03-01T10:00"), "o1", line(40)),
        events.adjust(at("2026-03-05T10:00"), 25, "goodwill", "a1"),
        events.order(at("2026-04-10T10:00"), "o2", line(60)),
    ])
    summary = loyalty_summary(program_book, state, at("2026-04-15"))
    assert {k: summary[k] for k in ("points_balance", "pending_points", "lifetime_points",
                                     "tier", "points_value")} == {
        "points_balance": 65, "pending_points": 60, "lifetime_points": 125, "tier": "Member",
        "points_value": 0.65,
    }
    assert summary["next_expiry"] == {"points": 65, "at": "2026-06-01T00:00:00.000Z"}
    later = loyalty_summary(program_book, state, at("2026-06-02"))
    assert (later["points_balance"], later["next_expiry"]) == (
        60, {"points": 60, "at": "2026-07-01T00:00:00.000Z"}
    )
    assert msgspec.json.decode(msgspec.json.encode(summary)) == summary


def test_liability_report() -> None:
    program_book = book(
        ledger={"pending_days": 30, "expiry": {"policy": "end_of_month", "months": 1}},
        tiers={"metric": "tier_points", "levels": [
            {"name": "Member", "threshold": 0}, {"name": "Gold", "threshold": 100}]},
        rewards=[{"id": "pay", "type": "points_payment"}],
    )
    engine = LoyaltyEngine(program_book)
    events = Events()
    one, _ = engine.replay("u1", [
        events.adjust(at("2026-01-10T10:00"), 50, "welcome", "a1"),  # expires 2026-03-01
        events.order(at("2026-03-20T10:00"), "o1", line(200)),  # Gold; pending until 04-19
    ], until=at("2026-04-01"))
    two, _ = engine.replay("u2", [
        events.adjust(at("2026-03-01T10:00"), 80, "welcome", "a2"),
        events.redeem(at("2026-03-02T10:00"), "pay", "k1", points=30),
    ], until=at("2026-04-01"))
    report = liability_report(program_book, [one, two], at("2026-04-01"))
    assert (report.members, report.outstanding_points, report.pending_points) == (2, 250, 200)
    assert report.by_tier == {"Member": 50, "Gold": 200}
    assert report.by_age == {"0-30d": 250, "31-90d": 0, "91-180d": 0, "181-365d": 0, "365d+": 0}
    # u2's 50 earned in March expire 2026-05-01; u1's order expires 2026-05-01 too.
    assert report.expiry_forecast == {"2026-05": 250}
    assert (report.issued_points, report.redeemed_points, report.expired_points) == (330, 30, 50)
    assert report.breakage_rate == round(50 / 80, 6)
    assert report.expected_cost_points == round(250 * (1 - 50 / 80))
    assert report.outstanding_value == 2.5


def test_a_quiet_member_is_advanced_by_the_scheduler_on_event_time() -> None:
    program_book = book(ledger={"expiry": {"policy": "days_after_earn", "days": 10},
                                "expiring_soon_days": 3})
    engine = LoyaltyEngine(program_book)
    events = Events()
    state = engine.new_state("u1")
    engine.apply(state, [events.adjust(at("2026-03-01T10:00"), 10, "x", "a1")])
    assert engine.next_due(state) == at("2026-03-09")  # expiring-soon warning
    assert [e["event"] for e in engine.advance(state, at("2026-03-09"))] == ["Points Expiring Soon"]
    assert engine.next_due(state) == at("2026-03-12")
    assert [e["event"] for e in engine.advance(state, at("2026-03-12") + DAY)] == ["Points Expired"]
    assert engine.advance(state, at("2026-03-11")) == []  # going back in time does nothing
