"""The Gauss hypergeometric function 2F1 as the models need it: SciPy's, minus its blind spots."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import hyp2f1 as scipy_hyp2f1

# SciPy answers nan or inf in the degenerate case of an integer c - a - b with z > 0.9 (common
# here: integer purchase counts meet round parameter values). 2F1 is smooth in c there, so those
# points are recomputed at c nudged by this relative step; the error is of the same order.
_C_NUDGE = 1e-9


def hyp2f1(a: ArrayLike, b: ArrayLike, c: ArrayLike, z: ArrayLike) -> NDArray[np.float64]:
    """2F1(a, b; c; z) elementwise (broadcasting), finite wherever the function is finite."""
    a_, b_, c_, z_ = np.broadcast_arrays(
        *(np.asarray(value, dtype=np.float64) for value in (a, b, c, z))
    )
    value = np.asarray(scipy_hyp2f1(a_, b_, c_, z_), dtype=np.float64)
    failed = ~np.isfinite(value)
    if failed.any():
        nudged = c_[failed] + _C_NUDGE * np.maximum(np.abs(c_[failed]), 1.0)
        value[failed] = scipy_hyp2f1(a_[failed], b_[failed], nudged, z_[failed])
    return value
