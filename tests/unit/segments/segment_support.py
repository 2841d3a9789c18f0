"""Builders shared by the segment tests: events, profiles folded from them, facts."""

from __future__ import annotations

from typing import Any

import msgspec

from loyalty_cdp.core.consent import ConsentState, Observation, Record, consent_to_builtins, record_consent
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.identity import Member
from loyalty_cdp.core.profile import DAY_MS, Profile, fold
from loyalty_cdp.core.segments import FieldCatalog, MemberFacts, SegmentSet, parse_condition, parse_segments

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CATALOG = FieldCatalog()


def day(n: float) -> int:
    return T0 + int(n * DAY_MS)


def track(message_id: str, at: int, name: str, channel: str | None = "web", user: str = "u1",
          **properties: Any) -> DecodedEvent:
    return DecodedEvent(message_id, "track", name, user, None, at, channel, properties=properties)


def identify(message_id: str, at: int, user: str = "u1", **traits: Any) -> DecodedEvent:
    return DecodedEvent(message_id, "identify", None, user, None, at, "web", traits=traits)


def order(message_id: str, at: int, *categories: str, total: float = 20.0, channel: str = "pos",
          user: str = "u1", **extra: Any) -> DecodedEvent:
    lines = [{"product_id": f"p-{c}", "category": c, "brand": "Acme", "price": total / max(len(categories), 1),
              "quantity": 1} for c in categories]
    return track(message_id, at, "Order Completed", channel, user, order_id=message_id, total=total,
                 products=lines, **extra)


def profile_of(events: list[DecodedEvent], user: str = "u1", **parts: Any) -> Profile:
    profile = fold(None, events, Member(id=user, identities={"user_id": [user]}))
    return msgspec.structs.replace(profile, **parts)


def condition(raw: dict[str, Any], catalog: FieldCatalog = CATALOG) -> Any:
    return parse_condition(raw, "when", catalog)


def segments(raw: list[dict[str, Any]]) -> SegmentSet:
    return parse_segments(raw, "segments", CATALOG)


def consents(**granted: bool) -> dict[str, Any]:
    """A profile's ``consent`` object as the privacy fold writes it, one explicit record per purpose."""
    observations = [Observation(purpose, Record(value, T0, f"consent-{purpose}", "test", "member", True, T0))
                    for purpose, value in granted.items()]
    return consent_to_builtins(record_consent(ConsentState(), observations))


def facts(profile: Profile, as_of: int, **options: Any) -> MemberFacts:
    return MemberFacts(profile, as_of, **options)
