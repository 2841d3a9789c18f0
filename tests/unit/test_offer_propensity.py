"""Offer propensities: features and labels read only their side of the cut-off, the scoring run fits on one
window, calibrates on the next and stores ``scores.propensity.<name>`` with a reason and a loadable model, and
on simulated members each beats its one-feature baseline on a later window."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval.offer_propensity import evaluate
from eval.simdata import simulated_history

from loyalty_cdp.core.predictions.history import HistoryBuilder
from loyalty_cdp.core.predictions.offer_propensity import (
    FEATURES,
    TARGETS,
    OfferPropensityConfig,
    Target,
    fit_offer_propensities,
    labels,
    member_features,
    repeat_lines,
)
from loyalty_cdp.core.predictions.propensity import PropensityModel
from loyalty_cdp.core.predictions.run import score_history
from loyalty_cdp.core.predictions.scoring import ScoringConfig
from loyalty_cdp.errors import InvalidInput

DAY_MS = 86_400_000
START = 1_767_225_600_000
COLUMN = {name: index for index, (name, _) in enumerate(FEATURES)}


def order(builder: HistoryBuilder, member: str, day: int, product: str, **extra: object) -> None:
    builder.add_order(member, START + day * DAY_MS, {"order_id": f"{member}-{day}-{product}", "total": 10.0,
                                                     "products": [{"product_id": product, "category": "C"}], **extra})


def test_features_and_labels_respect_the_cut_off() -> None:
    builder = HistoryBuilder()
    order(builder, "a", 0, "p1")
    order(builder, "a", 20, "p1", points_redeemed=100)
    builder.add_wishlist("a", START + 25 * DAY_MS, {"product_id": "p2"})
    order(builder, "a", 40, "p2")  # after the cut-off: buys the wishlisted product again... for the first time
    builder.add_redemption("a", START + 45 * DAY_MS)
    order(builder, "b", 10, "p3")
    order(builder, "b", 70, "p3")  # after the horizon
    history = builder.build()
    assert repeat_lines(history).tolist() == [False, True, False, False, True]
    cut = START + 30 * DAY_MS
    features = member_features(history, cut)
    assert [history.member_ids[m] for m in features.members] == ["a", "b"]
    a, b = features.values
    assert a[COLUMN["orders_365d"]] == pytest.approx(np.log1p(2)) and b[COLUMN["orders_365d"]] == pytest.approx(
        np.log1p(1))
    assert a[COLUMN["repeat_share"]] == 0.5 and a[COLUMN["never_redeemed"]] == 0.0 and b[COLUMN["never_redeemed"]] == 1
    assert a[COLUMN["redemptions_90d"]] == pytest.approx(np.log1p(1))  # the order on day 20; day 45 is later
    assert a[COLUMN["wishlist_open"]] == pytest.approx(np.log1p(1)) and b[COLUMN["wishlist_open"]] == 0.0
    assert member_features(history, START + 41 * DAY_MS).values[0, COLUMN["wishlist_open"]] == 0.0  # bought
    outcome = {target.name: labels(history, target, features, cut).tolist() for target in TARGETS}
    assert outcome == {"redemption": [True, False], "replenishment": [False, False], "win_back": [True, False],
                       "wishlist": [True, False]}


def test_the_configuration_is_checked() -> None:
    with pytest.raises(InvalidInput):
        OfferPropensityConfig(targets=(Target("churn", 30, "leave"),))
    with pytest.raises(InvalidInput):
        OfferPropensityConfig(targets=(Target("win_back", 0, "order"),))
    with pytest.raises(InvalidInput):
        OfferPropensityConfig(targets=(TARGETS[0], TARGETS[0]))


def test_the_run_stores_each_propensity_with_its_reason() -> None:
    sim = simulated_history(400, 200, seed=4)
    run = score_history(sim.history, sim.end_ms, ScoringConfig())
    assert set(run.propensities.models) == {"redemption", "replenishment", "win_back", "wishlist"}
    assert run.artefact()["propensity"]["models"]["redemption"]["weights"]
    assert run.models.metrics["propensity"]["win_back"]["train_auc"] > 0.7
    member = next(i for i, targeting in enumerate(run.targeting.tolist()) if targeting)
    propensity = run.scores[member]["propensity"]
    assert set(propensity) == set(run.propensities.models)
    assert all(0 <= value <= 1 for value in propensity.values())
    codes = [reason["code"] for reason in run.explanations[member]]
    assert {f"propensity_{name}" for name in propensity} <= set(codes)
    # Without redemptions in the window the model is skipped, and the offers fall back to their rules.
    builder = HistoryBuilder()
    for member_id in range(60):
        for day in (0, 10 + member_id % 7, 40 + member_id % 5):
            order(builder, f"m{member_id}", day, "p")
    quiet = score_history(builder.build(), START + 60 * DAY_MS, ScoringConfig())
    assert "redemption" in quiet.propensities.skipped and "redemption" not in quiet.scores[0]["propensity"]


def test_each_propensity_beats_its_baseline_on_a_later_window() -> None:
    for result in evaluate(simulated_history(1200, 300, seed=8)):
        assert result.auc > result.auc_baseline, result.target.name
        assert result.brier < result.brier_base_rate, result.target.name
        assert result.mean_predicted == pytest.approx(result.base_rate, abs=0.05), result.target.name


def test_the_run_fits_on_one_window_calibrates_on_the_next_and_stores_a_loadable_model() -> None:
    sim = simulated_history(400, 200, seed=4)
    run = score_history(sim.history, sim.end_ms, ScoringConfig())
    for name, figures in run.models.metrics["propensity"].items():
        assert figures["calibration"] == "sigmoid", name
        assert figures["out_of_time_auc"] > 0.7, name
        assert figures["train_rows"] > 300 and figures["calibration_rows"] >= figures["train_rows"], name
    # The stored artefact rebuilds the model that produced the stored scores.
    stored = json.loads(json.dumps(run.artefact()["propensity"]["models"]["win_back"]))
    model = PropensityModel.from_dict(stored)
    features = member_features(sim.history, sim.end_ms)
    predicted = np.round(model.predict(features.values), 4)
    row_of = {member: row for row, member in enumerate(run.member_ids.tolist())}
    for code, probability in zip(features.members.tolist()[:50], predicted.tolist()[:50], strict=True):
        assert run.scores[row_of[sim.history.member_ids[code]]]["propensity"]["win_back"] == probability


def test_a_history_shorter_than_two_horizons_is_fitted_uncalibrated() -> None:
    builder = HistoryBuilder()
    for member_id in range(80):  # half of them stop buying before the calibration window
        for day in range(0, 40 if member_id % 2 else 18, 3 + member_id % 9):
            order(builder, f"m{member_id}", day, "p")
    fitted = fit_offer_propensities(builder.build(), START + 41 * DAY_MS, OfferPropensityConfig(
        targets=(Target("win_back", 21, "place an order"),)))
    assert fitted.models["win_back"].calibration is None
    assert fitted.metrics["win_back"]["calibration"].startswith("none: 0 of 0 members")


def test_a_sample_of_members_has_the_features_they_have_in_the_whole_history() -> None:
    history = simulated_history(300, 120, seed=2).history
    cut = int(history.order_time.max()) - 20 * DAY_MS
    whole = member_features(history, cut)
    keep = np.zeros(history.member_ids.size, dtype=bool)
    keep[whole.members[::3]] = True
    sample = member_features(history.restricted_to(keep), cut)
    np.testing.assert_array_equal(sample.members, whole.members[::3])
    np.testing.assert_allclose(sample.values, whole.values[::3])
    fitted = fit_offer_propensities(history, cut + 20 * DAY_MS, OfferPropensityConfig(fit_sample=100))
    assert all(figures["calibration_rows"] <= 100 for figures in fitted.metrics.values())
