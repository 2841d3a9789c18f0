"""Behavioural signals of one member, computed from the profile's aggregates as of a given time.

:func:`compute_signals` is pure: the same profile and ``as_of`` (epoch ms) always give the
same answer. Every signal's exact definition is in ``docs/signals.md``; timestamps in
the answer are epoch milliseconds, amounts are in currency units, durations in days.
``as_of`` is meant to be at or after the member's latest event (a back-test folds only
the events up to its cut-off date).
"""

from __future__ import annotations

from typing import Any

import msgspec

from loyalty_cdp.core.profile import (
    APP_WINDOW_DAYS,
    DAY_MS,
    DECAY_ERA_HALF_LIVES,
    DECAY_ERAS_KEPT,
    DECAY_FRACTION_BITS,
    MONEY_SCALE,
    Activity,
    Decayed,
    Profile,
)
from loyalty_cdp.errors import InvalidInput

ORDER_WINDOWS_DAYS = (30, 90, 365)
MAX_EXPONENT = 900.0  # keeps decayed values finite when event times are absurdly late


class SignalSettings(msgspec.Struct, frozen=True):
    """Parameters of the derived signals (the half-lives are fixed by the fold).

    A member is ``at_risk`` once the days since the last order exceed
    ``at_risk_factor`` times their own mean inter-purchase interval, and ``lapsed`` past
    ``lapsed_factor`` times it; members with fewer than two orders are judged against
    ``fallback_interval_days``, and no interval is taken below ``min_interval_days``.
    """

    new_days: float = 30.0
    at_risk_factor: float = 1.5
    lapsed_factor: float = 3.0
    fallback_interval_days: float = 60.0
    min_interval_days: float = 7.0
    top: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.at_risk_factor < self.lapsed_factor:
            raise InvalidInput("at_risk_factor", "must be positive and below lapsed_factor")
        for name in ("new_days", "fallback_interval_days", "min_interval_days"):
            if getattr(self, name) <= 0:
                raise InvalidInput(name, "must be positive")
        if self.top < 1:
            raise InvalidInput("top", "must be at least 1")


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _days(later: int, earlier: int | None) -> float | None:
    return None if earlier is None else max(later - earlier, 0) / DAY_MS


def decayed_values(decayed: Decayed, as_of: int) -> dict[str, float]:
    """Each key's decayed weight at ``as_of``: the sum over its events of the event's weight
    times ``0.5 ** ((as_of - t) / half_life)`` (events in the kept eras)."""
    scale = _decay_scale(decayed, as_of)
    return {key: value * scale for key, value in _relative(decayed).items()}


def _decay_scale(decayed: Decayed, as_of: int) -> float:
    """The factor that turns the weights relative to the latest era's start into weights at ``as_of``."""
    if decayed.era is None:
        return 0.0
    half_life_ms = decayed.half_life_days * DAY_MS
    latest_start = decayed.era * DECAY_ERA_HALF_LIVES * half_life_ms
    exponent = min((latest_start - as_of) / half_life_ms - DECAY_FRACTION_BITS, MAX_EXPONENT)
    return float(2.0**exponent)


def _relative(decayed: Decayed) -> dict[str, float]:
    """Each key's weight relative to the start of the latest era (no overflow possible)."""
    factors = [2.0 ** (-DECAY_ERA_HALF_LIVES * index) for index in range(DECAY_ERAS_KEPT)]
    return {
        key: sum(value * factor for value, factor in zip(eras, factors, strict=False))
        for key, eras in decayed.sums.items()
    }


def shares(decayed: Decayed, top: int) -> dict[str, float]:
    """Each key's share of the decayed total, largest first (ties by key), ``top`` kept.

    Every weight decays by the same factor between two instants, so shares do not depend
    on the time they are read at."""
    values = _relative(decayed)
    total = sum(values.values())
    if not total:
        return {}
    ranked = sorted(values.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {key: value / total for key, value in ranked}


def _within(timestamps: list[int], as_of: int, days: int) -> int:
    start = as_of - days * DAY_MS
    return sum(1 for t in timestamps if start < t <= as_of)


def _purchase(act: Activity, as_of: int) -> dict[str, Any]:
    buy = act.purchases
    interval = None
    if buy.orders >= 2 and buy.first_at is not None and buy.last_at is not None:
        interval = (buy.last_at - buy.first_at) / (buy.orders - 1) / DAY_MS
    counts = {f"orders_{days}d": _within(buy.recent, as_of, days) for days in ORDER_WINDOWS_DAYS}
    return {
        "orders": buy.orders,
        **counts,
        "mean_interval_days": interval,
        "days_since_last_order": _days(as_of, buy.last_at),
        "first_order_at": buy.first_at,
        "last_order_at": buy.last_at,
    }


def _monetary(act: Activity) -> dict[str, Any]:
    buy = act.purchases
    aov = _ratio(buy.spend, buy.orders)
    return {
        "total_spend": buy.spend / MONEY_SCALE,
        "refunds": buy.refunds,
        "refunded": buy.refund_amount / MONEY_SCALE,
        "net_spend": (buy.spend - buy.refund_amount) / MONEY_SCALE,
        "average_order_value": None if aov is None else aov / MONEY_SCALE,
    }


def _channel_mix(act: Activity) -> dict[str, dict[str, float]]:
    orders = sum(c.orders for c in act.channels.values())
    events = sum(c.events for c in act.channels.values())
    return {
        "orders": {n: c.orders / orders for n, c in act.channels.items() if orders and c.orders},
        "events": {n: c.events / events for n, c in act.channels.items() if events},
    }


def _price_sensitivity(act: Activity) -> dict[str, Any]:
    buy = act.purchases
    return {
        "discounted_order_share": _ratio(buy.discounted, buy.orders),
        "coupon_order_share": _ratio(buy.coupon_orders, buy.orders),
        "discount_rate": _ratio(buy.discount_amount, buy.spend + buy.discount_amount),
    }


def _redemption(act: Activity, as_of: int) -> dict[str, Any]:
    points = act.points
    between = None
    first, last = points.first_redemption_at, points.last_redemption_at
    if points.redemptions >= 2 and first is not None and last is not None:
        between = (last - first) / (points.redemptions - 1) / DAY_MS
    return {
        "points_earned": points.earned,
        "points_redeemed": points.redeemed,
        "redemption_rate": _ratio(points.redeemed, points.earned),
        "redemptions": points.redemptions,
        "mean_points_per_redemption": _ratio(points.redeemed, points.redemptions),
        "days_since_last_redemption": _days(as_of, last),
        "mean_days_between_redemptions": between,
        "points_paid_order_share": _ratio(act.purchases.points_paid, act.purchases.orders),
    }


def _browse(act: Activity, prepared: PreparedSignals, as_of: int) -> dict[str, Any]:
    browse = act.browse
    return {
        "product_views": browse.product_views,
        "category_interest": prepared.category_interest,
        "decayed_category_views": prepared.browse_weight * _decay_scale(browse.categories, as_of) / MONEY_SCALE,
        "searches": browse.searches,
        "recent_searches": prepared.recent_searches,
    }


def _engagement(act: Activity, as_of: int) -> dict[str, Any]:
    engagement = act.engagement
    open_rate = _ratio(engagement.email_opens, engagement.emails_delivered)
    click_rate = _ratio(engagement.email_clicks, engagement.email_opens)
    mean_rating = _ratio(engagement.rating_total, engagement.ratings)
    return {
        "emails_delivered": engagement.emails_delivered,
        "email_opens": engagement.email_opens,
        "email_clicks": engagement.email_clicks,
        "open_rate": None if open_rate is None else min(open_rate, 1.0),
        "click_to_open_rate": None if click_rate is None else min(click_rate, 1.0),
        "app_sessions": engagement.app_opens,
        "app_sessions_30d": _within(engagement.recent_app_opens, as_of, APP_WINDOW_DAYS),
        "days_since_last_app_session": _days(as_of, engagement.last_app_open),
        "reviews": engagement.reviews,
        "mean_rating": None if mean_rating is None else mean_rating / MONEY_SCALE,
    }


def _wishlist(act: Activity) -> list[dict[str, Any]]:
    items = [(key, item) for key, item in act.wishlist.items() if item.on_list]
    items.sort(key=lambda pair: (-pair[1].updated_at, pair[0]))
    return [
        {
            "product_id": key,
            "price": item.price,
            "added_at": item.updated_at,
            "name": item.name,
            "category": item.category,
            "brand": item.brand,
        }
        for key, item in items
    ]


def lifecycle(act: Activity, as_of: int, settings: SignalSettings) -> dict[str, Any]:
    """The member's stage, judged against their own purchase cadence (``docs/signals.md``)."""
    buy = act.purchases
    since_first = _days(as_of, buy.first_at if buy.orders else act.first_seen)
    if since_first is not None and since_first <= settings.new_days:
        return {"stage": "new", "cadence_days": None, "cadence_basis": None}
    if not buy.orders or buy.last_at is None or buy.first_at is None:
        return {"stage": "prospect", "cadence_days": None, "cadence_basis": None}
    if buy.orders >= 2:
        cadence = (buy.last_at - buy.first_at) / (buy.orders - 1) / DAY_MS
        basis = "own"
    else:
        cadence, basis = settings.fallback_interval_days, "fallback"
    cadence = max(cadence, settings.min_interval_days)
    since_last = max(as_of - buy.last_at, 0) / DAY_MS
    if since_last > settings.lapsed_factor * cadence:
        stage = "lapsed"
    elif since_last > settings.at_risk_factor * cadence:
        stage = "at_risk"
    else:
        stage = "active"
    return {"stage": stage, "cadence_days": cadence, "cadence_basis": basis}


class PreparedSignals(msgspec.Struct, frozen=True):
    """The signals that depend on the profile alone, not on the time they are read at.

    :func:`prepare_signals` derives them; :func:`signals_at` adds the time-dependent ones.
    A reader that answers the same profile many times (the member API) prepares once per
    version of the profile. The values are opaque to :func:`signals_at`, which places them
    in the answer as they are: a caller may swap them for their pre-encoded JSON."""

    monetary: Any
    affinity: Any
    channel_mix: Any
    price_sensitivity: Any
    wishlist: Any
    channels: Any
    category_interest: Any
    recent_searches: Any
    browse_weight: float  # the browse categories' decayed total relative to their latest era


def prepare_signals(profile: Profile, settings: SignalSettings | None = None) -> PreparedSignals:
    """Every signal of ``profile`` that does not change with time (see :class:`PreparedSignals`)."""
    settings = settings or SignalSettings()
    act = profile.activity
    buy = act.purchases
    recent = sorted(act.browse.recent_searches.items(), key=lambda item: (-item[1], item[0]))
    return PreparedSignals(
        monetary=_monetary(act),
        affinity={"category": shares(buy.categories, settings.top), "brand": shares(buy.brands, settings.top)},
        channel_mix=_channel_mix(act),
        price_sensitivity=_price_sensitivity(act),
        wishlist=_wishlist(act),
        channels={
            name: {"first_seen": c.first_seen, "last_seen": c.last_seen, "events": c.events}
            for name, c in act.channels.items()
        },
        category_interest=shares(act.browse.categories, settings.top),
        recent_searches=[query for query, _ in recent],
        browse_weight=sum(_relative(act.browse.categories).values()),
    )


def signals_at(profile: Profile, prepared: PreparedSignals, as_of: int,
               settings: SignalSettings | None = None) -> dict[str, Any]:
    """Every behavioural signal of ``profile`` as of ``as_of`` (epoch ms), JSON-ready, from
    the signals ``prepared`` from the same profile."""
    settings = settings or SignalSettings()
    act = profile.activity
    return {
        "as_of": as_of,
        "purchase": _purchase(act, as_of),
        "monetary": prepared.monetary,
        "affinity": prepared.affinity,
        "channel_mix": prepared.channel_mix,
        "price_sensitivity": prepared.price_sensitivity,
        "redemption": _redemption(act, as_of),
        "browse": _browse(act, prepared, as_of),
        "engagement": _engagement(act, as_of),
        "wishlist": prepared.wishlist,
        "lifecycle": lifecycle(act, as_of, settings),
        "channels": prepared.channels,
        "first_seen": act.first_seen,
        "last_seen": act.last_seen,
    }


def compute_signals(
    profile: Profile, as_of: int, settings: SignalSettings | None = None
) -> dict[str, Any]:
    """Every behavioural signal of ``profile`` as of ``as_of`` (epoch ms), JSON-ready."""
    return signals_at(profile, prepare_signals(profile, settings), as_of, settings)
