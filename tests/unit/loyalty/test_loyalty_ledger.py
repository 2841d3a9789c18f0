"""Worked examples of the ledger: lots, pending, spending order, expiry, refunds, adjustments,
idempotency. Each expected ledger is written by hand."""

from __future__ import annotations

from loyalty_support import (
    DAY,
    Events,
    at,
    balance,
    book,
    check_invariants,
    entries,
    line,
    of_kind,
    pending,
    run,
)

from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.core.loyalty.ledger import MAX_ENTRIES

VOUCHERS = [
    {"id": "v80", "type": "discount_voucher", "cost": 80, "value": 0.8},
    {"id": "v150", "type": "discount_voucher", "cost": 150, "value": 1.5},
]


def test_purchase_points_are_pending_for_the_return_window() -> None:
    program_book = book(ledger={"pending_days": 30})
    events = Events()
    state, emitted = run(program_book, [events.order(at("2026-03-01T10:00"), "o1", line(100))])
    assert (balance(state), pending(state)) == (0, 100)
    [earned] = of_kind(emitted, "Points Earned")
    assert earned["pending"] is True
    assert earned["available_at"] == "2026-03-31T10:00:00.000Z"
    engine = LoyaltyEngine(program_book)
    assert engine.advance(state, at("2026-03-31T09:59")) == []
    assert pending(state) == 100
    engine.advance(state, at("2026-03-31T10:00"))
    assert (balance(state), pending(state)) == (100, 0)
    assert entries(state) == [("earn", 100, "order:o1")]
    check_invariants(state)


def test_spending_takes_the_soonest_expiring_lot_first() -> None:
    program_book = book(
        ledger={"expiry": {"policy": "days_after_earn", "days": 100}}, rewards=VOUCHERS
    )
    events = Events()
    day0 = at("2026-03-01T10:00")
    state, emitted = run(program_book, [
        events.adjust(day0, 100, "welcome", "a1"),
        events.adjust(day0 + 10 * DAY, 100, "apology", "a2"),
        events.redeem(day0 + 20 * DAY, "v150", "k1"),
    ], until=at("2026-06-21T00:00"))
    # a1 expires at the end of its 100th day (2026-06-10 00:00): nothing left of it by then.
    # a2 expires 2026-06-20 00:00 with the 50 points the redemption left.
    assert entries(state) == [
        ("earn", 100, "adjustment:a1"),
        ("earn", 100, "adjustment:a2"),
        ("redeem", -150, "redemption:k1"),
        ("expire", -50, "expiry"),
    ]
    [expired] = [e for e in emitted if e["event"] == "Points Expired"]
    assert expired["timestamp"] == "2026-06-20T00:00:00.000Z"
    assert expired["properties"]["points"] == 50
    assert balance(state) == 0
    check_invariants(state)


def test_end_of_month_expiry_with_expiring_soon_warning() -> None:
    program_book = book(
        ledger={"expiry": {"policy": "end_of_month", "months": 0}, "expiring_soon_days": 7}
    )
    events = Events()
    state, emitted = run(
        program_book,
        [events.adjust(at("2026-03-15T10:00"), 40, "promo", "a1")],
        until=at("2026-04-02T00:00"),
    )
    warning = [e for e in emitted if e["event"] == "Points Expiring Soon"]
    assert [(w["timestamp"], w["properties"]["points"], w["properties"]["expires_at"])
            for w in warning] == [
        ("2026-03-25T00:00:00.000Z", 40, "2026-04-01T00:00:00.000Z")
    ]
    assert entries(state) == [("earn", 40, "adjustment:a1"), ("expire", -40, "expiry")]
    assert state.expired_points == 40


def test_end_of_month_twelve_months_and_end_of_year() -> None:
    earned_at = at("2026-03-15T10:00")
    events = Events()
    for expiry, expected in (
        ({"policy": "end_of_month", "months": 12}, "2027-04-01T00:00:00.000Z"),
        ({"policy": "end_of_year", "years": 0}, "2027-01-01T00:00:00.000Z"),
        ({"policy": "end_of_year", "years": 1}, "2028-01-01T00:00:00.000Z"),
        ({"policy": "days_after_earn", "days": 30}, "2026-04-15T00:00:00.000Z"),
        ({"policy": "none"}, None),
    ):
        _, emitted = run(book(ledger={"expiry": expiry}),
                         [events.adjust(earned_at, 10, "x", f"a-{expiry['policy']}")])
        assert of_kind(emitted, "Points Earned")[0]["expires_at"] == expected, expiry


def test_inactivity_expiry_moves_with_activity() -> None:
    program_book = book(
        ledger={"expiry": {"policy": "inactivity_days", "days": 90}, "expiring_soon_days": 10}
    )
    events = Events()
    state, emitted = run(program_book, [
        events.order(at("2026-03-01T10:00"), "o1", line(30)),
        events.order(at("2026-04-01T10:00"), "o2", line(20)),
    ], until=at("2026-07-01T00:00"))
    # The deadline is 90 days after the last activity (2026-04-01 10:00): 2026-06-30 10:00.
    soon = [e for e in emitted if e["event"] == "Points Expiring Soon"]
    assert [(e["timestamp"], e["properties"]["points"], e["properties"]["reason"]) for e in soon] == [
        ("2026-06-20T10:00:00.000Z", 50, "inactivity")
    ]
    expired = [e for e in emitted if e["event"] == "Points Expired"]
    assert [(e["timestamp"], e["properties"]["points"]) for e in expired] == [
        ("2026-06-30T10:00:00.000Z", 50)
    ]
    assert entries(state) == [
        ("earn", 30, "order:o1"), ("earn", 20, "order:o2"), ("expire", -50, "inactivity"),
    ]
    check_invariants(state)


def test_refund_within_the_return_window_takes_the_pending_points() -> None:
    events = Events()
    state, emitted = run(book(ledger={"pending_days": 30}), [
        events.order(at("2026-03-01T10:00"), "o1", line(100)),
        events.refund(at("2026-03-05T10:00"), "o1", "r1"),
    ])
    assert entries(state) == [("earn", 100, "order:o1"), ("reverse", -100, "refund:r1")]
    assert (balance(state), pending(state), state.lifetime_points) == (0, 0, 0)
    [reversed_] = of_kind(emitted, "Points Reversed")
    assert (reversed_["points"], reversed_["unrecovered"]) == (100, 0)


def test_refund_of_spent_points_within_balance() -> None:
    events = Events()
    state, emitted = run(book(rewards=VOUCHERS), [
        events.order(at("2026-03-01T10:00"), "o1", line(100)),
        events.redeem(at("2026-03-02T10:00"), "v80", "k1"),
        events.refund(at("2026-03-03T10:00"), "o1", "r1"),
    ])
    assert entries(state) == [
        ("earn", 100, "order:o1"), ("redeem", -80, "redemption:k1"), ("reverse", -20, "refund:r1"),
    ]
    assert balance(state) == 0
    [reversed_] = of_kind(emitted, "Points Reversed")
    assert (reversed_["points"], reversed_["unrecovered"]) == (20, 80)
    check_invariants(state)


def test_refund_of_spent_points_allow_negative_then_repaid() -> None:
    events = Events()
    state, _ = run(book(rewards=VOUCHERS, ledger={"refund_policy": "allow_negative"}), [
        events.order(at("2026-03-01T10:00"), "o1", line(100)),
        events.redeem(at("2026-03-02T10:00"), "v80", "k1"),
        events.refund(at("2026-03-03T10:00"), "o1", "r1"),
    ])
    assert balance(state) == -80
    assert state.debt == 80
    events_after = Events()
    events_after.count = 10
    more = [events_after.order(at("2026-03-04T10:00"), "o2", line(50))]
    LoyaltyEngine(book(rewards=VOUCHERS, ledger={"refund_policy": "allow_negative"})).apply(
        state, more
    )
    assert (balance(state), state.debt) == (-30, 30)
    assert entries(state) == [
        ("earn", 100, "order:o1"), ("redeem", -80, "redemption:k1"),
        ("reverse", -100, "refund:r1"), ("earn", 50, "order:o2"),
    ]
    check_invariants(state)


def test_partial_returns_reverse_proportionally_and_cumulatively() -> None:
    events = Events()
    a = line(10, 3, sku="A", product_id="A")
    b = line(20, sku="B", product_id="B")
    one_a = {"product_id": "A", "quantity": 1}
    state, emitted = run(book(), [
        events.order(at("2026-03-01T10:00"), "o1", a, b),  # A: 30 points, B: 20 points
        events.refund(at("2026-03-02T10:00"), "o1", "r1", one_a),
        events.refund(at("2026-03-03T10:00"), "o1", "r2", one_a),
        events.refund(at("2026-03-04T10:00"), "o1", "r3", {"product_id": "A", "quantity": 5}),
        events.refund(at("2026-03-05T10:00"), "o1", "r3", one_a),  # same refund id: ignored
    ])
    assert [r["points"] for r in of_kind(emitted, "Points Reversed")] == [10, 10, 10]
    assert balance(state) == 20
    assert state.orders["o1"].lines[0].returned == 3


def test_amount_refunds_scale_the_points_kept() -> None:
    events = Events()
    state, emitted = run(book(), [
        events.order(at("2026-03-01T10:00"), "o1", line(100)),
        events.refund(at("2026-03-02T10:00"), "o1", "r1", amount=25),
        events.refund(at("2026-03-03T10:00"), "o1", "r2", amount=100),  # capped at what is left
    ])
    assert [r["points"] for r in of_kind(emitted, "Points Reversed")] == [25, 75]
    assert balance(state) == 0


def test_refunding_an_order_paid_with_points_gives_the_points_back() -> None:
    events = Events()
    state, emitted = run(book(), [
        events.adjust(at("2026-03-01T09:00"), 1000, "welcome", "a1"),
        events.order(at("2026-03-01T10:00"), "o1", line(50), points_redeemed=500),
        events.refund(at("2026-03-02T10:00"), "o1", "r1"),
    ])
    # $5 of $50 paid with points: 45 points earned; the refund reverses them, returns 500.
    assert entries(state) == [
        ("earn", 1000, "adjustment:a1"), ("redeem", -500, "order:o1"), ("earn", 45, "order:o1"),
        ("reverse", -45, "refund:r1"), ("return", 500, "refund:r1"),
    ]
    [reversed_] = of_kind(emitted, "Points Reversed")
    assert (reversed_["points"], reversed_["points_returned"]) == (45, 500)
    assert balance(state) == 1000
    check_invariants(state)


def test_manual_adjustments_with_reasons() -> None:
    events = Events()
    state, emitted = run(book(), [
        events.adjust(at("2026-03-01T10:00"), 200, "goodwill", "a1"),
        events.adjust(at("2026-03-02T10:00"), -50, "correction", "a2"),
        events.adjust(at("2026-03-03T10:00"), -500, "fraud", "a3"),
        events.adjust(at("2026-03-04T10:00"), -500, "fraud", "a3"),  # same id: ignored
        events.track("Points Adjusted", at("2026-03-05T10:00"), {"points": 10}),  # no reason
    ])
    assert entries(state) == [
        ("earn", 200, "adjustment:a1"), ("adjust", -50, "adjustment:a2"),
        ("adjust", -150, "adjustment:a3"),
    ]
    assert [(r["reason"], r["points"], r["unrecovered"]) for r in of_kind(emitted, "Points Reversed")
            ] == [("correction", 50, 0), ("fraud", 150, 350)]
    assert of_kind(emitted, "Points Earned")[0]["reason"] == "goodwill"
    assert balance(state) == 0


def test_commands_are_idempotent_by_their_keys() -> None:
    events = Events()
    state, emitted = run(book(rewards=VOUCHERS), [
        events.order(at("2026-03-01T10:00"), "o1", line(200)),
        events.order(at("2026-03-01T10:05"), "o1", line(200)),  # same order, another source
        events.redeem(at("2026-03-02T10:00"), "v80", "k1"),
        events.redeem(at("2026-03-02T10:01"), "v80", "k1"),
        events.refund(at("2026-03-03T10:00"), "o1", "r1", amount=50),
        events.refund(at("2026-03-03T10:01"), "o1", "r1", amount=50),
    ])
    assert entries(state) == [
        ("earn", 200, "order:o1"), ("redeem", -80, "redemption:k1"), ("reverse", -50, "refund:r1"),
    ]
    assert len(of_kind(emitted, "Points Redeemed")) == 1


def test_refunds_after_the_refund_window_change_nothing() -> None:
    events = Events()
    state, emitted = run(book(ledger={"refund_window_days": 30}), [
        events.order(at("2026-03-01T10:00"), "o1", line(100)),
        events.refund(at("2026-04-15T10:00"), "o1", "r1"),
        events.refund(at("2026-03-02T10:00"), "unknown-order", "r2"),
    ])
    assert of_kind(emitted, "Points Reversed") == []
    assert balance(state) == 100


def test_old_entries_are_carried_forward_and_still_add_up() -> None:
    events = Events()
    adjustments = [
        events.adjust(at("2026-03-01T10:00") + index * 1000, index + 1, "bonus", f"a{index}")
        for index in range(MAX_ENTRIES + 5)
    ]
    state, _ = run(book(), adjustments)
    assert len(state.entries) == MAX_ENTRIES
    assert state.entries[0].kind == "carried"
    assert balance(state) == sum(range(1, MAX_ENTRIES + 6))
    check_invariants(state)
