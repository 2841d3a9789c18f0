"""Customer lifetime value: discounted expected purchases times expected spend, per period."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loyalty_cdp.core.predictions.summary import check_rfm
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]


class PurchaseModel(Protocol):
    """What CLV needs from a purchase model (BG/NBD and Pareto/NBD both provide it)."""

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray: ...


def customer_lifetime_value(
    purchase_model: PurchaseModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    expected_spend: ArrayLike,
    *,
    periods: int,
    period_length: float,
    discount_rate: float,
) -> FloatArray:
    """Sum over periods i = 1..``periods`` of E[purchases in period i] x spend / (1 + d)^i.

    The standard discounted-cash-flow form: purchases are counted per period of
    ``period_length`` (in the purchase model's time unit, e.g. 30/7 for months with a weekly
    model) and each period's value is discounted at ``discount_rate`` per period, as at its end.
    ``expected_spend`` is per purchase, usually Gamma-Gamma's conditional expected spend
    (times a margin if value should be profit).
    """
    if isinstance(periods, bool) or not isinstance(periods, int) or periods < 1:
        raise InvalidInput("periods", "must be a whole number of periods, at least 1")
    if not (np.isfinite(period_length) and period_length > 0):
        raise InvalidInput("period_length", "must be positive")
    if not (np.isfinite(discount_rate) and discount_rate > -1):
        raise InvalidInput("discount_rate", "must be greater than -1 (usually 0 to 0.2)")
    x, t_x, t_obs = check_rfm(frequency, recency, T)
    spend = np.asarray(expected_spend, dtype=np.float64)
    if not np.isfinite(spend).all() or (spend < 0).any():
        raise InvalidInput("expected_spend", "must be finite and non-negative")
    value = np.zeros(np.broadcast_shapes(x.shape, spend.shape))
    purchases_before = np.zeros(x.shape)
    for period in range(1, periods + 1):
        purchases_by_end = purchase_model.conditional_expected_purchases(
            period * period_length, x, t_x, t_obs
        )
        discount = (1 + discount_rate) ** -period
        value += (purchases_by_end - purchases_before) * discount
        purchases_before = purchases_by_end
    return np.asarray(value * spend, dtype=np.float64)
