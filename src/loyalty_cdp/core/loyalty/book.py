"""The versions of a program, compiled for the engine, and the one in force at an event time."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from loyalty_cdp.core.loyalty.bonuses import BonusPlan
from loyalty_cdp.core.loyalty.earn import EarnPlan
from loyalty_cdp.core.loyalty.inputs import (
    COMMAND_EVENTS,
    IDENTIFY,
    ORDER_COMPLETED,
    ORDER_REFUNDED,
    WISHLIST_ADDED,
    WISHLIST_REMOVED,
)
from loyalty_cdp.core.loyalty.ledger import LedgerPlan
from loyalty_cdp.core.loyalty.milestones import MilestonePlan
from loyalty_cdp.core.loyalty.periods import DAY_MS, date_ms
from loyalty_cdp.core.loyalty.program import (
    BIRTHDAY,
    Program,
    Reward,
    validate,
    validate_versions,
)
from loyalty_cdp.core.loyalty.tiers import TierPlan

# An order id is recognised as already applied for at least this long.
ORDER_DEDUP_MS = 30 * DAY_MS


class ProgramVersion:
    """One validated program version with every section in engine units."""

    __slots__ = (
        "bonuses",
        "earn",
        "effective_from",
        "ledger",
        "milestones",
        "point_value_cents",
        "program",
        "rewards",
        "tiers",
    )

    def __init__(self, program: Program) -> None:
        validate(program)
        self.program = program
        self.effective_from = date_ms(program.effective_from)
        self.earn = EarnPlan(program.earn)
        self.bonuses = BonusPlan(program.earn.bonus_events)
        self.ledger = LedgerPlan(program.ledger)
        self.tiers = TierPlan(program.tiers)
        self.milestones = MilestonePlan(program.milestones)
        self.rewards: dict[str, Reward] = {reward.id: reward for reward in program.rewards}
        self.point_value_cents = program.point_value * 100

    def points_money(self, points: int) -> int:
        """What ``points`` are worth, in hundredths of the currency (rounded)."""
        return round(points * self.point_value_cents)


class ProgramBook:
    """Every version of one program; ``at(t)`` is the version in force at event time ``t``.

    Events before the first version's ``effective_from`` are evaluated under the first
    version (so that history imported from before the launch still counts).
    """

    __slots__ = ("_starts", "order_retention_ms", "relevant_events", "uses_wishlist", "versions")

    def __init__(self, programs: Iterable[Program]) -> None:
        self.versions = tuple(ProgramVersion(program) for program in validate_versions(programs))
        self._starts = [version.effective_from for version in self.versions]
        # Orders are remembered for refunds and for order-id deduplication.
        self.order_retention_ms = max(
            ORDER_DEDUP_MS, *(version.ledger.refund_window_ms for version in self.versions)
        )
        names = {ORDER_COMPLETED, ORDER_REFUNDED, IDENTIFY, *COMMAND_EVENTS}
        self.uses_wishlist = False
        for version in self.versions:
            names.update(name for name in version.bonuses.by_event if name != BIRTHDAY)
            rules = (*version.earn.line_rules, *version.earn.order_rules)
            self.uses_wishlist = self.uses_wishlist or any(rule.wishlisted for rule in rules)
        if self.uses_wishlist:
            names.update((WISHLIST_ADDED, WISHLIST_REMOVED))
        self.relevant_events = frozenset(names)

    @property
    def program_id(self) -> str:
        return self.versions[0].program.program

    def at(self, timestamp: int) -> ProgramVersion:
        index = bisect_right(self._starts, timestamp) - 1
        return self.versions[max(index, 0)]

    @property
    def latest(self) -> ProgramVersion:
        return self.versions[-1]
