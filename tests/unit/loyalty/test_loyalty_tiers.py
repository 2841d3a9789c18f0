"""Worked examples of tiers: upgrades at once, reviews, grace, warnings and downgrades."""

from __future__ import annotations

from typing import Any

from loyalty_support import Events, at, book, line, of_kind, run

from loyalty_cdp.core.loyalty import LoyaltyEngine, loyalty_summary

LEVELS = [
    {"name": "Member", "threshold": 0},
    {"name": "Silver", "threshold": 100, "benefits": {"multiplier": 1.5}},
    {"name": "Gold", "threshold": 300, "benefits": {"multiplier": 2, "free_shipping": True}},
]


def tiered(**tiers: Any) -> Any:
    return book(tiers={"metric": "qualifying_spend", "window": "calendar_year",
                       "levels": LEVELS, **tiers},
                rewards=[{"id": "pay", "type": "points_payment", "min_points": 1}])


def tier_events(emitted: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [
        (e["timestamp"], e["event"], e["properties"].get("from_tier", e["properties"].get("tier")),
         e["properties"].get("to_tier", e["properties"].get("downgrade_to")))
        for e in emitted
        if e["event"].startswith("Tier ")
    ]


def test_upgrade_is_immediate_and_benefits_apply_from_then() -> None:
    events = Events()
    state, emitted = run(tiered(), [
        events.order(at("2026-02-01T10:00"), "o1", line(80)),
        events.order(at("2026-02-02T10:00"), "o2", line(50)),  # 130 spent: Silver
        events.order(at("2026-02-03T10:00"), "o3", line(10)),
    ])
    assert tier_events(emitted) == [
        ("2026-02-02T10:00:00.000Z", "Tier Upgraded", "Member", "Silver")
    ]
    upgraded = of_kind(emitted, "Tier Upgraded")[0]
    assert (upgraded["metric_value"], upgraded["threshold"]) == (130.0, 100.0)
    earned = [e["rules"] for e in of_kind(emitted, "Points Earned") if "order_id" in e]
    assert earned == [
        [{"id": "base", "points": 80}],
        [{"id": "base", "points": 50}],  # the upgrading order earns at the old rate
        [{"id": "base", "points": 10}, {"id": "tier", "points": 5}],
    ]
    assert state.tier == "Silver"
    assert state.review_at == at("2027-01-01")


def test_calendar_year_renewal_warning_grace_and_downgrade() -> None:
    events = Events()
    state, emitted = run(tiered(grace_days=30, warning_days=45), [
        events.order(at("2026-02-01T10:00"), "o1", line(350)),  # Gold at once
        events.order(at("2027-05-01T10:00"), "o2", line(120)),
    ], until=at("2028-02-01"))
    assert tier_events(emitted) == [
        ("2026-02-01T10:00:00.000Z", "Tier Upgraded", "Member", "Gold"),
        # 2026's 350 renews Gold for 2027 at the 2027-01-01 review, silently.
        ("2027-11-17T00:00:00.000Z", "Tier Downgrade Warning", "Gold", "Silver"),
        ("2028-01-31T00:00:00.000Z", "Tier Downgraded", "Gold", "Silver"),
    ]
    [warning] = of_kind(emitted, "Tier Downgrade Warning")
    assert warning == {
        "tier": "Gold", "metric": "qualifying_spend", "metric_value": 120.0,
        "threshold": 300.0, "needed": 180.0, "review_at": "2028-01-01T00:00:00.000Z",
        "downgrade_to": "Silver", "grace_days": 30,
    }
    assert state.tier == "Silver"
    assert state.review_at == at("2029-01-01")


def test_requalifying_within_the_grace_period_keeps_the_tier() -> None:
    events = Events()
    state, emitted = run(tiered(grace_days=30), [
        events.order(at("2026-02-01T10:00"), "o1", line(350)),
        events.order(at("2028-01-10T10:00"), "o2", line(300)),  # 2027 had nothing
    ], until=at("2028-03-01"))
    assert [e[1] for e in tier_events(emitted)] == ["Tier Upgraded"]
    assert state.tier == "Gold"
    assert state.review_at == at("2029-01-01")


def test_downgrade_policies_one_down_and_to_qualified() -> None:
    for policy, expected in (("one_down", "Silver"), ("to_qualified", "Member")):
        events = Events()
        state, emitted = run(tiered(downgrade=policy), [
            events.order(at("2026-02-01T10:00"), "o1", line(350)),
        ], until=at("2028-01-02"))
        # 2027 spent nothing: reviewed 2028-01-01 with no grace.
        assert tier_events(emitted)[-1] == (
            "2028-01-01T00:00:00.000Z", "Tier Downgraded", "Gold", expected
        ), policy
        assert state.tier == expected


def test_rolling_window_reviews_twelve_months_after_reaching_the_tier() -> None:
    program_book = book(tiers={"metric": "tier_points", "window": "rolling_12_months",
                               "levels": LEVELS[:2]})
    kept = Events()
    state, emitted = run(program_book, [
        kept.order(at("2026-03-01T10:00"), "o1", line(150)),
        kept.order(at("2026-09-01T10:00"), "o2", line(100)),
    ], until=at("2027-03-02"))
    assert [e[1] for e in tier_events(emitted)] == ["Tier Upgraded"]
    assert state.review_at == at("2028-03-01T10:00")
    lost = Events()
    state, emitted = run(program_book, [
        lost.order(at("2026-03-01T10:00"), "o1", line(150)),
        lost.order(at("2026-09-01T10:00"), "o2", line(60)),
    ], until=at("2027-03-02"))
    assert tier_events(emitted)[-1] == (
        "2027-03-01T10:00:00.000Z", "Tier Downgraded", "Silver", "Member"
    )


def test_anniversary_window_with_purchase_count() -> None:
    program_book = book(tiers={
        "metric": "purchase_count", "window": "anniversary",
        "levels": [{"name": "Member", "threshold": 0}, {"name": "Regular", "threshold": 3}],
    })
    events = Events()
    _, emitted = run(program_book, [
        events.identify(at("2026-05-10T15:00"), birthday="1990-01-01"),  # enrols the member
        events.order(at("2026-06-01T10:00"), "o1", line(5)),
        events.order(at("2026-07-01T10:00"), "o2", line(5)),
        events.order(at("2027-05-09T10:00"), "o3", line(5)),  # third in membership year 1
        events.order(at("2027-06-01T10:00"), "o4", line(5)),
    ], until=at("2028-05-11"))
    assert tier_events(emitted) == [
        ("2027-05-09T10:00:00.000Z", "Tier Upgraded", "Member", "Regular"),
        # Reviewed at the 2028-05-10 anniversary: one purchase in membership year 2.
        ("2028-05-10T00:00:00.000Z", "Tier Downgraded", "Regular", "Member"),
    ]


def test_redeeming_never_costs_a_tier() -> None:
    program_book = book(tiers={"metric": "tier_points", "levels": LEVELS},
                        rewards=[{"id": "pay", "type": "points_payment"}])
    events = Events()
    state, _ = run(program_book, [
        events.order(at("2026-02-01T10:00"), "o1", line(150)),
        events.redeem(at("2026-02-02T10:00"), "pay", "k1", points=150),
    ], until=at("2026-12-01"))
    summary = loyalty_summary(program_book, state)
    assert (summary["points_balance"], summary["tier"]) == (0, "Silver")
    assert summary["progress"] == {
        "metric": "tier_points", "value": 150, "next_tier": "Gold", "threshold": 300,
        "remaining": 150,
    }


def test_refunds_lower_the_metric_but_only_reviews_downgrade() -> None:
    events = Events()
    program_book = tiered()
    state, _ = run(program_book, [
        events.order(at("2026-02-01T10:00"), "o1", line(150)),
        events.refund(at("2026-02-05T10:00"), "o1", "r1"),
    ], until=at("2026-12-31"))
    assert state.tier == "Silver"
    assert loyalty_summary(program_book, state)["progress"]["value"] == 0
    downgrade = LoyaltyEngine(program_book).advance(state, at("2027-01-02"))
    assert [e["event"] for e in downgrade] == ["Tier Downgraded"]
    assert state.tier == "Member"


def test_summary_shows_tier_benefits_and_progress() -> None:
    events = Events()
    program_book = tiered()
    state, _ = run(program_book, [events.order(at("2026-02-01T10:00"), "o1", line(120.5))])
    summary = loyalty_summary(program_book, state)
    assert summary["tier"] == "Silver"
    assert summary["benefits"] == {"multiplier": 1.5, "free_shipping": False}
    assert summary["progress"] == {
        "metric": "qualifying_spend", "value": 120.5, "next_tier": "Gold", "threshold": 300.0,
        "remaining": 179.5,
    }
    assert summary["tier_review_at"] == "2027-01-01T00:00:00.000Z"
