"""Returns and refunds: how much of an order's points, points payment and tier credit to undo.

A refund names returned lines (``products`` with quantities), or a money ``amount``, or
neither (the whole order). Everything is computed from the *cumulative* returns, so a
series of partial refunds never undoes more than the order earned:

* a line keeps ``points x units kept / units bought``; order-level bonus points are kept
  in proportion to the eligible amount kept; an amount refund scales everything kept by
  ``(money - refunded) / money``. What the member keeps is floored once: a refunded line
  never leaves a point behind.
* points paid on the order come back in proportion to the money refunded (floored).
* the tier metric loses the order's contribution in the same proportion (purchase count:
  only when nothing of the order is kept).
"""

from __future__ import annotations

import math
from fractions import Fraction

import msgspec

from loyalty_cdp.core.loyalty.inputs import Refund
from loyalty_cdp.core.loyalty.state import OrderRecord


class RefundOutcome(msgspec.Struct, frozen=True, gc=False):
    reverse_points: int  # to take back from the member now
    return_points: int  # points paid on the order to give back now
    remove_qualifying: int  # to take off the tier metric now


def _mark_returned(order: OrderRecord, refund: Refund) -> None:
    if not refund.returned and refund.amount is None:
        for line in order.lines:
            line.returned = line.quantity
        order.refunded_money = order.money
        return
    if refund.amount is not None:
        order.refunded_money = min(order.money, order.refunded_money + refund.amount)
    for product_id, sku, quantity in refund.returned:
        wanted = quantity
        for line in order.lines:
            if wanted == 0:
                break
            same = line.key in (product_id, sku) and bool(line.key)
            if same and line.returned < line.quantity:
                taken = min(wanted, line.quantity - line.returned)
                line.returned += taken
                wanted -= taken


def apply_refund(order: OrderRecord, refund: Refund, metric: str) -> RefundOutcome:
    """Record ``refund`` on ``order`` and say what to undo now (never more than is left)."""
    _mark_returned(order, refund)
    scale = Fraction(order.money - order.refunded_money, order.money) if order.money else Fraction(0)
    kept_line_points = sum(
        (Fraction(line.points * (line.quantity - line.returned), line.quantity) for line in order.lines),
        Fraction(0),
    )
    eligible = sum(line.amount for line in order.lines)
    kept_eligible = sum(
        (Fraction(line.amount * (line.quantity - line.returned), line.quantity) for line in order.lines),
        Fraction(0),
    )
    kept_bonus = order.bonus_points * kept_eligible / eligible if eligible else Fraction(0)
    kept_points = math.floor((kept_line_points + kept_bonus) * scale)
    reverse = max(order.points - kept_points - order.reversed_points, 0)
    order.reversed_points += reverse

    kept_money = sum(
        (Fraction(line.money * (line.quantity - line.returned), line.quantity) for line in order.lines),
        Fraction(0),
    )
    kept_share = kept_money * scale / order.money if order.money else Fraction(0)
    returned_paid = math.floor(order.points_paid * (1 - kept_share))
    give_back = max(returned_paid - order.returned_paid, 0)
    order.returned_paid += give_back

    if metric == "tier_points":
        kept_qualifying = kept_points
    elif metric == "qualifying_spend":
        kept_qualifying = math.floor(kept_eligible * scale)
    else:
        kept_qualifying = order.qualifying if kept_share > 0 else 0
    kept_qualifying = min(kept_qualifying, order.qualifying)
    remove = max(order.qualifying - kept_qualifying - order.removed_qualifying, 0)
    order.removed_qualifying += remove
    return RefundOutcome(reverse, give_back, remove)
