"""The points liability report over many members: outstanding points by age and tier,
the expiry forecast by month, and breakage.

Definitions (also in ``docs/loyalty.md``): *outstanding* points are those members hold,
active plus pending, net of debts; *age* is time since the lot was earned; the *expiry
forecast* puts each lot in the month it expires (``never`` when it does not), inactivity
deadlines included; *breakage rate* is expired / (redeemed + expired), the share of
points that left balances by lapsing rather than by being used; the *expected cost* is
outstanding x (1 - breakage rate), valued at the program's point value.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from loyalty_cdp.core.loyalty.book import ProgramBook
from loyalty_cdp.core.loyalty.periods import DAY_MS, NEVER, iso, month_label
from loyalty_cdp.core.loyalty.state import LoyaltyState

AGE_BUCKETS = ((30, "0-30d"), (90, "31-90d"), (180, "91-180d"), (365, "181-365d"))
OLDEST_BUCKET = "365d+"


class LiabilityReport(msgspec.Struct, frozen=True, kw_only=True):
    as_of: str
    currency: str
    point_value: float
    members: int
    outstanding_points: int
    pending_points: int
    outstanding_value: float
    by_age: dict[str, int]
    by_tier: dict[str, int]
    expiry_forecast: dict[str, int]
    issued_points: int
    redeemed_points: int
    expired_points: int
    breakage_rate: float
    expected_cost_points: int
    expected_cost_value: float


def _age_bucket(age_ms: int) -> str:
    days = age_ms // DAY_MS
    for limit, label in AGE_BUCKETS:
        if days <= limit:
            return label
    return OLDEST_BUCKET


def liability_report(
    book: ProgramBook, states: Iterable[LoyaltyState], as_of: int
) -> LiabilityReport:
    """The report at ``as_of`` over ``states`` (each as last folded)."""
    program = book.at(as_of).program
    by_age = {label: 0 for _, label in AGE_BUCKETS} | {OLDEST_BUCKET: 0}
    by_tier = {tier.name: 0 for tier in program.tiers.levels}
    forecast: dict[str, int] = {}
    members = outstanding = pending = issued = redeemed = expired = 0
    for state in states:
        members += 1
        issued += state.lifetime_points
        redeemed += state.redeemed_points
        expired += state.expired_points
        held = -state.debt
        lapse = state.inactivity_expire_at
        for lot in state.lots:
            if not lot.remaining:
                continue
            held += lot.remaining
            if lot.pending:
                pending += lot.remaining
            by_age[_age_bucket(max(as_of - lot.earned_at, 0))] += lot.remaining
            ends = min(lot.expires_at, lapse) if not lot.pending else lot.expires_at
            month = "never" if ends == NEVER else month_label(ends)
            forecast[month] = forecast.get(month, 0) + lot.remaining
        outstanding += held
        tier = state.tier or program.tiers.levels[0].name
        by_tier[tier] = by_tier.get(tier, 0) + held
    left = redeemed + expired
    breakage = expired / left if left else 0.0
    expected = round(outstanding * (1 - breakage))
    return LiabilityReport(
        as_of=iso(as_of),
        currency=program.currency,
        point_value=program.point_value,
        members=members,
        outstanding_points=outstanding,
        pending_points=pending,
        outstanding_value=round(outstanding * program.point_value, 2),
        by_age=by_age,
        by_tier=by_tier,
        expiry_forecast=dict(sorted(forecast.items())),
        issued_points=issued,
        redeemed_points=redeemed,
        expired_points=expired,
        breakage_rate=round(breakage, 6),
        expected_cost_points=expected,
        expected_cost_value=round(expected * program.point_value, 2),
    )
