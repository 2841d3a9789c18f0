"""Worked examples of milestones, bonus events (caps, birthdays) and rewards (decisions,
codes, limits, the redemption command)."""

from __future__ import annotations

from loyalty_support import DAY, Events, at, balance, book, entries, line, of_kind, run

from loyalty_cdp.core.loyalty import LoyaltyEngine, RedemptionRequest, redemption_command
from loyalty_cdp.core.loyalty.emit import message_id
from loyalty_cdp.core.loyalty.rewards import voucher_code

MILESTONES = [
    {"id": "first", "type": "nth_purchase", "n": 1, "bonus_points": 100},
    {"id": "third", "type": "nth_purchase", "n": 3},
    {"id": "club-500", "type": "lifetime_points", "threshold": 500, "bonus_points": 50},
    {"id": "first-app", "type": "first_purchase_in_channel", "channel": "app"},
    {"id": "first-pet", "type": "first_purchase_in_category", "category": "pet food"},
    {"id": "one-year", "type": "anniversary", "years": 1, "bonus_points": 25},
]


def test_milestones_are_achieved_once_each_with_their_bonuses() -> None:
    events = Events()
    pet = line(20, category="Pet Food")
    state, emitted = run(book(milestones=MILESTONES), [
        events.order(at("2026-03-01T10:00"), "o1", line(10)),
        events.order(at("2026-03-02T10:00"), "o2", pet, channel="app"),
        events.order(at("2026-03-03T10:00"), "o3", line(400)),  # lifetime 10+100+20+400 = 530
        events.order(at("2026-03-04T10:00"), "o4", pet, channel="app"),
    ], until=at("2027-03-02"))
    achieved = [(e["timestamp"][:10], e["properties"]["milestone_id"])
                for e in emitted if e["event"] == "Milestone Achieved"]
    assert achieved == [
        ("2026-03-01", "first"), ("2026-03-02", "first-app"), ("2026-03-02", "first-pet"),
        ("2026-03-03", "third"), ("2026-03-03", "club-500"), ("2027-03-01", "one-year"),
    ]
    bonuses = [e["source"] for e in of_kind(emitted, "Points Earned") if e["source"].startswith("m")]
    assert bonuses == ["milestone:first", "milestone:club-500", "milestone:one-year"]
    assert state.milestones == ["first", "first-app", "first-pet", "third", "club-500", "one-year"]
    assert state.lifetime_points == 10 + 100 + 20 + 400 + 50 + 20 + 25


def test_a_milestone_bonus_can_reach_a_lifetime_milestone() -> None:
    events = Events()
    _, emitted = run(book(milestones=[
        {"id": "first", "type": "nth_purchase", "n": 1, "bonus_points": 100},
        {"id": "club-100", "type": "lifetime_points", "threshold": 100},
    ]), [events.order(at("2026-03-01T10:00"), "o1", line(5))])
    assert [e["milestone_id"] for e in of_kind(emitted, "Milestone Achieved")] == [
        "first", "club-100"
    ]


BONUSES = [
    {"id": "review", "event": "Product Reviewed", "points": 25, "per_day": 1, "lifetime": 3},
    {"id": "install", "event": "Application Installed", "points": 200, "lifetime": 1,
     "channels": ["app"]},
    {"id": "launch-week", "event": "Referral Completed", "points": 500,
     "starts": "2026-03-01", "ends": "2026-03-07"},
]


def test_bonus_events_under_day_and_lifetime_caps_and_windows() -> None:
    events = Events()
    day1 = at("2026-03-02T09:00")
    state, emitted = run(book(earn={"bonus_events": BONUSES}), [
        events.track("Product Reviewed", day1),
        events.track("Product Reviewed", day1 + 3_600_000),  # second review that day
        events.track("Product Reviewed", day1 + DAY),
        events.track("Product Reviewed", day1 + 2 * DAY),
        events.track("Product Reviewed", day1 + 3 * DAY),  # over the lifetime cap
        events.track("Application Installed", day1, channel="web"),  # wrong channel
        events.track("Application Installed", day1 + 1, channel="app"),
        events.track("Application Installed", day1 + 2, channel="app"),
        events.track("Referral Completed", day1 + 5 * DAY),  # 2026-03-07: last day
        events.track("Referral Completed", day1 + 6 * DAY),  # 2026-03-08: over
    ])
    awarded = [(e["source"], e["points"]) for e in of_kind(emitted, "Points Earned")]
    assert awarded == [
        ("bonus:review", 25), ("bonus:install", 200), ("bonus:review", 25),
        ("bonus:review", 25), ("bonus:launch-week", 500),
    ]
    assert balance(state) == 775


def test_birthday_bonus_every_year_and_at_most_once_a_year() -> None:
    program_book = book(earn={"bonus_events": [{"id": "bday", "event": "birthday", "points": 200}]})
    events = Events()
    _, emitted = run(program_book, [
        events.identify(at("2026-01-10T12:00"), birthday="1990-03-15"),
        events.identify(at("2026-03-16T12:00"), birthday="1990-03-20"),  # changed after the bonus
    ], until=at("2027-03-16"))
    paid = [e["timestamp"] for e in emitted if e["event"] == "Points Earned"]
    # 2026-03-20 comes 5 days after 2026-03-15's bonus: skipped; 2027 pays on the new date.
    assert paid == ["2026-03-15T00:00:00.000Z"]
    _, emitted = run(program_book, [
        events.identify(at("2026-01-10T12:00"), birthday="2000-02-29"),
    ], until=at("2028-03-01"))
    paid = [e["timestamp"][:10] for e in emitted if e["event"] == "Points Earned"]
    assert paid == ["2026-02-28", "2027-02-28", "2028-02-29"]


REWARDS = [
    {"id": "five-off", "type": "discount_voucher", "cost": 500, "value": 5,
     "code_prefix": "SAVE5", "per_member_limit": 2},
    {"id": "mug", "type": "free_product", "cost": 300, "sku": "MUG-1", "tiers": ["Gold"]},
    {"id": "summer", "type": "discount_voucher", "cost": 100, "value": 1,
     "starts": "2026-06-01", "ends": "2026-08-31"},
    {"id": "pay", "type": "points_payment", "min_points": 100, "max_points": 1000},
]
TIERS = {"metric": "tier_points", "levels": [
    {"name": "Member", "threshold": 0}, {"name": "Gold", "threshold": 5000}]}


def _member(points: int) -> tuple[LoyaltyEngine, object]:
    program_book = book(rewards=REWARDS, tiers=TIERS)
    events = Events()
    state, _ = run(program_book, [events.adjust(at("2026-03-01T10:00"), points, "seed", "a0")])
    return LoyaltyEngine(program_book), state


def test_redemption_decisions() -> None:
    engine, state = _member(1200)
    when = at("2026-03-02T10:00")

    def decide(reward: str, **kw: int) -> tuple[str, str, int, int]:
        d = engine.decide_redemption(state, RedemptionRequest(reward, "k", **kw), when)
        return d.status, d.reason, d.balance, d.cost

    assert decide("five-off") == ("accepted", "", 700, 500)
    assert decide("five-off", quantity=3) == ("refused", "limit_reached", 0, 1500)
    assert decide("five-off", quantity=0) == ("refused", "invalid_quantity", 0, 0)
    assert decide("mug") == ("refused", "tier_required", 0, 0)
    assert decide("summer") == ("refused", "not_available", 0, 0)
    assert decide("nope") == ("refused", "unknown_reward", 0, 0)
    assert decide("pay", points=99) == ("refused", "invalid_points", 0, 99)
    assert decide("pay", points=1001) == ("refused", "invalid_points", 0, 1001)
    assert decide("pay", points=1000) == ("accepted", "", 200, 1000)
    engine, poor = _member(400)
    d = engine.decide_redemption(poor, RedemptionRequest("five-off", "k"), when)
    assert (d.status, d.reason, d.balance, d.cost) == ("refused", "insufficient_balance", 400, 500)


def test_pending_points_count_once_their_return_window_has_passed() -> None:
    program_book = book(rewards=REWARDS, tiers=TIERS, ledger={"pending_days": 30})
    events = Events()
    state, _ = run(program_book, [events.order(at("2026-03-01T10:00"), "o1", line(600))])
    engine = LoyaltyEngine(program_book)
    request = RedemptionRequest("five-off", "k1")
    assert engine.decide_redemption(state, request, at("2026-03-20")).reason == (
        "insufficient_balance"
    )
    assert engine.decide_redemption(state, request, at("2026-04-01")).status == "accepted"


def test_voucher_codes_and_the_redemption_command_are_deterministic() -> None:
    code = voucher_code("SAVE5", "u1", "key-1")
    assert code == voucher_code("SAVE5", "u1", "key-1")
    assert code != voucher_code("SAVE5", "u1", "key-2")
    assert code.startswith("SAVE5-") and len(code) == len("SAVE5-XXXX-XXXX")
    request = RedemptionRequest("five-off", "key-1", order_id="o9")
    command = redemption_command("u1", request, at("2026-03-02T10:00"))
    assert command == {
        "type": "track", "userId": "u1", "event": "Reward Redeemed",
        "properties": {"reward_id": "five-off", "idempotency_key": "key-1", "quantity": 1,
                       "order_id": "o9"},
        "timestamp": "2026-03-02T10:00:00.000Z",
        "messageId": message_id("u1", "Reward Redeemed", "key-1"),
        "context": {"channel": "loyalty"},
    }
    assert redemption_command("u1", request, at("2026-03-03"))["messageId"] == command["messageId"]


def test_the_fold_decides_again_and_records_each_key_once() -> None:
    program_book = book(rewards=REWARDS, tiers=TIERS)
    events = Events()
    state, emitted = run(program_book, [
        events.adjust(at("2026-03-01T10:00"), 900, "seed", "a0"),
        events.redeem(at("2026-03-02T10:00"), "five-off", "k1"),
        events.redeem(at("2026-03-02T10:01"), "five-off", "k1"),  # retried: once
        events.redeem(at("2026-03-02T10:02"), "five-off", "k2"),  # 400 left: refused
    ])
    [redeemed] = of_kind(emitted, "Points Redeemed")
    assert redeemed == {
        "reason": "reward", "reward_id": "five-off", "reward_type": "discount_voucher",
        "reward_name": "", "quantity": 1, "points": 500, "value": 5.0, "currency": "USD",
        "code": voucher_code("SAVE5", "u1", "k1"), "idempotency_key": "k1", "order_id": None,
        "points_balance": 400,
    }
    assert entries(state) == [("earn", 900, "adjustment:a0"), ("redeem", -500, "redemption:k1")]
    assert state.redemptions["k2"].status == "insufficient_balance"
    engine = LoyaltyEngine(program_book)
    again = engine.decide_redemption(state, RedemptionRequest("five-off", "k1"), at("2026-03-03"))
    assert (again.status, again.reason, again.code) == (
        "duplicate", "accepted", voucher_code("SAVE5", "u1", "k1")
    )
