"""Propensity to buy in a category in the next 30 days: a time-based split on simulated members.

Run:  .venv/bin/python -m eval.propensity [--members 2000] [--days 365] [--seed 6]

The model is fitted as of 60 days before the end (labels: purchases in the category in the 30
days after) and evaluated as of 30 days before the end (labels: the last 30 days), so nothing
after a cut-off informs its features. Reports the test AUC against two baselines (the purchase
days in the category over the last 90 days, and the category's base rate alone), the Brier
score, calibration in the large and the calibration table by decile of prediction.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PropensityResult:
    model: PropensityModel
    rows: int
    base_rate: float
    auc: float
    auc_recent_purchases: float
    auc_category_rate: float
    brier: float
    mean_predicted: float
    calibration: list[dict[str, float]]


def evaluate(sim: SimulatedHistory) -> PropensityResult:
    train_cut = sim.end_ms - 2 * HORIZON_DAYS * DAY_MS - 1
    test_cut = sim.end_ms - HORIZON_DAYS * DAY_MS - 1
    train = category_rows(sim.history, train_cut)
    model = fit_propensity(train.features, category_labels(sim.history, train, train_cut, HORIZON_DAYS))
    test = category_rows(sim.history, test_cut)
    labels = category_labels(sim.history, test, test_cut, HORIZON_DAYS)
    predicted = model.predict(test.features)
    return PropensityResult(
        model=model, rows=labels.size, base_rate=float(labels.mean()), auc=auc(predicted, labels),
        auc_recent_purchases=auc(test.features[:, 1], labels), auc_category_rate=auc(test.features[:, 8], labels),
        brier=brier_score(predicted, labels), mean_predicted=float(predicted.mean()),
        calibration=calibration_table(predicted, labels),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    result = evaluate(simulated_history(args.members, args.days, args.seed))
    print(f"test rows (member x category): {result.rows:,}, bought within 30 days: {result.base_rate:.1%}")
    print(f"AUC: logistic regression {result.auc:.3f}; purchase days in the last 90 days "
          f"{result.auc_recent_purchases:.3f}; category base rate {result.auc_category_rate:.3f}")
    print(f"Brier score {result.brier:.4f}; mean prediction {result.mean_predicted:.3f} against {result.base_rate:.3f}")
    print("calibration by decile of prediction (mean predicted -> observed):")
    for row in result.calibration:
        print(f"  {row['predicted']:.3f} -> {row['observed']:.3f}")


if __name__ == "__main__":
    main()
