"""Rewards and redemption: the decision on a request, voucher codes, and the command event.

The redemption API (an adapter) calls :func:`decide` on the member's state to answer at
once (``insufficient_balance`` becomes a 409 carrying ``balance`` and ``cost``), then
appends :func:`redemption_command` to the event log; the fold applies the command and
decides again at its event time, which is the authoritative outcome. The command's
message id is derived from the member and the idempotency key, so a retried request is
the same message and the log stores it once; the voucher code is derived the same way.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Literal

import msgspec

from loyalty_cdp.core.loyalty.emit import CHANNEL, message_id
from loyalty_cdp.core.loyalty.inputs import REWARD_REDEEMED, RedemptionRequest
from loyalty_cdp.core.loyalty.ledger import projected_balance
from loyalty_cdp.core.loyalty.periods import DAY_MS, NEVER, date_ms, iso
from loyalty_cdp.core.loyalty.program import (
    DiscountVoucher,
    FreeProduct,
    PointsPayment,
    Reward,
    cents,
)
from loyalty_cdp.core.loyalty.state import IDEMPOTENCY_MS, LoyaltyState

Status = Literal["accepted", "refused", "duplicate"]


class RedemptionDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a redemption request; ``reason`` says why when refused."""

    status: Status
    reason: str = ""
    reward_id: str
    cost: int = 0
    balance: int = 0
    code: str = ""
    value: float = 0.0
    currency: str = ""


def voucher_code(prefix: str, member_id: str, idempotency_key: str) -> str:
    """``PREFIX-XXXX-XXXX``: 40 bits of a hash of member and key, in base32 (no 0/1 clash)."""
    digest = hashlib.blake2b(f"{member_id}\x1f{idempotency_key}".encode(), digest_size=5).digest()
    body = base64.b32encode(digest).decode()
    return f"{prefix}-{body[:4]}-{body[4:]}"


def _available(reward: Reward, at: int) -> bool:
    starts = date_ms(reward.starts) if reward.starts else -1
    ends = date_ms(reward.ends) + DAY_MS if reward.ends else NEVER
    return starts <= at < ends


def decide(
    rewards: dict[str, Reward],
    *,
    point_value: float,
    currency: str,
    state: LoyaltyState,
    request: RedemptionRequest,
    at: int,
) -> RedemptionDecision:
    """Accept or refuse ``request`` against ``state`` as it will be at ``at``."""
    done = state.redemptions.get(request.idempotency_key)
    if done is not None and at - done.at <= IDEMPOTENCY_MS:
        return RedemptionDecision(
            status="duplicate",
            reason=done.status,
            reward_id=done.reward_id,
            cost=done.cost,
            code=done.code,
            balance=projected_balance(state, at),
        )
    reward = rewards.get(request.reward_id)
    refused: dict[str, Any] = {"status": "refused", "reward_id": request.reward_id}
    if reward is None:
        return RedemptionDecision(reason="unknown_reward", **refused)
    if not _available(reward, at):
        return RedemptionDecision(reason="not_available", **refused)
    if reward.tiers and state.tier not in reward.tiers:
        return RedemptionDecision(reason="tier_required", **refused)
    if isinstance(reward, PointsPayment):
        quantity = 1
        cost = request.points
        too_many = reward.max_points is not None and cost > reward.max_points
        if cost < reward.min_points or too_many:
            return RedemptionDecision(reason="invalid_points", cost=cost, **refused)
        value = cost * point_value
    else:
        quantity = request.quantity
        if quantity < 1:
            return RedemptionDecision(reason="invalid_quantity", **refused)
        cost = reward.cost * quantity
        value = (
            cents(reward.value, "value") * quantity / 100
            if isinstance(reward, DiscountVoucher)
            else 0.0
        )
    limit = reward.per_member_limit
    if limit is not None and state.reward_counts.get(reward.id, 0) + quantity > limit:
        return RedemptionDecision(reason="limit_reached", cost=cost, **refused)
    balance = projected_balance(state, at)
    if balance < cost:
        return RedemptionDecision(
            reason="insufficient_balance", cost=cost, balance=balance, **refused
        )
    code = ""
    if isinstance(reward, DiscountVoucher | FreeProduct):
        code = voucher_code(reward.code_prefix, state.member_id, request.idempotency_key)
    return RedemptionDecision(
        status="accepted",
        reward_id=reward.id,
        cost=cost,
        balance=balance - cost,
        code=code,
        value=round(value, 2),
        currency=currency,
    )


def redemption_command(member_id: str, request: RedemptionRequest, at: int) -> dict[str, Any]:
    """The ``Reward Redeemed`` track call the redemption API appends to the event log."""
    properties: dict[str, Any] = {
        "reward_id": request.reward_id,
        "idempotency_key": request.idempotency_key,
        "quantity": request.quantity,
    }
    if request.points:
        properties["points"] = request.points
    if request.order_id:
        properties["order_id"] = request.order_id
    return {
        "type": "track",
        "userId": member_id,
        "event": REWARD_REDEEMED,
        "properties": properties,
        "timestamp": iso(at),
        "messageId": message_id(member_id, REWARD_REDEEMED, request.idempotency_key),
        "context": {"channel": CHANNEL},
    }
