"""Replenishment: when each member will next buy each product they rebuy, and which reminders are due (pure).

Per (member, item) pair, where an item is a product or a product category
(``ReplenishmentConfig.group``), from the purchase days of that item up to ``as_of``:

* the member's own mean interval ``m`` over their ``n`` intervals is shrunk toward the item's
  typical interval ``I`` (the median of the repeat buyers' mean intervals for that item, or for
  its category when fewer than ``min_item_pairs`` members rebought it):
  ``interval = (n * m + k * I) / (n + k)`` with ``k`` = ``prior_intervals``;
* the spread is a coefficient of variation shrunk the same way toward the item's median one,
  and a pair is a replenishment pair only when it is at most ``max_cv`` (regular rebuying);
* the next purchase is predicted at ``last + interval``, with a band of ``band_z`` standard
  deviations of the next interval (``interval * cv * sqrt(1 + 1 / (n + k))``, at least a day);
  the default z = 1.28 makes it an 80% band under a normal approximation;
* a pair is **due** when ``predicted - lead_days <= as_of <= latest``: the reminder should go
  out now, ``lead_days`` before the predicted date, and it is not yet hopelessly late.

:func:`last_interval_baseline` is the naive method the back-test compares against: the next
purchase one last interval after the last one, for the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.errors import InvalidInput

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

# A pair's own cv is pooled with its item's as if the item's were worth this many intervals.
CV_PRIOR_INTERVALS = 2.0


@dataclass(frozen=True, slots=True)
class ReplenishmentConfig:
    lead_days: float = 3.0
    max_prior_intervals: float = 20.0
    min_purchases: int = 3
    max_cv: float = 0.5
    min_item_pairs: int = 5
    band_z: float = 1.2816
    group: Literal["product", "category"] = "product"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lead_days) and self.lead_days >= 0):
            raise InvalidInput("lead_days", "must be a non-negative number of days")
        if not self.max_prior_intervals >= 0:
            raise InvalidInput("max_prior_intervals", "must be non-negative")
        if self.min_purchases < 2:
            raise InvalidInput("min_purchases", "must be at least 2 (one interval)")
        if not self.max_cv > 0 or not self.band_z > 0 or self.min_item_pairs < 1:
            raise InvalidInput("max_cv", "max_cv, band_z and min_item_pairs must be positive")
        if self.group not in ("product", "category"):
            raise InvalidInput("group", "must be product or category")


@dataclass(frozen=True, slots=True)
class PairHistory:
    """One row per (member, item) pair bought on at least two days, sorted by member then item."""

    member: IntArray
    item: IntArray
    item_ids: NDArray[np.str_]
    item_category: IntArray
    purchases: IntArray
    last_ms: IntArray
    previous_interval_days: FloatArray
    mean_interval_days: FloatArray
    cv: FloatArray  # NaN below two intervals


@dataclass(frozen=True, slots=True)
class ReplenishmentPredictions:
    """One row per replenishment pair (sorted by member then item) with its next purchase."""

    member: IntArray
    item: IntArray
    item_ids: NDArray[np.str_]
    purchases: IntArray
    last_ms: IntArray
    interval_days: FloatArray
    predicted_ms: IntArray
    earliest_ms: IntArray
    latest_ms: IntArray
    due: NDArray[np.bool_]
    lead_days: FloatArray


def _items(history: PurchaseHistory, group: str) -> tuple[IntArray, NDArray[np.str_], IntArray, IntArray]:
    """Each line's item code, the item ids, each item's category code, and which lines count."""
    categories, category_of_product = np.unique(history.product_category, return_inverse=True)
    category_of_product = category_of_product.astype(np.int64)
    if group == "category":
        item_of_line = category_of_product[history.line_product]
        known = categories[item_of_line] != ""
        return item_of_line, categories, np.arange(categories.size, dtype=np.int64), known
    known = np.ones(history.line_product.size, dtype=bool)
    return history.line_product, history.product_ids, category_of_product, known


def pair_history(history: PurchaseHistory, as_of_ms: int, group: str = "product") -> PairHistory:
    """Purchase days of every (member, item) pair up to ``as_of_ms``, summarised per pair."""
    history = history.until(as_of_ms)
    item, item_ids, item_category, known = _items(history, group)
    by_time = history.lines_by_time()
    by_time = by_time[known[by_time]]
    member, item, time = history.line_member[by_time], item[by_time], history.line_time[by_time]
    # Grouped by pair, in time order within each pair (a stable sort of time-ordered lines).
    order = np.argsort(member * max(item_ids.size, 1) + item, kind="stable")
    member, item, time = member[order], item[order], time[order]
    day = time // DAY_MS
    # One purchase per pair and day (the first of the day).
    first_of_day = np.ones(member.size, dtype=bool)
    first_of_day[1:] = (member[1:] != member[:-1]) | (item[1:] != item[:-1]) | (day[1:] != day[:-1])
    member, item, time = member[first_of_day], item[first_of_day], time[first_of_day]
    new_pair = np.ones(member.size, dtype=bool)
    new_pair[1:] = (member[1:] != member[:-1]) | (item[1:] != item[:-1])
    starts = np.flatnonzero(new_pair)
    counts = np.diff(np.append(starts, member.size))
    pair_of = np.cumsum(new_pair) - 1
    gaps = np.zeros(member.size)
    gaps[1:] = (time[1:] - time[:-1]) / DAY_MS
    gaps[new_pair] = 0.0
    square_sums = np.bincount(pair_of, weights=gaps**2, minlength=starts.size)
    ends = starts + counts - 1
    repeat = counts >= 2
    intervals = (counts - 1)[repeat].astype(np.float64)
    span = (time[ends] - time[starts])[repeat] / DAY_MS
    mean = span / intervals
    variance = np.where(intervals >= 2, (square_sums[repeat] - intervals * mean**2) / np.maximum(intervals - 1, 1), 0)
    cv = np.where(intervals >= 2, np.sqrt(np.maximum(variance, 0)) / np.maximum(mean, 1e-9), np.nan)
    pair_items = item[starts][repeat]
    return PairHistory(
        member=member[starts][repeat],
        item=pair_items,
        item_ids=item_ids,
        item_category=item_category[pair_items],
        purchases=counts[repeat],
        last_ms=time[ends][repeat],
        previous_interval_days=gaps[ends][repeat],
        mean_interval_days=mean,
        cv=cv,
    )


def _group_medians(groups: IntArray, values: FloatArray, size: int) -> FloatArray:
    """Median of ``values`` per group code (NaN where a group has none)."""
    counts = np.bincount(groups, minlength=size)
    medians = np.full(size, np.nan)
    if values.size == 0:
        return medians
    ordered = values[np.lexsort((values, groups))]
    starts = np.cumsum(counts) - counts
    present = counts > 0
    low = starts[present] + (counts[present] - 1) // 2
    high = starts[present] + counts[present] // 2
    medians[present] = (ordered[low] + ordered[high]) / 2
    return medians


@dataclass(frozen=True, slots=True)
class _Prior:
    """Per pair: the typical interval and cv of its item (or category) and the prior's weight."""

    interval: FloatArray
    cv: FloatArray
    weight: FloatArray


def _group_prior(groups: IntArray, size: int, pairs: PairHistory, regular: NDArray[np.bool_],
                 max_weight: float) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
    """Typical interval, cv and empirical-Bayes prior weight per group, from its regular pairs.

    The weight is k = w / b: w the relative variance of one interval (median cv squared) and b
    the variance of the pairs' log mean intervals between members, less its sampling part
    (w / intervals on average); a group whose members all rebuy on one cycle gets ``max_weight``.
    """
    group, intervals = groups[regular], (pairs.purchases[regular] - 1).astype(np.float64)
    log_mean = np.log(pairs.mean_interval_days[regular])
    counts = np.bincount(group, minlength=size)
    interval = _group_medians(group, pairs.mean_interval_days[regular], size)
    within = _group_medians(group, pairs.cv[regular] ** 2, size)
    safe_counts = np.maximum(counts, 1)
    mean_log = np.bincount(group, weights=log_mean, minlength=size) / safe_counts
    spread = np.bincount(group, weights=log_mean**2, minlength=size) / safe_counts - mean_log**2
    sampling = np.bincount(group, weights=1 / intervals, minlength=size) / safe_counts * within
    between = np.maximum(spread * safe_counts / np.maximum(counts - 1, 1) - sampling, 0.0)
    weight = np.divide(within, between, out=np.full(size, max_weight), where=between > 0)
    return interval, np.sqrt(within), np.minimum(weight, max_weight), counts


def _prior(pairs: PairHistory, config: ReplenishmentConfig) -> _Prior:
    """Each pair's prior from its item's regular pairs, or its category's when the item has too few."""
    regular = (pairs.purchases >= 3) & (pairs.cv <= config.max_cv)
    items = _group_prior(pairs.item, pairs.item_ids.size, pairs, regular, config.max_prior_intervals)
    categories = _group_prior(pairs.item_category, int(pairs.item_category.max(initial=-1)) + 1, pairs, regular,
                              config.max_prior_intervals)
    own = items[3][pairs.item] >= config.min_item_pairs
    shared = ~own & (categories[3][pairs.item_category] >= config.min_item_pairs)
    columns = []
    for by_item, by_category in zip(items[:3], categories[:3], strict=True):
        columns.append(np.where(own, by_item[pairs.item], np.where(shared, by_category[pairs.item_category], np.nan)))
    interval, cv, weight = columns
    return _Prior(interval, cv, np.where(own | shared, weight, 0.0))


def _predictions(pairs: PairHistory, keep: NDArray[np.bool_], interval: FloatArray, spread_days: FloatArray,
                 as_of_ms: int, config: ReplenishmentConfig) -> ReplenishmentPredictions:
    interval, spread_days = interval[keep], spread_days[keep]
    last = pairs.last_ms[keep]
    predicted = last + np.rint(interval * DAY_MS).astype(np.int64)
    half_band = np.rint(np.maximum(config.band_z * spread_days, 1.0) * DAY_MS).astype(np.int64)
    latest = predicted + half_band
    lead = (predicted - as_of_ms) / DAY_MS
    return ReplenishmentPredictions(
        member=pairs.member[keep],
        item=pairs.item[keep],
        item_ids=pairs.item_ids,
        purchases=pairs.purchases[keep],
        last_ms=last,
        interval_days=interval,
        predicted_ms=predicted,
        earliest_ms=np.maximum(predicted - half_band, last),
        latest_ms=latest,
        due=(lead <= config.lead_days) & (as_of_ms <= latest),
        lead_days=lead,
    )


def _eligible(pairs: PairHistory, prior: _Prior, config: ReplenishmentConfig) -> tuple[NDArray[np.bool_], FloatArray]:
    """Which pairs rebuy regularly enough to predict, and their cv shrunk toward the item's."""
    own_weight = np.maximum(pairs.purchases - 2, 0).astype(np.float64)  # intervals - 1 behind a cv
    prior_weight = np.where(np.isnan(prior.cv), 0.0, CV_PRIOR_INTERVALS)
    total = own_weight + prior_weight
    cv_squared = own_weight * np.nan_to_num(pairs.cv) ** 2 + prior_weight * np.nan_to_num(prior.cv) ** 2
    cv = np.sqrt(np.divide(cv_squared, total, out=np.full(total.size, np.nan), where=total > 0))
    return (pairs.purchases >= config.min_purchases) & (cv <= config.max_cv), cv


def predict_replenishment(history: PurchaseHistory, as_of_ms: int,
                          config: ReplenishmentConfig | None = None) -> ReplenishmentPredictions:
    """Next purchase of every replenishment pair as of ``as_of_ms`` (module docstring)."""
    config = config or ReplenishmentConfig()
    pairs = pair_history(history, as_of_ms, config.group)
    prior = _prior(pairs, config)
    keep, cv = _eligible(pairs, prior, config)
    intervals = (pairs.purchases - 1).astype(np.float64)
    interval = (intervals * pairs.mean_interval_days + prior.weight * np.nan_to_num(prior.interval)) / (
        intervals + prior.weight)
    spread = interval * cv * np.sqrt(1 + 1 / (intervals + prior.weight))
    return _predictions(pairs, keep, interval, spread, as_of_ms, config)


def last_interval_baseline(history: PurchaseHistory, as_of_ms: int,
                           config: ReplenishmentConfig | None = None) -> ReplenishmentPredictions:
    """The naive method on the same pairs: the next purchase one last interval after the last one."""
    config = config or ReplenishmentConfig()
    pairs = pair_history(history, as_of_ms, config.group)
    keep, cv = _eligible(pairs, _prior(pairs, config), config)
    interval = pairs.previous_interval_days
    return _predictions(pairs, keep, interval, interval * cv * np.sqrt(2), as_of_ms, config)


def _dates(epoch_ms: IntArray) -> list[str]:
    dates: list[str] = np.datetime_as_string(epoch_ms.astype("datetime64[ms]"), unit="D").tolist()
    return dates


def member_replenishment(predictions: ReplenishmentPredictions, history: PurchaseHistory,
                         group: str = "product") -> dict[int, list[dict[str, Any]]]:
    """Per member code, its current replenishment pairs as JSON-ready dicts, soonest predicted first.

    A pair more than one interval past its predicted date is left out: the member has stopped
    rebuying that item.
    """
    current = np.flatnonzero(predictions.lead_days >= -predictions.interval_days)
    order = current[np.lexsort((predictions.predicted_ms[current], predictions.member[current]))]
    items = predictions.item[order]
    if group == "product":
        labels = {"product_id": history.product_ids[items].tolist(), "name": history.product_name[items].tolist(),
                  "category": history.product_category[items].tolist()}
    else:
        labels = {"category": predictions.item_ids[items].tolist()}
    columns = {
        **labels,
        "interval_days": np.round(predictions.interval_days[order], 1).tolist(),
        "purchases": predictions.purchases[order].tolist(),
        "last_purchase": _dates(predictions.last_ms[order]),
        "predicted_date": _dates(predictions.predicted_ms[order]),
        "earliest": _dates(predictions.earliest_ms[order]),
        "latest": _dates(predictions.latest_ms[order]),
        "lead_days": np.round(predictions.lead_days[order], 1).tolist(),
        "due": predictions.due[order].tolist(),
    }
    names = list(columns)
    entries: dict[int, list[dict[str, Any]]] = {}
    for member, values in zip(predictions.member[order].tolist(), zip(*columns.values(), strict=True), strict=True):
        entries.setdefault(member, []).append(dict(zip(names, values, strict=True)))
    return entries
