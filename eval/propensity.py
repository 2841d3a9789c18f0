"""Propensity to buy in a category in the next 30 days: a time-based split on simulated members.

Run:  .venv/bin/python -m eval.propensity [--members 2000] [--days 365] [--seed 6] [--candidates]

Three windows of 30 days at the end of the simulation, each a cut-off with the purchases of the
30 days after it as labels, so nothing after a cut-off informs its features: the model is fitted
as of 90 days before the end, calibrated (``CalibratedClassifierCV``, sigmoid) as of 60 days
before it, and evaluated as of 30 days before it. Reports the test AUC, Brier score, calibration
in the large and the calibration table by decile of prediction, against the baselines: the
purchase days in the category over the last 90 days (a ranking rule), the category's share of
members buying in it over the last 30 days (a probability, so it has a Brier score too), and the
uncalibrated logistic regression fitted on the latest complete window (the model before
calibration was added). ``--candidates`` also fits the alternatives the choice was made against
(isotonic calibration; scikit-learn's ``HistGradientBoostingClassifier``, calibrated the same way).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator

from eval.simdata import SimulatedHistory, simulated_history
from loyalty_cdp.core.predictions.propensity import (
    PropensityModel,
    auc,
    brier_score,
    calibration_table,
    category_labels,
    category_rows,
    fit_propensity,
)
from loyalty_cdp.core.profile import DAY_MS

HORIZON_DAYS = 30
Rows = tuple[NDArray[np.float64], NDArray[np.bool_]]


@dataclass(frozen=True)
class Scored:
    """One way of predicting the test window: its AUC, and its Brier score when it is a probability."""

    name: str
    auc: float
    brier: float | None
    fit_seconds: float | None = None


@dataclass(frozen=True)
class PropensityResult:
    model: PropensityModel
    rows: int
    base_rate: float
    auc: float
    auc_recent_purchases: float
    auc_category_rate: float
    brier: float
    brier_category_rate: float
    auc_uncalibrated: float
    brier_uncalibrated: float
    mean_predicted: float
    calibration: list[dict[str, float]]
    candidates: list[Scored]


def candidates(fit: Rows, calibrate: Rows, test: Rows) -> list[Scored]:
    """The alternatives the shipped model (logistic regression + sigmoid) was chosen against."""
    (fit_x, fit_y), (cal_x, cal_y), (test_x, test_y) = fit, calibrate, test
    scored = []

    def timed(name: str, make: Callable[[], Callable[[NDArray[np.float64]], NDArray[np.float64]]]) -> None:
        started = time.perf_counter()
        predict = make()
        seconds = time.perf_counter() - started
        predicted = predict(test_x)
        scored.append(Scored(name, auc(predicted, test_y), brier_score(predicted, test_y), seconds))

    timed("logistic regression + isotonic", lambda: fit_propensity(
        fit_x, fit_y, calibration_features=cal_x, calibration_labels=cal_y, method="isotonic").predict)
    boosted = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                             early_stopping=False, random_state=0)

    def gradient_boosting(method: str) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
        model = CalibratedClassifierCV(FrozenEstimator(boosted.fit(fit_x, fit_y)), method=method).fit(cal_x, cal_y)
        return lambda x: np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)

    timed("gradient boosting (200 trees) + sigmoid", lambda: gradient_boosting("sigmoid"))
    timed("gradient boosting (200 trees) + isotonic", lambda: gradient_boosting("isotonic"))
    return scored


def evaluate(sim: SimulatedHistory, *, with_candidates: bool = False) -> PropensityResult:
    horizon_ms = HORIZON_DAYS * DAY_MS
    cuts = [sim.end_ms - k * horizon_ms - 1 for k in (3, 2, 1)]  # fit, calibrate, test
    windows = []
    for cut in cuts:
        rows = category_rows(sim.history, cut)
        windows.append((rows, category_labels(sim.history, rows, cut, HORIZON_DAYS)))
    (fit, fit_y), (cal, cal_y), (test, labels) = windows
    model = fit_propensity(fit.features, fit_y, calibration_features=cal.features, calibration_labels=cal_y)
    predicted = model.predict(test.features)
    uncalibrated = fit_propensity(cal.features, cal_y).predict(test.features)
    category_rate = expit(test.features[:, 8])
    return PropensityResult(
        model=model, rows=labels.size, base_rate=float(labels.mean()), auc=auc(predicted, labels),
        auc_recent_purchases=auc(test.features[:, 1], labels), auc_category_rate=auc(category_rate, labels),
        brier=brier_score(predicted, labels), brier_category_rate=brier_score(category_rate, labels),
        auc_uncalibrated=auc(uncalibrated, labels), brier_uncalibrated=brier_score(uncalibrated, labels),
        mean_predicted=float(predicted.mean()), calibration=calibration_table(predicted, labels),
        candidates=candidates((fit.features, fit_y), (cal.features, cal_y), (test.features, labels))
        if with_candidates else [],
    )


def print_reliability(calibration: list[dict[str, float]], indent: str = "  ") -> None:
    print(f"{indent}{'rows':>7} {'predicted':>9} {'observed':>9}")
    for row in calibration:
        print(f"{indent}{row['rows']:>7,.0f} {row['predicted']:>9.3f} {row['observed']:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--candidates", action="store_true", help="also fit the alternatives (slower)")
    args = parser.parse_args()
    result = evaluate(simulated_history(args.members, args.days, args.seed), with_candidates=args.candidates)
    print(f"test rows (member x category): {result.rows:,}, bought within 30 days: {result.base_rate:.1%}")
    print(f"{'score':<48} {'AUC':>6} {'Brier':>7}")
    print(f"{'logistic regression + sigmoid (shipped)':<48} {result.auc:>6.3f} {result.brier:>7.4f}")
    print(f"{'uncalibrated, fitted on the latest window':<48} {result.auc_uncalibrated:>6.3f} "
          f"{result.brier_uncalibrated:>7.4f}")
    print(f"{'purchase days in the category, last 90 days':<48} {result.auc_recent_purchases:>6.3f} {'-':>7}")
    print(f"{'category share of members buying, last 30 days':<48} {result.auc_category_rate:>6.3f} "
          f"{result.brier_category_rate:>7.4f}")
    for candidate in result.candidates:
        print(f"{candidate.name:<48} {candidate.auc:>6.3f} {candidate.brier or 0:>7.4f}   "
              f"(fit {candidate.fit_seconds:.1f} s)")
    print(f"mean prediction {result.mean_predicted:.3f} against {result.base_rate:.3f} observed")
    print("reliability by decile of prediction:")
    print_reliability(result.calibration)


if __name__ == "__main__":
    main()
