"""Offer propensities (redemption, replenishment, win-back, wishlist): a time-based split on simulated members.

Run:  .venv/bin/python -m eval.offer_propensity [--members 3000] [--days 365] [--seed 8]

Each propensity is fitted as of ``2 x horizon`` days before the end of the simulation (labels: the
horizon after it) and evaluated as of ``horizon`` days before the end (labels: the last horizon
days), so nothing after a cut-off informs its features. Reports the test AUC against a one-feature
baseline (the input a rule would use), the Brier score against the base rate's, calibration in
the large and by quintile of prediction.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

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
    test_rows: int
    base_rate: float
    auc: float
    baseline: str
    auc_baseline: float
    brier: float
    brier_base_rate: float
    mean_predicted: float
    calibration: list[dict[str, float]]


def evaluate(sim: SimulatedHistory) -> list[TargetResult]:
    history = sim.history
    repeat = repeat_lines(history)
    results = []
    for target in TARGETS:
        horizon_ms = target.horizon_days * DAY_MS
        train_cut, test_cut = sim.end_ms - 2 * horizon_ms - 1, sim.end_ms - horizon_ms - 1
        train = member_features(history, train_cut, repeat)
        model = fit_propensity(train.values, labels(history, target, train, train_cut))
        test = member_features(history, test_cut, repeat)
        outcome = labels(history, target, test, test_cut)
        predicted = model.predict(test.values)
        baseline = BASELINES[target.name]
        rate = float(outcome.mean())
        results.append(TargetResult(
            target=target, train_rows=int(train.members.size), test_rows=int(outcome.size), base_rate=rate,
            auc=auc(predicted, outcome), baseline=baseline,
            auc_baseline=auc(test.values[:, FEATURE_INDEX[baseline]], outcome),
            brier=brier_score(predicted, outcome), brier_base_rate=brier_score(np.full(outcome.size, rate), outcome),
            mean_predicted=float(predicted.mean()), calibration=calibration_table(predicted, outcome, bins=5),
        ))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    for result in evaluate(simulated_history(args.members, args.days, args.seed)):
        name, horizon = result.target.name, result.target.horizon_days
        print(f"{name} ({horizon} days): test members {result.test_rows:,}, base rate {result.base_rate:.1%}")
        print(f"  AUC {result.auc:.3f} against {result.auc_baseline:.3f} for {result.baseline} alone")
        print(f"  Brier {result.brier:.4f} against {result.brier_base_rate:.4f} for the base rate; mean prediction "
              f"{result.mean_predicted:.3f} against {result.base_rate:.3f}")
        print("  by quintile of prediction (mean predicted -> observed): " + ", ".join(
            f"{row['predicted']:.3f} -> {row['observed']:.3f}" for row in result.calibration))


if __name__ == "__main__":
    main()
