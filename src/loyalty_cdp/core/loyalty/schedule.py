"""Time-based transitions, run on event time: activation, expiry warnings and expiry,
inactivity, tier warnings, reviews and downgrades, birthdays and anniversaries.

Every transition due at an instant ``s`` runs, in the fixed order of :func:`run_due`,
before any event stamped ``s`` or later; so the outcome does not depend on whether the
scheduler called ``advance`` between two events or not.
"""

from __future__ import annotations

from loyalty_cdp.core.loyalty import ledger, milestones, tiers
from loyalty_cdp.core.loyalty.context import FoldContext
from loyalty_cdp.core.loyalty.emit import (
    POINTS_EXPIRED,
    POINTS_EXPIRING_SOON,
    TIER_DOWNGRADE_WARNING,
)
from loyalty_cdp.core.loyalty.handlers import bonus_event
from loyalty_cdp.core.loyalty.inputs import LoyaltyInput
from loyalty_cdp.core.loyalty.periods import NEVER, add_months, iso, next_month_day
from loyalty_cdp.core.loyalty.program import BIRTHDAY
from loyalty_cdp.core.loyalty.state import LoyaltyState

# A birthday bonus is paid at most once in this many days, whatever the birthday trait says.
BIRTHDAY_MIN_DAYS = 330


def member_due(state: LoyaltyState) -> int:
    """The earliest member-level transition (inactivity, tier, birthday, anniversary)."""
    return min(
        state.inactivity_expire_at,
        state.inactivity_warn_at,
        state.tier_warn_at,
        state.review_at,
        state.downgrade_at,
        state.next_birthday_at,
        state.next_anniversary_at,
    )


def next_due(state: LoyaltyState) -> int:
    """The earliest instant at which a transition is scheduled (NEVER when none is).

    Between two runs ``state.due`` may be earlier than this (handlers only ever lower
    it); an early wake-up finds nothing to do and recomputes it.
    """
    due = member_due(state)
    for lot in state.lots:
        if lot.pending and lot.active_at < due:
            due = lot.active_at
        if lot.warn_at < due:
            due = lot.warn_at
        if lot.expires_at < due:
            due = lot.expires_at
    return due


def _lots(fold: FoldContext, at: int) -> None:
    state = fold.state
    warnings: dict[int, tuple[int, str]] = {}
    expired = 0
    first_expired = ""
    for lot in state.lots:
        if lot.pending and lot.active_at <= at:
            ledger.activate(state, lot)
        if lot.warn_at <= at:
            lot.warn_at = NEVER
            if lot.remaining and lot.expires_at > at:
                points, source = warnings.get(lot.expires_at, (0, lot.source))
                warnings[lot.expires_at] = (points + lot.remaining, source)
        if lot.expires_at <= at and lot.remaining:
            first_expired = first_expired or lot.source
            expired += ledger.expire(state, lot)
    for expires_at, (points, source) in sorted(warnings.items()):
        fold.emit(POINTS_EXPIRING_SOON, at, f"{expires_at}:{source}", {
            "points": points,
            "expires_at": iso(expires_at),
            "reason": "expiry_date",
            "points_balance": ledger.balance(state),
        })
    if expired:
        ledger.add_entry(state, at, "expire", -expired, "expiry")
        fold.emit(POINTS_EXPIRED, at, f"{at}:{first_expired}", {
            "points": expired,
            "reason": "expiry_date",
            "points_balance": ledger.balance(state),
        })


def _inactivity(fold: FoldContext, at: int) -> None:
    state = fold.state
    if state.inactivity_warn_at <= at:
        state.inactivity_warn_at = NEVER
        points = sum(lot.remaining for lot in state.lots if not lot.pending)
        if points:
            fold.emit(POINTS_EXPIRING_SOON, at, f"inactivity:{state.inactivity_expire_at}", {
                "points": points,
                "expires_at": iso(state.inactivity_expire_at),
                "reason": "inactivity",
                "points_balance": ledger.balance(state),
            })
    if state.inactivity_expire_at <= at:
        state.inactivity_expire_at = NEVER
        expired = sum(ledger.expire(state, lot) for lot in state.lots if not lot.pending)
        if expired:
            ledger.add_entry(state, at, "expire", -expired, "inactivity")
            fold.emit(POINTS_EXPIRED, at, f"inactivity:{at}", {
                "points": expired,
                "reason": "inactivity",
                "points_balance": ledger.balance(state),
            })


def _tiers(fold: FoldContext, at: int) -> None:
    state = fold.state
    plan = fold.book.at(at).tiers
    if state.tier_warn_at <= at:
        review_at = state.review_at
        warning = tiers.warn(plan, state, at)
        if warning is not None:
            fold.emit(TIER_DOWNGRADE_WARNING, at, f"{review_at}:{warning.tier}", {
                "tier": warning.tier,
                "metric": plan.metric,
                "metric_value": tiers.display(plan.metric, warning.metric),
                "threshold": tiers.display(plan.metric, warning.threshold),
                "needed": tiers.display(plan.metric, warning.needed),
                "review_at": iso(warning.review_at),
                "downgrade_to": warning.downgrade_to,
                "grace_days": plan.grace_ms // 86_400_000,
            })
    if state.review_at <= at:
        fold.tier_changed(tiers.review(plan, state, at), at, f"review:{at}")
    if state.downgrade_at <= at:
        fold.tier_changed(tiers.downgrade(plan, state, at), at, f"downgrade:{at}")


def _birthday(fold: FoldContext, at: int) -> None:
    state = fold.state
    if state.birthday is None:
        state.next_birthday_at = NEVER
        return
    state.next_birthday_at = next_month_day(at, *state.birthday)
    version = fold.book.at(at)
    rules = version.bonuses.by_event.get(BIRTHDAY, [])
    recent = any(
        at // 86_400_000 - state.bonus_counts.get(rule.id, (0, -(10**9), 0))[1] < BIRTHDAY_MIN_DAYS
        for rule in rules
    )
    if rules and not recent:
        bonus_event(fold, version, LoyaltyInput(f"birthday:{at}", at, BIRTHDAY, {}, None))


def _anniversary(fold: FoldContext, at: int) -> None:
    state = fold.state
    state.anniversaries += 1
    state.next_anniversary_at = add_months(state.enrolled_at, 12 * (state.anniversaries + 1))
    version = fold.book.at(at)
    fold.achieved(version, at, milestones.on_anniversary(version.milestones, state, state.anniversaries))


def run_due(fold: FoldContext, until: int) -> None:
    """Run every transition due at or before ``until``, in time order."""
    state = fold.state
    while state.due <= until:
        at = max(state.due, state.clock)
        _lots(fold, at)
        _inactivity(fold, at)
        _tiers(fold, at)
        if state.next_birthday_at <= at:
            _birthday(fold, at)
        if state.next_anniversary_at <= at:
            _anniversary(fold, at)
        ledger.drop_closed(state)
        state.clock = max(state.clock, at)
        state.due = next_due(state)
