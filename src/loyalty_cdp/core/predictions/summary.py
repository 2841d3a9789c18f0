"""Turn purchase histories into the frequency/recency/T/monetary summaries the models read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]

DAYS_PER_WEEK = 7.0


@dataclass(frozen=True, slots=True)
class PurchaseSummary:
    """One row per member, sorted by member id, in the BTYD convention.

    ``frequency`` counts repeat purchase days (purchase days after the first one);
    ``recency`` is the time from the first to the last purchase day, ``T`` the time from the
    first purchase day to the end of observation, both in ``time_unit_days`` units;
    ``monetary_value`` is the mean amount of the repeat purchase days (0 without repeats).
    """

    member_ids: NDArray[np.generic]
    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary_value: FloatArray
    time_unit_days: float


def summarise_purchases(
    member_ids: ArrayLike,
    purchased_on: ArrayLike,
    amounts: ArrayLike,
    observation_end: np.datetime64,
    *,
    time_unit_days: float = DAYS_PER_WEEK,
) -> PurchaseSummary:
    """Summarise purchases made up to and including ``observation_end``'s day.

    Timestamps are truncated to the day and the purchases of one member on one day merge into a
    single purchase whose amount is their sum (the convention of Fader, Hardie and Lee's CDNOW
    analyses). Purchases after ``observation_end`` are ignored; members whose first purchase is
    after it do not appear. Vectorised: sorting dominates, so millions of rows take a second.
    """
    ids = np.asarray(member_ids)
    days = np.asarray(purchased_on).astype("datetime64[D]")
    values = np.asarray(amounts, dtype=np.float64)
    if ids.ndim != 1 or days.shape != ids.shape or values.shape != ids.shape:
        raise InvalidInput(
            "purchases", "member_ids, purchased_on and amounts must be 1-d of one length"
        )
    if np.isnat(days).any():
        raise InvalidInput("purchased_on", "contains a missing date (NaT)")
    if not np.isfinite(values).all():
        raise InvalidInput("amounts", "must be finite numbers")
    if not time_unit_days > 0:
        raise InvalidInput("time_unit_days", "must be positive")
    end_day = np.asarray(observation_end).astype("datetime64[D]")
    kept = days <= end_day
    ids, day_numbers, values = ids[kept], days[kept].astype(np.int64), values[kept]
    unique_ids, member_codes = np.unique(ids, return_inverse=True)
    if unique_ids.size == 0:
        empty = np.zeros(0)
        return PurchaseSummary(unique_ids, empty, empty, empty, empty, float(time_unit_days))

    order = np.lexsort((day_numbers, member_codes))
    member_codes, day_numbers, values = member_codes[order], day_numbers[order], values[order]
    new_day = np.ones(member_codes.size, dtype=bool)
    new_day[1:] = (member_codes[1:] != member_codes[:-1]) | (day_numbers[1:] != day_numbers[:-1])
    day_starts = np.flatnonzero(new_day)
    day_members, purchase_days = member_codes[day_starts], day_numbers[day_starts]
    day_amounts = np.add.reduceat(values, day_starts)

    new_member = np.ones(day_members.size, dtype=bool)
    new_member[1:] = day_members[1:] != day_members[:-1]
    member_starts = np.flatnonzero(new_member)
    purchase_day_counts = np.diff(np.append(member_starts, day_members.size))
    first_day = purchase_days[member_starts]
    last_day = purchase_days[member_starts + purchase_day_counts - 1]
    repeat_total = np.add.reduceat(day_amounts, member_starts) - day_amounts[member_starts]

    frequency = (purchase_day_counts - 1).astype(np.float64)
    monetary = np.divide(
        repeat_total, frequency, out=np.zeros_like(repeat_total), where=frequency > 0
    )
    end_number = end_day.astype(np.int64)
    return PurchaseSummary(
        member_ids=unique_ids,
        frequency=frequency,
        recency=(last_day - first_day) / time_unit_days,
        T=(end_number - first_day) / time_unit_days,
        monetary_value=monetary,
        time_unit_days=float(time_unit_days),
    )


def check_rfm(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate members' (frequency, recency, T) and return them as broadcast float arrays."""
    try:
        x, t_x, t_obs = np.broadcast_arrays(
            np.asarray(frequency, dtype=np.float64),
            np.asarray(recency, dtype=np.float64),
            np.asarray(T, dtype=np.float64),
        )
    except ValueError as exc:
        raise InvalidInput("frequency", f"frequency, recency and T do not line up: {exc}") from exc
    for name, column in (("frequency", x), ("recency", t_x), ("T", t_obs)):
        if not np.isfinite(column).all() or (column < 0).any():
            raise InvalidInput(name, "must be finite and non-negative")
    if (x != np.floor(x)).any():
        raise InvalidInput("frequency", "must be whole numbers of repeat purchases")
    if (t_x > t_obs).any():
        raise InvalidInput("recency", "must not exceed T (the time since the first purchase)")
    if ((x == 0) & (t_x != 0)).any():
        raise InvalidInput("recency", "must be 0 for members without repeat purchases")
    return x, t_x, t_obs


def check_horizon(t: ArrayLike) -> FloatArray:
    """Validate a forecast horizon (scalar or array, in the model's time unit)."""
    horizon = np.asarray(t, dtype=np.float64)
    if not np.isfinite(horizon).all() or (horizon < 0).any():
        raise InvalidInput("t", "the horizon must be finite and non-negative")
    return horizon
