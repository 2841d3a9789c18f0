"""Propensity to buy in a category within the next 30 days: L2 logistic regression with NumPy/SciPy (pure).

One row per (member, category) for every member with an order up to ``as_of`` and every
category. The features (:data:`FEATURES`) are read from the orders up to ``as_of`` only; the
label is a purchase in the category within ``(as_of, as_of + horizon]``. The model is fitted by
L-BFGS on standardised features with an L2 penalty (not on the intercept), so a fit on one
cut-off date scores a later one (a time-based split). Maximum likelihood makes the fitted
probabilities calibrated in the large on the training window (mean prediction = base rate);
:func:`calibration_table` and :func:`brier_score` check it on later windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from scipy.stats import rankdata

from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

FEATURES = (
    "log1p purchase days in the category, last 30 days",
    "log1p purchase days in the category, last 90 days",
    "log1p purchase days in the category, last 365 days",
    "log1p days since the last purchase in the category (730 if never)",
    "never bought in the category",
    "share of the member's items in the category",
    "log1p the member's purchase days, last 90 days",
    "log1p days since the member's last purchase",
    "logit of the share of members buying in the category, last 30 days",
)
NEVER_DAYS = 730.0


@dataclass(frozen=True, slots=True)
class CategoryRows:
    """The (member, category) rows of one cut-off: codes, features and, when known, labels."""

    member: IntArray
    category: IntArray
    categories: NDArray[np.str_]
    features: FloatArray


def _purchase_days(history: PurchaseHistory, category_of_line: IntArray, categories: int) -> tuple[IntArray, IntArray]:
    """Distinct (member * categories + category, day) purchase days."""
    key = history.line_member * categories + category_of_line
    day = history.line_time // DAY_MS
    cells = np.unique(np.c_[key, day], axis=0) if key.size else np.zeros((0, 2), dtype=np.int64)
    return cells[:, 0].astype(np.int64), cells[:, 1].astype(np.int64)


def category_rows(history: PurchaseHistory, as_of_ms: int) -> CategoryRows:
    """Features of every (member with an order up to ``as_of_ms``, named category) row."""
    history = history.until(as_of_ms)
    categories, category_of_product = np.unique(history.product_category, return_inverse=True)
    named = categories != ""
    count = categories.size
    category_of_line = np.asarray(category_of_product, dtype=np.int64)[history.line_product]
    keys, days = _purchase_days(history, category_of_line, count)
    today = as_of_ms // DAY_MS
    members = np.unique(history.order_member)
    member = np.repeat(members, int(named.sum()))
    category = np.tile(np.flatnonzero(named), members.size)
    row_key = member * count + category
    slots = max(int(history.member_ids.size) * count, 1)

    def windowed(window: int) -> FloatArray:
        recent = keys[days > today - window]
        return np.asarray(np.bincount(recent, minlength=slots)[row_key], dtype=np.float64)

    last_day = np.full(slots, -1, dtype=np.int64)
    np.maximum.at(last_day, keys, days)
    bought = last_day[row_key] >= 0
    since = np.where(bought, today - last_day[row_key], NEVER_DAYS).astype(np.float64)
    items = np.bincount(history.line_member, minlength=history.member_ids.size).astype(np.float64)
    in_category = np.bincount(history.line_member * count + category_of_line, minlength=slots)[row_key]
    member_days = np.unique(np.c_[history.order_member, history.order_time // DAY_MS], axis=0)
    recent_days = np.bincount(member_days[member_days[:, 1] > today - 90, 0],
                              minlength=history.member_ids.size)[member].astype(np.float64)
    last_order = np.full(history.member_ids.size, np.iinfo(np.int64).min)
    np.maximum.at(last_order, history.order_member, history.order_time // DAY_MS)
    buyers_30d = np.bincount(keys[days > today - 30] % count, minlength=count)
    active = max(members.size, 1)
    base_rate = np.clip((buyers_30d[category] + 0.5) / (active + 1.0), 1e-6, 1 - 1e-6)
    features = np.column_stack([
        np.log1p(windowed(30)), np.log1p(windowed(90)), np.log1p(windowed(365)),
        np.log1p(np.minimum(since, NEVER_DAYS)), (~bought).astype(np.float64),
        in_category / np.maximum(items[member], 1.0),
        np.log1p(recent_days), np.log1p((today - last_order[member]).astype(np.float64)),
        np.log(base_rate / (1 - base_rate)),
    ])
    return CategoryRows(member, category, categories, features)


def category_labels(history: PurchaseHistory, rows: CategoryRows, as_of_ms: int,
                    horizon_days: float) -> NDArray[np.bool_]:
    """Whether each row's member bought in its category within ``(as_of, as_of + horizon]``."""
    window = (history.line_time > as_of_ms) & (history.line_time <= as_of_ms + horizon_days * DAY_MS)
    count = rows.categories.size
    category_of_product = np.unique(history.product_category, return_inverse=True)[1]
    bought = np.unique(history.line_member[window] * count + category_of_product[history.line_product[window]])
    return np.isin(rows.member * count + rows.category, bought)


@dataclass(frozen=True, slots=True)
class PropensityModel:
    """Logistic regression on standardised features: P = expit(intercept + w . (x - mean) / scale)."""

    intercept: float
    weights: FloatArray
    mean: FloatArray
    scale: FloatArray
    l2: float
    converged: bool

    def predict(self, features: FloatArray) -> FloatArray:
        return np.asarray(expit(self.intercept + ((features - self.mean) / self.scale) @ self.weights),
                          dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"model": "category_propensity_logit", "features": list(FEATURES), "intercept": self.intercept,
                "weights": self.weights.tolist(), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "l2": self.l2, "converged": self.converged}


def fit_propensity(features: FloatArray, labels: NDArray[np.bool_], *, l2: float = 1.0) -> PropensityModel:
    """Maximum penalised likelihood: mean log-loss + ``l2`` / (2 n) |w|^2 (intercept not penalised)."""
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] == 0:
        raise InvalidInput("features", "need a non-empty rows x features matrix and one label per row")
    if labels.all() or not labels.any():
        raise InvalidInput("labels", "need both buyers and non-buyers to fit")
    if not l2 >= 0:
        raise InvalidInput("l2", "must be non-negative")
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design = np.c_[np.ones(features.shape[0]), (features - mean) / scale]
    target = labels.astype(np.float64)
    rows = features.shape[0]
    penalty = np.r_[0.0, np.full(features.shape[1], l2 / rows)]

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        z = design @ theta
        loss = -float(np.mean(target * log_expit(z) + (1 - target) * log_expit(-z))) + 0.5 * float(
            penalty @ theta**2)
        gradient = design.T @ (expit(z) - target) / rows + penalty * theta
        return loss, gradient

    result = minimize(objective, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B")
    theta = np.asarray(result.x, dtype=np.float64)
    return PropensityModel(float(theta[0]), theta[1:], mean, scale, l2, bool(result.success))


def auc(scores: FloatArray, labels: NDArray[np.bool_]) -> float:
    """Area under the ROC curve by the rank-sum formula (ties count one half)."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise InvalidInput("labels", "need both classes for an AUC")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def brier_score(probabilities: FloatArray, labels: NDArray[np.bool_]) -> float:
    return float(np.mean((probabilities - labels) ** 2))


def calibration_table(probabilities: FloatArray, labels: NDArray[np.bool_], bins: int = 10) -> list[dict[str, float]]:
    """Rows sorted by prediction, cut into ``bins`` equal groups: mean prediction against the observed rate."""
    order = np.argsort(probabilities, kind="stable")
    return [
        {"rows": float(group.size), "predicted": float(probabilities[group].mean()),
         "observed": float(labels[group].mean())}
        for group in np.array_split(order, bins) if group.size
    ]
