"""The decision record: what was decided for a member, from which inputs, and why.

Every decision, including "nothing" and "held out", is one :class:`Decision`. Its
``decision_id`` is derived from the member and the trigger occurrence (or the request), so
deciding again for the same occurrence gives the same id: storing decisions by id is what
makes a trigger fire at most once per member and occurrence, on replay too.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

Action = Literal["send", "hold_out", "none", "show"]


def decision_id(member_id: str, kind: str, *parts: str) -> str:
    """``dec-`` and 32 hex digits of blake2b over the member, the kind and the parts."""
    text = "\x1f".join([member_id, kind, *parts])
    return "dec-" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class Candidate(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One (offer, channel) considered: blocked (with the reasons) or scored."""

    offer_id: str
    channel: str
    eligible: bool
    blocked: list[str] = msgspec.field(default_factory=list)
    propensity: float | None = None
    propensity_source: str | None = None
    propensity_detail: str | None = None
    value: float | None = None
    business_weight: float | None = None
    context_weight: float | None = None
    strategies: list[str] = msgspec.field(default_factory=list)
    score: float | None = None
    send_at: int | None = None
    notes: list[str] = msgspec.field(default_factory=list)


class Chosen(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An offer picked for a channel, with its rendered content, the grant and the reason."""

    offer_id: str
    name: str
    channel: str
    score: float
    send_at: int
    content: dict[str, str]
    reason: str
    grant: dict[str, Any] | None = None


class Decision(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One decision about one member (see ``docs/decisioning.md``, "The decision record").

    ``action``: ``send`` (``chosen[0]`` goes out at its ``send_at``), ``hold_out`` (the
    member is in the campaign's control group: ``chosen`` is what they would have got, and
    nothing is sent), ``none`` (no candidate passed), ``show`` (an on-site or in-store request:
    ``chosen`` is the ranked list). ``automated`` is false when the member opted out of
    automated decision-making and only rules were used. ``inputs`` holds every member value
    read while deciding."""

    decision_id: str
    member_id: str
    at: int
    action: Action
    reason: str
    automated: bool
    user_id: str | None = None
    trigger_id: str | None = None
    occurrence_key: str | None = None
    occurred_at: int | None = None
    request_id: str | None = None
    channel: str | None = None
    campaign: str | None = None
    arm: Literal["treatment", "holdout"] | None = None
    holdout_period: str | None = None
    chosen: list[Chosen] = msgspec.field(default_factory=list)
    candidates: list[Candidate] = msgspec.field(default_factory=list)
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
