"""Gamma-Gamma spend model (Fader, Hardie and Lee 2005, "RFM and CLV"): fit and expected spend.

Each transaction of a member is Gamma(p, nu) distributed and nu ~ Gamma(q, gamma) across members,
independent of the purchase process. Inputs per member are ``frequency`` (x, the number of
repeat transactions) and ``monetary_value`` (their mean amount); only members with x > 0 inform
the fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

from loyalty_cdp.core.predictions.artefact import model_from_dict, model_to_dict
from loyalty_cdp.core.predictions.mle import maximise_likelihood, member_weights
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]


def check_spend(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate (x, mean spend) pairs: whole x >= 0, and a positive mean wherever x > 0."""
    try:
        x, mean_spend = np.broadcast_arrays(
            np.asarray(frequency, dtype=np.float64), np.asarray(monetary_value, dtype=np.float64)
        )
    except ValueError as exc:
        raise InvalidInput("monetary_value", f"does not line up with frequency: {exc}") from exc
    if not np.isfinite(x).all() or (x < 0).any() or (x != np.floor(x)).any():
        raise InvalidInput("frequency", "must be whole, non-negative numbers")
    if not np.isfinite(mean_spend).all() or ((x > 0) & (mean_spend <= 0)).any():
        raise InvalidInput("monetary_value", "must be positive for members with repeat purchases")
    return x, mean_spend


def gamma_gamma_log_likelihood(
    p: float, q: float, gamma: float, frequency: ArrayLike, monetary_value: ArrayLike
) -> FloatArray:
    """Per-member log density of the mean spend of x > 0 transactions (FHL 2005, equation 3)."""
    x = np.asarray(frequency, dtype=np.float64)
    mean_spend = np.asarray(monetary_value, dtype=np.float64)
    shape = p * x
    log_density = (
        gammaln(shape + q)
        - gammaln(shape)
        - gammaln(q)
        + q * np.log(gamma)
        + (shape - 1) * np.log(mean_spend)
        + shape * np.log(x)
        - (shape + q) * np.log(gamma + mean_spend * x)
    )
    return np.asarray(log_density, dtype=np.float64)


def _likelihood(parameters: FloatArray, data: Sequence[FloatArray]) -> FloatArray:
    p, q, gamma = (float(value) for value in parameters)
    return gamma_gamma_log_likelihood(p, q, gamma, data[0], data[1])


@dataclass(frozen=True, slots=True)
class GammaGammaModel:
    """Fitted Gamma-Gamma parameters with the fit's log-likelihood and member count."""

    MODEL_NAME: ClassVar[str] = "gamma_gamma"

    p: float
    q: float
    gamma: float
    log_likelihood: float
    n: float
    converged: bool

    def __post_init__(self) -> None:
        for name in ("p", "q", "gamma"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidInput(name, "must be a positive finite number")

    def conditional_expected_spend(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """E[M | x, mean spend] = p (gamma + x m) / (p x + q - 1) (FHL 2005, equation 5).

        A weighted mean of the population mean p gamma / (q - 1) and the member's own mean;
        members with x = 0 get the population mean. Infinite where the posterior mean does not
        exist (q <= 1 and x = 0).
        """
        x, mean_spend = check_spend(frequency, monetary_value)
        denominator = self.p * x + self.q - 1
        numerator = self.p * (self.gamma + x * mean_spend)
        safe = np.where(denominator > 0, denominator, 1.0)
        return np.where(denominator > 0, numerator / safe, np.inf)

    def to_dict(self) -> dict[str, Any]:
        return model_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GammaGammaModel:
        return model_from_dict(cls, data)


def fit_gamma_gamma(
    frequency: ArrayLike, monetary_value: ArrayLike, *, weights: ArrayLike | None = None
) -> GammaGammaModel:
    """Maximum-likelihood Gamma-Gamma fit on the members with at least one repeat purchase."""
    x, mean_spend = (column.ravel() for column in check_spend(frequency, monetary_value))
    row_weights = member_weights(weights, x.size) if x.size else np.zeros(0)
    repeat = (x > 0) & (row_weights > 0)
    if not repeat.any():
        raise InvalidInput("frequency", "no member with a repeat purchase to fit spend on")
    x, mean_spend, row_weights = x[repeat], mean_spend[repeat], row_weights[repeat]
    typical_spend = float(row_weights @ mean_spend) / float(row_weights.sum())
    fit = maximise_likelihood(_likelihood, [x, mean_spend], row_weights, [1.0, 2.0, typical_spend])
    p, q, gamma = (float(value) for value in fit.parameters)
    return GammaGammaModel(p, q, gamma, fit.log_likelihood, fit.n, fit.converged)
