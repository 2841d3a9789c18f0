"""Builders shared by the decisioning tests: a small configuration, members, events."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgspec

from loyalty_cdp.core.consent import ConsentState, Observation, Record, consent_to_builtins, record_consent
from loyalty_cdp.core.decisioning import DecisioningConfig, parse_decisioning
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.identity import Member
from loyalty_cdp.core.profile import DAY_MS, Profile, fold
from loyalty_cdp.core.segments import MemberFacts

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
RETAIL = Path(__file__).parents[3] / "src" / "loyalty_cdp" / "programs" / "retail.yaml"
TIERS = ("Member", "Silver", "Gold", "Platinum")

EXTENSIONS: dict[str, Any] = {
    "segments": [
        {"id": "at-risk", "when": {"field": "signals.lifecycle.stage", "eq": "at_risk"}},
        {"id": "price-sensitive", "when": {"field": "signals.price_sensitivity.discounted_order_share", "gte": 0.5}},
        {"id": "new-members", "when": {"field": "signals.lifecycle.stage", "eq": "new"}},
    ],
    "offers": {
        "contact_policy": {
            "timezone": "Europe/Paris",
            "weekly_cap": 3,
            "channels": {
                "email": {"caps": [{"count": 2, "days": 7}]},
                "sms": {"caps": [{"count": 1, "days": 7}], "quiet_hours": {"start": "21:00", "end": "09:00"}},
                "push": {"caps": [{"count": 1, "days": 1}], "quiet_hours": {"start": "22:00", "end": "08:00"}},
                "web": {"inbound": True},
                "pos": {"inbound": True, "consent": "profiling"},
            },
        },
        "strategies": [
            {"id": "win-back", "segment": "at-risk", "tags": ["win_back"], "weight": 3.0,
             "description": "At-risk members get win-back offers"},
            {"id": "value", "segment": "price-sensitive", "tags": ["value"], "weight": 2.0},
        ],
        "catalog": [
            {"id": "welcome", "name": "Gold welcome", "tags": ["recognition"],
             "eligibility": {"tiers": ["Gold", "Platinum"]},
             "content": {"email": {"subject": "Welcome to {{ tier }}, {{ first_name or 'friend' }}"},
                         "push": {"body": "You made {{ tier }}"}},
             "mechanics": {"type": "bonus_points", "points": 100, "valid_days": 14},
             "cost": 1, "expected_value": 11, "cool_down_days": 30},
            {"id": "win-back", "tags": ["win_back"], "eligibility": {"segments": ["at-risk"]},
             "content": {"email": {"subject": "We miss you"}, "sms": {"body": "We miss you"},
                         "web": {"headline": "Welcome back"}},
             "mechanics": {"type": "bonus_points", "points": 500, "min_spend": 40, "valid_days": 21},
             "cost": 5, "expected_value": 25, "cool_down_days": 30,
             "propensity": {"score": "scores.propensity.win_back"}},
            {"id": "value", "tags": ["value"],
             "content": {"email": {"subject": "2x on Pet Food"}, "web": {"headline": "2x on Pet Food"},
                         "pos": {"headline": "2x on Pet Food"}},
             "mechanics": {"type": "points_multiplier", "multiplier": 2, "match": {"categories": ["Pet Food"]}},
             "cost": 1, "expected_value": 11},
            {"id": "refill", "tags": ["replenishment"],
             "content": {"push": {"title": "Running low on {{ running_low.name }}?"},
                         "email": {"subject": "{{ running_low.name }} due {{ running_low.due_at }}"}},
             "mechanics": {"type": "points_multiplier", "multiplier": 2, "trigger_item": True, "valid_days": 5},
             "cost": 1, "expected_value": 9, "cool_down_days": 7},
            {"id": "drop", "tags": ["value"],
             "content": {"push": {"body": "{{ wishlist_item.name }} now {{ wishlist_item.new_price }}"}},
             "mechanics": {"type": "points_multiplier", "multiplier": 3, "trigger_item": True, "valid_days": 2},
             "cost": 1, "expected_value": 12},
        ],
    },
    "triggers": [
        {"id": "tier-up", "type": "event", "event": "Tier Upgraded", "properties": {"to_tier": ["Gold", "Platinum"]},
         "offers": ["welcome"], "channels": ["push", "email"], "holdout": {"share": 0.1}},
        {"id": "at-risk", "type": "condition", "condition": {"field": "signals.lifecycle.stage", "eq": "at_risk"},
         "offers": ["win-back"], "channels": ["email", "sms"]},
        {"id": "refill", "type": "replenishment_due", "lead_days": 2, "offers": ["refill"],
         "channels": ["push", "email"]},
        {"id": "drop", "type": "price_drop", "min_drop_percent": 5, "offers": ["drop"], "channels": ["push"]},
        {"id": "joined", "type": "segment", "segment": "new-members", "offers": ["value"], "channels": ["email"],
         "when": {"field": "event.entry", "eq": 1}},
    ],
}


def config(**changes: Any) -> DecisioningConfig:
    extensions = copy.deepcopy(EXTENSIONS)
    extensions.update(changes)
    return parse_decisioning(extensions, TIERS)


def day(n: float) -> int:
    return T0 + int(n * DAY_MS)


def track(message_id: str, at: int, event: str, channel: str | None = "web", user: str = "u1", /,
          **properties: Any) -> DecodedEvent:
    return DecodedEvent(message_id, "track", event, user, None, at, channel, properties=properties)


def order(message_id: str, at: int, category: str = "Pet Food", total: float = 40.0, user: str = "u1",
          **extra: Any) -> DecodedEvent:
    lines = [{"product_id": f"p-{category}", "category": category, "brand": "Acme", "price": total, "quantity": 1}]
    return track(message_id, at, "Order Completed", "pos", user, order_id=message_id, total=total, products=lines,
                 **extra)


def consents(**granted: bool) -> dict[str, Any]:
    """A profile's ``consent`` object as the privacy fold writes it, one explicit record per purpose."""
    observations = [Observation(purpose, Record(value, T0, f"consent-{purpose}", "test", "member", True, T0))
                    for purpose, value in granted.items()]
    return consent_to_builtins(record_consent(ConsentState(), observations))


def member(events: list[DecodedEvent], user: str = "u1", **parts: Any) -> Profile:
    defaults: dict[str, Any] = {"consent": consents(email_marketing=True, sms=True, push=True, profiling=True)}
    profile = fold(None, events, Member(id=user, identities={"user_id": [user]}))
    return msgspec.structs.replace(profile, **{**defaults, **parts})


def facts(profile: Profile, as_of: int, **options: Any) -> MemberFacts:
    return MemberFacts(profile, as_of, **options)
