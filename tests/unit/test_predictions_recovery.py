"""Known truth for the buy-till-you-die models: planted parameters, closed forms, reference code.

Members are simulated from the models' own generative stories with a seeded generator; the fits
must recover the planted parameters, rank members by probability alive far better than chance
(AUC against the simulated alive status), and forecast the simulated holdout. The closed-form
likelihoods are checked against direct numerical integration of their definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import exprel, gammaln, hyp2f1, log_expit

from loyalty_cdp.core.predictions import (
    BgNbdModel,
    ParetoNbdModel,
    bgnbd_log_likelihood,
    customer_lifetime_value,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_pareto_nbd,
    gamma_gamma_log_likelihood,
    pareto_nbd_log_likelihood,
    summarise_purchases,
)
from loyalty_cdp.errors import InvalidInput

MEMBERS = 8000
OBSERVED_WEEKS = 52.0
HOLDOUT_WEEKS = 26.0


@dataclass(frozen=True)
class SimulatedMembers:
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    alive_at_T: np.ndarray
    holdout_purchases: np.ndarray


def cohort_ages(rng: np.random.Generator, size: int) -> np.ndarray:
    """Members join over the first 13 weeks, on whole days; T is their age at the cut-off."""
    join_day = rng.integers(0, 13 * 7, size)
    return OBSERVED_WEEKS - join_day / 7


def simulate_bgnbd(rng: np.random.Generator, r: float, alpha: float, a: float, b: float,
                   size: int) -> SimulatedMembers:
    """Poisson purchasing at rate lambda ~ Gamma(r, alpha) from the first purchase at time 0;
    after each repeat purchase the member drops out with probability p ~ Beta(a, b)."""
    rate = rng.gamma(r, 1 / alpha, size)
    dropout = rng.beta(a, b, size)
    age = cohort_ages(rng, size)
    end = age + HOLDOUT_WEEKS
    clock = np.zeros(size)
    frequency, recency, holdout = np.zeros(size), np.zeros(size), np.zeros(size)
    death = np.full(size, np.inf)
    active = np.flatnonzero(rate > 0)
    while active.size:
        clock[active] += rng.exponential(1 / rate[active])
        active = active[clock[active] <= end[active]]
        in_calibration = clock[active] <= age[active]
        buyers = active[in_calibration]
        frequency[buyers] += 1
        recency[buyers] = clock[buyers]
        holdout[active[~in_calibration]] += 1
        drops = rng.random(active.size) < dropout[active]
        death[active[drops]] = clock[active[drops]]
        active = active[~drops]
    return SimulatedMembers(frequency, recency, age, death > age, holdout)


def simulate_pareto_nbd(rng: np.random.Generator, r: float, alpha: float, s: float, beta: float,
                        size: int) -> SimulatedMembers:
    """Poisson purchasing at rate lambda ~ Gamma(r, alpha) for an Exp(mu ~ Gamma(s, beta)) life."""
    rate = rng.gamma(r, 1 / alpha, size)
    lifetime = rng.exponential(1 / rng.gamma(s, 1 / beta, size))
    age = cohort_ages(rng, size)
    active_in_calibration = np.minimum(lifetime, age)
    frequency = rng.poisson(rate * active_in_calibration).astype(np.float64)
    latest_share = rng.random(size) ** (1 / np.maximum(frequency, 1))  # max of x uniforms
    recency = np.where(frequency > 0, active_in_calibration * latest_share, 0.0)
    active_in_holdout = np.clip(lifetime - age, 0, HOLDOUT_WEEKS)
    holdout = rng.poisson(rate * active_in_holdout).astype(np.float64)
    return SimulatedMembers(frequency, recency, age, lifetime > age, holdout)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    ranks = stats.rankdata(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_auc_formula_on_known_cases() -> None:
    labels = np.array([False, False, True, True])
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert auc(np.array([0.1, 0.8, 0.2, 0.9]), labels) == 0.75


BGNBD_TRUTH = {"r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5}
PARETO_TRUTH = {"r": 0.6, "alpha": 10.0, "s": 0.8, "beta": 12.0}


@pytest.fixture(scope="module")
def bgnbd_members() -> SimulatedMembers:
    return simulate_bgnbd(np.random.default_rng(20050301), **BGNBD_TRUTH, size=MEMBERS)


@pytest.fixture(scope="module")
def pareto_members() -> SimulatedMembers:
    return simulate_pareto_nbd(np.random.default_rng(19870101), **PARETO_TRUTH, size=MEMBERS)


@pytest.fixture(scope="module")
def bgnbd_fit(bgnbd_members: SimulatedMembers) -> BgNbdModel:
    m = bgnbd_members
    return fit_bgnbd(m.frequency, m.recency, m.T)


@pytest.fixture(scope="module")
def pareto_fit(pareto_members: SimulatedMembers) -> ParetoNbdModel:
    m = pareto_members
    return fit_pareto_nbd(m.frequency, m.recency, m.T)


def test_bgnbd_recovers_planted_parameters(bgnbd_fit: BgNbdModel) -> None:
    assert bgnbd_fit.converged and bgnbd_fit.n == MEMBERS
    for name, truth in BGNBD_TRUTH.items():
        assert getattr(bgnbd_fit, name) == pytest.approx(truth, rel=0.15), name


def test_pareto_nbd_recovers_planted_parameters(pareto_fit: ParetoNbdModel) -> None:
    assert pareto_fit.converged and pareto_fit.n == MEMBERS
    assert pareto_fit.r == pytest.approx(PARETO_TRUTH["r"], rel=0.15)
    assert pareto_fit.alpha == pytest.approx(PARETO_TRUTH["alpha"], rel=0.15)
    # s and beta are weakly identified one by one (across seeds they wander by +-25% together);
    # the mean dropout rate s / beta they imply is pinned down.
    planted_dropout = PARETO_TRUTH["s"] / PARETO_TRUTH["beta"]
    assert pareto_fit.s / pareto_fit.beta == pytest.approx(planted_dropout, rel=0.15)
    assert pareto_fit.s == pytest.approx(PARETO_TRUTH["s"], rel=0.5)
    assert pareto_fit.beta == pytest.approx(PARETO_TRUTH["beta"], rel=0.5)


@pytest.mark.parametrize(("members_fixture", "fit_fixture"),
                         [("bgnbd_members", "bgnbd_fit"), ("pareto_members", "pareto_fit")])
def test_probability_alive_ranks_and_calibrates_against_the_truth(
    members_fixture: str, fit_fixture: str, request: pytest.FixtureRequest
) -> None:
    members: SimulatedMembers = request.getfixturevalue(members_fixture)
    model = request.getfixturevalue(fit_fixture)
    alive = model.probability_alive(members.frequency, members.recency, members.T)
    assert ((alive >= 0) & (alive <= 1)).all()
    # BG/NBD members without repeat purchases are alive by construction, so rank the rest.
    judged = members.frequency > 0
    assert auc(alive[judged], members.alive_at_T[judged]) > 0.8
    assert alive.mean() == pytest.approx(members.alive_at_T.mean(), abs=0.02)


@pytest.mark.parametrize(("members_fixture", "fit_fixture"),
                         [("bgnbd_members", "bgnbd_fit"), ("pareto_members", "pareto_fit")])
def test_conditional_expectation_forecasts_the_simulated_holdout(
    members_fixture: str, fit_fixture: str, request: pytest.FixtureRequest
) -> None:
    members: SimulatedMembers = request.getfixturevalue(members_fixture)
    model = request.getfixturevalue(fit_fixture)
    forecast = model.conditional_expected_purchases(
        HOLDOUT_WEEKS, members.frequency, members.recency, members.T
    )
    # The simulated holdout total itself varies by about +-6% from seed to seed (heterogeneous
    # rates), even when forecast with the planted parameters.
    assert forecast.sum() == pytest.approx(members.holdout_purchases.sum(), rel=0.1)
    assert np.corrcoef(forecast, members.holdout_purchases)[0, 1] > 0.5


def test_unconditional_expectation_matches_fresh_simulated_members(bgnbd_fit: BgNbdModel) -> None:
    rng = np.random.default_rng(7)
    fresh = simulate_bgnbd(rng, **BGNBD_TRUTH, size=20000)
    truth = BgNbdModel(**BGNBD_TRUTH, log_likelihood=0.0, n=0.0, converged=True)
    by_age = fresh.frequency + fresh.holdout_purchases
    expected = truth.expected_purchases(fresh.T + HOLDOUT_WEEKS)
    assert by_age.mean() == pytest.approx(expected.mean(), rel=0.05)


def test_gamma_gamma_recovers_planted_parameters_and_beats_the_raw_mean() -> None:
    rng = np.random.default_rng(2005)
    p, q, gamma = 6.0, 4.0, 15.0
    frequency = rng.integers(1, 8, 20000).astype(np.float64)
    scale_rate = rng.gamma(q, 1 / gamma, frequency.size)
    mean_spend = rng.gamma(p * frequency, 1 / (scale_rate * frequency))
    model = fit_gamma_gamma(frequency, mean_spend)
    assert model.converged
    # p and gamma trade off along a ridge; q and the population mean spend are sharp.
    assert model.p == pytest.approx(p, rel=0.15)
    assert model.gamma == pytest.approx(gamma, rel=0.15)
    assert model.q == pytest.approx(q, rel=0.05)
    assert model.p * model.gamma / (model.q - 1) == pytest.approx(p * gamma / (q - 1), rel=0.03)
    true_mean = p / scale_rate
    estimate = model.conditional_expected_spend(frequency, mean_spend)
    assert np.mean((estimate - true_mean) ** 2) < 0.8 * np.mean((mean_spend - true_mean) ** 2)


def test_fits_honour_weights_as_repeated_rows(bgnbd_members: SimulatedMembers) -> None:
    m = bgnbd_members
    rows = slice(0, 1500)
    once = fit_bgnbd(m.frequency[rows], m.recency[rows], m.T[rows])
    doubled = fit_bgnbd(np.tile(m.frequency[rows], 2), np.tile(m.recency[rows], 2),
                        np.tile(m.T[rows], 2))
    weighted = fit_bgnbd(m.frequency[rows], m.recency[rows], m.T[rows],
                         weights=np.full(1500, 2.0))
    assert weighted.n == doubled.n == 3000
    assert weighted.log_likelihood == pytest.approx(2 * once.log_likelihood, rel=1e-9)
    for name in BGNBD_TRUTH:
        assert getattr(weighted, name) == pytest.approx(getattr(doubled, name), rel=1e-6)


# Closed forms against numerical integration of their definitions.

rfm_points = st.tuples(st.integers(0, 40), st.floats(0.0, 1.0), st.floats(0.5, 80.0)).map(
    lambda p: (float(p[0]), 0.0 if p[0] == 0 else p[1] * p[2], p[2])
)
positive = st.floats(0.1, 20.0)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(point=rfm_points, r=positive, alpha=positive, s=positive, beta=positive)
def test_pareto_nbd_likelihood_equals_its_integral_definition(
    point: tuple[float, float, float], r: float, alpha: float, s: float, beta: float
) -> None:
    # L = Gamma(r+x) alpha^r beta^s / Gamma(r) * [(alpha+T)^-(r+x) (beta+T)^-s
    #     + s * integral_{t_x}^{T} (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau]
    x, t_x, t_obs = point
    dropout_integral, _ = integrate.quad(
        lambda tau: (alpha + tau) ** -(r + x) * (beta + tau) ** -(s + 1), t_x, t_obs,
        epsabs=0, epsrel=1e-12, limit=200,
    )
    alive = (alpha + t_obs) ** -(r + x) * (beta + t_obs) ** -s
    expected = (gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
                + np.log(alive + s * dropout_integral))
    computed = pareto_nbd_log_likelihood(r, alpha, s, beta, x, t_x, t_obs)
    assert float(computed) == pytest.approx(expected, rel=1e-8, abs=1e-8)


def log_integral(log_integrand: Callable[[np.ndarray], np.ndarray], low: float,
                 high: float) -> float:
    """log of the integral of exp(log_integrand) over [low, high], by adaptive quadrature around
    the peak (located on a fine grid), scaled so nothing overflows."""
    grid = np.linspace(low, high, 40001)
    values = log_integrand(grid)
    top = float(values.max())
    step = grid[1] - grid[0]
    mass = grid[values > top - 60]
    lower, upper = float(mass.min() - step), float(mass.max() + step)
    value, _ = integrate.quad(
        lambda u: float(np.exp(log_integrand(np.asarray(u)) - top)), lower, upper,
        points=[float(grid[values.argmax()])], epsabs=0, epsrel=1e-11, limit=400,
    )
    return float(np.log(value) + top)


def log_expectation_over_rate(
    shape: float, rate: float, log_function: Callable[[np.ndarray], np.ndarray]
) -> float:
    """log E[f(lambda)] for lambda ~ Gamma(shape, rate), ``log_function`` taking log lambda.

    Integrated over u = log lambda, where the integrand is smooth; normalised numerically."""
    def weight(u: np.ndarray) -> np.ndarray:
        return shape * u - rate * np.exp(u)

    # The weight falls off like lambda^shape toward 0: reach far enough for small shapes.
    low = -80.0 / min(shape, 1.0)
    return (log_integral(lambda u: weight(u) + log_function(u), low, 12.0)
            - log_integral(weight, low, 12.0))


def log_expectation_over_probability(
    a: float, b: float, log_function: Callable[[np.ndarray], np.ndarray]
) -> float:
    """log E[f(p)] for p ~ Beta(a, b), ``log_function`` taking logit p; integrated over logit p."""
    def weight(v: np.ndarray) -> np.ndarray:
        return a * log_expit(v) + b * log_expit(-v)

    return (log_integral(lambda v: weight(v) + log_function(v), -300.0, 300.0)
            - log_integral(weight, -300.0, 300.0))


@pytest.mark.parametrize(("r", "alpha", "a", "b", "x", "t_x", "t_obs"), [
    (0.243, 4.414, 0.793, 2.426, 2, 30.43, 38.86),
    (0.243, 4.414, 0.793, 2.426, 0, 0.0, 38.86),
    (2.0, 1.5, 3.0, 0.7, 7, 10.0, 12.5),
    (0.6, 20.0, 1.4, 9.0, 1, 0.5, 70.0),
])
def test_bgnbd_likelihood_equals_its_mixture_definition(
    r: float, alpha: float, a: float, b: float, x: int, t_x: float, t_obs: float
) -> None:
    # Given lambda and p: (1-p)^x lambda^x e^(-lambda T) + [x > 0] p (1-p)^(x-1) lambda^x
    # e^(-lambda t_x); lambda and p are independent, so each term is a product of two integrals.
    log_alive = (
        log_expectation_over_probability(a, b, lambda v: x * log_expit(-v))
        + log_expectation_over_rate(r, alpha, lambda u: x * u - t_obs * np.exp(u))
    )
    log_dropped = -np.inf
    if x > 0:
        log_dropped = (
            log_expectation_over_probability(a, b, lambda v: log_expit(v)
                                             + (x - 1) * log_expit(-v))
            + log_expectation_over_rate(r, alpha, lambda u: x * u - t_x * np.exp(u))
        )
    computed = bgnbd_log_likelihood(r, alpha, a, b, x, t_x, t_obs)
    assert float(computed) == pytest.approx(np.logaddexp(log_alive, log_dropped), rel=1e-8)


@pytest.mark.parametrize(("p", "q", "gamma", "x", "mean_spend"), [
    (6.25, 3.74, 15.44, 2, 22.35),
    (0.8, 1.5, 3.0, 1, 120.0),
    (12.0, 9.0, 40.0, 9, 5.5),
])
def test_gamma_gamma_likelihood_equals_its_mixture_definition(
    p: float, q: float, gamma: float, x: int, mean_spend: float
) -> None:
    # The mean of x Gamma(p, nu) amounts is Gamma(p x, nu x); nu ~ Gamma(q, gamma).
    log_density = log_expectation_over_rate(
        q, gamma, lambda u: stats.gamma.logpdf(mean_spend, p * x, scale=1 / (np.exp(u) * x))
    )
    computed = gamma_gamma_log_likelihood(p, q, gamma, x, mean_spend)
    assert float(computed) == pytest.approx(log_density, rel=1e-8)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(point=rfm_points.filter(lambda p: p[0] <= 20), r=positive, alpha=positive,
       a=st.floats(0.1, 0.95) | st.floats(1.05, 20.0), b=positive, t=st.floats(0.1, 200.0))
def test_bgnbd_expectation_in_euler_form_equals_the_published_form(
    point: tuple[float, float, float], r: float, alpha: float, a: float, b: float, t: float
) -> None:
    x, t_x, t_obs = point
    model = BgNbdModel(r, alpha, a, b, log_likelihood=0.0, n=1.0, converged=True)
    z = t / (alpha + t_obs + t)
    published = ((a + b + x - 1) / (a - 1)
                 * (1 - ((alpha + t_obs) / (alpha + t_obs + t)) ** (r + x)
                    * hyp2f1(r + x, b + x, a + b + x - 1, z))
                 * model.probability_alive(x, t_x, t_obs))
    computed = model.conditional_expected_purchases(t, x, t_x, t_obs)
    assert float(computed) == pytest.approx(float(published), rel=1e-7, abs=1e-10)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(point=rfm_points, r=positive, alpha=positive, s=positive, beta=positive,
       t=st.floats(0.1, 200.0))
def test_pareto_nbd_expectation_equals_the_posterior_integral(
    point: tuple[float, float, float], r: float, alpha: float, s: float, beta: float, t: float
) -> None:
    # Alive at T: lambda ~ Gamma(r+x, alpha+T), mu ~ Gamma(s, beta+T), and the expected
    # purchases are E[lambda] * E[(1 - exp(-mu t)) / mu] (time alive within the horizon).
    x, t_x, t_obs = point
    model = ParetoNbdModel(r, alpha, s, beta, log_likelihood=0.0, n=1.0, converged=True)
    time_alive = np.exp(log_expectation_over_rate(
        s, beta + t_obs, lambda u: np.log(t * exprel(-np.exp(u) * t))
    ))
    expected = (model.probability_alive(x, t_x, t_obs) * (r + x) / (alpha + t_obs) * time_alive)
    computed = model.conditional_expected_purchases(t, x, t_x, t_obs)
    assert float(computed) == pytest.approx(float(expected), rel=1e-7)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(discount=st.floats(0.0, 0.5), periods=st.integers(1, 24),
       length=st.floats(0.5, 10.0))
def test_clv_without_discount_is_expected_purchases_times_spend(
    discount: float, periods: int, length: float
) -> None:
    model = BgNbdModel(0.243, 4.414, 0.793, 2.426, log_likelihood=0.0, n=1.0, converged=True)
    rfm = (np.array([0.0, 2.0, 9.0]), np.array([0.0, 30.43, 20.0]), np.array([38.86] * 3))
    spend = np.array([35.0, 22.35, 60.0])
    kwargs = {"periods": periods, "period_length": length}
    flat = customer_lifetime_value(model, *rfm, spend, discount_rate=0.0, **kwargs)
    total = model.conditional_expected_purchases(periods * length, *rfm) * spend
    np.testing.assert_allclose(flat, total, rtol=1e-9)
    discounted = customer_lifetime_value(model, *rfm, spend, discount_rate=discount, **kwargs)
    assert (discounted <= flat + 1e-12).all()
    assert (discounted >= flat / (1 + discount) ** periods - 1e-12).all()


# Stability far outside CDNOW: heavy buyers, long histories, round (integer) parameters.

scales = st.floats(0.01, 1000.0)
shapes = st.floats(0.01, 50.0) | st.integers(1, 5).map(float)


def extreme_members(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frequency = np.concatenate([rng.integers(0, 5, 150), rng.integers(0, 3000, 150)]).astype(float)
    age = rng.uniform(0, 5000, frequency.size)
    recency = np.where(frequency > 0, age * rng.random(frequency.size), 0.0)
    return frequency, recency, age


@settings(max_examples=40, deadline=None, derandomize=True)
@given(r=shapes, alpha=scales, a=shapes, b=shapes, seed=st.integers(0, 2**16))
def test_bgnbd_stays_finite_and_ordered_for_extreme_members(
    r: float, alpha: float, a: float, b: float, seed: int
) -> None:
    model = BgNbdModel(r, alpha, a, b, log_likelihood=0.0, n=1.0, converged=True)
    rfm = extreme_members(seed)
    assert np.isfinite(bgnbd_log_likelihood(r, alpha, a, b, *rfm)).all()
    alive = model.probability_alive(*rfm)
    assert ((alive >= 0) & (alive <= 1)).all()
    month, year = (model.conditional_expected_purchases(t, *rfm) for t in (30.0, 365.0))
    assert np.isfinite(year).all() and (month >= -1e-9).all()
    assert (year >= month * (1 - 1e-9) - 1e-9).all()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(r=shapes, alpha=st.floats(0.1, 1000.0), s=shapes, ratio=st.floats(0.01, 100.0),
       seed=st.integers(0, 2**16))
def test_pareto_nbd_stays_finite_for_extreme_members(
    r: float, alpha: float, s: float, ratio: float, seed: int
) -> None:
    # Documented range: alpha / beta within [0.01, 100] (SciPy's 2F1 fails beyond about 1e3).
    beta = alpha * ratio
    model = ParetoNbdModel(r, alpha, s, beta, log_likelihood=0.0, n=1.0, converged=True)
    rfm = extreme_members(seed)
    assert np.isfinite(pareto_nbd_log_likelihood(r, alpha, s, beta, *rfm)).all()
    alive = model.probability_alive(*rfm)
    assert ((alive >= 0) & (alive <= 1)).all()
    expected = model.conditional_expected_purchases(90.0, *rfm)
    assert np.isfinite(expected).all() and (expected >= 0).all()


# Purchase summaries against a plain per-member reference implementation.

purchase_logs = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 60), st.integers(0, 5000)), max_size=80
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(log=purchase_logs, end_offset=st.integers(0, 60))
def test_summary_matches_a_reference_implementation(
    log: list[tuple[int, int, int]], end_offset: int
) -> None:
    start = np.datetime64("2026-01-01")
    end = start + np.timedelta64(end_offset, "D")
    ids = np.array([member for member, _, _ in log], dtype=np.int64)
    days = np.array([start + np.timedelta64(day, "D") for _, day, _ in log], dtype="datetime64[D]")
    amounts = np.array([cents / 100 for _, _, cents in log], dtype=np.float64)
    summary = summarise_purchases(ids, days, amounts, end, time_unit_days=7.0)

    per_member: dict[int, dict[int, float]] = {}
    for member, day, cents in log:
        if day <= end_offset:
            per_member.setdefault(member, {}).setdefault(day, 0.0)
            per_member[member][day] += cents / 100
    assert summary.member_ids.tolist() == sorted(per_member)
    for row, member in enumerate(sorted(per_member)):
        purchase_days = sorted(per_member[member])
        repeats = [per_member[member][day] for day in purchase_days[1:]]
        assert summary.frequency[row] == len(repeats)
        assert summary.recency[row] == pytest.approx((purchase_days[-1] - purchase_days[0]) / 7)
        assert summary.T[row] == pytest.approx((end_offset - purchase_days[0]) / 7)
        assert summary.monetary_value[row] == pytest.approx(np.mean(repeats) if repeats else 0.0)


def test_bad_inputs_are_rejected_with_the_field_named() -> None:
    model = BgNbdModel(0.243, 4.414, 0.793, 2.426, log_likelihood=0.0, n=1.0, converged=True)
    cases = [
        (lambda: model.probability_alive(2, 40.0, 38.86), "recency"),
        (lambda: model.probability_alive(1.5, 3.0, 38.86), "frequency"),
        (lambda: model.probability_alive(0, 3.0, 38.86), "recency"),
        (lambda: model.probability_alive(-1, 0.0, 38.86), "frequency"),
        (lambda: model.probability_alive([1, 2], [1.0, 2.0, 3.0], 38.86), "frequency"),
        (lambda: model.conditional_expected_purchases(-1, 2, 30.43, 38.86), "t"),
        (lambda: fit_bgnbd([], [], []), "frequency"),
        (lambda: fit_bgnbd([1, 2], [1.0, 2.0], [3.0, 4.0], weights=[1.0]), "weights"),
        (lambda: fit_gamma_gamma([0, 0], [0.0, 0.0]), "frequency"),
        (lambda: fit_gamma_gamma([2], [0.0]), "monetary_value"),
        (lambda: BgNbdModel(0.0, 1.0, 1.0, 1.0, 0.0, 1.0, True), "r"),
        (lambda: customer_lifetime_value(model, 2, 30.43, 38.86, 20.0, periods=0,
                                         period_length=4.0, discount_rate=0.01), "periods"),
        (lambda: summarise_purchases([1], ["2026-01-01", "2026-01-02"], [1.0],
                                     np.datetime64("2026-02-01")), "purchases"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as caught:
            call()
        assert caught.value.field == field


def test_bgnbd_expectations_are_continuous_through_a_equal_to_one() -> None:
    near = [BgNbdModel(0.5, 5.0, a, 2.0, log_likelihood=0.0, n=1.0, converged=True)
            for a in (1 - 1e-4, 1.0, 1 + 1e-4)]
    conditional = [m.conditional_expected_purchases(10.0, 3, 8.0, 12.0) for m in near]
    unconditional = [m.expected_purchases(10.0) for m in near]
    assert np.isfinite(conditional).all() and np.isfinite(unconditional).all()
    assert conditional[1] == pytest.approx((conditional[0] + conditional[2]) / 2, rel=1e-4)
    assert unconditional[1] == pytest.approx((unconditional[0] + unconditional[2]) / 2, rel=1e-4)
