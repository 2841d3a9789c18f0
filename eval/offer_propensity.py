"""Offer propensities (redemption, replenishment, win-back, wishlist): a time-based split on simulated members.

Run:  .venv/bin/python -m eval.offer_propensity [--members 3000] [--days 365] [--seed 8] [--candidates]

Each propensity works on the last three windows of its horizon, each a cut-off with the horizon
after it as labels, so nothing after a cut-off informs its features: the model is fitted as of
``3 x horizon`` days before the end of the simulation, calibrated (sigmoid) as of ``2 x horizon``
days before it, as the scoring job does, and evaluated as of ``horizon`` days before the end.
Reports the test AUC against a one-feature baseline (the input a rule would use) and against the
uncalibrated logistic regression fitted on the latest complete window (the model before
calibration was added), the Brier score against the base rate's (the test window's own rate, a
baseline that knows the answer in the large) and the uncalibrated model's, calibration in the
large and the reliability table by quintile of prediction. ``--candidates`` also fits the
alternatives the choice was made against (see ``eval.propensity``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from eval.propensity import Scored, candidates, print_reliability
from eval.simdata import SimulatedHistory, simulated_history
from loyalty_cdp.core.predictions.offer_propensity import (
    FEATURES,
    TARGETS,
    Target,
    labels,
    member_features,
    repeat_lines,
)
from loyalty_cdp.core.predictions.propensity import auc, brier_score, calibration_table, fit_propensity
from loyalty_cdp.core.profile import DAY_MS

# The rule-of-thumb input each propensity is compared with (higher means more likely).
BASELINES = {
    "redemption": "redemptions_365d",
    "replenishment": "orders_90d",
    "win_back": "orders_90d",
    "wishlist": "wishlist_open",
}
FEATURE_INDEX = {name: index for index, (name, _) in enumerate(FEATURES)}


@dataclass(frozen=True)
class TargetResult:
    target: Target
    train_rows: int
    calibration_rows: int
    test_rows: int
    base_rate: float
    auc: float
    baseline: str
    auc_baseline: float
    auc_uncalibrated: float
    brier: float
    brier_base_rate: float
    brier_uncalibrated: float
    mean_predicted: float
    calibration: list[dict[str, float]]
    candidates: list[Scored]


def evaluate(sim: SimulatedHistory, *, with_candidates: bool = False) -> list[TargetResult]:
    history = sim.history
    repeat = repeat_lines(history)
    results = []
    for target in TARGETS:
        horizon_ms = target.horizon_days * DAY_MS
        windows = []
        for k in (3, 2, 1):  # fit, calibrate, test
            cut = sim.end_ms - k * horizon_ms - 1
            features = member_features(history, cut, repeat)
            windows.append((features.values, labels(history, target, features, cut)))
        (fit_x, fit_y), (cal_x, cal_y), (test_x, outcome) = windows
        model = fit_propensity(fit_x, fit_y, calibration_features=cal_x, calibration_labels=cal_y)
        predicted = model.predict(test_x)
        uncalibrated = fit_propensity(cal_x, cal_y).predict(test_x)
        baseline = BASELINES[target.name]
        rate = float(outcome.mean())
        results.append(TargetResult(
            target=target, train_rows=int(fit_y.size), calibration_rows=int(cal_y.size), test_rows=int(outcome.size),
            base_rate=rate, auc=auc(predicted, outcome), baseline=baseline,
            auc_baseline=auc(test_x[:, FEATURE_INDEX[baseline]], outcome),
            auc_uncalibrated=auc(uncalibrated, outcome),
            brier=brier_score(predicted, outcome), brier_base_rate=brier_score(np.full(outcome.size, rate), outcome),
            brier_uncalibrated=brier_score(uncalibrated, outcome),
            mean_predicted=float(predicted.mean()), calibration=calibration_table(predicted, outcome, bins=5),
            candidates=candidates((fit_x, fit_y), (cal_x, cal_y), (test_x, outcome)) if with_candidates else [],
        ))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--candidates", action="store_true", help="also fit the alternatives (slower)")
    args = parser.parse_args()
    for result in evaluate(simulated_history(args.members, args.days, args.seed), with_candidates=args.candidates):
        name, horizon = result.target.name, result.target.horizon_days
        print(f"{name} ({horizon} days): fit {result.train_rows:,}, calibrate {result.calibration_rows:,}, "
              f"test {result.test_rows:,} members; test base rate {result.base_rate:.1%}")
        print(f"  {'score':<46} {'AUC':>6} {'Brier':>7}")
        print(f"  {'logistic regression + sigmoid (shipped)':<46} {result.auc:>6.3f} {result.brier:>7.4f}")
        print(f"  {'uncalibrated, fitted on the latest window':<46} {result.auc_uncalibrated:>6.3f} "
              f"{result.brier_uncalibrated:>7.4f}")
        print(f"  {result.baseline + ' alone':<46} {result.auc_baseline:>6.3f} {'-':>7}")
        print(f"  {'the test window base rate':<46} {0.5:>6.3f} {result.brier_base_rate:>7.4f}")
        for candidate in result.candidates:
            print(f"  {candidate.name:<46} {candidate.auc:>6.3f} {candidate.brier or 0:>7.4f}   "
                  f"(fit {candidate.fit_seconds:.1f} s)")
        print(f"  mean prediction {result.mean_predicted:.3f} against {result.base_rate:.3f} observed; "
              "reliability by quintile of prediction:")
        print_reliability(result.calibration, indent="    ")


if __name__ == "__main__":
    main()
