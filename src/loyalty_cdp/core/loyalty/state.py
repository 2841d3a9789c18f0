"""The loyalty state of one member: compact, msgspec-serialisable, folded from events.

Everything the engine needs to continue from where it stopped lives here, and nothing
else: open lots, a bounded tail of ledger entries, the orders still refundable, the tier
and its schedule, caps and counters. Timestamps are epoch milliseconds; ``NEVER`` stands
for "not scheduled". The engine updates a state in place; copy it (``snapshot``) to keep one.
"""

from __future__ import annotations

import msgspec

from loyalty_cdp.core.loyalty.periods import DAY_MS, NEVER

# How long command keys (order, refund, adjustment and redemption ids) are remembered.
IDEMPOTENCY_MS = 400 * DAY_MS

_encoder = msgspec.msgpack.Encoder()


class Lot(msgspec.Struct, array_like=True, gc=False):
    """Points that are spent and expire together.

    A purchase's lot is *pending* until ``active_at`` (the return window), then *active*.
    Active lots that expire at the same instant are merged into one, so a member has
    about one active lot per expiry date. ``source`` says what created the lot (the
    first of a merged lot's sources); a pending lot's source is its order, ``order:<id>``.
    """

    source: str  # "order:<id>", "bonus:<rule>", "milestone:<id>", "adjustment:<id>", ...
    earned_at: int
    active_at: int
    expires_at: int
    warn_at: int  # when to announce the expiry; NEVER once announced or when not wanted
    points: int
    remaining: int
    pending: bool


class Entry(msgspec.Struct, array_like=True, gc=False):
    """One movement of points: earn, redeem, reverse, expire, adjust, return or carried."""

    at: int
    kind: str
    points: int
    ref: str  # what caused it: "order:<id>", "refund:<id>", "redemption:<key>", ...


class OrderLine(msgspec.Struct, array_like=True, gc=False):
    key: str  # the product id, or the SKU when the line had none: refunds match on it
    quantity: int
    amount: int  # the line's eligible amount, hundredths
    money: int  # what the member paid for the line, hundredths
    points: int  # points the line earned
    returned: int  # units returned so far


class OrderRecord(msgspec.Struct, array_like=True, gc=False):
    """What a refund of the order needs to know, kept for ``ledger.refund_window_days``."""

    at: int
    expires_at: int  # its points' expiry: once active, they sit in that date's lot
    lines: list[OrderLine]
    bonus_points: int  # order-level points (order bonuses), not tied to a line
    points: int  # everything the order earned
    money: int  # what the member paid, hundredths (the base of amount refunds)
    qualifying: int  # what the order added to the tier metric
    points_paid: int  # points spent as payment on the order
    refunded_money: int = 0
    reversed_points: int = 0
    returned_paid: int = 0
    removed_qualifying: int = 0


class Redemption(msgspec.Struct, array_like=True, gc=False):
    at: int
    reward_id: str
    status: str  # "accepted" or the refusal reason
    cost: int
    code: str


class LoyaltyState(msgspec.Struct, kw_only=True, omit_defaults=True):
    member_id: str
    clock: int = -1  # event time the state has been evaluated to
    last_timestamp: int = -1  # key of the last input folded: (timestamp, message id)
    last_message_id: str = ""
    enrolled_at: int = -1
    due: int = NEVER  # the earliest scheduled transition
    lots: list[Lot] = []
    entries: list[Entry] = []
    debt: int = 0  # points owed after a reversal under allow_negative
    lifetime_points: int = 0  # earned minus reversed
    redeemed_points: int = 0
    expired_points: int = 0
    reversed_points: int = 0
    tier: str = ""
    tier_since: int = -1
    review_at: int = NEVER
    tier_warn_at: int = NEVER
    downgrade_at: int = NEVER
    downgrade_to: str = ""
    qualifying: list[tuple[int, int]] = []  # (UTC day, value) added to the tier metric
    metric_from_day: int = -1  # the current window's first day, and the metric since then
    metric_sum: int = 0
    purchase_count: int = 0
    milestones: list[str] = []
    anniversaries: int = 0
    next_anniversary_at: int = NEVER
    birthday: tuple[int, int] | None = None
    next_birthday_at: int = NEVER
    last_activity_at: int = -1
    inactivity_expire_at: int = NEVER
    inactivity_warn_at: int = NEVER
    orders: dict[str, OrderRecord] = {}
    seen: dict[int, int] = {}  # hashed refund and adjustment ids -> when, for idempotency
    bonus_counts: dict[str, tuple[int, int, int]] = {}  # rule -> (lifetime, day, that day's)
    rule_points: dict[str, int] = {}  # points granted per budgeted rule
    reward_counts: dict[str, int] = {}
    redemptions: dict[str, Redemption] = {}
    wishlist: dict[str, int] = {}  # product id or sku -> when added
    pruned_at: int = -1


def new_state(member_id: str) -> LoyaltyState:
    return LoyaltyState(member_id=member_id)


def snapshot(state: LoyaltyState) -> LoyaltyState:
    """An independent deep copy (the engine mutates the state it is given)."""
    return msgspec.msgpack.decode(_encoder.encode(state), type=LoyaltyState)


def encode(state: LoyaltyState) -> bytes:
    """The compact msgpack form adapters persist."""
    return _encoder.encode(state)


def decode(data: bytes) -> LoyaltyState:
    return msgspec.msgpack.decode(data, type=LoyaltyState)
