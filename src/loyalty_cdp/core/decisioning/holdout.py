"""Holdout: the persistent control group of a campaign, chosen by a hash of (member, campaign, period).

A member is in the control group of ``campaign`` for a period when the first 64 bits of
``blake2b(member \\x1f campaign \\x1f period)``, read as a fraction of 2**64, fall below the
configured share. The same member, campaign and period always give the same arm (across
replays, processes and machines), arms of different campaigns are independent, and a new
period (``quarter`` by default) draws a fresh control group so nobody is held out forever.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Literal

from loyalty_cdp.errors import InvalidInput

Period = Literal["forever", "year", "quarter", "month", "week"]
Arm = Literal["treatment", "holdout"]
DAY_MS = 86_400_000


def period_label(period: Period, at: int) -> str:
    """The period holding ``at`` (epoch ms, UTC): ``2026``, ``2026-Q3``, ``2026-07``, ``2026-W27``."""
    day = datetime.date(1970, 1, 1) + datetime.timedelta(days=at // DAY_MS)
    if period == "forever":
        return "forever"
    if period == "year":
        return f"{day.year}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    raise InvalidInput("period", f"unknown period {period!r}")


def holdout_fraction(member_id: str, campaign: str, period: str) -> float:
    """The member's uniform draw in [0, 1) for this campaign and period."""
    digest = hashlib.blake2b(f"{member_id}\x1f{campaign}\x1f{period}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_arm(member_id: str, campaign: str, period: str, share: float) -> Arm:
    """``holdout`` for the members in the control group (a ``share`` of them), else ``treatment``."""
    if not 0 <= share < 1:
        raise InvalidInput("holdout.share", "must be in [0, 1)")
    return "holdout" if holdout_fraction(member_id, campaign, period) < share else "treatment"
