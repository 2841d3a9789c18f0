"""Special functions for the models: a guarded Gauss hypergeometric 2F1, log rising factorials."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln
from scipy.special import hyp2f1 as scipy_hyp2f1

# SciPy answers nan or inf in the degenerate case of an integer c - a - b with z > 0.9 (common
# here: integer purchase counts meet round parameter values). 2F1 is smooth in c there, so those
# points are recomputed at c nudged by this relative step; the error is of the same order.
_C_NUDGE = 1e-9
# Rising factorials come from a cumulative table of logs up to this count (rounding grows with
# the count); larger counts use gammaln directly.
_TABLE_LIMIT = 10_000


def hyp2f1(a: ArrayLike, b: ArrayLike, c: ArrayLike, z: ArrayLike) -> NDArray[np.float64]:
    """2F1(a, b; c; z) elementwise (broadcasting), SciPy's degenerate-case failures recomputed."""
    a_, b_, c_, z_ = np.broadcast_arrays(
        *(np.asarray(value, dtype=np.float64) for value in (a, b, c, z))
    )
    value = np.asarray(scipy_hyp2f1(a_, b_, c_, z_), dtype=np.float64)
    failed = ~np.isfinite(value)
    if failed.any():
        nudged = c_[failed] + _C_NUDGE * np.maximum(np.abs(c_[failed]), 1.0)
        value[failed] = scipy_hyp2f1(a_[failed], b_[failed], nudged, z_[failed])
    return value


def log_rising_factorial(c: float, counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """log (c)_x = log Gamma(c + x) - log Gamma(c) for whole counts x >= 0.

    Purchase counts take few distinct values, so one cumulative table of log(c + k) replaces a
    gammaln per member: the likelihoods are evaluated hundreds of times per fit.
    """
    top = int(counts.max(initial=0))
    if top > _TABLE_LIMIT:
        return np.asarray(gammaln(c + counts) - gammaln(c), dtype=np.float64)
    table = np.zeros(top + 1)
    np.cumsum(np.log(c + np.arange(top)), out=table[1:])
    return table[counts.astype(np.int64)]
