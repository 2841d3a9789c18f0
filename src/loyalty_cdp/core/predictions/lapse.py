"""Lapse risk: the chance a member makes no purchase within twice their own usual interval.

Definitions (``docs/models.md``, "Lapse risk"):

* **usual interval** of a member, in days: the mean gap between their purchase days, shrunk
  toward the population's typical gap, ``(t_x + k * I_pop) / (x + k)`` with ``x`` repeat
  purchase days over ``t_x`` days and ``k`` = ``prior_purchases`` (default 1). A member with
  one purchase gets ``I_pop``, the median of the repeat buyers' own mean gaps.
* **lapse window** W: ``window_intervals`` (default 2) usual intervals, clipped to
  [``min_window_days``, ``max_window_days``], so a weekly shopper is judged over two weeks and a
  quarterly one over six months.
* **lapse risk**: P(no purchase in (T, T + W] | x, t_x, T) under the fitted BG/NBD model:
  ``1 - P(alive) + P(alive) * ((alpha + T) / (alpha + T + W)) ** (r + x)``. Given that the
  member is alive, BG/NBD's rate is Gamma(r + x, alpha + T) and dropout only follows a purchase,
  so the second term is exactly the chance of no purchase in the window. It rises with the time
  since the last purchase relative to the member's cadence, and it is informative for one-time
  buyers too (their P(alive) is 1 by construction, but their rate posterior falls as T grows).

A healthy member buying like a Poisson process at their usual rate has a lapse risk near
e^-2 = 0.14; the default threshold for ``Lapse Risk Detected`` is 0.7.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.predictions.bgnbd import BgNbdModel
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]

DEFAULT_THRESHOLD = 0.7
WINDOW_INTERVALS = 2.0
MIN_WINDOW_DAYS = 7.0
MAX_WINDOW_DAYS = 365.0
PRIOR_PURCHASES = 1.0
# The population's typical gap when nobody has bought twice yet.
FALLBACK_INTERVAL_DAYS = 30.0


def population_interval_days(frequency: FloatArray, recency_days: FloatArray) -> float:
    """Median of the repeat buyers' own mean gaps ``t_x / x`` (days), at least one day."""
    repeat = frequency > 0
    if not repeat.any():
        return FALLBACK_INTERVAL_DAYS
    gaps = recency_days[repeat] / frequency[repeat]
    return float(max(np.median(gaps), 1.0))


def usual_interval_days(
    frequency: FloatArray,
    recency_days: FloatArray,
    population_days: float,
    prior_purchases: float = PRIOR_PURCHASES,
) -> FloatArray:
    """``(t_x + k * I_pop) / (x + k)``: the member's mean gap shrunk toward the population's."""
    if not (np.isfinite(population_days) and population_days > 0):
        raise InvalidInput("population_days", "must be a positive number of days")
    if not prior_purchases > 0:
        raise InvalidInput("prior_purchases", "must be positive")
    return np.asarray(
        (recency_days + prior_purchases * population_days) / (frequency + prior_purchases),
        dtype=np.float64,
    )


def lapse_window_days(
    usual_days: FloatArray,
    window_intervals: float = WINDOW_INTERVALS,
    min_days: float = MIN_WINDOW_DAYS,
    max_days: float = MAX_WINDOW_DAYS,
) -> FloatArray:
    """``window_intervals`` usual intervals, clipped to [``min_days``, ``max_days``]."""
    if not (window_intervals > 0 and 0 < min_days <= max_days):
        raise InvalidInput("window_intervals", "window and its bounds must be positive, min <= max")
    return np.asarray(np.clip(window_intervals * usual_days, min_days, max_days), dtype=np.float64)


def no_purchase_probability(
    model: BgNbdModel,
    frequency: FloatArray,
    recency: FloatArray,
    T: FloatArray,
    window: FloatArray,
) -> FloatArray:
    """P(no purchase in (T, T + window] | x, t_x, T) under BG/NBD (all in the model's unit)."""
    alive = model.probability_alive(frequency, recency, T)
    log_quiet_if_alive = -(model.r + frequency) * np.log1p(window / (model.alpha + T))
    return np.asarray(1.0 - alive * -np.expm1(log_quiet_if_alive), dtype=np.float64)


def lapse_risk(
    model: BgNbdModel,
    frequency: FloatArray,
    recency: FloatArray,
    T: FloatArray,
    window_days: FloatArray,
) -> FloatArray:
    """Lapse risk (module docstring): no purchase within the member's own lapse window."""
    window = np.asarray(window_days, dtype=np.float64) / model.time_unit_days
    return np.clip(no_purchase_probability(model, frequency, recency, T, window), 0.0, 1.0)


def upward_crossings(previous: FloatArray, current: FloatArray, threshold: float) -> NDArray[np.bool_]:
    """Members whose risk went from below ``threshold`` (NaN: not scored) to at or above it."""
    if not 0 < threshold < 1:
        raise InvalidInput("threshold", "must be between 0 and 1")
    before = np.where(np.isnan(previous), -np.inf, previous)
    return np.asarray((before < threshold) & (current >= threshold), dtype=np.bool_)
