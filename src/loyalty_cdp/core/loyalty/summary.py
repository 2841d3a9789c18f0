"""The loyalty part of the member profile: balance, pending, lifetime, tier, progress, expiry.

Read-only and projected to an instant ``at`` without changing the state: lots whose
return window has passed count as spendable, expired lots do not. Tier changes happen
only in the fold (at reviews), so the tier shown is the one last folded.
"""

from __future__ import annotations

from typing import Any

from loyalty_cdp.core.loyalty import tiers
from loyalty_cdp.core.loyalty.book import ProgramBook
from loyalty_cdp.core.loyalty.ledger import projected_balance
from loyalty_cdp.core.loyalty.periods import NEVER, iso
from loyalty_cdp.core.loyalty.state import LoyaltyState


def _next_expiry(state: LoyaltyState, at: int) -> dict[str, Any] | None:
    lapsed = state.inactivity_expire_at
    soonest = NEVER
    points = 0
    for lot in state.lots:
        if not lot.remaining or lot.expires_at <= at:
            continue
        expires_at = lot.expires_at
        if lapsed != NEVER and lapsed > at and lot.active_at <= lapsed:
            expires_at = min(expires_at, lapsed)
        if expires_at < soonest:
            soonest, points = expires_at, lot.remaining
        elif expires_at == soonest:
            points += lot.remaining
    if soonest == NEVER:
        return None
    return {"points": points, "at": iso(soonest)}


def loyalty_summary(book: ProgramBook, state: LoyaltyState, at: int | None = None) -> dict[str, Any]:
    """What the profile's ``loyalty`` object shows at ``at`` (default: the state's clock)."""
    when = state.clock if at is None else max(at, state.clock)
    version = book.at(max(when, 0))
    plan = version.tiers
    position = plan.position(state.tier)
    progress = tiers.progress(plan, state, when)
    pending = sum(
        lot.remaining for lot in state.lots if lot.pending and lot.active_at > when and lot.expires_at > when
    )
    balance = projected_balance(state, when)
    return {
        "points_balance": balance,
        "points_value": round(balance * version.program.point_value, 2),
        "currency": version.program.currency,
        "pending_points": pending,
        "lifetime_points": state.lifetime_points,
        "redeemed_points": state.redeemed_points,
        "expired_points": state.expired_points,
        "tier": state.tier or plan.names[0],
        "tier_since": iso(state.tier_since) if state.tier_since >= 0 else None,
        "tier_review_at": iso(state.review_at) if state.review_at != NEVER else None,
        "tier_downgrade": (
            {"at": iso(state.downgrade_at), "to": state.downgrade_to}
            if state.downgrade_at != NEVER
            else None
        ),
        "benefits": {
            "multiplier": plan.multipliers[position] / 1000,
            "free_shipping": plan.free_shipping[position],
        },
        "progress": {
            "metric": progress.metric,
            "value": tiers.display(progress.metric, progress.value),
            "next_tier": progress.next_tier,
            "threshold": tiers.display(progress.metric, progress.threshold),
            "remaining": tiers.display(progress.metric, progress.remaining),
        },
        "next_expiry": _next_expiry(state, when),
        "milestones": list(state.milestones),
    }
