"""Propensity to buy in a category within the next 30 days, and the calibrated logistic regression
every propensity uses (scikit-learn; pure).

One row per (member, category) for every member with an order up to ``as_of`` and every
category. The features (:data:`FEATURES`) are read from the orders up to ``as_of`` only; the
label is a purchase in the category within ``(as_of, as_of + horizon]``.

:func:`fit_propensity` fits scikit-learn's ``LogisticRegression`` (L2, lbfgs) on
``StandardScaler`` features on one cut-off and, given a later cut-off's rows, calibrates the frozen
pipeline on them with ``CalibratedClassifierCV`` (Platt's sigmoid or isotonic): a time-based
split, nothing after a window's cut-off informs its features. The fitted coefficients,
standardisation and calibration map are kept as NumPy arrays (:class:`PropensityModel`), so
scoring a million rows is one matrix product and one vectorised map, and the artefact is plain
JSON. :func:`auc`, :func:`brier_score` and :func:`calibration_table` measure a later window.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

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
MAX_ITER = 1_000


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


CALIBRATION_METHODS = ("sigmoid", "isotonic")
MODEL_NAME = "propensity_logistic_regression"


@dataclass(frozen=True, slots=True)
class Calibration:
    """A monotone map from the model's logit z to a probability, fitted on a later window than the model.

    ``sigmoid`` (Platt): P = expit(slope * z + offset). ``isotonic``: P = the step function through
    (``knots_z``, ``knots_p``), linearly interpolated and clipped at its ends, as scikit-learn's
    ``IsotonicRegression`` predicts. ``rows`` and ``base_rate`` describe the calibration window.
    """

    method: str
    slope: float
    offset: float
    knots_z: FloatArray
    knots_p: FloatArray
    rows: int
    base_rate: float

    def apply(self, logit: FloatArray) -> FloatArray:
        if self.method == "sigmoid":
            return np.asarray(expit(self.slope * logit + self.offset), dtype=np.float64)
        return np.asarray(np.interp(logit, self.knots_z, self.knots_p), dtype=np.float64)

    @property
    def direction(self) -> float:
        """+1 when a larger logit means a larger probability (isotonic is fitted increasing), else -1."""
        return -1.0 if self.method == "sigmoid" and self.slope < 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "slope": self.slope, "offset": self.offset,
                "knots_z": self.knots_z.tolist(), "knots_p": self.knots_p.tolist(), "rows": self.rows,
                "base_rate": self.base_rate}


@dataclass(frozen=True, slots=True)
class PropensityModel:
    """Logistic regression on standardised features, z = intercept + w . (x - mean) / scale, and its
    calibration: P = calibration(z), or expit(z) when it has none."""

    intercept: float
    weights: FloatArray
    mean: FloatArray
    scale: FloatArray
    l2: float
    converged: bool
    calibration: Calibration | None = None

    def logit(self, features: FloatArray) -> FloatArray:
        return np.asarray(self.intercept + ((features - self.mean) / self.scale) @ self.weights, dtype=np.float64)

    def predict(self, features: FloatArray) -> FloatArray:
        logit = self.logit(features)
        if self.calibration is None:
            return np.asarray(expit(logit), dtype=np.float64)
        return self.calibration.apply(logit)

    def terms(self, features: FloatArray) -> FloatArray:
        """Each input's pull on the probability: w_j (x_j - mean_j) / scale_j, sign-corrected for a
        calibration that reverses the logit (so the largest term always raised the probability most)."""
        direction = 1.0 if self.calibration is None else self.calibration.direction
        return np.asarray((features - self.mean) / self.scale * (self.weights * direction), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        import sklearn  # scikit-learn is imported where it is used: it takes a second, and servers only score

        return {"model": MODEL_NAME, "fitted_with": f"scikit-learn {sklearn.__version__} LogisticRegression "
                                                    "(lbfgs, L2) on StandardScaler features",
                "features": list(FEATURES), "intercept": self.intercept, "weights": self.weights.tolist(),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "l2": self.l2,
                "converged": self.converged,
                "calibration": None if self.calibration is None else self.calibration.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PropensityModel:
        """Rebuild a model from :meth:`to_dict` output (any ``features`` names), rejecting anything malformed."""
        if not isinstance(data, Mapping) or data.get("model") != MODEL_NAME:
            raise InvalidInput("model", f"expected a {MODEL_NAME!r} artefact")
        weights = _vector(data, "weights")
        mean, scale = _vector(data, "mean"), _vector(data, "scale")
        if not weights.size == mean.size == scale.size or weights.size == 0 or not (scale > 0).all():
            raise InvalidInput("weights", "weights, mean and scale need one positive-scale entry per feature")
        if not isinstance(data.get("converged"), bool):
            raise InvalidInput("converged", "must be true or false")
        raw = data.get("calibration")
        calibration = None
        if raw is not None:
            if not isinstance(raw, Mapping) or raw.get("method") not in CALIBRATION_METHODS:
                raise InvalidInput("calibration", f"method must be one of {CALIBRATION_METHODS}")
            knots_z, knots_p = _vector(raw, "knots_z"), _vector(raw, "knots_p")
            if knots_z.size != knots_p.size or (raw["method"] == "isotonic" and knots_z.size == 0):
                raise InvalidInput("calibration", "isotonic knots need as many probabilities as logits")
            calibration = Calibration(raw["method"], _number(raw, "slope"), _number(raw, "offset"), knots_z,
                                      knots_p, int(_number(raw, "rows")), _number(raw, "base_rate"))
        return cls(_number(data, "intercept"), weights, mean, scale, _number(data, "l2"), data["converged"],
                   calibration)


def _number(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(name, "must be a finite number")
    return float(value)


def _vector(data: Mapping[str, Any], name: str) -> FloatArray:
    value = data.get(name)
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise InvalidInput(name, "must be a list of numbers")
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise InvalidInput(name, "must be finite")
    return array


def _check_rows(features: FloatArray, labels: NDArray[np.bool_], what: str) -> None:
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] == 0:
        raise InvalidInput(f"{what}features", "need a non-empty rows x features matrix and one label per row")
    if labels.all() or not labels.any():
        raise InvalidInput(f"{what}labels", "need both buyers and non-buyers to fit")


def fit_propensity(features: FloatArray, labels: NDArray[np.bool_], *, l2: float = 1.0,
                   calibration_features: FloatArray | None = None,
                   calibration_labels: NDArray[np.bool_] | None = None,
                   method: str = "sigmoid") -> PropensityModel:
    """Fit scikit-learn's L2 ``LogisticRegression`` on ``StandardScaler`` features: sum log-loss +
    ``l2`` / 2 |w|^2 (C = 1 / l2; the intercept is not penalised; ``l2`` 0 is no penalty).

    With ``calibration_features`` and ``calibration_labels`` (a later window than the fit's), the
    fitted pipeline is frozen and calibrated on them by ``CalibratedClassifierCV`` (``method``
    ``sigmoid`` or ``isotonic``), and the map it learnt is kept in the model, so that scoring is
    NumPy only.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    _check_rows(features, labels, "")
    if not l2 >= 0:
        raise InvalidInput("l2", "must be non-negative")
    calibrate = calibration_features is not None or calibration_labels is not None
    if calibrate:
        if calibration_features is None or calibration_labels is None:
            raise InvalidInput("calibration_features", "calibration needs both features and labels")
        _check_rows(calibration_features, calibration_labels, "calibration_")
        if calibration_features.shape[1] != features.shape[1]:
            raise InvalidInput("calibration_features", "must have the fit's features")
        if method not in CALIBRATION_METHODS:
            raise InvalidInput("method", f"must be one of {CALIBRATION_METHODS}")
    regression = LogisticRegression(C=np.inf if l2 == 0 else 1.0 / l2, solver="lbfgs", max_iter=MAX_ITER)
    pipeline = Pipeline([("scale", StandardScaler()), ("logit", regression)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.fit(features, labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    scaler: StandardScaler = pipeline.named_steps["scale"]
    model = PropensityModel(
        intercept=float(regression.intercept_[0]), weights=np.asarray(regression.coef_[0], dtype=np.float64),
        mean=np.asarray(scaler.mean_, dtype=np.float64),
        scale=np.asarray(scaler.scale_, dtype=np.float64), l2=float(l2), converged=converged,
    )
    if not calibrate:
        return model
    assert calibration_features is not None and calibration_labels is not None
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method=method)
    calibrated.fit(calibration_features, calibration_labels)
    fitted_map = calibrated.calibrated_classifiers_[0].calibrators[0]
    rows, rate = int(calibration_labels.size), float(calibration_labels.mean())
    if method == "sigmoid":  # scikit-learn's Platt map: P = 1 / (1 + exp(a z + b))
        calibration = Calibration("sigmoid", -float(fitted_map.a_), -float(fitted_map.b_), np.zeros(0),
                                  np.zeros(0), rows, rate)
    else:
        calibration = Calibration("isotonic", 1.0, 0.0, np.asarray(fitted_map.X_thresholds_, dtype=np.float64),
                                  np.asarray(fitted_map.y_thresholds_, dtype=np.float64), rows, rate)
    return replace(model, calibration=calibration)


def auc(scores: FloatArray, labels: NDArray[np.bool_]) -> float:
    """Area under the ROC curve (scikit-learn's ``roc_auc_score``; ties count one half)."""
    from sklearn.metrics import roc_auc_score

    if labels.all() or not labels.any():
        raise InvalidInput("labels", "need both classes for an AUC")
    return float(roc_auc_score(labels, scores))


def brier_score(probabilities: FloatArray, labels: NDArray[np.bool_]) -> float:
    """Mean squared difference between the probability and the outcome (0 is perfect)."""
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(labels, probabilities, pos_label=True))


def calibration_table(probabilities: FloatArray, labels: NDArray[np.bool_], bins: int = 10) -> list[dict[str, float]]:
    """Rows sorted by prediction, cut into ``bins`` equal groups: mean prediction against the observed rate."""
    order = np.argsort(probabilities, kind="stable")
    return [
        {"rows": float(group.size), "predicted": float(probabilities[group].mean()),
         "observed": float(labels[group].mean())}
        for group in np.array_split(order, bins) if group.size
    ]
