"""The ``Lapse Risk Detected`` call a scoring run emits, with a messageId that makes it idempotent (pure)."""

from __future__ import annotations

import hashlib
from typing import Any

from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.predictions.scoring import METHOD_VERSION

LAPSE_EVENT = "Lapse Risk Detected"
CHANNEL = "predictions"


def lapse_message_id(member_id: str, as_of_ms: int) -> str:
    """``lapse-<32 hex>`` from the member, the scoring method version and the as-of date.

    The fitted parameters are left out on purpose: a rerun for the same date after late events
    refits slightly different parameters, and must still not raise the alert twice.
    """
    day = format_time(as_of_ms)[:10]
    digest = hashlib.blake2b(f"{member_id}\x00{METHOD_VERSION}\x00{day}".encode(), digest_size=16).hexdigest()
    return f"lapse-{digest}"


def lapse_risk_call(
    *,
    member_id: str,
    user_id: str | None,
    anonymous_id: str | None,
    lapse_risk: float,
    p_alive: float,
    threshold: float,
    model_version: str,
    as_of_ms: int,
    reasons: list[str],
) -> dict[str, Any]:
    """A Segment ``track`` call, timestamped at the as-of time, ready for ``normalise``."""
    call: dict[str, Any] = {
        "type": "track",
        "event": LAPSE_EVENT,
        "messageId": lapse_message_id(member_id, as_of_ms),
        "timestamp": format_time(as_of_ms),
        "properties": {
            "lapse_risk": round(lapse_risk, 4),
            "p_alive": round(p_alive, 4),
            "threshold": threshold,
            "model_version": model_version,
            "reasons": reasons,
        },
        "context": {"channel": CHANNEL},
    }
    if user_id is not None:
        call["userId"] = user_id
    if anonymous_id is not None:
        call["anonymousId"] = anonymous_id
    return call
