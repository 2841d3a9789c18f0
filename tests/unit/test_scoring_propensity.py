"""Category propensity and the calibrated logistic regression every propensity uses: the fit recovers planted
coefficients, its calibration on a later window is scikit-learn's and corrects drift, the artefact round-trips,
the features read only the past, and on simulated members it ranks and calibrates on a later window."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval.propensity import evaluate
from eval.simdata import simulated_history
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loyalty_cdp.core.predictions.history import HistoryBuilder
from loyalty_cdp.core.predictions.propensity import (
    PropensityModel,
    auc,
    brier_score,
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
    assert result.model.calibration is not None and result.model.calibration.method == "sigmoid"
    assert result.auc > 0.8 and result.auc > result.auc_recent_purchases + 0.02
    assert result.brier < result.brier_category_rate
    assert abs(result.mean_predicted - result.base_rate) < 0.03
    assert sum(row["rows"] for row in result.calibration) == result.rows


def drifted(rng: np.random.Generator, rows: int, intercept: float) -> tuple[np.ndarray, np.ndarray]:
    features = rng.normal(size=(rows, 2))
    return features, rng.random(rows) < expit(intercept + features @ np.array([1.5, -0.5]))


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_the_calibration_is_scikit_learns_fitted_on_the_later_window(method: str) -> None:
    rng = np.random.default_rng(5)
    (fit_x, fit_y), (cal_x, cal_y), (test_x, test_y) = (drifted(rng, 20_000, b) for b in (-1.5, -0.5, -0.5))
    model = fit_propensity(fit_x, fit_y, calibration_features=cal_x, calibration_labels=cal_y, method=method)
    assert model.calibration is not None and model.calibration.method == method
    assert model.calibration.rows == 20_000 and model.calibration.base_rate == pytest.approx(cal_y.mean())
    # The same pipeline calibrated by scikit-learn directly gives the same probabilities.
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=1.0)).fit(fit_x, fit_y)
    reference = CalibratedClassifierCV(FrozenEstimator(pipeline), method=method).fit(cal_x, cal_y)
    np.testing.assert_allclose(model.predict(test_x), reference.predict_proba(test_x)[:, 1], atol=1e-6)
    # The base rate rose between the windows: the uncalibrated fit under-predicts the later one, the
    # calibrated model does not, and its Brier score is lower.
    uncalibrated = fit_propensity(fit_x, fit_y)
    assert uncalibrated.predict(test_x).mean() < test_y.mean() - 0.1
    assert model.predict(test_x).mean() == pytest.approx(test_y.mean(), abs=0.01)
    assert brier_score(model.predict(test_x), test_y) < brier_score(uncalibrated.predict(test_x), test_y) - 0.01
    # Calibration is monotone: the ranking, hence the AUC, is the model's (isotonic may tie a few).
    assert auc(model.predict(test_x), test_y) == pytest.approx(auc(uncalibrated.predict(test_x), test_y), abs=0.005)


def test_the_artefact_round_trips_and_rejects_malformed_models() -> None:
    rng = np.random.default_rng(8)
    (fit_x, fit_y), (cal_x, cal_y) = drifted(rng, 5_000, 0.0), drifted(rng, 5_000, 0.3)
    for method in ("sigmoid", "isotonic"):
        model = fit_propensity(fit_x, fit_y, calibration_features=cal_x, calibration_labels=cal_y, method=method)
        stored = json.loads(json.dumps(model.to_dict()))
        assert stored["calibration"]["method"] == method and "scikit-learn" in stored["fitted_with"]
        np.testing.assert_array_equal(PropensityModel.from_dict(stored).predict(cal_x), model.predict(cal_x))
    plain = fit_propensity(fit_x, fit_y).to_dict()
    assert PropensityModel.from_dict(plain).calibration is None
    for broken, field in (({**plain, "model": "something"}, "model"), ({**plain, "weights": [1.0]}, "weights"),
                          ({**plain, "scale": [0.0, 1.0]}, "weights"), ({**plain, "intercept": "1"}, "intercept"),
                          ({**plain, "calibration": {"method": "platt"}}, "calibration")):
        with pytest.raises(InvalidInput) as caught:
            PropensityModel.from_dict(broken)
        assert caught.value.field == field


def test_calibration_input_is_checked() -> None:
    features, labels = drifted(np.random.default_rng(2), 500, 0.0)
    with pytest.raises(InvalidInput) as caught:
        fit_propensity(features, labels, calibration_features=features, calibration_labels=np.zeros(500, dtype=bool))
    assert caught.value.field == "calibration_labels"
    with pytest.raises(InvalidInput) as caught:
        fit_propensity(features, labels, calibration_features=features, calibration_labels=labels, method="beta")
    assert caught.value.field == "method"
    with pytest.raises(InvalidInput) as caught:
        fit_propensity(features, labels, calibration_features=features[:, :1], calibration_labels=labels)
    assert caught.value.field == "calibration_features"
