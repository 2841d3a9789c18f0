"""Offer propensities: the chance a member acts within an offer's window, one logistic regression each (pure).

The decisioning core reads ``scores.propensity.<name>`` (a probability) for an offer whose
``propensity.score`` names it. Each name is a label over the days after a cut-off
(:data:`TARGETS`):

* ``redemption``: the member redeems points (a reward, or points paid at checkout);
* ``replenishment``: the member buys again a product they had bought before the cut-off;
* ``win_back``: the member places any order;
* ``wishlist``: the member buys a product they had put on their wishlist before the cut-off.

Every name shares one member feature matrix (:data:`FEATURES`), read from the history up to the
cut-off only. A run works on two complete windows before ``as_of``, a time-based split: it fits
each model (:func:`~.propensity.fit_propensity`, scikit-learn's L2 logistic regression on
standardised features) on the cut-off ``2 x horizon`` days before ``as_of`` (labels: the horizon
after it), calibrates it (``CalibratedClassifierCV``, sigmoid by default) on the cut-off
``horizon`` days before ``as_of`` (labels: the days up to ``as_of``), where it also measures the
model's out-of-time AUC, and scores the features as of ``as_of`` with NumPy.
``eval/offer_propensity.py`` measures AUC, Brier score and calibration on a later window still.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.predictions.propensity import CALIBRATION_METHODS, PropensityModel, auc, fit_propensity
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

NEVER_DAYS = 730.0
# (name, what it measures, in words for a reason "... : <words>")
FEATURES: tuple[tuple[str, str], ...] = (
    ("orders_30d", "purchase days in the last 30 days"),
    ("orders_90d", "purchase days in the last 90 days"),
    ("orders_365d", "purchase days in the last 365 days"),
    ("days_since_order", "days since the last purchase"),
    ("tenure_days", "days since the first purchase"),
    ("spend_365d", "spend in the last 365 days"),
    ("repeat_share", "share of items that were bought before"),
    ("discount_share", "share of orders with a discount"),
    ("redemptions_90d", "redemptions in the last 90 days"),
    ("redemptions_365d", "redemptions in the last 365 days"),
    ("days_since_redemption", "days since the last redemption"),
    ("never_redeemed", "never redeemed"),
    ("wishlist_90d", "wishlist additions in the last 90 days"),
    ("wishlist_open", "wishlist items not bought yet"),
)
# Which features are log1p'd counts or days (the others are shares and flags).
_LOGGED = frozenset({"orders_30d", "orders_90d", "orders_365d", "days_since_order", "tenure_days", "spend_365d",
                     "redemptions_90d", "redemptions_365d", "days_since_redemption", "wishlist_90d",
                     "wishlist_open"})


@dataclass(frozen=True, slots=True)
class Target:
    """One propensity: its label over ``horizon_days`` after a cut-off, and its wording."""

    name: str
    horizon_days: int
    action: str


TARGETS: tuple[Target, ...] = (
    Target("redemption", 30, "redeem points"),
    Target("replenishment", 14, "buy again something you bought before"),
    Target("win_back", 21, "place an order"),
    Target("wishlist", 14, "buy something from your wishlist"),
)


@dataclass(frozen=True, slots=True)
class OfferPropensityConfig:
    """Which propensities a run fits, on how many members (seeded sample), with what penalty and calibration."""

    targets: tuple[Target, ...] = TARGETS
    # 100,000 members fit 15 coefficients and a 2-parameter calibration with room to spare (the
    # simulator's 3,000 do); more only lengthens a 1M-member run.
    fit_sample: int = 100_000
    l2: float = 1.0
    calibration: str = "sigmoid"
    # A model is fitted only with at least this many members of each class in its training window.
    min_class: int = 20

    def __post_init__(self) -> None:
        names = [target.name for target in self.targets]
        if len(set(names)) != len(names):
            raise InvalidInput("targets", "propensity names must be unique")
        for target in self.targets:
            if target.name not in _LABELS:
                raise InvalidInput("targets", f"unknown propensity {target.name!r}; known: {sorted(_LABELS)}")
            if not 1 <= target.horizon_days <= 365:
                raise InvalidInput("horizon_days", "must be between 1 and 365 days")
        if self.fit_sample < 100 or self.min_class < 1 or not self.l2 >= 0:
            raise InvalidInput("fit_sample", "fit_sample >= 100, min_class >= 1 and l2 >= 0 are required")
        if self.calibration not in CALIBRATION_METHODS:
            raise InvalidInput("calibration", f"must be one of {CALIBRATION_METHODS}")


@dataclass(frozen=True, slots=True)
class MemberFeatures:
    """Feature rows (``FEATURES`` order) of the members with an order up to the cut-off (codes)."""

    members: IntArray
    values: FloatArray


def distinct(values: IntArray) -> IntArray:
    """The sorted distinct values: sort and drop repeats (NumPy 2's hash-based ``np.unique`` is ~40x
    slower on wide-ranged int64 keys such as member x day)."""
    ordered = np.sort(values)
    if ordered.size == 0:
        return np.asarray(ordered, dtype=np.int64)
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return np.asarray(ordered[keep], dtype=np.int64)


def _per_member(codes: IntArray, size: int, weights: FloatArray | None = None) -> FloatArray:
    return np.bincount(codes, weights=weights, minlength=size).astype(np.float64)


def _last(codes: IntArray, times: IntArray, size: int) -> IntArray:
    last = np.full(size, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, codes, times)
    return last


def _time_rank(times: IntArray) -> IntArray:
    """Each time's dense rank among the distinct times (cheap when they come in order, as from the log)."""
    if times.size < 2 or bool((times[1:] >= times[:-1]).all()):
        return np.concatenate([np.zeros(min(times.size, 1), dtype=np.int64), np.cumsum(times[1:] != times[:-1])])
    return np.asarray(np.searchsorted(distinct(times), times), dtype=np.int64)


def repeat_lines(history: PurchaseHistory) -> BoolArray:
    """Whether each line's product had been bought by its member in an earlier order."""
    key = history.line_member * max(history.product_ids.size, 1) + history.line_product
    if key.size == 0:
        return np.zeros(0, dtype=bool)
    rank = _time_rank(history.order_time)[history.line_order]
    bits = max(int(rank.max()).bit_length(), 1)
    if int(key.max()) < 1 << (62 - bits):  # (key, time) packed in one int64: one sort, no gathers
        packed = (key << bits) | rank
        order = np.argsort(packed)
        ordered = np.sort(packed)
        sorted_key, sorted_rank = ordered >> bits, ordered & ((1 << bits) - 1)
    else:
        order = np.lexsort((rank, key))
        sorted_key, sorted_rank = key[order], rank[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    # A product bought twice in one order is not a repeat of itself: same time as the first line.
    first_rank = sorted_rank[first][np.cumsum(first) - 1]
    repeat = np.empty(order.size, dtype=bool)
    repeat[order] = sorted_rank > first_rank
    return repeat


def member_features(history: PurchaseHistory, as_of_ms: int, repeat: BoolArray | None = None) -> MemberFeatures:
    """The features of every member with an order up to ``as_of_ms`` (``repeat``: :func:`repeat_lines`)."""
    size = int(history.member_ids.size)
    repeat = repeat_lines(history) if repeat is None else repeat
    if repeat.shape != history.line_order.shape:
        raise InvalidInput("repeat", "one flag per order line is required")
    today = as_of_ms // DAY_MS
    past = history.order_time <= as_of_ms
    o_member, o_day = history.order_member[past], history.order_time[past] // DAY_MS
    day_cells = distinct(o_member * (1 << 32) + o_day)  # sorted by member, then day
    d_member, d_day = day_cells >> 32, day_cells & ((1 << 32) - 1)
    starts = np.flatnonzero(np.r_[True, d_member[1:] != d_member[:-1]]) if d_member.size else d_member
    ends = np.r_[starts[1:] - 1, d_member.size - 1] if d_member.size else d_member
    members = d_member[starts]

    def days_within(window: int) -> FloatArray:
        counts: FloatArray = _per_member(d_member[d_day > today - window], size)[members]
        return counts

    last_day = d_day[ends]
    first_day = np.zeros(size, dtype=np.int64)
    first_day[members] = d_day[starts]
    recent = past & (history.order_time // DAY_MS > today - 365)
    spend = _per_member(history.order_member[recent], size, history.order_total[recent])[members]
    line_past = past[history.line_order]
    line_member = history.line_member[line_past]
    items = _per_member(line_member, size)[members]
    repeats = _per_member(line_member[repeat[line_past]], size)[members]
    discounted = np.bincount(history.line_order, weights=(history.line_discount > 0).astype(np.float64),
                             minlength=history.order_time.size)
    orders = _per_member(o_member, size)[members]
    with_discount = _per_member(o_member, size, (discounted[past] > 0).astype(np.float64))[members]

    r_past = history.redemption_time <= as_of_ms
    r_member, r_day = history.redemption_member[r_past], history.redemption_time[r_past] // DAY_MS
    redeemed_ever = _per_member(r_member, size)[members] > 0
    last_redemption = _last(r_member, r_day, size)[members]
    since_redemption = np.where(redeemed_ever, today - last_redemption, NEVER_DAYS).astype(np.float64)

    w_past = history.wishlist_time <= as_of_ms
    w_member, w_day = history.wishlist_member[w_past], history.wishlist_time[w_past] // DAY_MS
    open_items = _open_wishlist(history, as_of_ms, size)[members]
    columns = {
        "orders_30d": days_within(30), "orders_90d": days_within(90), "orders_365d": days_within(365),
        "days_since_order": (today - last_day).astype(np.float64),
        "tenure_days": (today - first_day[members]).astype(np.float64),
        "spend_365d": spend,
        "repeat_share": repeats / np.maximum(items, 1.0),
        "discount_share": with_discount / np.maximum(orders, 1.0),
        "redemptions_90d": _per_member(r_member[r_day > today - 90], size)[members],
        "redemptions_365d": _per_member(r_member[r_day > today - 365], size)[members],
        "days_since_redemption": np.minimum(since_redemption, NEVER_DAYS),
        "never_redeemed": (~redeemed_ever).astype(np.float64),
        "wishlist_90d": _per_member(w_member[w_day > today - 90], size)[members],
        "wishlist_open": open_items,
    }
    values = np.column_stack([
        np.log1p(np.maximum(columns[name], 0.0)) if name in _LOGGED else columns[name] for name, _ in FEATURES
    ])
    return MemberFeatures(np.asarray(members, dtype=np.int64), values)


def _open_wishlist(history: PurchaseHistory, as_of_ms: int, size: int) -> FloatArray:
    """Per member, the distinct products added to the wishlist up to ``as_of_ms`` and not bought since."""
    products = max(history.product_ids.size, 1)
    added = history.wishlist_time <= as_of_ms
    keys = history.wishlist_member[added] * products + history.wishlist_product[added]
    if keys.size == 0:
        return np.zeros(size, dtype=np.float64)
    order = np.lexsort((history.wishlist_time[added], keys))
    sorted_keys = keys[order]
    last_of_key = np.ones(order.size, dtype=bool)
    last_of_key[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    unique_keys = sorted_keys[last_of_key]
    added_at = history.wishlist_time[added][order][last_of_key]
    line_time = history.line_time
    bought = line_time <= as_of_ms
    line_keys = history.line_member[bought] * products + history.line_product[bought]
    last_bought = np.full(unique_keys.size, np.iinfo(np.int64).min, dtype=np.int64)
    position = np.minimum(np.searchsorted(unique_keys, line_keys), unique_keys.size - 1)
    hit = unique_keys[position] == line_keys
    np.maximum.at(last_bought, position[hit], line_time[bought][hit])
    still_open = last_bought < added_at
    return _per_member(unique_keys[still_open] // products, size)


def _after(times: IntArray, as_of_ms: int, horizon_days: int) -> BoolArray:
    return (times > as_of_ms) & (times <= as_of_ms + horizon_days * DAY_MS)


def _label_redemption(history: PurchaseHistory, as_of_ms: int, horizon_days: int) -> IntArray:
    return history.redemption_member[_after(history.redemption_time, as_of_ms, horizon_days)]


def _label_win_back(history: PurchaseHistory, as_of_ms: int, horizon_days: int) -> IntArray:
    return history.order_member[_after(history.order_time, as_of_ms, horizon_days)]


def _bought_again(history: PurchaseHistory, as_of_ms: int, horizon_days: int, before_keys: IntArray) -> IntArray:
    """Members of the window's lines whose (member, product) key is in ``before_keys`` (sorted, distinct)."""
    products = max(history.product_ids.size, 1)
    window = _after(history.line_time, as_of_ms, horizon_days)
    keys = history.line_member[window] * products + history.line_product[window]
    if before_keys.size == 0:
        return keys[:0]
    position = np.minimum(np.searchsorted(before_keys, keys), before_keys.size - 1)  # np.isin hashes: slow
    bought: IntArray = keys[before_keys[position] == keys] // products
    return bought


def _label_replenishment(history: PurchaseHistory, as_of_ms: int, horizon_days: int) -> IntArray:
    products = max(history.product_ids.size, 1)
    before = history.line_time <= as_of_ms
    return _bought_again(history, as_of_ms, horizon_days,
                         distinct(history.line_member[before] * products + history.line_product[before]))


def _label_wishlist(history: PurchaseHistory, as_of_ms: int, horizon_days: int) -> IntArray:
    products = max(history.product_ids.size, 1)
    added = history.wishlist_time <= as_of_ms
    return _bought_again(history, as_of_ms, horizon_days,
                         distinct(history.wishlist_member[added] * products + history.wishlist_product[added]))


_LABELS = {
    "redemption": _label_redemption,
    "replenishment": _label_replenishment,
    "win_back": _label_win_back,
    "wishlist": _label_wishlist,
}


def labels(history: PurchaseHistory, target: Target, features: MemberFeatures, as_of_ms: int) -> BoolArray:
    """Whether each member of ``features`` did ``target``'s action within its horizon after ``as_of_ms``."""
    did = np.zeros(history.member_ids.size, dtype=bool)
    did[_LABELS[target.name](history, as_of_ms, target.horizon_days)] = True
    return did[features.members]


@dataclass(frozen=True, slots=True)
class OfferPropensities:
    """The fitted models (by name), why the others were not fitted, and each fit's figures."""

    models: dict[str, PropensityModel]
    skipped: dict[str, str]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [name for name, _ in FEATURES],
            "models": {name: model.to_dict() | {"features": [n for n, _ in FEATURES]}
                       for name, model in self.models.items()},
            "skipped": self.skipped,
            "metrics": self.metrics,
        }


def _sample(size: int, limit: int, seed: int) -> IntArray:
    if size <= limit:
        return np.arange(size, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(size, limit, replace=False))


def _classes(outcome: BoolArray, target: Target, window: str, min_class: int) -> str | None:
    """Why ``outcome`` cannot train or calibrate (too few of a class), or None."""
    positives = int(outcome.sum())
    if min(positives, outcome.size - positives) >= min_class:
        return None
    return (f"{positives} of {outcome.size} members did it in the {target.horizon_days} days after the "
            f"{window} cut-off; at least {min_class} of each class are needed")


def fit_offer_propensities(history: PurchaseHistory, as_of_ms: int, config: OfferPropensityConfig,
                           *, seed: int = 0, repeat: BoolArray | None = None) -> OfferPropensities:
    """Fit each target on the cut-off ``2 x horizon_days`` before ``as_of_ms`` and calibrate it on the
    cut-off ``horizon_days`` before it (labels up to ``as_of_ms``), on up to ``config.fit_sample``
    members (a seeded sample, drawn before any feature is computed).

    A target whose calibration window has fewer than ``config.min_class`` members of either class
    (no redemptions recorded yet, a history shorter than the horizon) is skipped with its reason.
    One whose earlier, training window has too few (a history shorter than two horizons) is fitted
    on the calibration window alone and left uncalibrated, with the reason in its metrics.
    """
    history = history.until(as_of_ms)
    members = distinct(history.order_member)
    chosen = members[_sample(members.size, config.fit_sample, seed)]
    if chosen.size < members.size:
        keep = np.zeros(history.member_ids.size, dtype=bool)
        keep[chosen] = True
        history = history.restricted_to(keep)
        repeat = None
    repeat = repeat_lines(history) if repeat is None else repeat
    models: dict[str, PropensityModel] = {}
    skipped: dict[str, str] = {}
    metrics: dict[str, dict[str, Any]] = {}
    by_cut: dict[int, MemberFeatures] = {}

    def window(cut: int) -> MemberFeatures:
        if cut not in by_cut:
            by_cut[cut] = member_features(history, cut, repeat)
        return by_cut[cut]

    for target in config.targets:
        calibration_cut = as_of_ms - target.horizon_days * DAY_MS
        fit_cut = calibration_cut - target.horizon_days * DAY_MS
        later = window(calibration_cut)
        later_outcome = labels(history, target, later, calibration_cut)
        reason = _classes(later_outcome, target, "calibration", config.min_class)
        if reason is not None:
            skipped[target.name] = reason
            continue
        earlier = window(fit_cut)
        outcome = labels(history, target, earlier, fit_cut)
        uncalibrated = _classes(outcome, target, "training", config.min_class)
        figures: dict[str, Any] = {"horizon_days": target.horizon_days}
        if uncalibrated is None:
            model = fit_propensity(earlier.values, outcome, l2=config.l2, calibration_features=later.values,
                                   calibration_labels=later_outcome, method=config.calibration)
            figures |= {"train_rows": int(outcome.size), "base_rate": float(outcome.mean()),
                        "train_auc": auc(model.predict(earlier.values), outcome),
                        "calibration": config.calibration, "calibration_rows": int(later_outcome.size),
                        "calibration_base_rate": float(later_outcome.mean()),
                        "out_of_time_auc": auc(model.logit(later.values), later_outcome)}
        else:
            model = fit_propensity(later.values, later_outcome, l2=config.l2)
            figures |= {"train_rows": int(later_outcome.size), "base_rate": float(later_outcome.mean()),
                        "train_auc": auc(model.predict(later.values), later_outcome),
                        "calibration": f"none: {uncalibrated}"}
        models[target.name] = model
        metrics[target.name] = figures | {"converged": model.converged}
    return OfferPropensities(models, skipped, metrics)


@dataclass(frozen=True, slots=True)
class PropensityScores:
    """Each fitted target's probability per member of ``members`` (codes) and its strongest input."""

    members: IntArray
    probability: dict[str, FloatArray]
    top_feature: dict[str, IntArray]


def score_offer_propensities(fitted: OfferPropensities, features: MemberFeatures) -> PropensityScores:
    """Every fitted model applied to ``features``; the top input is the largest term w_j (x_j - mean_j) / s_j
    (:meth:`~.propensity.PropensityModel.terms`)."""
    probability: dict[str, FloatArray] = {}
    top: dict[str, IntArray] = {}
    for name, model in fitted.models.items():
        probability[name] = model.predict(features.values)
        top[name] = np.asarray(np.argmax(model.terms(features.values), axis=1), dtype=np.int64)
    return PropensityScores(features.members, probability, top)


_SHARES = frozenset({"repeat_share", "discount_share"})
_LOGGED_COLUMN = np.array([name in _LOGGED for name, _ in FEATURES])
_SHARE_COLUMN = np.array([name in _SHARES for name, _ in FEATURES])


def shown_amounts(feature: IntArray, value: FloatArray) -> FloatArray:
    """The whole number a reason shows for each (input, value): counts and days back from log1p, shares as
    percentages, the never-redeemed flag as 0 or 1."""
    logged, share = _LOGGED_COLUMN[feature], _SHARE_COLUMN[feature]
    shown = np.where(logged, np.expm1(np.where(logged, value, 0.0)), np.where(share, value * 100, value))
    return np.asarray(np.rint(shown), dtype=np.float64)


def propensity_reason(target: Target, percent: int, feature: int, shown: float) -> dict[str, str]:
    """``{"code": "propensity_<name>", "text": ...}``: the chance (whole percent) and the input that raised it
    most, with its :func:`shown_amounts` value."""
    name, words = FEATURES[feature]
    if name in _SHARES:
        amount = f"{shown:.0f}%"
    elif name == "never_redeemed":
        amount = "yes" if shown else "no"
    else:
        amount = f"{shown:.0f}"
    return {"code": f"propensity_{target.name}",
            "text": f"{percent}% chance you {target.action} in the next {target.horizon_days} days; "
                    f"strongest input: {words}: {amount}"}
