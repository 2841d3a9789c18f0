"""Tiers: the qualification metric, upgrades at once, reviews, grace, warnings and downgrades.

The metric (tier points, qualifying spend in hundredths, or purchase count) is kept as
dated contributions apart from the balance, so redeeming never costs a tier. A tier
above the base is reviewed at the end of its qualification period: the end of the
calendar year (``calendar_year``), the next membership anniversary (``anniversary``),
or 12 months after it was reached (``rolling_12_months``). At the review the metric of
the period just ended must meet the tier's threshold; if it does not, the member moves
down (to the tier the metric supports, or one step with ``one_down``) after
``grace_days``, unless they re-qualify within the grace. ``warning_days`` before the
review, a warning says how much is still needed. These functions update the state and
return what happened; the engine turns that into events.
"""

from __future__ import annotations

from bisect import bisect_left

import msgspec

from loyalty_cdp.core.loyalty.periods import (
    DAY_MS,
    NEVER,
    add_months,
    civil_from_days,
    start_of_day,
    start_of_year,
)
from loyalty_cdp.core.loyalty.program import Tiers, cents, milli
from loyalty_cdp.core.loyalty.state import LoyaltyState

# Contributions older than this can no longer count in any window (12 months + margin).
_KEEP_DAYS = 370


class TierPlan:
    """A program version's tiers section in engine units."""

    __slots__ = (
        "free_shipping",
        "grace_ms",
        "index",
        "metric",
        "multipliers",
        "names",
        "one_down",
        "thresholds",
        "warning_ms",
        "window",
    )

    def __init__(self, tiers: Tiers) -> None:
        self.metric = tiers.metric
        self.window = tiers.window
        self.names = tuple(tier.name for tier in tiers.levels)
        self.index = {name: position for position, name in enumerate(self.names)}
        spend = tiers.metric == "qualifying_spend"
        self.thresholds = tuple(
            cents(tier.threshold, f"tiers.levels[{i}].threshold") if spend else int(tier.threshold)
            for i, tier in enumerate(tiers.levels)
        )
        self.multipliers = tuple(
            milli(tier.benefits.multiplier, f"tiers.levels[{i}].benefits.multiplier")
            for i, tier in enumerate(tiers.levels)
        )
        self.free_shipping = tuple(tier.benefits.free_shipping for tier in tiers.levels)
        self.grace_ms = tiers.grace_days * DAY_MS
        self.warning_ms = tiers.warning_days * DAY_MS
        self.one_down = tiers.downgrade == "one_down"

    def position(self, name: str) -> int:
        """Index of tier ``name``; an unknown name (renamed in a later version) is the base."""
        return self.index.get(name, 0)

    def qualified(self, metric: int) -> int:
        """The highest tier whose threshold ``metric`` meets."""
        best = 0
        for position, threshold in enumerate(self.thresholds):
            if metric >= threshold:
                best = position
        return best


def display(metric_name: str, value: int | None) -> float | int | None:
    """A metric value as members read it: spend in currency units, others as counted."""
    if value is None or metric_name != "qualifying_spend":
        return value
    return value / 100


class TierChange(msgspec.Struct, frozen=True, gc=False):
    old: str
    new: str
    metric: int
    threshold: int


class DowngradeWarning(msgspec.Struct, frozen=True, gc=False):
    tier: str
    metric: int
    threshold: int
    needed: int
    review_at: int
    downgrade_to: str


def _anniversary_start(state: LoyaltyState, at: int) -> int:
    """Start (midnight) of the membership year holding ``at``."""
    enrolled = start_of_day(state.enrolled_at if state.enrolled_at >= 0 else at)
    years = civil_from_days(at // DAY_MS)[0] - civil_from_days(enrolled // DAY_MS)[0]
    start = add_months(enrolled, 12 * years)
    return start if start <= at else add_months(enrolled, 12 * (years - 1))


def current_window(plan: TierPlan, state: LoyaltyState, at: int) -> tuple[int, int]:
    """Half-open [low, high) of the qualification window that counts at ``at``."""
    if plan.window == "calendar_year":
        return start_of_year(at), at + 1
    if plan.window == "anniversary":
        return _anniversary_start(state, at), at + 1
    return add_months(at, -12) + 1, at + 1


def review_window(plan: TierPlan, state: LoyaltyState, review_at: int) -> tuple[int, int]:
    """The window judged at a review: the period that ends at ``review_at``."""
    if plan.window == "rolling_12_months":
        return add_months(review_at, -12) + 1, review_at + 1
    low, _ = current_window(plan, state, review_at - 1)
    return low, review_at


def period_end(plan: TierPlan, state: LoyaltyState, at: int) -> int:
    """The next review after ``at`` for a tier held from ``at``."""
    if plan.window == "calendar_year":
        return start_of_year(at, 1)
    if plan.window == "anniversary":
        return add_months(_anniversary_start(state, at), 12)
    return add_months(at, 12)


def metric(state: LoyaltyState, low: int, high: int) -> int:
    """The metric over [low, high): contributions are counted in whole UTC days."""
    total = 0
    for day, value in reversed(state.qualifying):
        at = day * DAY_MS
        if at < low:
            break
        if at < high:
            total += value
    return total


def current_metric(plan: TierPlan, state: LoyaltyState, at: int) -> int:
    """The metric of the current window at ``at``, kept up to date in the state: when the
    window's first day moves forward, the days it leaves behind are subtracted and dropped.
    Call it only after the reviews due by ``at`` have run (the fold does)."""
    low, _ = current_window(plan, state, at)
    first_day = -(-low // DAY_MS)
    cached = state.metric_from_day
    if cached == first_day:
        return state.metric_sum
    if 0 <= cached < first_day:
        # Days before the window can no longer count (reviews ran before this call).
        kept = 0
        for day, value in state.qualifying:
            if day >= first_day:
                break
            if day >= cached:
                state.metric_sum -= value
            kept += 1
        del state.qualifying[:kept]
    else:
        state.metric_sum = sum(value for day, value in state.qualifying if day >= first_day)
    state.metric_from_day = first_day
    return state.metric_sum


def add_contribution(state: LoyaltyState, at: int, value: int, now: int) -> None:
    """Count ``value`` on the day of ``at`` (negative for a refund of an order of that day),
    and forget days no window can see any more."""
    items = state.qualifying
    day = at // DAY_MS
    if value and 0 <= state.metric_from_day <= day:
        state.metric_sum += value
    if value:
        if not items or items[-1][0] < day:
            items.append((day, value))
        else:
            index = bisect_left(items, (day, -(1 << 62)))
            if index < len(items) and items[index][0] == day:
                items[index] = (day, items[index][1] + value)
            else:
                items.insert(index, (day, value))
    oldest = now // DAY_MS - _KEEP_DAYS
    if items and items[0][0] < oldest:
        for day, old in items:
            if day >= oldest:
                break
            if 0 <= state.metric_from_day <= day:
                state.metric_sum -= old
        state.qualifying = [item for item in items if item[0] >= oldest]


def _hold(plan: TierPlan, state: LoyaltyState, position: int, at: int) -> None:
    """Hold tier ``position`` from ``at``: schedule its review and warning, clear a downgrade."""
    state.tier = plan.names[position]
    state.downgrade_at = NEVER
    state.downgrade_to = ""
    if position == 0:
        state.review_at = NEVER
        state.tier_warn_at = NEVER
        return
    state.review_at = period_end(plan, state, at)
    state.tier_warn_at = max(state.review_at - plan.warning_ms, at) if plan.warning_ms else NEVER


def enrol(plan: TierPlan, state: LoyaltyState, at: int) -> None:
    state.tier = plan.names[0]
    state.tier_since = at


def check_upgrade(plan: TierPlan, state: LoyaltyState, at: int) -> TierChange | None:
    """Upgrade at once when the current window's metric meets a higher threshold."""
    current = plan.position(state.tier)
    if current == len(plan.names) - 1 and state.downgrade_at == NEVER:
        return None
    value = current_metric(plan, state, at)
    reached = plan.qualified(value)
    if reached > current:
        old = state.tier
        _hold(plan, state, reached, at)
        state.tier_since = at
        return TierChange(old, state.tier, value, plan.thresholds[reached])
    if state.downgrade_at != NEVER and reached >= current:
        _hold(plan, state, current, at)  # re-qualified within the grace period
    return None


def review(plan: TierPlan, state: LoyaltyState, at: int) -> TierChange | None:
    """The review at ``at`` (== ``state.review_at``): renew, or downgrade now or after grace."""
    current = plan.position(state.tier)
    value = metric(state, *review_window(plan, state, at))
    reached = plan.qualified(value)
    if reached >= current:
        _hold(plan, state, current, at)
        return None
    target = max(reached, current - 1) if plan.one_down else reached
    if plan.grace_ms:
        state.review_at = NEVER
        state.tier_warn_at = NEVER
        state.downgrade_at = at + plan.grace_ms
        state.downgrade_to = plan.names[target]
        return None
    return _move_down(plan, state, current, target, value, at)


def _move_down(
    plan: TierPlan, state: LoyaltyState, current: int, target: int, value: int, at: int
) -> TierChange:
    old = state.tier
    _hold(plan, state, target, at)
    state.tier_since = at
    return TierChange(old, state.tier, value, plan.thresholds[current])


def downgrade(plan: TierPlan, state: LoyaltyState, at: int) -> TierChange | None:
    """The end of a grace period: move down unless the member re-qualified meanwhile."""
    current = plan.position(state.tier)
    value = current_metric(plan, state, at)
    target = max(plan.position(state.downgrade_to), plan.qualified(value))
    if target >= current:
        _hold(plan, state, current, at)
        return None
    return _move_down(plan, state, current, target, value, at)


def warn(plan: TierPlan, state: LoyaltyState, at: int) -> DowngradeWarning | None:
    """At ``tier_warn_at``: what the member still needs before the review to keep the tier."""
    state.tier_warn_at = NEVER
    current = plan.position(state.tier)
    if current == 0 or state.review_at == NEVER:
        return None
    low, _ = review_window(plan, state, state.review_at)
    value = metric(state, low, at + 1)
    threshold = plan.thresholds[current]
    if value >= threshold:
        return None
    reached = plan.qualified(value)
    target = max(reached, current - 1) if plan.one_down else reached
    return DowngradeWarning(
        tier=state.tier,
        metric=value,
        threshold=threshold,
        needed=threshold - value,
        review_at=state.review_at,
        downgrade_to=plan.names[target],
    )


class Progress(msgspec.Struct, frozen=True, gc=False):
    metric: str
    value: int
    next_tier: str | None
    threshold: int | None
    remaining: int | None


def progress(plan: TierPlan, state: LoyaltyState, at: int) -> Progress:
    """The metric so far in the current window and what the next tier up needs."""
    value = metric(state, *current_window(plan, state, at))
    following = plan.position(state.tier) + 1
    if following >= len(plan.names):
        return Progress(plan.metric, value, None, None, None)
    threshold = plan.thresholds[following]
    return Progress(plan.metric, value, plan.names[following], threshold, max(threshold - value, 0))
