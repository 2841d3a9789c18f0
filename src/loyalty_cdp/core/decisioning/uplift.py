"""Incrementality: uplift of the treated group over the holdout, with confidence intervals.

For a trigger or campaign, each decision is an exposure (treated: sent; control: held
out) of one member at one instant. :func:`attribute` counts each exposed member's orders
and revenue in a window after the exposure (vectorised), and :func:`measure_uplift`
compares the groups on three metrics:

* conversion rate: share of members with at least one order in the attribution window,
  difference of proportions with Newcombe's hybrid score interval (Wilson intervals of
  each group combined), which stays honest for small or extreme rates;
* revenue per member: difference of means with Welch's t interval (SciPy), unequal
  variances allowed;
* active member rate: share of members with at least ``min_orders`` orders in the
  activity window (its own definition, configurable), Newcombe interval again.

An uplift is reported significant only when its interval excludes zero; an interval
covering zero is reported as not significant, whatever the point estimate.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from numpy.typing import ArrayLike, NDArray

from loyalty_cdp.errors import InvalidInput


class MetricUplift(msgspec.Struct, frozen=True):
    """One metric: group values, treated minus control with its interval, relative uplift."""

    metric: str
    treated: float
    control: float
    difference: float
    low: float
    high: float
    relative: float | None
    significant: bool
    method: str


class UpliftReport(msgspec.Struct, frozen=True):
    treated_members: int
    control_members: int
    confidence: float
    conversion_rate: MetricUplift
    revenue_per_member: MetricUplift
    active_member_rate: MetricUplift


class GroupOutcomes(msgspec.Struct, frozen=True):
    """Per member of one group: converted, revenue in the attribution window, active."""

    converted: NDArray[np.bool_]
    revenue: NDArray[np.float64]
    active: NDArray[np.bool_]


def _wilson(successes: int, total: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import binomtest  # here: scipy.stats takes over a second to import (every server start)

    interval = binomtest(successes, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def proportion_difference(treated: NDArray[np.bool_], control: NDArray[np.bool_], confidence: float,
                          metric: str) -> MetricUplift:
    """Difference of two proportions with Newcombe's hybrid score interval (his method 10)."""
    n1, n2 = treated.size, control.size
    x1, x2 = int(np.count_nonzero(treated)), int(np.count_nonzero(control))
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = _wilson(x1, n1, confidence)
    l2, u2 = _wilson(x2, n2, confidence)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return _metric(metric, p1, p2, difference, low, high, "Newcombe hybrid score (Wilson)")


def mean_difference(treated: NDArray[np.float64], control: NDArray[np.float64], confidence: float,
                    metric: str) -> MetricUplift:
    """Difference of two means with Welch's t interval."""
    m1, m2 = float(np.mean(treated)), float(np.mean(control))
    difference = m1 - m2
    if np.var(treated) == 0 and np.var(control) == 0:
        low = high = difference  # no spread at all: the difference is what it is
    else:
        from scipy.stats import ttest_ind  # here: see above

        interval = ttest_ind(treated, control, equal_var=False).confidence_interval(confidence_level=confidence)
        low, high = float(interval.low), float(interval.high)
    return _metric(metric, m1, m2, difference, low, high, "Welch t")


def _metric(metric: str, treated: float, control: float, difference: float, low: float, high: float,
            method: str) -> MetricUplift:
    relative = difference / control if control else None
    return MetricUplift(metric, treated, control, difference, low, high, relative, not low <= 0 <= high, method)


def measure_uplift(treated: GroupOutcomes, control: GroupOutcomes, confidence: float = 0.95) -> UpliftReport:
    """Treated against control on conversion rate, revenue per member and active member rate."""
    if not 0 < confidence < 1:
        raise InvalidInput("confidence", "must be in (0, 1)")
    for name, group in (("treated", treated), ("control", control)):
        size = group.converted.size
        if size < 2:
            raise InvalidInput(name, "needs at least two members to measure anything")
        if group.revenue.size != size or group.active.size != size:
            raise InvalidInput(name, "converted, revenue and active must have one entry per member")
        if not np.isfinite(group.revenue).all():
            raise InvalidInput(f"{name}.revenue", "must be finite numbers")
    return UpliftReport(
        treated_members=int(treated.converted.size),
        control_members=int(control.converted.size),
        confidence=confidence,
        conversion_rate=proportion_difference(treated.converted, control.converted, confidence, "conversion_rate"),
        revenue_per_member=mean_difference(treated.revenue, control.revenue, confidence, "revenue_per_member"),
        active_member_rate=proportion_difference(treated.active, control.active, confidence, "active_member_rate"),
    )


def attribute(exposed_members: ArrayLike, exposed_at: ArrayLike, order_members: ArrayLike, order_at: ArrayLike,
              order_revenue: ArrayLike, window_ms: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """For each exposure (member code, epoch ms): its member's orders and revenue in (at, at + window].

    Member codes are non-negative integers (the caller maps member ids to codes). Vectorised:
    orders are sorted once by (member, time) and each exposure is two binary searches."""
    members, at = np.asarray(exposed_members, dtype=np.int64), np.asarray(exposed_at, dtype=np.int64)
    buyers, when = np.asarray(order_members, dtype=np.int64), np.asarray(order_at, dtype=np.int64)
    revenue = np.asarray(order_revenue, dtype=np.float64)
    if members.shape != at.shape or buyers.shape != when.shape or when.shape != revenue.shape:
        raise InvalidInput("exposures", "members and times (and revenue) must be 1-d arrays of one length")
    if window_ms <= 0:
        raise InvalidInput("window", "must be positive")
    if members.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    if buyers.size == 0:
        return np.zeros(members.size, dtype=np.int64), np.zeros(members.size, dtype=np.float64)
    if min(members.min(), buyers.min()) < 0:
        raise InvalidInput("members", "member codes must not be negative")
    origin = min(int(at.min()), int(when.min()))
    span = max(int(at.max()) + window_ms, int(when.max())) - origin + 1
    if (max(int(members.max()), int(buyers.max())) + 1) * span >= 2**62:
        raise InvalidInput("window", "the members and the time span are too large to attribute in one pass")
    keys = buyers * span + (when - origin)
    order = np.argsort(keys, kind="stable")
    keys, revenue = keys[order], revenue[order]
    cumulative = np.concatenate(([0.0], np.cumsum(revenue)))
    start = np.searchsorted(keys, members * span + (at - origin), side="right")
    end = np.searchsorted(keys, members * span + (at - origin) + window_ms, side="right")
    return (end - start).astype(np.int64), cumulative[end] - cumulative[start]
