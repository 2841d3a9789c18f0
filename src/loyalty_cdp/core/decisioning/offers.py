"""The offer catalog: offers, who may get them, and the loyalty mechanics they grant.

An offer's ``mechanics`` are written in the loyalty engine's own earn-rule vocabulary
(``match`` is the program file's :class:`~loyalty_cdp.core.loyalty.program.Match`). When an
offer is sent, :func:`grant` turns them into an earn rule for that member and a validity
window of whole UTC days, carried by an ``Offer Granted`` event (:func:`grant_event`) whose
``properties.rule`` converts as is into the engine's ``EarnRule``: that is how the engine
honours "2x points on Pet Food for 7 days" for the members who were offered it.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import msgspec

from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.loyalty.program import Match
from loyalty_cdp.core.segments.conditions import Condition
from loyalty_cdp.core.segments.evaluate import holds
from loyalty_cdp.core.segments.facts import MemberFacts
from loyalty_cdp.core.segments.fields import FieldPath

OFFER_GRANTED = "Offer Granted"
DAY_MS = 86_400_000
TIER = FieldPath("loyalty", ("tier",), None, "loyalty.tier")


def consent_path(purpose: str) -> FieldPath:
    """The field path of a consent purpose (read through the facts, so it lands in the inputs)."""
    return FieldPath("consent", (purpose,), None, f"consent.{purpose}")


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the offer configuration objects: immutable, unknown keys rejected."""


class Eligibility(_Config, frozen=True, kw_only=True):
    segments: tuple[str, ...] = ()
    exclude_segments: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    starts: datetime.date | None = None
    ends: datetime.date | None = None
    consent: tuple[str, ...] = ()
    when: dict[str, Any] | None = None


class _Mechanics(_Config, tag_field="type", frozen=True, kw_only=True):
    match: Match = Match()
    trigger_item: bool = False
    valid_days: int = 7


class PointsMultiplier(_Mechanics, tag="points_multiplier", frozen=True, kw_only=True):
    multiplier: float


class BonusPoints(_Mechanics, tag="bonus_points", frozen=True, kw_only=True):
    points: int
    min_spend: float = 0


Mechanics = PointsMultiplier | BonusPoints


class OfferPropensity(_Config, frozen=True, kw_only=True):
    score: str | None = None
    base: float | None = None


class Offer(_Config, frozen=True, kw_only=True):
    id: str
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    eligibility: Eligibility = Eligibility()
    content: dict[str, dict[str, str]]
    mechanics: Mechanics | None = None
    cost: float = 0.0
    expected_value: float
    business_weight: float = 1.0
    cool_down_days: float = 0.0
    propensity: OfferPropensity = OfferPropensity()

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def value(self) -> float:
        """Net expected value of a conversion: expected value less the offer's cost."""
        return self.expected_value - self.cost


def _day(at: int) -> datetime.date:
    return datetime.date(1970, 1, 1) + datetime.timedelta(days=at // DAY_MS)


def ineligible(offer: Offer, when: Condition | None, facts: MemberFacts, channel: str, at: int) -> list[str]:
    """Why ``offer`` cannot go to the member on ``channel`` at ``at`` (empty: it can)."""
    rules = offer.eligibility
    reasons: list[str] = []
    today = _day(at)
    if rules.starts is not None and today < rules.starts:
        reasons.append(f"not before {rules.starts.isoformat()}")
    if rules.ends is not None and today > rules.ends:
        reasons.append(f"ended {rules.ends.isoformat()}")
    if channel not in offer.content or (rules.channels and channel not in rules.channels):
        reasons.append(f"not offered on {channel}")
    if rules.tiers:
        tier = facts.value(TIER)
        if tier not in rules.tiers:
            reasons.append(f"tier {tier} is not one of {', '.join(rules.tiers)}")
    if rules.segments and not set(rules.segments) & set(facts.segment_ids):
        reasons.append(f"in none of the segments {', '.join(rules.segments)}")
    excluded = sorted(set(rules.exclude_segments) & set(facts.segment_ids))
    if excluded:
        reasons.append(f"in excluded segment {excluded[0]}")
    for purpose in rules.consent:
        if facts.value(consent_path(purpose)) is not True:
            reasons.append(f"no consent for {purpose}")
    if when is not None and not holds(when, facts):
        reasons.append("its eligibility condition does not hold")
    return reasons


def _window(offer: Offer, send_at: int) -> tuple[datetime.date, datetime.date]:
    first = _day(send_at)
    days = offer.mechanics.valid_days if offer.mechanics else 1
    return first, first + datetime.timedelta(days=days - 1)


def offer_view(offer: Offer, send_at: int, item: dict[str, Any] | None) -> dict[str, Any]:
    """The ``offer`` template variable."""
    mechanics = offer.mechanics
    categories = sorted(mechanics.match.categories) if mechanics else []
    if mechanics and mechanics.trigger_item and item and item.get("category"):
        categories = sorted({*categories, item["category"]})
    return {
        "id": offer.id,
        "name": offer.title,
        "multiplier": mechanics.multiplier if isinstance(mechanics, PointsMultiplier) else None,
        "bonus_points": mechanics.points if isinstance(mechanics, BonusPoints) else None,
        "valid_until": _window(offer, send_at)[1].isoformat() if mechanics else None,
        "categories": categories,
        "brands": sorted(mechanics.match.brands) if mechanics else [],
    }


def grant(offer: Offer, decision_id: str, send_at: int, item: dict[str, Any] | None) -> dict[str, Any] | None:
    """The earn rule the loyalty engine applies for this member, or None without mechanics."""
    mechanics = offer.mechanics
    if mechanics is None:
        return None
    match = msgspec.to_builtins(mechanics.match)
    if mechanics.trigger_item and item and item.get("product_id"):
        match["product_ids"] = sorted({*match.get("product_ids", []), str(item["product_id"])})
    starts, ends = _window(offer, send_at)
    rule: dict[str, Any] = {"id": f"offer-{decision_id}"[:64], "match": match, "starts": starts.isoformat(),
                            "ends": ends.isoformat(), "stacking": "stackable"}
    if isinstance(mechanics, PointsMultiplier):
        rule.update(type="multiplier", multiplier=mechanics.multiplier)
    else:
        rule.update(type="order_bonus", points=mechanics.points, min_eligible_amount=mechanics.min_spend)
    return {"offer_id": offer.id, "decision_id": decision_id, "rule": rule}


def grant_event(member_id: str, user_id: str | None, granted: dict[str, Any], at: int) -> dict[str, Any]:
    """The ``Offer Granted`` track call for the loyalty engine (message id from the decision)."""
    digest = hashlib.blake2b(f"{granted['decision_id']}\x1f{OFFER_GRANTED}".encode(), digest_size=16).hexdigest()
    return {
        "type": "track",
        "userId": user_id or member_id,
        "event": OFFER_GRANTED,
        "properties": granted,
        "timestamp": format_time(at),
        "messageId": f"dec-{digest}",
        "context": {"channel": "decisioning"},
    }
