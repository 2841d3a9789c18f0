"""Triggers: what makes the system consider an offer for a member, and their occurrence keys.

Five kinds, declared in the program file's ``triggers:`` section:

* ``event``: a track event, e.g. the loyalty engine's ``Tier Upgraded``, ``Milestone
  Achieved``, ``Points Redeemed``, ``Points Expiring Soon``, ``Tier Downgrade Warning``,
  optionally filtered on its properties (``to_tier: [Gold, Platinum]``);
* ``segment``: the member entered (or exited) a segment;
* ``condition``: a condition over the member becomes true (lapse risk above a threshold,
  lifecycle stage at risk), once per value of ``once_per`` (by default the time of the last
  order: one win-back per lapse episode, however often the condition is re-evaluated);
* ``replenishment_due``: ``lead_days`` before a predicted repurchase date (the scoring job's
  ``scores.replenishment``);
* ``price_drop``: a ``Product Price Changed`` event lowers the price of a product the
  member has on their wishlist (by at least ``min_drop_percent`` from the price they saw).

Each firing is an :class:`Occurrence` with a key that depends only on what caused it: the
causing event's message id (loyalty, segment and catalog events all carry deterministic
ids), the ``once_per`` value, or the product and the last purchase the prediction starts
from. The decision id is derived from the member, the trigger and that key, so a replay,
a retry or a second evaluation finds the same decision instead of firing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from loyalty_cdp.core.decisioning.holdout import Period
from loyalty_cdp.core.events import parse_time
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.loyalty.periods import iso_date
from loyalty_cdp.core.profile import MAX_KEY_CHARS, amount
from loyalty_cdp.core.segments.conditions import Condition
from loyalty_cdp.core.segments.evaluate import holds
from loyalty_cdp.core.segments.facts import MemberFacts
from loyalty_cdp.core.segments.fields import FieldPath
from loyalty_cdp.core.segments.membership import SEGMENT_ENTERED, SEGMENT_EXITED
from loyalty_cdp.errors import InvalidInput

DAY_MS = 86_400_000
PRODUCT_PRICE_CHANGED = "Product Price Changed"


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the trigger configuration objects: immutable, unknown keys rejected."""


class Holdout(_Config, frozen=True, kw_only=True):
    share: float = 0.0
    period: Period = "quarter"
    campaign: str | None = None


class _Trigger(_Config, tag_field="type", frozen=True, kw_only=True):
    id: str
    name: str = ""
    description: str = ""
    offers: tuple[str, ...] = ()
    channels: tuple[str, ...]
    when: dict[str, Any] | None = None
    holdout: Holdout = Holdout()


class EventTrigger(_Trigger, tag="event", frozen=True, kw_only=True):
    event: str
    properties: dict[str, Any] = {}


class SegmentTrigger(_Trigger, tag="segment", frozen=True, kw_only=True):
    segment: str
    transition: Literal["entered", "exited"] = "entered"


class ConditionTrigger(_Trigger, tag="condition", frozen=True, kw_only=True):
    condition: dict[str, Any]
    once_per: str = "signals.purchase.last_order_at"


class ReplenishmentTrigger(_Trigger, tag="replenishment_due", frozen=True, kw_only=True):
    lead_days: float = 2.0
    expires_days: float = 7.0
    source: str = "scores.replenishment"


class PriceDropTrigger(_Trigger, tag="price_drop", frozen=True, kw_only=True):
    event: str = PRODUCT_PRICE_CHANGED
    min_drop_percent: float = 0.0


TriggerConfig = EventTrigger | SegmentTrigger | ConditionTrigger | ReplenishmentTrigger | PriceDropTrigger


class TriggerRule(msgspec.Struct, frozen=True):
    """A trigger with its conditions and paths parsed (built by the configuration parser)."""

    config: TriggerConfig
    when: Condition | None = None
    condition: Condition | None = None
    path: FieldPath | None = None  # once_per of a condition trigger, source of a replenishment trigger

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def campaign(self) -> str:
        return self.config.holdout.campaign or self.config.id


class Occurrence(msgspec.Struct, frozen=True, kw_only=True):
    """One firing of a trigger for a member: ``key`` identifies it among all firings of the trigger."""

    trigger_id: str
    member_id: str
    key: str
    at: int
    event: dict[str, Any] | None = None
    item: dict[str, Any] | None = None


def _property_matches(wanted: Any, actual: Any) -> bool:
    return actual in wanted if isinstance(wanted, list) else actual == wanted


def _cause(event: DecodedEvent) -> dict[str, Any]:
    return {"name": event.event, "message_id": event.message_id, "properties": event.properties}


def price_changed_product(rules: Sequence[TriggerRule], event: DecodedEvent) -> str | None:
    """The product of a price-change event some ``price_drop`` trigger listens to, else None.

    The caller then evaluates :func:`on_event` for each member with that product on their
    wishlist (a product -> members index is the caller's)."""
    names = {rule.config.event for rule in rules if isinstance(rule.config, PriceDropTrigger)}
    return _product(event) if event.type == "track" and event.event in names else None


def _product(event: DecodedEvent) -> str | None:
    product = event.properties.get("product_id") or event.properties.get("sku")
    return str(product) if isinstance(product, (str, int)) and not isinstance(product, bool) else None


def _price_drop(rule: PriceDropTrigger, event: DecodedEvent, facts: MemberFacts) -> dict[str, Any] | None:
    if event.event != rule.event:
        return None
    product = _product(event)
    new_price = amount(event.properties.get("price"))
    if product is None or new_price is None:
        return None
    listed = facts.profile.activity.wishlist.get(product[:MAX_KEY_CHARS])
    if listed is None or not listed.on_list:
        return None
    old_price = listed.price if listed.price is not None else amount(event.properties.get("previous_price"))
    if old_price is None or old_price <= 0 or new_price >= old_price:
        return None
    drop = (old_price - new_price) / old_price * 100
    if drop < rule.min_drop_percent:
        return None
    return {"product_id": product, "name": listed.name or event.properties.get("name"),
            "category": listed.category or event.properties.get("category"),
            "old_price": old_price, "new_price": new_price, "drop_percent": round(drop, 1)}


def on_event(rules: Sequence[TriggerRule], event: DecodedEvent, facts: MemberFacts) -> list[Occurrence]:
    """The occurrences ``event`` causes for the member of ``facts`` (event, segment, price-drop triggers)."""
    if event.type != "track":
        return []
    found: list[Occurrence] = []
    with_event = facts.with_event(event)
    for rule in rules:
        config = rule.config
        item = None
        if isinstance(config, EventTrigger):
            if event.event != config.event or not all(
                    _property_matches(wanted, event.properties.get(key)) for key, wanted in config.properties.items()):
                continue
        elif isinstance(config, SegmentTrigger):
            name = SEGMENT_ENTERED if config.transition == "entered" else SEGMENT_EXITED
            if event.event != name or event.properties.get("segment_id") != config.segment:
                continue
        elif isinstance(config, PriceDropTrigger):
            item = _price_drop(config, event, facts)
            if item is None:
                continue
        else:
            continue
        if rule.when is not None and not holds(rule.when, with_event):
            continue
        prefix = f"price:{item['product_id']}:" if item else ""
        found.append(Occurrence(trigger_id=config.id, member_id=facts.member_id,
                                key=f"{prefix}event:{event.message_id}", at=event.timestamp, event=_cause(event),
                                item=item))
    return found


def _instant(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return parse_time(value, "time")
        except InvalidInput:
            return None
    return None


def _item_key(item: dict[str, Any]) -> str | None:
    """What a prediction is about: its product, or its category when predictions are per category."""
    key = item.get("product_id") or item.get("category")
    return key if isinstance(key, str) and key else None


def _predictions(rule: TriggerRule, facts: MemberFacts) -> list[tuple[dict[str, Any], int, int]]:
    """(item, predicted purchase, last purchase) of each usable prediction at the rule's source.

    The predictions are the scoring job's (``docs/models.md``): ``predicted_date`` and
    ``last_purchase`` are ISO dates (a time, or epoch milliseconds, is accepted too)."""
    assert rule.path is not None
    listed = facts.value(rule.path)
    found = []
    for item in listed if isinstance(listed, list) else []:
        if not isinstance(item, dict) or _item_key(item) is None:
            continue
        upcoming, last = _instant(item.get("predicted_date")), _instant(item.get("last_purchase"))
        if upcoming is not None and last is not None and last < upcoming:
            found.append((item, upcoming, last))
    return found


def _running_low(item: dict[str, Any], upcoming: int, last: int, as_of: int) -> dict[str, Any]:
    return {"product_id": item.get("product_id"), "name": item.get("name") or item.get("category"),
            "category": item.get("category"), "due_at": iso_date(upcoming),
            "days_left": max(0, round((upcoming - as_of) / DAY_MS)), "last_purchase": iso_date(last)}


def due(rules: Sequence[TriggerRule], facts: MemberFacts) -> list[Occurrence]:
    """The occurrences due for the member at ``facts.as_of`` (condition and replenishment triggers)."""
    found: list[Occurrence] = []
    for rule in rules:
        config = rule.config
        if isinstance(config, ConditionTrigger):
            assert rule.condition is not None and rule.path is not None
            if not holds(rule.condition, facts) or (rule.when is not None and not holds(rule.when, facts)):
                continue
            anchor = facts.value(rule.path)
            found.append(Occurrence(trigger_id=config.id, member_id=facts.member_id,
                                    key=f"episode:{msgspec.json.encode(anchor).decode()}", at=facts.as_of))
        elif isinstance(config, ReplenishmentTrigger):
            lead, expires = round(config.lead_days * DAY_MS), round(config.expires_days * DAY_MS)
            for item, upcoming, last in _predictions(rule, facts):
                if not upcoming - lead <= facts.as_of < upcoming + expires:
                    continue
                if rule.when is not None and not holds(rule.when, facts):
                    continue
                found.append(Occurrence(trigger_id=config.id, member_id=facts.member_id,
                                        key=f"item:{_item_key(item)}:{last}", at=upcoming - lead,
                                        item=_running_low(item, upcoming, last, facts.as_of)))
    return found


def next_due_at(rules: Sequence[TriggerRule], facts: MemberFacts) -> int | None:
    """When the next replenishment reminder falls due after ``facts.as_of`` (for the scheduler).

    Condition triggers have no computable time: the scheduler re-evaluates members whose
    conditions depend on time (a daily vectorised sweep finds them)."""
    upcoming: list[int] = []
    for rule in rules:
        if isinstance(rule.config, ReplenishmentTrigger):
            lead = round(rule.config.lead_days * DAY_MS)
            upcoming += [when - lead for _, when, _ in _predictions(rule, facts) if when - lead > facts.as_of]
    return min(upcoming, default=None)
