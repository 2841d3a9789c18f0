"""Maximum-likelihood fitting shared by the models: weighted, on log-parameters, with BFGS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]
LogLikelihood = Callable[[FloatArray, Sequence[FloatArray]], FloatArray]
"""(positive parameters, data columns) -> per-row log-likelihood."""

# The objective is the mean log-likelihood per member, so this bound on the gradient with
# respect to log-parameters is independent of the number of members. Central differences keep
# the gradient accurate enough for it; the likelihoods are flat along some directions (a and b
# of BG/NBD), and a looser bound stops visibly short of the maximum there.
_GRADIENT_TOLERANCE = 1e-8


@dataclass(frozen=True, slots=True)
class MaximumLikelihood:
    parameters: FloatArray
    log_likelihood: float
    n: float
    converged: bool


def member_weights(weights: ArrayLike | None, size: int) -> FloatArray:
    """Validate per-row weights (how many members share the row); ``None`` means all ones."""
    if weights is None:
        return np.ones(size)
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (size,):
        raise InvalidInput("weights", f"must have one weight per member ({size})")
    if not np.isfinite(array).all() or (array < 0).any() or array.sum() <= 0:
        raise InvalidInput("weights", "must be finite, non-negative and not all zero")
    return array


def merge_identical_rows(
    columns: Sequence[FloatArray], weights: FloatArray
) -> tuple[list[FloatArray], FloatArray]:
    """Collapse rows equal in every column into one row carrying the summed weight."""
    table = np.column_stack(columns)
    rows, inverse = np.unique(table, axis=0, return_inverse=True)
    merged = np.bincount(inverse.ravel(), weights=weights, minlength=rows.shape[0]).astype(
        np.float64
    )
    return [rows[:, i].copy() for i in range(rows.shape[1])], merged


def maximise_likelihood(
    log_likelihood: LogLikelihood,
    columns: Sequence[FloatArray],
    weights: FloatArray,
    initial: Sequence[float],
) -> MaximumLikelihood:
    """Maximise the weighted log-likelihood over positive parameters.

    Identical rows are merged first (summaries on a day grid repeat a lot), then BFGS runs on
    the logarithms of the parameters so that every step stays in the valid region.
    """
    data, row_weights = merge_identical_rows(columns, weights)
    total = float(row_weights.sum())

    def objective(log_parameters: FloatArray) -> float:
        value = -float(row_weights @ log_likelihood(np.exp(log_parameters), data)) / total
        return value if np.isfinite(value) else np.inf

    start = np.log(np.asarray(initial, dtype=np.float64))
    # Trial steps may leave the region where the special functions are finite; the objective
    # answers inf there and the line search backs off, so those floating-point warnings are noise.
    with np.errstate(all="ignore"):
        result = minimize(
            objective,
            start,
            method="BFGS",
            jac="3-point",
            options={"gtol": _GRADIENT_TOLERANCE},
        )
    gradient = np.asarray(result.jac, dtype=np.float64)
    converged = bool(np.isfinite(result.fun)) and (
        bool(result.success) or float(np.abs(gradient).max()) < 100 * _GRADIENT_TOLERANCE
    )
    return MaximumLikelihood(
        parameters=np.exp(np.asarray(result.x, dtype=np.float64)),
        log_likelihood=-float(result.fun) * total,
        n=total,
        converged=converged,
    )
