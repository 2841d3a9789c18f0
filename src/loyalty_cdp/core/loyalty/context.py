"""The working context of one fold call: the state being updated, the events emitted so far,
and the steps that event handlers and scheduled transitions share."""

from __future__ import annotations

import hashlib
from typing import Any

from loyalty_cdp.core.loyalty import ledger, milestones, tiers
from loyalty_cdp.core.loyalty.book import ProgramBook, ProgramVersion
from loyalty_cdp.core.loyalty.budgets import CampaignBudgets
from loyalty_cdp.core.loyalty.emit import (
    MILESTONE_ACHIEVED,
    POINTS_EARNED,
    TIER_DOWNGRADED,
    TIER_UPGRADED,
    loyalty_event,
)
from loyalty_cdp.core.loyalty.periods import DAY_MS, NEVER, iso
from loyalty_cdp.core.loyalty.state import IDEMPOTENCY_MS, LoyaltyState


class FoldContext:
    __slots__ = ("book", "budgets", "emitted", "member_id", "state")

    def __init__(
        self, book: ProgramBook, state: LoyaltyState, budgets: CampaignBudgets | None
    ) -> None:
        self.book = book
        self.state = state
        self.budgets = budgets
        self.member_id = state.member_id
        self.emitted: list[dict[str, Any]] = []

    def emit(self, kind: str, at: int, cause: str, properties: dict[str, Any]) -> None:
        self.emitted.append(loyalty_event(self.member_id, kind, at, cause, properties))

    def first_time(self, key: str, at: int) -> bool:
        """Record command ``key``; False when it was already applied (within the horizon)."""
        hashed = _key_hash(key)
        seen = self.state.seen.get(hashed)
        if seen is not None and at - seen <= IDEMPOTENCY_MS:
            return False
        self.state.seen[hashed] = at
        return True

    def activity(self, version: ProgramVersion, at: int) -> None:
        """The member did something that counts as activity (purchase, bonus, redemption)."""
        state = self.state
        state.last_activity_at = at
        plan = version.ledger
        if not plan.inactivity_ms:
            state.inactivity_expire_at = NEVER
            state.inactivity_warn_at = NEVER
            return
        state.inactivity_expire_at = at + plan.inactivity_ms
        state.inactivity_warn_at = (
            max(state.inactivity_expire_at - plan.warn_ms, at) if plan.warn_ms else NEVER
        )

    def earned(
        self,
        version: ProgramVersion,
        at: int,
        *,
        cause: str,
        source: str,
        points: int,
        rules: list[tuple[str, int]],
        pending: bool,
        extra: dict[str, Any],
    ) -> None:
        """Credit a lot, count it in lifetime points and emit ``Points Earned``; ``cause``
        (a message id and a suffix) makes the event's id deterministic."""
        state = self.state
        lot = ledger.credit(
            state, version.ledger, source=source, at=at, points=points, pending=pending,
            kind="earn",
        )
        state.lifetime_points += points
        properties = {
            "points": points,
            "source": source,
            "rules": [{"id": rule, "points": value} for rule, value in rules],
            "pending": lot.pending,
            "available_at": iso(lot.active_at if lot.pending else at),
            "expires_at": iso(lot.expires_at) if lot.expires_at != NEVER else None,
            "tier": state.tier,
            "points_balance": ledger.balance(state),
            "program_version": version.program.version,
        }
        properties.update(extra)
        self.emit(POINTS_EARNED, at, cause, properties)

    def tier_changed(self, change: tiers.TierChange | None, at: int, cause: str) -> None:
        if change is None:
            return
        plan = self.book.at(at).tiers
        up = plan.position(change.new) > plan.position(change.old)
        self.emit(
            TIER_UPGRADED if up else TIER_DOWNGRADED,
            at,
            f"{cause}:{change.old}>{change.new}",
            {
                "from_tier": change.old,
                "to_tier": change.new,
                "metric": plan.metric,
                "metric_value": tiers.display(plan.metric, change.metric),
                "threshold": tiers.display(plan.metric, change.threshold),
                "free_shipping": plan.free_shipping[plan.position(change.new)],
                "multiplier": plan.multipliers[plan.position(change.new)] / 1000,
            },
        )

    def achieved(
        self, version: ProgramVersion, at: int, found: list[milestones.Achievement]
    ) -> None:
        """Emit achievements and credit their bonuses, until no lifetime milestone is left."""
        while found:
            for achievement in found:
                properties: dict[str, Any] = {
                    "milestone_id": achievement.milestone_id,
                    "milestone_type": achievement.kind,
                    "bonus_points": achievement.bonus_points,
                }
                properties.update(achievement.detail)
                self.emit(MILESTONE_ACHIEVED, at, achievement.milestone_id, properties)
                if achievement.bonus_points:
                    self.earned(
                        version, at,
                        cause=f"milestone:{achievement.milestone_id}",
                        source=f"milestone:{achievement.milestone_id}",
                        points=achievement.bonus_points,
                        rules=[(achievement.milestone_id, achievement.bonus_points)],
                        pending=False,
                        extra={},
                    )
            found = milestones.on_points(version.milestones, self.state)

    def prune(self, at: int) -> None:
        """Forget what can no longer matter (results never depend on when this runs)."""
        state = self.state
        if at - state.pruned_at < 30 * DAY_MS:
            return
        state.pruned_at = at
        window = self.book.order_retention_ms
        state.orders = {key: order for key, order in state.orders.items() if at - order.at <= window}
        state.seen = {key: when for key, when in state.seen.items() if at - when <= IDEMPOTENCY_MS}
        state.redemptions = {
            key: done for key, done in state.redemptions.items() if at - done.at <= IDEMPOTENCY_MS
        }


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
