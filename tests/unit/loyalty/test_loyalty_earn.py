"""Worked examples of every earn rule: each row's points and attribution computed by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from loyalty_support import Events, at, book, line, of_kind, run

from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.core.loyalty.budgets import CampaignBudgets

WED = "2026-03-04T10:00"  # 2026-03-04 is a Wednesday
SAT = "2026-03-07T10:00"


@dataclass
class Case:
    name: str
    changes: dict[str, Any]
    orders: list[dict[str, Any]]
    expected: list[dict[str, int]]  # per order: rule id -> points
    setup: list[dict[str, Any]] = field(default_factory=list)


def rule(rule_id: str, multiplier: float, priority: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "type": "multiplier", "multiplier": multiplier, "priority": priority, **extra}


PET = {"category": "Pet Food", "brand": "Barkley"}

CASES = [
    Case("base rate, floored", {}, [{"lines": [line(19.99)]}], [{"base": 19}]),
    Case("quantity", {}, [{"lines": [line(5.50, 3)]}], [{"base": 16}]),
    Case("rate with decimals", {"earn": {"points_per_unit": 2.5}},
         [{"lines": [line(10.10)]}], [{"base": 25}]),
    Case("gift cards excluded",
         {"earn": {"eligibility": {"exclude_categories": ["Gift Cards"]}}},
         [{"lines": [line(30), line(50, category="Gift Cards")]}], [{"base": 30}]),
    Case("sku excluded", {"earn": {"eligibility": {"exclude_skus": ["BAG"]}}},
         [{"lines": [line(20), line(5, sku="BAG")]}], [{"base": 20}]),
    Case("brand excluded, case-insensitively",
         {"earn": {"eligibility": {"exclude_brands": ["ACME"]}}},
         [{"lines": [line(20, brand="acme"), line(7, brand="Other")]}], [{"base": 7}]),
    Case("discounted items excluded",
         {"earn": {"eligibility": {"exclude_discounted_items": True}}},
         [{"lines": [line(40, discount=10), line(10)]}], [{"base": 10}]),
    Case("discounted items earn on what was paid", {},
         [{"lines": [line(40, discount=10), line(10)]}], [{"base": 40}]),
    Case("order discount prorated over lines", {},
         [{"lines": [line(60), line(40)], "props": {"discount": 10}}], [{"base": 90}]),
    Case("shipping and tax excluded by default", {},
         [{"lines": [line(50)], "props": {"shipping": 5.99, "tax": 4.01}}], [{"base": 50}]),
    Case("shipping and tax included",
         {"earn": {"eligibility": {"include_shipping": True, "include_tax": True}}},
         [{"lines": [line(50)], "props": {"shipping": 5.99, "tax": 4.01}}], [{"base": 60}]),
    Case("no products: total less shipping and tax", {},
         [{"lines": [], "props": {"total": 80, "shipping": 5, "tax": 5}}], [{"base": 70}]),
    Case("malformed lines are skipped", {},
         [{"lines": [line(12), {"price": "abc"}, {"price": 5, "quantity": 0}, "junk"]}],
         [{"base": 12}]),
    Case("category multiplier",
         {"earn": {"rules": [rule("pet-2x", 2, match={"categories": ["Pet Food"]})]}},
         [{"lines": [line(20, **PET), line(10)]}], [{"base": 30, "pet-2x": 20}]),
    Case("sku multiplier",
         {"earn": {"rules": [rule("sku-3x", 3, match={"skus": ["S1"]})]}},
         [{"lines": [line(10, sku="S1"), line(10, sku="S2")]}], [{"base": 20, "sku-3x": 20}]),
    Case("stackable rules add their extra",
         {"earn": {"rules": [
             rule("pet-2x", 2, 10, match={"categories": ["Pet Food"]}),
             rule("barkley-3x", 3, 20, match={"brands": ["Barkley"]}),
         ]}},
         [{"lines": [line(10, **PET)]}], [{"base": 10, "barkley-3x": 20, "pet-2x": 10}]),
    Case("exclusive rule on top wins alone",
         {"earn": {"rules": [
             rule("weekend-5x", 5, 100, stacking="exclusive", days_of_week=["sat", "sun"]),
             rule("pet-2x", 2, 10, match={"categories": ["Pet Food"]}),
         ]}},
         [{"lines": [line(10, **PET)], "when": SAT}, {"lines": [line(10, **PET)]}],
         [{"base": 10, "weekend-5x": 40}, {"base": 10, "pet-2x": 10}]),
    Case("exclusive rule below an applied one is skipped",
         {"earn": {"rules": [
             rule("pet-2x", 2, 100, match={"categories": ["Pet Food"]}),
             rule("barkley-3x", 3, 10, stacking="exclusive", match={"brands": ["Barkley"]}),
         ]}},
         [{"lines": [line(10, **PET), line(10, brand="Barkley")]}],
         [{"base": 20, "pet-2x": 10, "barkley-3x": 20}]),
    Case("promotion window is whole days, inclusive",
         {"earn": {"rules": [rule("promo", 2, starts="2026-03-05", ends="2026-03-06")]}},
         [{"lines": [line(10)], "when": "2026-03-04T23:59"},
          {"lines": [line(10)], "when": "2026-03-06T23:59"},
          {"lines": [line(10)], "when": "2026-03-07T00:00"}],
         [{"base": 10}, {"base": 10, "promo": 10}, {"base": 10}]),
    Case("channel condition",
         {"earn": {"rules": [rule("app-1.5x", 1.5, channels=["app"])]}},
         [{"lines": [line(10)], "channel": "app"}, {"lines": [line(10)], "channel": "pos"}],
         [{"base": 10, "app-1.5x": 5}, {"base": 10}]),
    Case("rounding: floor of the total, rules floored, base takes the rest",
         {"earn": {"rules": [rule("pet-2x", 2, match={"categories": ["Pet Food"]})]}},
         [{"lines": [line(0.99, **PET), line(0.99, **PET)]}], [{"base": 2, "pet-2x": 1}]),
    Case("order bonus needs its minimum eligible amount",
         {"earn": {"rules": [{"id": "big", "type": "order_bonus", "points": 50,
                              "min_eligible_amount": 100}]}},
         [{"lines": [line(99.99)]}, {"lines": [line(100)]}],
         [{"base": 99}, {"base": 100, "big": 50}]),
    Case("order bonus with a match needs a matching eligible line",
         {"earn": {"rules": [{"id": "pet-bonus", "type": "order_bonus", "points": 30,
                              "match": {"categories": ["Pet Food"]}}]}},
         [{"lines": [line(10)]}, {"lines": [line(10), line(5, **PET)]}],
         [{"base": 10}, {"base": 15, "pet-bonus": 30}]),
    Case("exclusive order bonus beats lower ones",
         {"earn": {"rules": [
             {"id": "vip", "type": "order_bonus", "points": 100, "priority": 9,
              "stacking": "exclusive"},
             {"id": "small", "type": "order_bonus", "points": 10},
         ]}},
         [{"lines": [line(10)]}], [{"base": 10, "vip": 100}]),
    Case("per-member budget caps a rule",
         {"earn": {"rules": [rule("double", 2, budget={"member_points": 15})]}},
         [{"lines": [line(10)]}, {"lines": [line(10)]}, {"lines": [line(10)]}],
         [{"base": 10, "double": 10}, {"base": 10, "double": 5}, {"base": 10}]),
    Case("wishlisted items",
         {"earn": {"rules": [rule("wish-3x", 3, match={"wishlisted": True})]}},
         [{"lines": [line(10, product_id="p1"), line(10, product_id="p2")]}],
         [{"base": 20, "wish-3x": 20}],
         setup=[{"name": "Product Added to Wishlist", "props": {"product_id": "p1"}},
                {"name": "Product Added to Wishlist", "props": {"product_id": "p2"}},
                {"name": "Product Removed from Wishlist", "props": {"product_id": "p2"}}]),
    Case("points paid on the order earn nothing",
         {}, [{"lines": [line(50)], "props": {"points_redeemed": 1000}}],
         [{"base": 40}], setup=[{"name": "adjust", "points": 1000}]),
    Case("points paid earn when configured",
         {"earn": {"eligibility": {"earn_on_points_payment": True}}},
         [{"lines": [line(50)], "props": {"points_redeemed": 1000}}],
         [{"base": 50}], setup=[{"name": "adjust", "points": 1000}]),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_earn_worked_examples(case: Case) -> None:
    events = Events()
    inputs = []
    start = at("2026-03-01T09:00")
    for index, step in enumerate(case.setup):
        if step["name"] == "adjust":
            inputs.append(events.adjust(start + index, step["points"], "goodwill", f"a{index}"))
        else:
            inputs.append(events.track(step["name"], start + index, step["props"]))
    for index, order in enumerate(case.orders):
        when = at(order.get("when", WED)) + index
        inputs.append(events.order(
            when, f"o{index}", *order["lines"], channel=order.get("channel", "web"),
            **order.get("props", {}),
        ))
    _, emitted = run(book(**case.changes), inputs)
    earned = [event for event in of_kind(emitted, "Points Earned") if "order_id" in event]
    by_order = {event["order_id"]: {r["id"]: r["points"] for r in event["rules"]} for event in earned}
    got = [by_order.get(f"o{index}", {}) for index in range(len(case.orders))]
    assert got == case.expected
    for event in earned:
        assert event["points"] == sum(r["points"] for r in event["rules"])


def test_campaign_budget_is_shared_and_idempotent() -> None:
    program_book = book(earn={"rules": [rule("launch", 2, budget={"total_points": 25})]})
    budgets = CampaignBudgets()
    engine = LoyaltyEngine(program_book, budgets)
    events = Events()
    first = [events.order(at(WED), "o1", line(20))]
    second = [events.order(at(WED) + 1, "o2", line(20))]
    _, emitted_one = engine.replay("u1", first)
    _, emitted_two = engine.replay("u2", second)
    assert of_kind(emitted_one, "Points Earned")[0]["points"] == 40
    assert of_kind(emitted_two, "Points Earned")[0]["points"] == 25  # 20 base + 5 left
    assert budgets.remaining("launch", 25) == 0
    # Replaying u1 asks again with the same key and gets the same grant, not a second one.
    _, again = engine.replay("u1", first)
    assert of_kind(again, "Points Earned")[0]["points"] == 40
    assert budgets.spent == {"launch": 25}


def test_points_payment_is_redeemed_and_reported() -> None:
    events = Events()
    _, emitted = run(book(), [
        events.adjust(at(WED), 300, "welcome", "a1"),
        events.order(at(WED) + 1, "o1", line(50), points_redeemed=500),
    ])
    [redeemed] = of_kind(emitted, "Points Redeemed")
    assert redeemed["reason"] == "order_payment"
    assert (redeemed["points"], redeemed["shortfall"], redeemed["value"]) == (300, 200, 3.0)
    # $3 of $50 paid with points: 47 eligible.
    assert of_kind(emitted, "Points Earned")[-1]["points"] == 47
