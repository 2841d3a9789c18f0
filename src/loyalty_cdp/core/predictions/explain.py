"""Plain-language reasons behind each member's scores, strongest input of lapse risk first (pure).

Every reason is ``{"code": ..., "text": ...}``; the numbers it quotes are also in the member's
scores. The order is fixed by what drives lapse risk: the time since the last purchase against
the member's own cadence first, then the estimated chance of still being active, then how
often and how much the member buys.

========================  ===================================================================
code                      text (example)
========================  ===================================================================
``overdue``               no purchase for 94 days, 3.0x your usual 31-day interval
``on_cadence``            last purchase 12 days ago, within your usual 31-day interval
``single_purchase``       one purchase so far, 94 days ago; members usually buy again within
                          31 days
``activity``              23% estimated chance of still being an active customer
``frequency``             7 purchases in the last 210 days
``value``                 about 1.9 purchases expected in the next 90 days, about 41.20 each
``replenishment_due``     Whole Bean Espresso 1kg likely needed around 2026-04-03 (you buy it
                          every 14 days)
========================  ===================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loyalty_cdp.core.predictions.scoring import HORIZON_DAYS, MemberScores

Reason = dict[str, str]


def _cadence(days_since: int, usual: int, ratio: float, single: bool) -> Reason:
    if single:
        return {"code": "single_purchase",
                "text": f"one purchase so far, {days_since} days ago; members usually buy again within {usual} days"}
    if ratio >= 1:
        return {"code": "overdue",
                "text": f"no purchase for {days_since} days, {ratio:.1f}x your usual {usual}-day interval"}
    return {"code": "on_cadence",
            "text": f"last purchase {days_since} days ago, within your usual {usual}-day interval"}


def _reasons(days_since: int, usual: int, ratio: float, single: bool, activity: str, orders: int, tenure: int,
             expected: float, spend: float) -> list[Reason]:
    reasons = [_cadence(days_since, usual, ratio, single), {"code": "activity", "text": activity}]
    if not single:
        reasons.append({"code": "frequency", "text": f"{orders} purchases in the last {tenure} days"})
    reasons.append({"code": "value", "text": f"about {expected:.1f} purchases expected in the next "
                                             f"{HORIZON_DAYS:g} days, about {spend:.2f} each"})
    return reasons


def _activity(percent: int) -> str:
    return f"{percent}% estimated chance of still being an active customer"


def btyd_reasons(days_since_last: float, usual_days: float, orders: int, days_since_first: float, p_alive: float,
                 expected: float, spend: float) -> list[Reason]:
    """One member's purchase-model reasons (the codes in :data:`BTYD_CODES`), as :func:`explain_scores` words them."""
    return _reasons(round(days_since_last), max(round(usual_days), 1), days_since_last / usual_days, orders <= 1,
                    _activity(round(p_alive * 100)), orders, round(days_since_first), expected, spend)


def explain_scores(scores: MemberScores) -> list[list[Reason]]:
    """The reasons of every member of ``scores``, in its order."""
    days_since = np.rint(scores.days_since_last_purchase).astype(np.int64).tolist()
    usual_days = np.maximum(np.rint(scores.usual_interval_days), 1).astype(np.int64).tolist()
    ratio = (scores.days_since_last_purchase / scores.usual_interval_days).tolist()
    single = (scores.orders <= 1).tolist()
    alive_percent = np.rint(scores.p_alive * 100).astype(np.int64).tolist()
    activity = [_activity(percent) for percent in range(101)]
    orders = scores.orders.astype(np.int64).tolist()
    tenure = np.rint(scores.days_since_first_purchase).astype(np.int64).tolist()
    expected = scores.expected_purchases.tolist()
    spend = scores.expected_spend.tolist()
    return [
        _reasons(days_since[i], usual_days[i], ratio[i], single[i], activity[alive_percent[i]], orders[i], tenure[i],
                 expected[i], spend[i])
        for i in range(len(orders))
    ]


def replenishment_reasons(entries: list[dict[str, Any]]) -> list[Reason]:
    """One reason per due replenishment entry (``member_replenishment`` output)."""
    return [
        {"code": "replenishment_due",
         "text": f"{entry.get('name') or entry.get('product_id') or entry['category']} likely needed around "
                 f"{entry['predicted_date']} (you buy it every {entry['interval_days']:.0f} days)"}
        for entry in entries if entry["due"]
    ]


LAPSE_CODES = frozenset({"overdue", "on_cadence", "single_purchase", "activity", "frequency"})
# The reasons the purchase model gives (what an incremental refresh rewrites).
BTYD_CODES = LAPSE_CODES | {"value"}


def lapse_reasons(reasons: list[Reason]) -> list[str]:
    """The texts of the reasons that bear on lapse risk, in order (for ``Lapse Risk Detected``)."""
    return [reason["text"] for reason in reasons if reason["code"] in LAPSE_CODES]
