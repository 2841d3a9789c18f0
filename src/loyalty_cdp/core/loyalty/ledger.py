"""Points in lots: credit, activation, spending soonest-expiring first, reversal and expiry.

Invariants kept by every function here (and checked by the property tests):
``points_balance + pending_points == sum of the entries``, where the balance is the
active lots' remaining points minus ``debt``; under ``within_balance`` nothing ever
makes the balance negative. Only ``MAX_ENTRIES`` entries are kept: older ones are
folded into one ``carried`` entry, so the sum still holds.
"""

from __future__ import annotations

from bisect import insort

from loyalty_cdp.core.loyalty.periods import (
    DAY_MS,
    NEVER,
    start_of_day,
    start_of_month,
    start_of_year,
)
from loyalty_cdp.core.loyalty.program import (
    DaysAfterEarn,
    EndOfMonth,
    EndOfYear,
    InactivityDays,
    Ledger,
)
from loyalty_cdp.core.loyalty.state import Entry, Lot, LoyaltyState

MAX_ENTRIES = 12


def _spend_order(lot: Lot) -> tuple[int, int, str]:
    return (lot.expires_at, lot.earned_at, lot.source)


class LedgerPlan:
    """A program version's ledger section in the units the engine computes with."""

    __slots__ = (
        "allow_negative",
        "days_after_earn",
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
        self.days_after_earn = expiry.days if isinstance(expiry, DaysAfterEarn) else 0
        self.end_of_month = expiry.months if isinstance(expiry, EndOfMonth) else -1
        self.end_of_year = expiry.years if isinstance(expiry, EndOfYear) else -1
        self.inactivity_ms = expiry.days * DAY_MS if isinstance(expiry, InactivityDays) else 0

    def expires_at(self, earned_at: int) -> int:
        """When points earned at ``earned_at`` expire under a per-lot policy (else NEVER).

        ``days_after_earn``: at the end of the N-th day after the earning day.
        """
        if self.days_after_earn:
            return start_of_day(earned_at) + (self.days_after_earn + 1) * DAY_MS
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
        carried = Entry(at=second.at, kind="carried", points=first.points + second.points, ref="")
        entries[0:2] = [carried]


def _repay(state: LoyaltyState, lot: Lot) -> None:
    if state.debt and lot.remaining:
        paid = min(state.debt, lot.remaining)
        lot.remaining -= paid
        state.debt -= paid


def _active_lot(state: LoyaltyState, expires_at: int) -> Lot | None:
    for lot in state.lots:
        if lot.expires_at == expires_at and not lot.pending:
            return lot
    return None


def credit(
    state: LoyaltyState,
    plan: LedgerPlan,
    *,
    source: str,
    at: int,
    points: int,
    pending: bool,
    kind: str,
) -> Lot:
    """Add ``points`` earned at ``at``: a pending lot for a purchase within its return window,
    otherwise into the active lot of the same expiry date (created when there is none)."""
    pending = pending and plan.pending_ms > 0
    expires_at = plan.expires_at(at)
    warn_at = max(expires_at - plan.warn_ms, at) if plan.warn_ms and expires_at != NEVER else NEVER
    add_entry(state, at, kind, points, source)
    # Handlers may only lower the next wake-up (see schedule.next_due).
    state.due = min(state.due, warn_at, expires_at, at + plan.pending_ms if pending else NEVER)
    if not pending:
        same = _active_lot(state, expires_at)
        if same is not None:
            same.points += points
            same.remaining += points
            same.warn_at = min(same.warn_at, warn_at)
            _repay(state, same)
            return same
    lot = Lot(
        source=source,
        earned_at=at,
        active_at=at + plan.pending_ms if pending else at,
        expires_at=expires_at,
        warn_at=warn_at,
        points=points,
        remaining=points,
        pending=pending,
    )
    lots = state.lots
    if not lots or _spend_order(lots[-1]) <= _spend_order(lot):
        lots.append(lot)  # the usual case: later earnings expire later
    else:
        insort(lots, lot, key=_spend_order)
    if not pending:
        _repay(state, lot)
    return lot


def activate(state: LoyaltyState, lot: Lot) -> None:
    """Pending -> active (the return window has passed): merge into the active lot of the
    same expiry date, if any; an outstanding debt is paid first."""
    lot.pending = False
    same = _active_lot(state, lot.expires_at)
    if same is not None and same is not lot:
        same.points += lot.points
        same.remaining += lot.remaining
        same.warn_at = min(same.warn_at, lot.warn_at)
        lot.remaining = 0
        lot = same
    _repay(state, lot)


def balance(state: LoyaltyState) -> int:
    """Spendable points: active lots' remaining points minus any debt."""
    total = -state.debt
    for lot in state.lots:
        if not lot.pending:
            total += lot.remaining
    return total


def pending_points(state: LoyaltyState) -> int:
    total = 0
    for lot in state.lots:
        if lot.pending:
            total += lot.remaining
    return total


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


def drop_closed(state: LoyaltyState) -> None:
    """Forget lots with nothing left (their history is in the entries and emitted events)."""
    for lot in state.lots:
        if not lot.remaining:
            state.lots = [lot for lot in state.lots if lot.remaining]
            return


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
    drop_closed(state)
    return points - wanted


def take_from_lot(state: LoyaltyState, source: str, expires_at: int, points: int) -> int:
    """Take up to ``points`` from the pending lot of ``source`` or, once it became active,
    from the active lot expiring at ``expires_at``; returns what was taken."""
    found = next((lot for lot in state.lots if lot.pending and lot.source == source), None)
    if found is None:
        found = _active_lot(state, expires_at)
    if found is None:
        return 0
    taken = min(points, found.remaining)
    found.remaining -= taken
    drop_closed(state)
    return taken


def expire(state: LoyaltyState, lot: Lot) -> int:
    """Expire what is left of ``lot``; returns the points expired."""
    points = lot.remaining
    lot.remaining = 0
    state.expired_points += points
    return points
