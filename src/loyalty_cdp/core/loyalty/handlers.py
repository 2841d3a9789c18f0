"""What each input does to a member's loyalty state: purchases, refunds, redemptions,
adjustments, bonus events, birthdays and wishlists (see ``docs/loyalty.md``, "Inputs")."""

from __future__ import annotations

from loyalty_cdp.core.loyalty import ledger, milestones, tiers
from loyalty_cdp.core.loyalty.bonuses import award
from loyalty_cdp.core.loyalty.book import ProgramVersion
from loyalty_cdp.core.loyalty.context import FoldContext
from loyalty_cdp.core.loyalty.earn import earn_for_order
from loyalty_cdp.core.loyalty.emit import POINTS_REDEEMED, POINTS_REVERSED
from loyalty_cdp.core.loyalty.inputs import (
    IDENTIFY,
    ORDER_COMPLETED,
    ORDER_REFUNDED,
    POINTS_ADJUSTED,
    REWARD_REDEEMED,
    WISHLIST_ADDED,
    WISHLIST_REMOVED,
    LoyaltyInput,
    parse_adjustment,
    parse_birthday,
    parse_order,
    parse_redemption,
    parse_refund,
    text,
)
from loyalty_cdp.core.loyalty.periods import next_month_day
from loyalty_cdp.core.loyalty.returns import apply_refund
from loyalty_cdp.core.loyalty.rewards import decide
from loyalty_cdp.core.loyalty.state import OrderLine, OrderRecord, Redemption

WISHLIST_LIMIT = 20


def _take_back(
    fold: FoldContext,
    version: ProgramVersion,
    points: int,
    order: OrderRecord | None,
    source: str,
) -> tuple[int, int]:
    """Take ``points`` back: from the order's lot first, then the balance under the refund
    policy. Returns (points taken back, points left unrecovered)."""
    state = fold.state
    taken = (
        ledger.take_from_lot(state, source, order.expires_at, points) if order else 0
    )
    rest = points - taken
    if rest and version.ledger.allow_negative:
        taken += ledger.spend(state, rest)
        state.debt += points - taken
        taken = points
    elif rest:
        taken += ledger.spend(state, min(rest, max(ledger.balance(state), 0)))
    return taken, points - taken


def order_completed(fold: FoldContext, version: ProgramVersion, event: LoyaltyInput) -> None:
    state = fold.state
    at = event.timestamp
    order = parse_order(event.properties, event.message_id)
    known = state.orders.get(order.order_id)
    if known is not None and at - known.at <= fold.book.order_retention_ms:
        return
    paid = 0
    if order.points_redeemed:
        paid = ledger.spend(state, min(order.points_redeemed, max(ledger.balance(state), 0)))
        if paid:
            ledger.add_entry(state, at, "redeem", -paid, f"order:{order.order_id}")
            state.redeemed_points += paid
            fold.emit(POINTS_REDEEMED, at, f"{event.message_id}:payment", {
                "reason": "order_payment",
                "order_id": order.order_id,
                "points": paid,
                "shortfall": order.points_redeemed - paid,
                "value": version.points_money(paid) / 100,
                "currency": version.program.currency,
                "points_balance": ledger.balance(state),
            })
    plan = version.tiers
    result = earn_for_order(
        version.earn,
        order,
        at=at,
        channel=event.channel,
        tier=state.tier,
        tier_milli=plan.multipliers[plan.position(state.tier)],
        paid_cents=version.points_money(paid),
        wishlist=state.wishlist,
        rule_points=state.rule_points,
        budgets=fold.budgets,
        budget_key=f"{state.member_id}\x1f{order.order_id}",
    )
    expires_at = version.ledger.expires_at(at)
    if result.points:
        fold.earned(
            version, at, cause=f"{event.message_id}:earn", source=f"order:{order.order_id}",
            points=result.points, rules=result.rules, pending=True,
            extra={"order_id": order.order_id},
        )
    qualifying = (
        result.points if plan.metric == "tier_points"
        else result.eligible if plan.metric == "qualifying_spend"
        else 1
    )
    tiers.add_contribution(state, at, qualifying, at)
    state.orders[order.order_id] = OrderRecord(
        at=at,
        expires_at=expires_at,
        lines=[
            OrderLine(line.product_id or line.sku, line.quantity, amount, money, points, 0)
            for line, amount, money, points in zip(
                result.lines, result.line_amounts, result.line_money, result.line_points,
                strict=True,
            )
        ],
        bonus_points=result.bonus_points,
        points=result.points,
        money=sum(result.line_money),
        qualifying=qualifying,
        points_paid=paid,
    )
    state.purchase_count += 1
    fold.tier_changed(tiers.check_upgrade(plan, state, at), at, event.message_id)
    categories = {
        line.category
        for line, amount in zip(result.lines, result.line_amounts, strict=True)
        if amount and line.category
    }
    found = milestones.on_purchase(version.milestones, state, event.channel, categories)
    found += milestones.on_points(version.milestones, state)
    fold.achieved(version, at, found)
    fold.activity(version, at)
    fold.prune(at)


def order_refunded(fold: FoldContext, version: ProgramVersion, event: LoyaltyInput) -> None:
    state = fold.state
    at = event.timestamp
    refund = parse_refund(event.properties, event.message_id)
    if refund is None:
        return
    order = state.orders.get(refund.order_id)
    if order is None or at < order.at:
        return
    order_version = fold.book.at(order.at)
    if at - order.at > order_version.ledger.refund_window_ms:
        return
    if not fold.first_time(f"refund:{refund.refund_id}", at):
        return
    outcome = apply_refund(order, refund, order_version.tiers.metric)
    taken = unrecovered = 0
    if outcome.reverse_points:
        taken, unrecovered = _take_back(
            fold, version, outcome.reverse_points, order, f"order:{refund.order_id}"
        )
        ledger.add_entry(state, at, "reverse", -taken, f"refund:{refund.refund_id}")
        state.reversed_points += taken
        state.lifetime_points -= outcome.reverse_points
    if outcome.return_points:
        ledger.credit(
            state, version.ledger, source=f"refund:{refund.refund_id}", at=at, points=outcome.return_points,
            pending=False, kind="return",
        )
        state.redeemed_points -= outcome.return_points
    if outcome.remove_qualifying:
        tiers.add_contribution(state, order.at, -outcome.remove_qualifying, at)
    if outcome.reverse_points or outcome.return_points:
        fold.emit(POINTS_REVERSED, at, event.message_id, {
            "reason": "refund",
            "order_id": refund.order_id,
            "refund_id": refund.refund_id,
            "points": taken,
            "unrecovered": unrecovered,
            "points_returned": outcome.return_points,
            "points_balance": ledger.balance(state),
        })


def points_adjusted(fold: FoldContext, version: ProgramVersion, event: LoyaltyInput) -> None:
    state = fold.state
    at = event.timestamp
    adjustment = parse_adjustment(event.properties, event.message_id)
    if adjustment is None or not fold.first_time(f"adjustment:{adjustment.adjustment_id}", at):
        return
    source = f"adjustment:{adjustment.adjustment_id}"
    if adjustment.points > 0:
        fold.earned(
            version, at, cause=f"{event.message_id}:adjust", source=source,
            points=adjustment.points, rules=[("adjustment", adjustment.points)], pending=False,
            extra={"reason": adjustment.reason, "adjustment_id": adjustment.adjustment_id},
        )
        return
    taken, unrecovered = _take_back(fold, version, -adjustment.points, None, "")
    ledger.add_entry(state, at, "adjust", -taken, source)
    state.lifetime_points -= taken
    fold.emit(POINTS_REVERSED, at, event.message_id, {
        "reason": adjustment.reason,
        "adjustment_id": adjustment.adjustment_id,
        "points": taken,
        "unrecovered": unrecovered,
        "points_returned": 0,
        "points_balance": ledger.balance(state),
    })


def reward_redeemed(fold: FoldContext, version: ProgramVersion, event: LoyaltyInput) -> None:
    state = fold.state
    at = event.timestamp
    request = parse_redemption(event.properties)
    if request is None:
        return
    decision = decide(
        version.rewards, point_value=version.program.point_value,
        currency=version.program.currency, state=state, request=request, at=at,
    )
    if decision.status == "duplicate":
        return
    accepted = decision.status == "accepted"
    state.redemptions[request.idempotency_key] = Redemption(
        at=at, reward_id=request.reward_id, status="accepted" if accepted else decision.reason,
        cost=decision.cost, code=decision.code,
    )
    if not accepted:
        return
    ledger.spend(state, decision.cost)
    ledger.add_entry(state, at, "redeem", -decision.cost, f"redemption:{request.idempotency_key}")
    state.redeemed_points += decision.cost
    quantity = 1 if request.points else request.quantity
    state.reward_counts[request.reward_id] = state.reward_counts.get(request.reward_id, 0) + quantity
    reward = version.rewards[request.reward_id]
    fold.emit(POINTS_REDEEMED, at, request.idempotency_key, {
        "reason": "reward",
        "reward_id": reward.id,
        "reward_type": type(reward).__struct_config__.tag,
        "reward_name": reward.name,
        "quantity": quantity,
        "points": decision.cost,
        "value": decision.value,
        "currency": decision.currency,
        "code": decision.code or None,
        "idempotency_key": request.idempotency_key,
        "order_id": request.order_id or None,
        "points_balance": ledger.balance(state),
    })
    fold.activity(version, at)


def bonus_event(fold: FoldContext, version: ProgramVersion, event: LoyaltyInput) -> None:
    """Fixed points for a configured behaviour (also used for ``birthday`` by the scheduler)."""
    state = fold.state
    at = event.timestamp
    granted = award(version.bonuses, state, event.name, at, event.channel)
    if not granted:
        return
    plan = version.tiers
    for bonus, points in granted:
        fold.earned(
            version, at, cause=f"{event.message_id}:bonus:{bonus.id}", source=f"bonus:{bonus.id}",
            points=points, rules=[(bonus.id, points)], pending=False, extra={"event": event.name},
        )
        if bonus.tier_points and plan.metric == "tier_points":
            tiers.add_contribution(state, at, points, at)
    fold.tier_changed(tiers.check_upgrade(plan, state, at), at, event.message_id)
    fold.achieved(version, at, milestones.on_points(version.milestones, state))
    fold.activity(version, at)


def identify(fold: FoldContext, version: ProgramVersion, event: LoyaltyInput) -> None:
    """A birthday trait schedules the next birthday bonus (strictly after this call)."""
    state = fold.state
    birthday = parse_birthday(event.properties.get("birthday"))
    if birthday is not None and birthday != state.birthday:
        state.birthday = birthday
        state.next_birthday_at = next_month_day(event.timestamp, *birthday)


def wishlist(fold: FoldContext, version: ProgramVersion, event: LoyaltyInput) -> None:
    state = fold.state
    keys = [
        key for key in (text(event.properties.get("product_id")), text(event.properties.get("sku")))
        if key
    ]
    for key in keys:
        if event.name == WISHLIST_ADDED:
            state.wishlist[key] = event.timestamp
        else:
            state.wishlist.pop(key, None)
    if len(state.wishlist) > WISHLIST_LIMIT:
        newest = sorted(state.wishlist.items(), key=lambda item: (item[1], item[0]))[-WISHLIST_LIMIT:]
        state.wishlist = dict(newest)


HANDLERS = {
    ORDER_COMPLETED: order_completed,
    ORDER_REFUNDED: order_refunded,
    POINTS_ADJUSTED: points_adjusted,
    REWARD_REDEEMED: reward_redeemed,
    IDENTIFY: identify,
    WISHLIST_ADDED: wishlist,
    WISHLIST_REMOVED: wishlist,
}
