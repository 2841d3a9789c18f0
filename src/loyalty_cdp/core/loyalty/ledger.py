"""Points in lots: credit, activation, spending soonest-expiring first, reversal and expiry.

Invariants kept by every function here (and checked by the property tests):
``points_balance + pending_points == sum of the entries``, where the balance is the
active lots' remaining points minus ``debt``; under ``within_balance`` nothing ever
makes the balance negative. Only ``MAX_ENTRIES`` entries are kept: older ones are
folded into one ``carried`` entry, so the sum still holds.
"""

from __future__ import annotations

from bisect import insort

from loyalty_cdp.core.loyalty.periods import DAY_MS, NEVER, start_of_month, start_of_year
from loyalty_cdp.core.loyalty.program import (
    DaysAfterEarn,
    EndOfMonth,
    EndOfYear,
    InactivityDays,
    Ledger,
)
from loyalty_cdp.core.loyalty.state import Entry, Lot, LoyaltyState

MAX_ENTRIES = 32


def _spend_order(lot: Lot) -> tuple[int, int, str]:
    return (lot.expires_at, lot.earned_at, lot.ref)


class LedgerPlan:
    """A program version's ledger section in the units the engine computes with."""

    __slots__ = (
        "allow_negative",
        "days_after_earn_ms",
        "end_of_month",
        "end_of_year",
        "inactivity_ms",
        "pending_ms",
        "refund_window_ms",
        "warn_ms",
    )

    def __init__(self, ledger: Ledger) -> None:
        expiry = ledger.expiry
        self.pending_ms = ledger.pending_days * DAY_MS
        self.warn_ms = ledger.expiring_soon_days * DAY_MS
        self.allow_negative = ledger.refund_policy == "allow_negative"
        self.refund_window_ms = ledger.refund_window_days * DAY_MS
        self.days_after_earn_ms = expiry.days * DAY_MS if isinstance(expiry, DaysAfterEarn) else 0
        self.end_of_month = expiry.months if isinstance(expiry, EndOfMonth) else -1
        self.end_of_year = expiry.years if isinstance(expiry, EndOfYear) else -1
        self.inactivity_ms = expiry.days * DAY_MS if isinstance(expiry, InactivityDays) else 0

    def expires_at(self, earned_at: int) -> int:
        """When points earned at ``earned_at`` expire under a per-lot policy (else NEVER)."""
        if self.days_after_earn_ms:
            return earned_at + self.days_after_earn_ms
        if self.end_of_month >= 0:
            return start_of_month(earned_at, self.end_of_month + 1)
        if self.end_of_year >= 0:
            return start_of_year(earned_at, self.end_of_year + 1)
        return NEVER


def add_entry(state: LoyaltyState, at: int, kind: str, points: int, ref: str) -> None:
    entries = state.entries
    entries.append(Entry(at=at, kind=kind, points=points, ref=ref))
    if len(entries) > MAX_ENTRIES:
        first, second = entries[0], entries[1]
        entries[0:2] = [Entry(at=second.at, kind="carried", points=first.points + second.points, ref="")]


def _repay(state: LoyaltyState, lot: Lot) -> None:
    if state.debt and lot.remaining:
        paid = min(state.debt, lot.remaining)
        lot.remaining -= paid
        state.debt -= paid


def credit(
    state: LoyaltyState,
    plan: LedgerPlan,
    *,
    ref: str,
    source: str,
    at: int,
    points: int,
    pending: bool,
    kind: str,
) -> Lot:
    """Add a lot of ``points`` earned at ``at`` (pending for the return window if asked)."""
    pending = pending and plan.pending_ms > 0
    expires_at = plan.expires_at(at)
    warn_at = expires_at - plan.warn_ms if plan.warn_ms and expires_at != NEVER else NEVER
    lot = Lot(
        ref=ref,
        source=source,
        earned_at=at,
        active_at=at + plan.pending_ms if pending else at,
        expires_at=expires_at,
        warn_at=warn_at,
        points=points,
        remaining=points,
        pending=pending,
    )
    insort(state.lots, lot, key=_spend_order)
    add_entry(state, at, kind, points, ref)
    if not pending:
        _repay(state, lot)
    return lot


def activate(state: LoyaltyState, lot: Lot) -> None:
    """Pending -> active (the return window has passed); an outstanding debt is paid first."""
    lot.pending = False
    _repay(state, lot)


def balance(state: LoyaltyState) -> int:
    """Spendable points: active lots' remaining points minus any debt."""
    return sum(lot.remaining for lot in state.lots if not lot.pending) - state.debt


def pending_points(state: LoyaltyState) -> int:
    return sum(lot.remaining for lot in state.lots if lot.pending)


def projected_balance(state: LoyaltyState, at: int) -> int:
    """The balance the fold will find at ``at``: pending lots due by then count, expired do not."""
    lapsed_at = state.inactivity_expire_at if state.inactivity_expire_at <= at else -1
    points = sum(
        lot.remaining
        for lot in state.lots
        if (not lot.pending or lot.active_at <= at)
        and lot.expires_at > at
        and lot.active_at > lapsed_at
    )
    return points - state.debt


def spend(state: LoyaltyState, points: int) -> int:
    """Take up to ``points`` from active lots, soonest-expiring first; returns what was taken."""
    wanted = points
    for lot in state.lots:
        if wanted == 0:
            break
        if lot.pending or not lot.remaining:
            continue
        taken = min(wanted, lot.remaining)
        lot.remaining -= taken
        wanted -= taken
    return points - wanted


def take_from_lot(state: LoyaltyState, ref: str, points: int) -> int:
    """Take up to ``points`` from the lot ``ref`` (pending or active); returns what was taken."""
    for lot in state.lots:
        if lot.ref == ref:
            taken = min(points, lot.remaining)
            lot.remaining -= taken
            return taken
    return 0


def expire(state: LoyaltyState, lot: Lot) -> int:
    """Expire what is left of ``lot``; returns the points expired."""
    points = lot.remaining
    lot.remaining = 0
    state.expired_points += points
    return points


def drop_closed(state: LoyaltyState) -> None:
    """Forget lots with nothing left (their history is in the entries and emitted events)."""
    if any(not lot.remaining for lot in state.lots):
        state.lots = [lot for lot in state.lots if lot.remaining]
