"""Properties of the fold over random member histories (Hypothesis).

* balance + pending == sum of the ledger entries, after every event;
* the balance never goes below zero under ``within_balance``;
* replaying in any order, with duplicates, gives the same state and emitted events;
* incremental folding (any batch split, scheduler runs in between) equals a replay, and
  late events handled by ``apply_or_replay`` end in the replayed state;
* buying then returning everything leaves no points from the returned lines;
* every loyalty event is emitted once per history (unique message ids), and re-emitting
  after a replay repeats identical events, which the event log deduplicates.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty_support import DAY, HOUR, Events, at, balance, book, check_invariants, line

from loyalty_cdp.core.loyalty import LoyaltyEngine, LoyaltyInput, encode

START = at("2026-01-05T08:00")
REWARDS = [
    {"id": "v100", "type": "discount_voucher", "cost": 100, "value": 1},
    {"id": "v500", "type": "discount_voucher", "cost": 500, "value": 5, "per_member_limit": 2},
    {"id": "pay", "type": "points_payment", "min_points": 10},
]
COMMON: dict[str, Any] = {
    "rewards": REWARDS,
    "earn": {
        "rules": [
            {"id": "pet-2x", "type": "multiplier", "multiplier": 2,
             "match": {"categories": ["Pet Food"]}, "priority": 5},
            {"id": "weekend-3x", "type": "multiplier", "multiplier": 3, "priority": 9,
             "stacking": "exclusive", "days_of_week": ["sat", "sun"],
             "budget": {"member_points": 400}},
            {"id": "big", "type": "order_bonus", "points": 40, "min_eligible_amount": 150},
        ],
        "bonus_events": [
            {"id": "review", "event": "Product Reviewed", "points": 15, "per_day": 1,
             "lifetime": 5, "tier_points": True},
            {"id": "bday", "event": "birthday", "points": 100},
        ],
    },
    "milestones": [
        {"id": "first", "type": "nth_purchase", "n": 1, "bonus_points": 20},
        {"id": "fifth", "type": "nth_purchase", "n": 5},
        {"id": "club", "type": "lifetime_points", "threshold": 800, "bonus_points": 50},
        {"id": "app", "type": "first_purchase_in_channel", "channel": "app"},
        {"id": "year", "type": "anniversary", "years": 1},
    ],
}
LEVELS = [
    {"name": "Member", "threshold": 0},
    {"name": "Silver", "threshold": 300, "benefits": {"multiplier": 1.25}},
    {"name": "Gold", "threshold": 900, "benefits": {"multiplier": 1.5}},
]
BOOKS = {
    "calendar-spend-negative": book(**COMMON, ledger={
        "pending_days": 14, "refund_policy": "allow_negative",
        "expiry": {"policy": "end_of_month", "months": 3}, "expiring_soon_days": 10,
    }, tiers={"metric": "qualifying_spend", "window": "calendar_year", "levels": LEVELS,
              "grace_days": 20, "warning_days": 30, "downgrade": "one_down"}),
    "rolling-points-within": book(**COMMON, ledger={
        "pending_days": 0, "expiry": {"policy": "days_after_earn", "days": 60},
        "expiring_soon_days": 7,
    }, tiers={"metric": "tier_points", "window": "rolling_12_months", "levels": LEVELS,
              "warning_days": 20}),
    "anniversary-count-inactivity": book(**COMMON, ledger={
        "pending_days": 7, "expiry": {"policy": "inactivity_days", "days": 45},
        "expiring_soon_days": 5,
    }, tiers={"metric": "purchase_count", "window": "anniversary", "levels": [
        {"name": "Member", "threshold": 0}, {"name": "Regular", "threshold": 4}],
        "grace_days": 10}),
}
CATEGORIES = ["Pet Food", "Coffee", "Gift Cards", "Produce"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[str, list[LoyaltyInput]]:
    """A random member history: orders, refunds, redemptions, adjustments, reviews, a birthday."""
    name = draw(st.sampled_from(sorted(BOOKS)))
    events = Events()
    inputs: list[LoyaltyInput] = []
    orders: list[tuple[str, list[dict[str, Any]]]] = []
    count = draw(st.integers(min_value=1, max_value=28))
    for _ in range(count):
        when = START + draw(st.integers(0, 420)) * DAY + draw(st.integers(0, 23)) * HOUR
        kind = draw(st.sampled_from(
            ["order", "order", "order", "refund", "redeem", "adjust", "review", "birthday"]))
        if kind == "order":
            lines = [
                line(draw(st.integers(50, 40_000)) / 100, draw(st.integers(1, 3)),
                     category=draw(st.sampled_from(CATEGORIES)), product_id=f"p{n}")
                for n in range(draw(st.integers(1, 3)))
            ]
            order_id = f"o{draw(st.integers(0, count))}"  # sometimes a repeated order id
            paid = draw(st.sampled_from([0, 0, 0, 50, 400]))
            extra = {"points_redeemed": paid} if paid else {}
            channel = draw(st.sampled_from(["web", "pos", "app"]))
            inputs.append(events.order(when, order_id, *lines, channel=channel, **extra))
            orders.append((order_id, lines))
        elif kind == "refund" and orders:
            order_id, lines = draw(st.sampled_from(orders))
            refund_id = f"r{draw(st.integers(0, 5))}"
            mode = draw(st.sampled_from(["full", "line", "amount"]))
            if mode == "full":
                inputs.append(events.refund(when, order_id, refund_id))
            elif mode == "line":
                item = draw(st.sampled_from(lines))
                back = {"product_id": item["product_id"], "quantity": draw(st.integers(1, 3))}
                inputs.append(events.refund(when, order_id, refund_id, back))
            else:
                inputs.append(events.refund(when, order_id, refund_id,
                                            amount=draw(st.integers(1, 300))))
        elif kind == "redeem":
            reward = draw(st.sampled_from(["v100", "v500", "pay"]))
            points = draw(st.integers(10, 600)) if reward == "pay" else 0
            key = f"k{draw(st.integers(0, 6))}"
            inputs.append(events.redeem(when, reward, key, points=points))
        elif kind == "adjust":
            points = draw(st.integers(-300, 300).filter(bool))
            inputs.append(events.adjust(when, points, "support", f"a{draw(st.integers(0, 4))}"))
        elif kind == "review":
            inputs.append(events.track("Product Reviewed", when, {"product_id": "p0"}))
        else:
            inputs.append(events.identify(when, birthday=f"1990-{draw(st.integers(1, 12)):02d}-15"))
    return name, inputs


def _ordered(inputs: list[LoyaltyInput]) -> list[LoyaltyInput]:
    return sorted(inputs, key=lambda event: (event.timestamp, event.message_id))


def _end(inputs: list[LoyaltyInput]) -> int:
    return max(event.timestamp for event in inputs) + 200 * DAY


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(histories())
def test_ledger_invariants_after_every_event(history: tuple[str, list[LoyaltyInput]]) -> None:
    name, inputs = history
    engine = LoyaltyEngine(BOOKS[name])
    state = engine.new_state("u1")
    for event in _ordered(inputs):
        engine.apply(state, [event])
        check_invariants(state)
        if "within" in name:
            assert balance(state) >= 0
    engine.advance(state, _end(inputs))
    check_invariants(state)


@FAST
@given(histories(), st.randoms(use_true_random=False))
def test_replay_in_any_order_with_duplicates_is_the_same(
    history: tuple[str, list[LoyaltyInput]], rng: Any
) -> None:
    name, inputs = history
    engine = LoyaltyEngine(BOOKS[name])
    until = _end(inputs)
    state, emitted = engine.replay("u1", _ordered(inputs), until)
    shuffled = inputs + [rng.choice(inputs) for _ in range(3)]
    rng.shuffle(shuffled)
    again, emitted_again = engine.replay("u1", shuffled, until)
    assert encode(again) == encode(state)
    assert emitted_again == emitted
    ids = [event["messageId"] for event in emitted]
    assert len(ids) == len(set(ids)), "each loyalty event is emitted once"


@FAST
@given(histories(), st.randoms(use_true_random=False))
def test_incremental_folding_and_late_events_equal_a_replay(
    history: tuple[str, list[LoyaltyInput]], rng: Any
) -> None:
    name, inputs = history
    engine = LoyaltyEngine(BOOKS[name])
    until = _end(inputs)
    expected, expected_emitted = engine.replay("u1", inputs, until)

    # In order, in random batches, with the scheduler running in between.
    ordered = _ordered(inputs)
    state = engine.new_state("u1")
    emitted: list[dict[str, Any]] = []
    position = 0
    while position < len(ordered):
        size = rng.randint(1, 4)
        batch = ordered[position:position + size]
        position += size
        emitted += engine.apply(state, batch).emitted
        if position < len(ordered) and rng.random() < 0.5:
            emitted += engine.advance(state, ordered[position].timestamp)
    emitted += engine.advance(state, until)
    assert encode(state) == encode(expected)
    assert emitted == expected_emitted

    # In arrival order (shuffled), late events rebuilt from the history seen so far. Every
    # event of the final replay was emitted at some point; the log stores each id once.
    arrival = list(inputs)
    rng.shuffle(arrival)
    state = engine.new_state("u1")
    seen: list[LoyaltyInput] = []
    emitted_ids: set[str] = set()
    for event in arrival:
        seen.append(event)
        state, out = engine.apply_or_replay(state, [event], lambda: list(seen))
        emitted_ids.update(item["messageId"] for item in out)
    emitted_ids.update(item["messageId"] for item in engine.advance(state, until))
    assert encode(state) == encode(expected)
    assert {item["messageId"] for item in expected_emitted} <= emitted_ids


@FAST
@given(histories())
def test_returning_everything_leaves_no_points_from_the_orders(
    history: tuple[str, list[LoyaltyInput]],
) -> None:
    name, inputs = history
    orders = [event for event in inputs if event.name == "Order Completed"]
    if not orders:
        return
    events = Events()
    events.count = 10_000
    last = max(event.timestamp for event in inputs)
    returns: list[LoyaltyInput] = []
    for index, order in enumerate(orders):
        for item in order.properties["products"]:
            # Return each line one unit at a time, then whatever is left.
            for unit in range(item["quantity"]):
                back = {"product_id": item["product_id"], "quantity": 1}
                returns.append(events.refund(order.timestamp + (unit + 1) * HOUR,
                                             order.properties["order_id"],
                                             f"ret-{index}-{item['product_id']}-{unit}", back))
    engine = LoyaltyEngine(BOOKS[name])
    state, _ = engine.replay("u1", orders + returns, last + DAY)
    for record in state.orders.values():
        assert record.points - record.reversed_points == 0
        assert record.returned_paid == record.points_paid
    check_invariants(state)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)
FIELDS = ["order_id", "products", "price", "quantity", "discount", "total", "shipping", "tax",
          "points_redeemed", "refund_id", "amount", "reward_id", "idempotency_key", "points",
          "reason", "adjustment_id", "birthday", "product_id", "sku", "category"]
NAMES = ["Order Completed", "Order Refunded", "Reward Redeemed", "Points Adjusted",
         "Product Reviewed", "identify", "Product Added to Wishlist"]


@FAST
@given(st.lists(st.tuples(
    st.sampled_from(NAMES),
    st.dictionaries(st.sampled_from(FIELDS), JSON | st.lists(
        st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), max_size=3), max_size=8),
    st.integers(0, 400),
), max_size=12))
def test_any_input_is_folded_without_error_and_stays_storable(
    calls: list[tuple[str, dict[str, Any], int]],
) -> None:
    engine = LoyaltyEngine(BOOKS["calendar-spend-negative"])
    inputs = [
        LoyaltyInput(f"m{index}", START + day * DAY, name, properties, "web")
        for index, (name, properties, day) in enumerate(calls)
    ]
    state, _ = engine.replay("u1", inputs, START + 500 * DAY)
    check_invariants(state)
    encode(state)
