"""Behavioural signals: one worked example per signal, with the expected values by hand."""

from __future__ import annotations

from typing import Any

import pytest

from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.identity import Member
from loyalty_cdp.core.profile import DAY_MS, Profile, fold
from loyalty_cdp.core.signals import SignalSettings, compute_signals
from loyalty_cdp.errors import InvalidInput

T0 = 1_700_000_000_000
MEMBER = Member(id="u1", identities={"user_id": ["u1"]})
_ids = iter(range(10**9))


def day(n: float) -> int:
    return T0 + round(n * DAY_MS)


def track(at: int, name: str, channel: str = "web", /, **properties: Any) -> DecodedEvent:
    return DecodedEvent(f"m{next(_ids)}", "track", name, "u1", None, at, channel,
                        properties=properties)


def order(at: int, total: float, channel: str = "web", /, **properties: Any) -> DecodedEvent:
    return track(at, "Order Completed", channel, total=total, **properties)


def signals(events: list[DecodedEvent], as_of: int, **settings: Any) -> dict[str, Any]:
    profile: Profile = fold(None, events, MEMBER)
    return compute_signals(profile, as_of, SignalSettings(**settings))


def test_purchase_frequency_and_recency() -> None:
    # Orders on days 0, 10, 30 and 100; as of day 110.
    found = signals([order(day(d), 10) for d in (0, 10, 30, 100)], day(110))["purchase"]
    assert found["orders"] == 4
    assert found["orders_30d"] == 1  # (day 80, day 110]: day 100
    assert found["orders_90d"] == 2  # (day 20, day 110]: days 30 and 100
    assert found["orders_365d"] == 4
    assert found["mean_interval_days"] == pytest.approx(100 / 3)  # (100 - 0) / (4 - 1)
    assert found["days_since_last_order"] == pytest.approx(10)
    assert (found["first_order_at"], found["last_order_at"]) == (day(0), day(100))


def test_monetary_value_net_of_refunds() -> None:
    events = [order(day(0), 10), order(day(1), 20), order(day(2), 30), order(day(3), 40),
              track(day(4), "Order Refunded", total=15)]
    found = signals(events, day(5))["monetary"]
    assert found == {"total_spend": 100.0, "refunds": 1, "refunded": 15.0, "net_spend": 85.0,
                     "average_order_value": 25.0}


def test_category_and_brand_affinity_are_time_decayed_shares() -> None:
    # Dog: 30 spent on day 0; Cat: 10 spent 90 days (one half-life) later.
    # As of day 90 the Dog spend weighs 30 * 0.5 = 15 against Cat's 10: 0.6 / 0.4.
    events = [
        order(day(0), 30, products=[{"category": "Dog", "brand": "Acme", "price": 15,
                                     "quantity": 2}]),
        order(day(90), 10, products=[{"category": "Cat", "brand": "Bolt", "price": 10}]),
    ]
    found = signals(events, day(90))["affinity"]
    assert found["category"] == pytest.approx({"Dog": 0.6, "Cat": 0.4}, rel=1e-6)
    assert list(found["category"]) == ["Dog", "Cat"], "largest share first"
    assert found["brand"] == pytest.approx({"Acme": 0.6, "Bolt": 0.4}, rel=1e-6)
    later = signals(events, day(400))["affinity"]
    assert later["category"] == pytest.approx(found["category"], rel=1e-6), "shares keep"


def test_channel_mix_of_orders_and_of_activity() -> None:
    events = [order(day(0), 5, "pos"), order(day(1), 5, "pos"), order(day(2), 5, "pos"),
              order(day(3), 5, "web"), track(day(4), "Application Opened", "app")]
    found = signals(events, day(5))["channel_mix"]
    assert found["orders"] == {"pos": 0.75, "web": 0.25}
    assert found["events"] == {"pos": 0.6, "web": 0.2, "app": 0.2}


def test_price_sensitivity() -> None:
    # Four orders worth 45 + 50 + 50 + 50 after discounts; one had 5 off, one a coupon.
    events = [order(day(0), 45, discount=5), order(day(1), 50, coupon="SPRING"),
              order(day(2), 50), order(day(3), 50, coupon="  ")]
    found = signals(events, day(4))["price_sensitivity"]
    assert found["discounted_order_share"] == 0.5
    assert found["coupon_order_share"] == 0.25
    assert found["discount_rate"] == pytest.approx(5 / 200)  # 5 off 195 + 5 list value


def test_redemption_rate_and_pattern() -> None:
    events = [track(day(0), "Points Earned", points=100), track(day(1), "Points Earned",
                                                                 points=200),
              track(day(10), "Points Redeemed", points=100), track(day(30), "Points Redeemed",
                                                                    points=50),
              order(day(30), 20, payment_method="Points"), order(day(31), 20)]
    found = signals(events, day(40))["redemption"]
    assert found["points_earned"] == 300 and found["points_redeemed"] == 150
    assert found["redemption_rate"] == 0.5
    assert found["redemptions"] == 2
    assert found["mean_points_per_redemption"] == 75
    assert found["days_since_last_redemption"] == pytest.approx(10)
    assert found["mean_days_between_redemptions"] == pytest.approx(20)
    assert found["points_paid_order_share"] == 0.5


def test_browse_behaviour() -> None:
    # Dog viewed 30 days (one half-life) before as_of, Cat on the day: weights 0.5 and 1.
    events = [track(day(0), "Product Viewed", category="Dog"),
              track(day(30), "Product List Viewed", category="Cat"),
              track(day(29), "Products Searched", query="Dog  Food"),
              track(day(30), "Products Searched", query="leash")]
    found = signals(events, day(30))["browse"]
    assert found["product_views"] == 2
    assert found["category_interest"] == pytest.approx({"Cat": 2 / 3, "Dog": 1 / 3}, rel=1e-6)
    assert found["decayed_category_views"] == pytest.approx(1.5, rel=1e-6)
    assert found["searches"] == 2
    assert found["recent_searches"] == ["leash", "dog food"]


def test_engagement() -> None:
    events = [*(track(day(i), "Email Delivered") for i in range(4)),
              track(day(1), "Email Opened"), track(day(2), "Email Opened"),
              track(day(2), "Email Link Clicked"),
              track(day(0), "Application Opened", "app"), track(day(35), "Application Opened",
                                                                "app"),
              track(day(3), "Product Reviewed", rating=4), track(day(4), "Product Reviewed",
                                                                 rating=5)]
    found = signals(events, day(40))["engagement"]
    assert (found["emails_delivered"], found["email_opens"], found["email_clicks"]) == (4, 2, 1)
    assert found["open_rate"] == 0.5 and found["click_to_open_rate"] == 0.5
    assert found["app_sessions"] == 2 and found["app_sessions_30d"] == 1
    assert found["days_since_last_app_session"] == pytest.approx(5)
    assert found["reviews"] == 2 and found["mean_rating"] == 4.5
    assert signals([track(day(0), "Email Opened")], day(1))["engagement"]["open_rate"] is None


def test_wishlist_items_with_the_price_when_added() -> None:
    events = [track(day(0), "Product Added to Wishlist", product_id="p1", price=40, name="Bed",
                    category="Beds", brand="Acme"),
              track(day(1), "Product Added to Wishlist", product_id="p2", price=9),
              track(day(2), "Product Removed from Wishlist", product_id="p2")]
    assert signals(events, day(3))["wishlist"] == [
        {"product_id": "p1", "price": 40.0, "added_at": day(0), "name": "Bed",
         "category": "Beds", "brand": "Acme"}]


@pytest.mark.parametrize(
    ("since_last", "stage"),
    [(12, "active"), (15, "active"), (20, "at_risk"), (30, "at_risk"), (31, "lapsed")],
)
def test_lifecycle_against_the_members_own_cadence(since_last: float, stage: str) -> None:
    # Orders every 10 days from day 0 to day 100: cadence 10, at risk past 15, lapsed past 30.
    events = [order(day(d), 10) for d in range(0, 101, 10)]
    found = signals(events, day(100 + since_last))["lifecycle"]
    assert found == {"stage": stage, "cadence_days": pytest.approx(10), "cadence_basis": "own"}


@pytest.mark.parametrize(("since_last", "stage"), [(80, "active"), (100, "at_risk"),
                                                   (200, "lapsed")])
def test_lifecycle_falls_back_to_the_program_cadence_for_one_order(
    since_last: float, stage: str
) -> None:
    found = signals([order(day(0), 10)], day(since_last))["lifecycle"]
    assert found == {"stage": stage, "cadence_days": 60.0, "cadence_basis": "fallback"}


def test_lifecycle_new_prospect_and_floor() -> None:
    assert signals([order(day(0), 10)], day(10))["lifecycle"]["stage"] == "new"
    browsing = [track(day(0), "Product Viewed")]
    assert signals(browsing, day(20))["lifecycle"]["stage"] == "new"
    assert signals(browsing, day(40))["lifecycle"]["stage"] == "prospect"
    same_day = [order(day(0), 5), order(day(0.01), 5)]
    # Two orders minutes apart: the cadence is floored at 7 days (at risk past 10.5, lapsed
    # past 21).
    floored = signals(same_day, day(20), new_days=5)["lifecycle"]
    assert floored == {"stage": "at_risk", "cadence_days": 7.0, "cadence_basis": "own"}
    assert signals(same_day, day(22), new_days=5)["lifecycle"]["stage"] == "lapsed"


def test_first_and_last_seen_per_channel() -> None:
    events = [track(day(3), "Product Viewed", "web"), track(day(1), "Product Viewed", "web"),
              order(day(2), 5, "pos")]
    found = signals(events, day(4))
    assert found["channels"] == {
        "web": {"first_seen": day(1), "last_seen": day(3), "events": 2},
        "pos": {"first_seen": day(2), "last_seen": day(2), "events": 1}}
    assert (found["first_seen"], found["last_seen"]) == (day(1), day(3))


def test_an_empty_profile_has_empty_signals() -> None:
    found = compute_signals(Profile(member_id="x"), T0)
    assert found["purchase"]["orders"] == 0 and found["purchase"]["mean_interval_days"] is None
    assert found["monetary"]["average_order_value"] is None
    assert found["affinity"] == {"category": {}, "brand": {}}
    assert found["lifecycle"]["stage"] == "prospect"


def test_settings_are_validated() -> None:
    with pytest.raises(InvalidInput, match="at_risk_factor"):
        SignalSettings(at_risk_factor=3, lapsed_factor=2)
    with pytest.raises(InvalidInput, match="new_days"):
        SignalSettings(new_days=0)


def test_absurd_event_times_do_not_break_the_signals() -> None:
    year_9999 = 253_402_300_799_000
    events = [track(year_9999, "Product Viewed", category="Dog"),
              order(year_9999, 10, products=[{"category": "Dog", "price": 10}]),
              track(day(0), "Product Viewed", category="Cat")]
    found = signals(events, day(1))
    assert found["browse"]["category_interest"] == {"Dog": 1.0}, "Cat is eras older"
    assert found["affinity"]["category"] == {"Dog": 1.0}
    assert found["browse"]["decayed_category_views"] < float("inf")
    assert found["purchase"]["days_since_last_order"] == 0
