"""The buy-till-you-die models reproduce the published CDNOW results (Fader, Hardie and Lee 2005).

Data: the 2,357-customer CDNOW sample vendored from the lifetimes 0.11.3 wheel (see
tests/data/cdnow/ATTRIBUTION.md). Calibration: the 39 weeks ending 1997-09-30, time in weeks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loyalty_cdp.core.predictions import (
    BgNbdModel,
    GammaGammaModel,
    ParetoNbdModel,
    PurchaseSummary,
    customer_lifetime_value,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_pareto_nbd,
    summarise_purchases,
)
from loyalty_cdp.errors import InvalidInput

DATA = Path(__file__).resolve().parents[1] / "data" / "cdnow"
CALIBRATION_END = np.datetime64("1997-09-30")
HOLDOUT_END = np.datetime64("1998-06-30")
HOLDOUT_WEEKS = 39.0


@pytest.fixture(scope="module")
def published_summary() -> np.ndarray:
    """Columns ID, x, t_x, T, zbar as distributed with lifetimes (rounded to 2 decimals)."""
    return np.loadtxt(DATA / "cdnow_customers_summary_with_transactions.csv", delimiter=",",
                      skiprows=1)


@pytest.fixture(scope="module")
def transactions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(customer id, purchase day, dollar value) of every purchase in the sample."""
    raw = np.loadtxt(DATA / "CDNOW_sample.txt.gz")
    ymd = raw[:, 2].astype(np.int64)
    days = np.array([f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}" for d in ymd],
                    dtype="datetime64[D]")
    return raw[:, 1].astype(np.int64), days, raw[:, 4]


@pytest.fixture(scope="module")
def calibration(transactions: tuple[np.ndarray, np.ndarray, np.ndarray]) -> PurchaseSummary:
    return summarise_purchases(*transactions, CALIBRATION_END)


@pytest.fixture(scope="module")
def bgnbd(published_summary: np.ndarray) -> BgNbdModel:
    return fit_bgnbd(published_summary[:, 1], published_summary[:, 2], published_summary[:, 3])


@pytest.fixture(scope="module")
def pareto_nbd(published_summary: np.ndarray) -> ParetoNbdModel:
    return fit_pareto_nbd(published_summary[:, 1], published_summary[:, 2],
                          published_summary[:, 3])


@pytest.fixture(scope="module")
def gamma_gamma(calibration: PurchaseSummary) -> GammaGammaModel:
    return fit_gamma_gamma(calibration.frequency, calibration.monetary_value)


def test_summary_from_raw_purchases_matches_the_published_summary(
    calibration: PurchaseSummary, published_summary: np.ndarray
) -> None:
    assert calibration.member_ids.tolist() == published_summary[:, 0].astype(int).tolist()
    np.testing.assert_array_equal(calibration.frequency, published_summary[:, 1])
    np.testing.assert_allclose(calibration.recency, published_summary[:, 2], atol=0.005)
    np.testing.assert_allclose(calibration.T, published_summary[:, 3], atol=0.005)
    # The published zbar is the exact mean rounded half-up to cents.
    np.testing.assert_allclose(calibration.monetary_value, published_summary[:, 4], atol=0.0051)
    assert calibration.frequency.sum() == 2457  # repeat purchases in the calibration period
    assert (calibration.frequency > 0).sum() == 946  # repeat buyers: the Gamma-Gamma sample


def test_bgnbd_reproduces_fhl_2005(bgnbd: BgNbdModel) -> None:
    assert bgnbd.converged
    assert bgnbd.n == 2357
    for fitted, published in ((bgnbd.r, 0.243), (bgnbd.alpha, 4.414), (bgnbd.a, 0.793),
                              (bgnbd.b, 2.426)):
        assert fitted == pytest.approx(published, abs=0.005)
    assert bgnbd.log_likelihood == pytest.approx(-9582.4, abs=0.5)


def test_bgnbd_conditional_expectation_of_the_worked_example(bgnbd: BgNbdModel) -> None:
    # FHL (2005), section 5: x = 2, t_x = 30.43, T = 38.86 expects 1.226 purchases in 39 weeks.
    expected = bgnbd.conditional_expected_purchases(HOLDOUT_WEEKS, 2, 30.43, 38.86)
    assert float(expected) == pytest.approx(1.226, abs=0.0006)
    alive = float(bgnbd.probability_alive(2, 30.43, 38.86))
    assert 0.5 < alive < 1.0


def test_pareto_nbd_reproduces_the_published_log_likelihood(pareto_nbd: ParetoNbdModel) -> None:
    assert pareto_nbd.converged
    assert pareto_nbd.log_likelihood == pytest.approx(-9595.0, abs=0.5)
    # The two-decimal CDNOW estimates quoted with FHL (2005)'s comparison.
    for fitted, quoted in ((pareto_nbd.r, 0.55), (pareto_nbd.alpha, 10.58), (pareto_nbd.s, 0.61),
                           (pareto_nbd.beta, 11.67)):
        assert fitted == pytest.approx(quoted, abs=0.005)


def test_gamma_gamma_reproduces_fhl_rfm_and_clv_2005(gamma_gamma: GammaGammaModel) -> None:
    # Fitted on the 946 repeat buyers' exact mean repeat-purchase value (same-day purchases
    # merged, as the summary does); the cent-rounded zbar column moves gamma by about +0.004.
    assert gamma_gamma.converged
    assert gamma_gamma.n == 946
    for fitted, published in ((gamma_gamma.p, 6.25), (gamma_gamma.q, 3.74),
                              (gamma_gamma.gamma, 15.44)):
        assert fitted == pytest.approx(published, abs=0.005)


def test_gamma_gamma_expected_spend_shrinks_toward_the_population_mean(
    gamma_gamma: GammaGammaModel, calibration: PurchaseSummary
) -> None:
    population_mean = gamma_gamma.p * gamma_gamma.gamma / (gamma_gamma.q - 1)
    spend = gamma_gamma.conditional_expected_spend(calibration.frequency,
                                                   calibration.monetary_value)
    repeat = calibration.frequency > 0
    np.testing.assert_allclose(spend[~repeat], population_mean)
    own = calibration.monetary_value[repeat]
    low, high = np.minimum(own, population_mean), np.maximum(own, population_mean)
    assert ((spend[repeat] >= low - 1e-9) & (spend[repeat] <= high + 1e-9)).all()


def test_holdout_forecast_tracks_the_actual_holdout_purchases(
    transactions: tuple[np.ndarray, np.ndarray, np.ndarray],
    calibration: PurchaseSummary,
    bgnbd: BgNbdModel,
    pareto_nbd: ParetoNbdModel,
) -> None:
    everything = summarise_purchases(*transactions, HOLDOUT_END)
    actual = everything.frequency - calibration.frequency
    assert actual.sum() == 1882
    for model in (bgnbd, pareto_nbd):
        forecast = model.conditional_expected_purchases(
            HOLDOUT_WEEKS, calibration.frequency, calibration.recency, calibration.T
        )
        # Both models under-forecast this holdout a little: 1653 (BG/NBD) and 1666
        # (Pareto/NBD) purchases against 1882 actual.
        assert 0.85 * actual.sum() < forecast.sum() < actual.sum()
        assert np.corrcoef(forecast, actual)[0, 1] > 0.6
        by_frequency = [forecast[calibration.frequency == x].mean() for x in range(7)]
        assert np.all(np.diff(by_frequency) > 0)


def test_clv_of_the_cohort_is_finite_positive_and_discounting_lowers_it(
    calibration: PurchaseSummary, bgnbd: BgNbdModel, gamma_gamma: GammaGammaModel
) -> None:
    spend = gamma_gamma.conditional_expected_spend(calibration.frequency,
                                                   calibration.monetary_value)
    rfm = (calibration.frequency, calibration.recency, calibration.T)
    undiscounted = customer_lifetime_value(bgnbd, *rfm, spend, periods=12,
                                           period_length=52 / 12, discount_rate=0.0)
    discounted = customer_lifetime_value(bgnbd, *rfm, spend, periods=12,
                                         period_length=52 / 12, discount_rate=0.01)
    assert np.isfinite(discounted).all() and (discounted > 0).all()
    assert (discounted < undiscounted).all()
    purchases_in_a_year = bgnbd.conditional_expected_purchases(52.0, *rfm)
    np.testing.assert_allclose(undiscounted, purchases_in_a_year * spend, rtol=1e-9)


@pytest.mark.parametrize("model_fixture", ["bgnbd", "pareto_nbd", "gamma_gamma"])
def test_fitted_models_round_trip_as_artefacts(
    model_fixture: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(model_fixture)
    artefact = model.to_dict()
    assert artefact["model"] == model.MODEL_NAME and artefact["format"] == 1
    assert type(model).from_dict(artefact) == model
    with pytest.raises(InvalidInput):
        type(model).from_dict({**artefact, "model": "something-else"})
    first_parameter = next(key for key in artefact if key not in ("model", "format"))
    with pytest.raises(InvalidInput):
        type(model).from_dict({**artefact, first_parameter: -1.0})
    with pytest.raises(InvalidInput):
        type(model).from_dict({key: value for key, value in artefact.items()
                               if key != "log_likelihood"})
