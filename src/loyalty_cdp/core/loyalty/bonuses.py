"""Bonus events: fixed points for a behaviour (a review, an app install, a referral, a birthday),
within a date window and under per-day and lifetime caps."""

from __future__ import annotations

from collections.abc import Iterable

from loyalty_cdp.core.loyalty.periods import DAY_MS, NEVER, date_ms
from loyalty_cdp.core.loyalty.program import BonusEvent
from loyalty_cdp.core.loyalty.state import LoyaltyState


class BonusPlan:
    """A program version's bonus events, looked up by event name (``birthday`` included)."""

    __slots__ = ("by_event", "windows")

    def __init__(self, bonuses: Iterable[BonusEvent]) -> None:
        self.by_event: dict[str, list[BonusEvent]] = {}
        self.windows: dict[str, tuple[int, int]] = {}
        for bonus in bonuses:
            self.by_event.setdefault(bonus.event, []).append(bonus)
            self.windows[bonus.id] = (
                date_ms(bonus.starts) if bonus.starts else -1,
                date_ms(bonus.ends) + DAY_MS if bonus.ends else NEVER,
            )


def award(
    plan: BonusPlan, state: LoyaltyState, event: str, at: int, channel: str | None
) -> list[tuple[BonusEvent, int]]:
    """The bonus rules ``event`` at ``at`` earns under their caps, with the points of each.

    Counting the award against the caps is part of the call.
    """
    rules = plan.by_event.get(event)
    if not rules:
        return []
    day = at // DAY_MS
    granted: list[tuple[BonusEvent, int]] = []
    for bonus in rules:
        starts, ends = plan.windows[bonus.id]
        if not starts <= at < ends or (bonus.channels and channel not in bonus.channels):
            continue
        lifetime, counted_day, today = state.bonus_counts.get(bonus.id, (0, -1, 0))
        if counted_day != day:
            today = 0
        if bonus.lifetime is not None and lifetime >= bonus.lifetime:
            continue
        if bonus.per_day is not None and today >= bonus.per_day:
            continue
        state.bonus_counts[bonus.id] = (lifetime + 1, day, today + 1)
        granted.append((bonus, bonus.points))
    return granted
