"""Pareto/NBD purchase model (Schmittlein, Morrison and Colombo 1987): fit, P(alive), expectations.

While alive a member buys as a Poisson process with rate lambda ~ Gamma(r, alpha) and has an
exponential lifetime with rate mu ~ Gamma(s, beta). Inputs per member are ``frequency`` (x),
``recency`` (t_x) and ``T`` in the model's time unit, as for BG/NBD.

The likelihood follows Fader and Hardie's note "A Note on Deriving the Pareto/NBD Model and
Related Expressions" (2005): with the integral
    I = integral over tau in [t_x, T] of (alpha + tau)^-(r+x) (beta + tau)^-(s+1),
    L = Gamma(r+x) alpha^r beta^s / Gamma(r) * [(alpha+T)^-(r+x) (beta+T)^-s + s I].
I is the difference of an antiderivative written with a Gauss hypergeometric function; Euler's
transformation puts that function in a form whose series is bounded (c - a - b > 0 in the
alpha >= beta branch), and everything is combined with log-sum-exp, so members with hundreds of
purchases do not overflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from loyalty_cdp.core.predictions.artefact import model_from_dict, model_to_dict
from loyalty_cdp.core.predictions.mle import maximise_likelihood, member_weights
from loyalty_cdp.core.predictions.special import hyp2f1, log_rising_factorial
from loyalty_cdp.core.predictions.summary import DAYS_PER_WEEK, check_horizon, check_rfm
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]

# Below this distance from s == 1 the expectation uses its s -> 1 limit (a logarithm).
_S_SINGULARITY_GAP = 1e-9


def _log_antiderivative(
    r: float, alpha: float, s: float, beta: float, x: FloatArray, tau: FloatArray
) -> FloatArray:
    """log of F(tau) with dF/dtau = -(alpha + tau)^-(r+x) (beta + tau)^-(s+1).

    F(tau) = (alpha+tau)^-(r+s+x) 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+tau)) / (r+s+x)
    for alpha >= beta, and the same with (alpha, r+x) and (beta, s+1) swapped otherwise.
    """
    total = r + s + x
    if alpha >= beta:
        z = (alpha - beta) / (alpha + tau)
        log_f = (
            -(r + x) * np.log(alpha + tau)
            - s * np.log(beta + tau)
            + np.log(hyp2f1(1.0, r + x, total + 1, z))
        )
    else:
        z = (beta - alpha) / (beta + tau)
        log_f = (
            (1 - r - x) * np.log(alpha + tau)
            - (s + 1) * np.log(beta + tau)
            + np.log(hyp2f1(1.0, s + 1, total + 1, z))
        )
    return np.asarray(log_f - np.log(total), dtype=np.float64)


def _log_parts(
    r: float, alpha: float, s: float, beta: float, x: FloatArray, t_x: FloatArray, t_obs: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """log of the alive-at-T term and of s * I, both without the common factor."""
    alive = -(r + x) * np.log(alpha + t_obs) - s * np.log(beta + t_obs)
    upper = _log_antiderivative(r, alpha, s, beta, x, t_x)
    lower = _log_antiderivative(r, alpha, s, beta, x, t_obs)
    with np.errstate(divide="ignore"):  # t_x == T: the integral is empty, log 0 = -inf
        log_integral = upper + np.log1p(-np.exp(np.minimum(lower - upper, 0.0)))
    return np.asarray(alive, dtype=np.float64), np.log(s) + log_integral


def pareto_nbd_log_likelihood(
    r: float,
    alpha: float,
    s: float,
    beta: float,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
) -> FloatArray:
    """Per-member log-likelihood of the Pareto/NBD model."""
    x, t_x, t_obs = check_rfm(frequency, recency, T)
    return _log_likelihood(r, alpha, s, beta, x, t_x, t_obs)


def _log_likelihood(
    r: float, alpha: float, s: float, beta: float, x: FloatArray, t_x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    alive, dropped = _log_parts(r, alpha, s, beta, x, t_x, t_obs)
    shared = log_rising_factorial(r, x) + r * np.log(alpha) + s * np.log(beta)
    return np.asarray(shared + np.logaddexp(alive, dropped), dtype=np.float64)


def _likelihood(parameters: FloatArray, data: Sequence[FloatArray]) -> FloatArray:
    r, alpha, s, beta = (float(value) for value in parameters)
    return _log_likelihood(r, alpha, s, beta, data[0], data[1], data[2])


@dataclass(frozen=True, slots=True)
class ParetoNbdModel:
    """Fitted Pareto/NBD parameters with the fit's log-likelihood and member count."""

    MODEL_NAME: ClassVar[str] = "pareto_nbd"

    r: float
    alpha: float
    s: float
    beta: float
    log_likelihood: float
    n: float
    converged: bool
    time_unit_days: float = DAYS_PER_WEEK

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "s", "beta", "time_unit_days"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidInput(name, "must be a positive finite number")

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(alive at T | x, t_x, T): the alive-at-T share of the likelihood."""
        x, t_x, t_obs = check_rfm(frequency, recency, T)
        return self._probability_alive(x, t_x, t_obs)

    def _probability_alive(self, x: FloatArray, t_x: FloatArray, t_obs: FloatArray) -> FloatArray:
        alive, dropped = _log_parts(self.r, self.alpha, self.s, self.beta, x, t_x, t_obs)
        return np.asarray(expit(alive - dropped), dtype=np.float64)

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[purchases in (T, T + t] | x, t_x, T] (Schmittlein et al. 1987, equation 22)."""
        x, t_x, t_obs = check_rfm(frequency, recency, T)
        horizon = check_horizon(t)
        log_growth = np.log1p(horizon / (self.beta + t_obs))
        time_alive = self._expected_lifetime_factor(log_growth)
        rate = (self.r + x) / (self.alpha + t_obs) * (self.beta + t_obs)
        expected = rate * time_alive * self._probability_alive(x, t_x, t_obs)
        return np.asarray(expected, dtype=np.float64)

    def expected_purchases(self, t: ArrayLike) -> FloatArray:
        """E[repeat purchases in (0, t]] for a member just acquired."""
        horizon = check_horizon(t)
        log_growth = np.log1p(horizon / self.beta)
        factor = self._expected_lifetime_factor(log_growth)
        return np.asarray(self.r / self.alpha * self.beta * factor, dtype=np.float64)

    def _expected_lifetime_factor(self, log_growth: FloatArray) -> FloatArray:
        """(1 - g^-(s-1)) / (s - 1) with log g = ``log_growth``; log g itself when s == 1."""
        if abs(self.s - 1) < _S_SINGULARITY_GAP:
            return log_growth
        return np.asarray(-np.expm1(-(self.s - 1) * log_growth) / (self.s - 1), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return model_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParetoNbdModel:
        return model_from_dict(cls, data)


def fit_pareto_nbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    time_unit_days: float = DAYS_PER_WEEK,
) -> ParetoNbdModel:
    """Maximum-likelihood Pareto/NBD fit; ``weights`` counts members sharing a row."""
    x, t_x, t_obs = (column.ravel() for column in check_rfm(frequency, recency, T))
    if x.size == 0:
        raise InvalidInput("frequency", "cannot fit a model on zero members")
    row_weights = member_weights(weights, x.size)
    scale = float(row_weights @ t_obs) / float(row_weights.sum()) or 1.0
    purchase_rate = float(row_weights @ x) / float(row_weights @ t_obs) if t_obs.any() else 1.0
    alpha_start = 1 / purchase_rate if purchase_rate > 0 else scale
    fit = maximise_likelihood(
        _likelihood, [x, t_x, t_obs], row_weights, [1.0, alpha_start, 1.0, scale]
    )
    r, alpha, s, beta = (float(value) for value in fit.parameters)
    return ParetoNbdModel(
        r, alpha, s, beta, fit.log_likelihood, fit.n, fit.converged, time_unit_days
    )
