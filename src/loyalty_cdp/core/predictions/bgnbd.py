"""BG/NBD purchase model (Fader, Hardie and Lee 2005): fit, probability alive, expected purchases.

While alive a member buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each
repeat purchase they drop out with probability p ~ Beta(a, b). Inputs per member are ``frequency``
(repeat purchases x), ``recency`` (t_x, time of the last purchase since the first) and ``T``
(time since the first purchase), all in the model's time unit.
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

# (a - 1) divides the expectations; at a == 1 they are continuous, so evaluate just beside it.
_A_SINGULARITY_GAP = 1e-7


def bgnbd_log_likelihood(
    r: float,
    alpha: float,
    a: float,
    b: float,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
) -> FloatArray:
    """Per-member log-likelihood, FHL (2005) equation 6, combined in log space.

    With (c)_x the rising factorial, the beta functions reduce to
    B(a, b+x) / B(a, b) = (b)_x / (a+b)_x and
    B(a+1, b+x-1) / B(a, b) = a (b)_x / ((b+x-1) (a+b)_x).
    """
    x, t_x, t_obs = check_rfm(frequency, recency, T)
    return _log_likelihood(r, alpha, a, b, x, t_x, t_obs)


def _log_likelihood(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    shared = (
        log_rising_factorial(r, x)
        + r * np.log(alpha)
        + log_rising_factorial(b, x)
        - log_rising_factorial(a + b, x)
    )
    still_alive = -(r + x) * np.log(alpha + t_obs)
    dropped_after_last = np.where(
        x > 0,
        np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return np.asarray(shared + np.logaddexp(still_alive, dropped_after_last), dtype=np.float64)


def _likelihood(parameters: FloatArray, data: Sequence[FloatArray]) -> FloatArray:
    r, alpha, a, b = (float(value) for value in parameters)
    return _log_likelihood(r, alpha, a, b, data[0], data[1], data[2])


@dataclass(frozen=True, slots=True)
class BgNbdModel:
    """Fitted BG/NBD parameters with the fit's log-likelihood and member count."""

    MODEL_NAME: ClassVar[str] = "bgnbd"

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n: float
    converged: bool
    time_unit_days: float = DAYS_PER_WEEK

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b", "time_unit_days"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidInput(name, "must be a positive finite number")

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(alive at T | x, t_x, T), FHL (2005) equation 11; 1 for members with x = 0."""
        x, t_x, t_obs = check_rfm(frequency, recency, T)
        return self._probability_alive(x, t_x, t_obs)

    def _probability_alive(self, x: FloatArray, t_x: FloatArray, t_obs: FloatArray) -> FloatArray:
        repeat = np.maximum(x, 1)
        log_odds_dropped = (
            np.log(self.a)
            - np.log(self.b + repeat - 1)
            + (self.r + x) * np.log1p((t_obs - t_x) / (self.alpha + t_x))
        )
        return np.where(x > 0, expit(-log_odds_dropped), 1.0)

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[purchases in (T, T + t] | x, t_x, T], FHL (2005) equation 10."""
        x, t_x, t_obs = check_rfm(frequency, recency, T)
        horizon = check_horizon(t)
        return self._expected_after(x, t_obs, horizon) * self._probability_alive(x, t_x, t_obs)

    def expected_purchases(self, t: ArrayLike) -> FloatArray:
        """E[repeat purchases in (0, t]] for a member just acquired, FHL (2005) equation 9."""
        horizon = check_horizon(t)
        return self._expected_after(np.zeros(()), np.zeros(()), horizon)

    def _expected_after(self, x: FloatArray, t_obs: FloatArray, horizon: FloatArray) -> FloatArray:
        """Expected purchases in (T, T + t] of a member alive at T with x repeat purchases.

        FHL's factor ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z) is evaluated in
        whichever of its two forms has a series bounded up to z = 1: as written when
        a - 1 - r - x > 0, otherwise through Euler's transformation
        (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z). Either way no term overflows, for any x.
        """
        x, t_obs, horizon = np.broadcast_arrays(x, t_obs, horizon)
        a = self._a_for_expectations()
        c = a + self.b + x - 1
        log_shrink = -np.log1p(horizon / (self.alpha + t_obs))  # log(1 - z)
        z = -np.expm1(log_shrink)
        euler = x + self.r - a + 1 >= 0
        direct = ~euler
        power = np.where(euler, a - 1, self.r + x)
        series = np.empty(x.shape)
        series[euler] = hyp2f1(a + self.b - 1 - self.r, a - 1, c[euler], z[euler])
        series[direct] = hyp2f1(self.r + x[direct], self.b + x[direct], c[direct], z[direct])
        # 1 - (1-z)^power * series, arranged to keep its precision for short horizons.
        remaining = -(np.expm1(power * log_shrink) * series + (series - 1))
        return np.asarray(c / (a - 1) * remaining, dtype=np.float64)

    def _a_for_expectations(self) -> float:
        if abs(self.a - 1) < _A_SINGULARITY_GAP:
            return 1 + _A_SINGULARITY_GAP
        return self.a

    def to_dict(self) -> dict[str, Any]:
        return model_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BgNbdModel:
        return model_from_dict(cls, data)


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    time_unit_days: float = DAYS_PER_WEEK,
) -> BgNbdModel:
    """Maximum-likelihood BG/NBD fit; ``weights`` counts members sharing a row."""
    x, t_x, t_obs = (column.ravel() for column in check_rfm(frequency, recency, T))
    if x.size == 0:
        raise InvalidInput("frequency", "cannot fit a model on zero members")
    row_weights = member_weights(weights, x.size)
    purchase_rate = float(row_weights @ x) / float(row_weights @ t_obs) if t_obs.any() else 1.0
    alpha_start = 1 / purchase_rate if purchase_rate > 0 else float(t_obs.mean() or 1.0)
    fit = maximise_likelihood(
        _likelihood, [x, t_x, t_obs], row_weights, [1.0, alpha_start, 1.0, 1.0]
    )
    r, alpha, a, b = (float(value) for value in fit.parameters)
    return BgNbdModel(r, alpha, a, b, fit.log_likelihood, fit.n, fit.converged, time_unit_days)
