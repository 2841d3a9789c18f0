"""Size estimates for draft segments, from a deterministic sample of members.

A preview evaluates a draft over a :class:`~loyalty_cdp.core.segments.batch.MemberTable`
of a sample of members (or of all of them) and scales the count up to the population,
with a Wilson score interval for the share. The sample is chosen by a hash of the member
id, so it is the same on every run and needs no random state.
"""

from __future__ import annotations

import hashlib

import msgspec
import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.errors import InvalidInput


class SizeEstimate(msgspec.Struct, frozen=True):
    """``matched`` of ``sampled`` members match; scaled to ``population``, with an interval."""

    matched: int
    sampled: int
    population: int
    estimate: int
    low: int
    high: int
    confidence: float
    exact: bool


def in_sample(member_id: str, fraction: float) -> bool:
    """Whether ``member_id`` belongs to the preview sample of the given fraction (stable)."""
    if not 0 < fraction <= 1:
        raise InvalidInput("fraction", "must be in (0, 1]")
    digest = hashlib.blake2b(f"preview\x1f{member_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def estimate_size(mask: NDArray[np.bool_], population: int, confidence: float = 0.95) -> SizeEstimate:
    """The population size of a segment whose membership over the sampled members is ``mask``."""
    sampled = int(mask.size)
    if sampled == 0:
        raise InvalidInput("sample", "the sample holds no member")
    if population < sampled:
        raise InvalidInput("population", "must be at least the number of sampled members")
    matched = int(np.count_nonzero(mask))
    if sampled == population:
        return SizeEstimate(matched, sampled, population, matched, matched, matched, confidence, True)
    # Imported here: scipy.stats takes over a second to import, which every server start would pay.
    from scipy.stats import binomtest

    interval = binomtest(matched, sampled).proportion_ci(confidence_level=confidence, method="wilson")
    return SizeEstimate(matched, sampled, population, round(matched / sampled * population),
                        int(np.floor(interval.low * population)), int(np.ceil(interval.high * population)),
                        confidence, False)
