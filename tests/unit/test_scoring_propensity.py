"""Category propensity: the logistic regression recovers planted coefficients, the features read only the
past, and on simulated members it ranks and calibrates on a later window."""

from __future__ import annotations

import numpy as np
import pytest
from eval.propensity import evaluate
from eval.simdata import simulated_history
from scipy.special import expit

from loyalty_cdp.core.predictions.history import HistoryBuilder
from loyalty_cdp.core.predictions.propensity import (
    auc,
    calibration_table,
    category_labels,
    category_rows,
    fit_propensity,
)
from loyalty_cdp.errors import InvalidInput

DAY_MS = 86_400_000
START = 1_767_225_600_000


def test_the_fit_recovers_planted_coefficients() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(40_000, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    truth = np.array([1.2, -0.7, 0.0])
    labels = rng.random(40_000) < expit(-0.5 + (features - [0.0, 1.0, -1.0]) @ truth)
    model = fit_propensity(features, labels, l2=0.0)
    assert model.converged
    np.testing.assert_allclose(model.weights / model.scale, truth, atol=0.05)
    assert model.intercept == pytest.approx(-0.5, abs=0.05)
    assert model.predict(features).mean() == pytest.approx(labels.mean(), abs=1e-4)
    shrunk = fit_propensity(features, labels, l2=20_000.0)
    assert np.abs(shrunk.weights).sum() < np.abs(model.weights).sum()


def test_features_and_labels_respect_the_cut_off() -> None:
    builder = HistoryBuilder()
    for member, day, category in (("a", 0, "Coffee"), ("a", 50, "Coffee"), ("a", 70, "Tea"), ("b", 10, "Tea")):
        builder.add_order(member, START + day * DAY_MS, {"products": [{"product_id": category, "category": category}]})
    history = builder.build()
    as_of = START + 60 * DAY_MS
    rows = category_rows(history, as_of)
    names = [(history.member_ids[m], rows.categories[c]) for m, c in zip(rows.member, rows.category, strict=True)]
    assert names == [("a", "Coffee"), ("a", "Tea"), ("b", "Coffee"), ("b", "Tea")]
    assert rows.features[:, 0].tolist() == [np.log1p(1), 0.0, 0.0, 0.0]  # a's Coffee on day 50; Tea on day 70 is later
    assert rows.features[:, 4].tolist() == [0.0, 1.0, 1.0, 0.0]  # never bought
    assert category_labels(history, rows, as_of, 30).tolist() == [False, True, False, False]


def test_metrics() -> None:
    labels = np.array([False, False, True, True])
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == 0.75
    assert calibration_table(np.array([0.1, 0.2, 0.7, 0.9]), labels, bins=2) == [
        {"rows": 2.0, "predicted": pytest.approx(0.15), "observed": 0.0},
        {"rows": 2.0, "predicted": pytest.approx(0.8), "observed": 1.0}]
    with pytest.raises(InvalidInput):
        fit_propensity(np.zeros((3, 2)), np.array([True, True, True]))


def test_on_a_later_window_it_ranks_better_than_recent_purchases_and_stays_calibrated() -> None:
    result = evaluate(simulated_history(members=400, days=240, seed=6))
    assert result.auc > 0.8 and result.auc > result.auc_recent_purchases + 0.02
    assert abs(result.mean_predicted - result.base_rate) < 0.03
