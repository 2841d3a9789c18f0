"""The ``loyalty`` object conditions read, from the loyalty engine's encoded member state.

The profile keeps the engine's state encoded (``LoyaltyState``); the object conditions see
is :func:`~loyalty_cdp.core.loyalty.loyalty_summary` of it at the evaluation instant, which
costs a full decode and a projection (about 25 us a member). When every loyalty path a set
of conditions reads is among :data:`BRIEF_KEYS`, :class:`LoyaltyReader` decodes only those
fields (about 5 us), with the same values the summary would give: what makes a tier
condition over a million members cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from loyalty_cdp.core.loyalty import ProgramBook, decode, loyalty_summary
from loyalty_cdp.core.segments.conditions import Condition, fields_of

BRIEF_KEYS = frozenset({"tier", "lifetime_points", "redeemed_points", "expired_points", "milestones"})


class _Brief(msgspec.Struct):
    """The fields of an encoded ``LoyaltyState`` the brief view needs (the others are skipped)."""

    clock: int = -1
    tier: str = ""
    lifetime_points: int = 0
    redeemed_points: int = 0
    expired_points: int = 0
    milestones: list[str] = []


_decode_brief = msgspec.msgpack.Decoder(_Brief).decode


def loyalty_keys(conditions: Iterable[Condition]) -> set[str] | None:
    """The top-level loyalty keys ``conditions`` read; None when one reads the whole object."""
    keys: set[str] = set()
    for condition in conditions:
        for path in fields_of(condition):
            if path.namespace != "loyalty":
                continue
            if not path.keys:
                return None
            keys.add(path.keys[0])
    return keys


class LoyaltyReader:
    """Reads the loyalty object of an encoded state at an instant: only ``keys`` when they allow
    it (None: everything), else the full summary."""

    def __init__(self, book: ProgramBook, keys: Iterable[str] | None = None) -> None:
        self.book = book
        self.brief = keys is not None and set(keys) <= BRIEF_KEYS

    def __call__(self, state: bytes | None, at: int) -> dict[str, Any]:
        """The loyalty object of the encoded ``state`` at ``at`` (empty for a member not enrolled)."""
        if state is None:
            return {}
        if not self.brief:
            return loyalty_summary(self.book, decode(state), at)
        found = _decode_brief(state)
        when = max(at, found.clock)
        return {
            "tier": found.tier or self.book.at(max(when, 0)).tiers.names[0],
            "lifetime_points": found.lifetime_points,
            "redeemed_points": found.redeemed_points,
            "expired_points": found.expired_points,
            "milestones": found.milestones,
        }
