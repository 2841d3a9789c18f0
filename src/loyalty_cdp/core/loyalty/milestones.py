"""Milestones: achievements reached once each (Nth purchase, lifetime points, anniversaries,
first purchase in a channel or a category), each with optional bonus points."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from loyalty_cdp.core.loyalty.program import (
    Anniversary,
    FirstPurchaseInCategory,
    FirstPurchaseInChannel,
    LifetimePoints,
    Milestone,
    NthPurchase,
)
from loyalty_cdp.core.loyalty.state import LoyaltyState


class Achievement(msgspec.Struct, frozen=True, gc=False):
    milestone_id: str
    kind: str
    bonus_points: int
    detail: dict[str, str | int]


class MilestonePlan:
    """A program version's milestones grouped by what can trigger them."""

    __slots__ = ("anniversary", "by_category", "by_channel", "lifetime", "nth")

    def __init__(self, milestones: Iterable[Milestone]) -> None:
        self.nth: list[NthPurchase] = []
        self.lifetime: list[LifetimePoints] = []
        self.anniversary: list[Anniversary] = []
        self.by_channel: dict[str, list[FirstPurchaseInChannel]] = {}
        self.by_category: dict[str, list[FirstPurchaseInCategory]] = {}
        for milestone in milestones:
            if isinstance(milestone, NthPurchase):
                self.nth.append(milestone)
            elif isinstance(milestone, LifetimePoints):
                self.lifetime.append(milestone)
            elif isinstance(milestone, Anniversary):
                self.anniversary.append(milestone)
            elif isinstance(milestone, FirstPurchaseInChannel):
                self.by_channel.setdefault(milestone.channel, []).append(milestone)
            else:
                self.by_category.setdefault(milestone.category.casefold(), []).append(milestone)


def _achieve(
    state: LoyaltyState, milestone: Milestone, kind: str, detail: dict[str, str | int]
) -> Achievement | None:
    if milestone.id in state.milestones:
        return None
    state.milestones.append(milestone.id)
    return Achievement(milestone.id, kind, milestone.bonus_points, detail)


def on_purchase(
    plan: MilestonePlan, state: LoyaltyState, channel: str | None, categories: Iterable[str]
) -> list[Achievement]:
    """Milestones a purchase reaches (``state.purchase_count`` already counts it)."""
    found: list[Achievement] = []
    for nth in plan.nth:
        if state.purchase_count >= nth.n:
            hit = _achieve(state, nth, "nth_purchase", {"n": nth.n})
            if hit:
                found.append(hit)
    if channel and channel in plan.by_channel:
        for in_channel in plan.by_channel[channel]:
            hit = _achieve(state, in_channel, "first_purchase_in_channel", {"channel": channel})
            if hit:
                found.append(hit)
    if plan.by_category:
        for category in categories:
            for in_category in plan.by_category.get(category, ()):
                hit = _achieve(
                    state, in_category, "first_purchase_in_category", {"category": in_category.category}
                )
                if hit:
                    found.append(hit)
    return found


def on_points(plan: MilestonePlan, state: LoyaltyState) -> list[Achievement]:
    """Lifetime-points milestones ``state.lifetime_points`` has reached."""
    found: list[Achievement] = []
    for lifetime in plan.lifetime:
        if state.lifetime_points >= lifetime.threshold:
            hit = _achieve(state, lifetime, "lifetime_points", {"threshold": lifetime.threshold})
            if hit:
                found.append(hit)
    return found


def on_anniversary(plan: MilestonePlan, state: LoyaltyState, years: int) -> list[Achievement]:
    """Anniversary milestones for ``years`` of membership."""
    found: list[Achievement] = []
    for anniversary in plan.anniversary:
        if anniversary.years == years:
            hit = _achieve(state, anniversary, "anniversary", {"years": years})
            if hit:
                found.append(hit)
    return found
