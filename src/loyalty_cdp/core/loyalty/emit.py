"""The loyalty events the engine emits, as Segment track calls with deterministic message ids.

A message id is a hash of (member, kind, cause): the same fact found again on a replay
gets the same id, so the event log's message-id dedup delivers each one exactly once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from loyalty_cdp.core.loyalty.periods import iso

POINTS_EARNED = "Points Earned"
POINTS_REDEEMED = "Points Redeemed"
POINTS_REVERSED = "Points Reversed"
POINTS_EXPIRED = "Points Expired"
POINTS_EXPIRING_SOON = "Points Expiring Soon"
TIER_UPGRADED = "Tier Upgraded"
TIER_DOWNGRADED = "Tier Downgraded"
TIER_DOWNGRADE_WARNING = "Tier Downgrade Warning"
MILESTONE_ACHIEVED = "Milestone Achieved"
EMITTED_EVENTS = frozenset(
    {
        POINTS_EARNED,
        POINTS_REDEEMED,
        POINTS_REVERSED,
        POINTS_EXPIRED,
        POINTS_EXPIRING_SOON,
        TIER_UPGRADED,
        TIER_DOWNGRADED,
        TIER_DOWNGRADE_WARNING,
        MILESTONE_ACHIEVED,
    }
)
CHANNEL = "loyalty"
_CONTEXT = {"channel": CHANNEL}


def message_id(member_id: str, kind: str, cause: str) -> str:
    """``loy-`` and 32 hex digits of blake2b over member, kind and cause."""
    digest = hashlib.blake2b(
        f"{member_id}\x1f{kind}\x1f{cause}".encode(), digest_size=16
    ).hexdigest()
    return f"loy-{digest}"


def loyalty_event(
    member_id: str, kind: str, at: int, cause: str, properties: dict[str, Any]
) -> dict[str, Any]:
    """A Segment ``track`` call for ``kind`` at event time ``at``, caused by ``cause``."""
    return {
        "type": "track",
        "userId": member_id,
        "event": kind,
        "properties": properties,
        "timestamp": iso(at),
        "messageId": message_id(member_id, kind, cause),
        "context": dict(_CONTEXT),
    }
