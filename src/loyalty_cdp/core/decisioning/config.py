"""The ``segments``, ``offers`` and ``triggers`` sections of a program document, typed and checked.

The program loader keeps these sections raw in ``Program.extensions``;
:meth:`DecisioningBook.from_book` parses them for every version of the program. Every
error is an :class:`~loyalty_cdp.core.loyalty.program.VersionError` carrying the document
index and the dotted path of the offending key (``offers.catalog[2].content.email.subject``),
which ``ProgramSource.error(document, field, reason)`` turns into ``FILE:LINE: field:
reason``. Keys are documented in ``docs/decisioning.md`` and ``docs/segments.md``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import msgspec
from jinja2.environment import Template

from loyalty_cdp.core.consent import PURPOSES
from loyalty_cdp.core.decisioning.content import compile_content
from loyalty_cdp.core.decisioning.offers import BonusPoints, Mechanics, Offer, PointsMultiplier
from loyalty_cdp.core.decisioning.policy import ChannelPolicy, ContactPolicy, check_policy
from loyalty_cdp.core.decisioning.priority import PropensityRules, Strategy
from loyalty_cdp.core.decisioning.triggers import (
    ConditionTrigger,
    EventTrigger,
    PriceDropTrigger,
    ReplenishmentTrigger,
    SegmentTrigger,
    TriggerConfig,
    TriggerRule,
)
from loyalty_cdp.core.loyalty.book import ProgramBook
from loyalty_cdp.core.loyalty.program import VersionError
from loyalty_cdp.core.loyalty.state import new_state
from loyalty_cdp.core.loyalty.summary import loyalty_summary
from loyalty_cdp.core.segments.conditions import Condition, kind, parse_condition
from loyalty_cdp.core.segments.fields import FieldCatalog, FieldPath
from loyalty_cdp.core.segments.membership import SegmentSet, parse_segments
from loyalty_cdp.core.segments.validation import check_id, convert
from loyalty_cdp.errors import InvalidInput

TRIGGER_TYPES = ("event", "segment", "condition", "replenishment_due", "price_drop")


class OffersSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    contact_policy: ContactPolicy = ContactPolicy()
    propensity: PropensityRules = PropensityRules()
    strategies: tuple[Strategy, ...] = ()
    catalog: tuple[Offer, ...] = ()


class CompiledOffer(msgspec.Struct, frozen=True):
    """An offer with its eligibility condition, propensity score path and templates compiled."""

    offer: Offer
    when: Condition | None
    score: FieldPath | None
    content: dict[str, dict[str, Template]]


class DecisioningConfig:
    """Everything decisioning reads from one program version."""

    def __init__(self, segments: SegmentSet, section: OffersSection, offers: dict[str, CompiledOffer],
                 triggers: Sequence[TriggerRule]) -> None:
        self.segments = segments
        self.policy = section.contact_policy
        self.propensity = section.propensity
        self.strategies = section.strategies
        self.offers = offers
        self.triggers = tuple(triggers)
        self.by_trigger = {rule.id: rule for rule in self.triggers}


def _unknown_channel(policy: ContactPolicy) -> str:
    return "unknown channel; configured: " + ", ".join(policy.channels)


def _mechanics(mechanics: Mechanics, field: str) -> None:
    if not 1 <= mechanics.valid_days <= 366:
        raise InvalidInput(f"{field}.valid_days", "must be between 1 and 366")
    if isinstance(mechanics, PointsMultiplier) and not 1 < mechanics.multiplier <= 10:
        raise InvalidInput(f"{field}.multiplier", "must be above 1 and at most 10")
    if isinstance(mechanics, BonusPoints):
        if not 0 < mechanics.points <= 1_000_000:
            raise InvalidInput(f"{field}.points", "must be between 1 and 1000000")
        if mechanics.min_spend < 0:
            raise InvalidInput(f"{field}.min_spend", "must not be negative")


def _offer(offer: Offer, field: str, catalog: FieldCatalog, policy: ContactPolicy, segments: SegmentSet,
           tiers: Sequence[str]) -> CompiledOffer:
    check_id(offer.id, f"{field}.id")
    if offer.cost < 0 or offer.expected_value <= offer.cost:
        raise InvalidInput(f"{field}.expected_value", "must exceed the cost (which must not be negative)")
    if offer.business_weight <= 0:
        raise InvalidInput(f"{field}.business_weight", "must be positive")
    if offer.cool_down_days < 0:
        raise InvalidInput(f"{field}.cool_down_days", "must not be negative")
    for channel in offer.content:
        if channel not in policy.channels:
            raise InvalidInput(f"{field}.content.{channel}", _unknown_channel(policy))
    rules = offer.eligibility
    for index, channel in enumerate(rules.channels):
        if channel not in offer.content:
            raise InvalidInput(f"{field}.eligibility.channels[{index}]", f"the offer has no content for {channel}")
    for index, tier in enumerate(rules.tiers):
        if tiers and tier not in tiers:
            known = ", ".join(tiers)
            raise InvalidInput(f"{field}.eligibility.tiers[{index}]", f"unknown tier; the program has {known}")
    for key in ("segments", "exclude_segments"):
        for index, segment in enumerate(getattr(rules, key)):
            if segment not in segments.by_id:
                raise InvalidInput(f"{field}.eligibility.{key}[{index}]", f"unknown segment {segment!r}")
    for index, purpose in enumerate(rules.consent):
        if purpose not in PURPOSES:
            known = ", ".join(PURPOSES)
            raise InvalidInput(f"{field}.eligibility.consent[{index}]", f"unknown purpose; one of {known}")
    if rules.starts and rules.ends and rules.starts > rules.ends:
        raise InvalidInput(f"{field}.eligibility.ends", "must not be before starts")
    when = parse_condition(rules.when, f"{field}.eligibility.when", catalog) if rules.when is not None else None
    if offer.mechanics is not None:
        _mechanics(offer.mechanics, f"{field}.mechanics")
    score = None
    if offer.propensity.score is not None:
        score = catalog.parse(offer.propensity.score, f"{field}.propensity.score")
        if score.namespace != "scores":
            raise InvalidInput(f"{field}.propensity.score", "a model propensity is read from 'scores'")
    if offer.propensity.base is not None and not 0 < offer.propensity.base <= 1:
        raise InvalidInput(f"{field}.propensity.base", "must be in (0, 1]")
    if not offer.content:
        raise InvalidInput(f"{field}.content", "give the content of at least one channel")
    return CompiledOffer(offer, when, score, compile_content(offer.content, f"{field}.content"))


def _check_maps(raw: dict[str, Any]) -> None:
    """Check the values of the section's maps one by one, so that an error names the map's key
    (a whole-section check could only say ``channels[...]``)."""
    policy = raw.get("contact_policy")
    channels = policy.get("channels") if isinstance(policy, dict) else None
    for name, channel in (channels or {}).items() if isinstance(channels, dict) else ():
        convert(channel, ChannelPolicy, f"offers.contact_policy.channels.{name}")
    catalog = raw.get("catalog")
    for index, offer in enumerate(catalog if isinstance(catalog, list) else []):
        content = offer.get("content") if isinstance(offer, dict) else None
        for channel, parts in content.items() if isinstance(content, dict) else ():
            where = f"offers.catalog[{index}].content.{channel}"
            if not isinstance(parts, dict):
                raise InvalidInput(where, "expected an object of parts (subject, body...) and their templates")
            for part, template in parts.items():
                if not isinstance(template, str):
                    raise InvalidInput(f"{where}.{part}", f"expected a template (text), got {template!r}")


def _section(raw: Any, segments: SegmentSet, catalog: FieldCatalog,
             tiers: Sequence[str]) -> tuple[OffersSection, dict[str, CompiledOffer]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("offers", "expected an object with contact_policy, propensity, strategies and catalog")
    _check_maps(raw)
    section: OffersSection = convert(raw, OffersSection, "offers")
    check_policy(section.contact_policy, "offers.contact_policy")
    rules = section.propensity
    if not 0 < rules.base <= 1 or rules.affinity_boost < 0 or any(v < 0 for v in rules.lifecycle.values()):
        raise InvalidInput("offers.propensity", "base must be in (0, 1], affinity_boost and factors >= 0")
    seen: set[str] = set()
    for index, strategy in enumerate(section.strategies):
        where = f"offers.strategies[{index}]"
        check_id(strategy.id, f"{where}.id")
        if strategy.id in seen:
            raise InvalidInput(f"{where}.id", f"duplicate strategy id {strategy.id!r}")
        seen.add(strategy.id)
        if strategy.segment not in segments.by_id:
            raise InvalidInput(f"{where}.segment", f"unknown segment {strategy.segment!r}")
        if not strategy.tags:
            raise InvalidInput(f"{where}.tags", "name at least one offer tag")
        if strategy.weight <= 0:
            raise InvalidInput(f"{where}.weight", "must be positive")
    offers: dict[str, CompiledOffer] = {}
    for index, offer in enumerate(section.catalog):
        where = f"offers.catalog[{index}]"
        if offer.id in offers:
            raise InvalidInput(f"{where}.id", f"duplicate offer id {offer.id!r}")
        offers[offer.id] = _offer(offer, where, catalog, section.contact_policy, segments, tiers)
    return section, offers


def _trigger(raw: Any, field: str, catalog: FieldCatalog, segments: SegmentSet, policy: ContactPolicy,
             offers: dict[str, CompiledOffer]) -> TriggerRule:
    if not isinstance(raw, dict):
        raise InvalidInput(field, "expected a trigger object")
    if raw.get("type") not in TRIGGER_TYPES:
        raise InvalidInput(f"{field}.type", f"must be one of {', '.join(TRIGGER_TYPES)}")
    config: TriggerConfig = convert(raw, TriggerConfig, field)  # type: ignore[arg-type]
    check_id(config.id, f"{field}.id")
    if not config.channels:
        raise InvalidInput(f"{field}.channels", "name at least one channel")
    for index, channel in enumerate(config.channels):
        if channel not in policy.channels:
            raise InvalidInput(f"{field}.channels[{index}]", _unknown_channel(policy))
    for index, offer_id in enumerate(config.offers):
        if offer_id not in offers:
            raise InvalidInput(f"{field}.offers[{index}]", f"unknown offer {offer_id!r}")
        if not set(offers[offer_id].offer.content) & set(config.channels):
            raise InvalidInput(f"{field}.offers[{index}]", f"offer {offer_id!r} has no content for these channels")
    if not 0 <= config.holdout.share < 1:
        raise InvalidInput(f"{field}.holdout.share", "must be in [0, 1)")
    if config.holdout.campaign is not None:
        check_id(config.holdout.campaign, f"{field}.holdout.campaign")
    on_event = isinstance(config, EventTrigger | SegmentTrigger | PriceDropTrigger)
    here = catalog.with_options(segments=True, event=on_event)
    when = parse_condition(config.when, f"{field}.when", here) if config.when is not None else None
    if isinstance(config, EventTrigger):
        if not config.event.strip():
            raise InvalidInput(f"{field}.event", "must not be empty")
        for key, wanted in config.properties.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            if not values or any(kind(value) is None for value in values):
                raise InvalidInput(f"{field}.properties.{key}", "expected a text, number, boolean or a list of them")
    if isinstance(config, SegmentTrigger) and config.segment not in segments.by_id:
        raise InvalidInput(f"{field}.segment", f"unknown segment {config.segment!r}")
    if isinstance(config, ConditionTrigger):
        condition = parse_condition(config.condition, f"{field}.condition", here)
        return TriggerRule(config, when, condition, here.parse(config.once_per, f"{field}.once_per"))
    if isinstance(config, ReplenishmentTrigger):
        if not 0 <= config.lead_days <= 365 or config.expires_days <= 0:
            raise InvalidInput(f"{field}.lead_days", "lead_days must be in [0, 365] and expires_days positive")
        return TriggerRule(config, when, None, here.parse(config.source, f"{field}.source"))
    if isinstance(config, PriceDropTrigger) and not 0 <= config.min_drop_percent < 100:
        raise InvalidInput(f"{field}.min_drop_percent", "must be in [0, 100)")
    return TriggerRule(config, when)


def parse_decisioning(extensions: dict[str, Any], tiers: Sequence[str] = (),
                      loyalty: dict[str, Any] | None = None) -> DecisioningConfig:
    """The decisioning configuration of one program document's ``extensions``.

    ``tiers`` are the program's tier names and ``loyalty`` a specimen of its loyalty summary,
    to check references against; :class:`InvalidInput` names the offending key."""
    catalog = FieldCatalog(loyalty)
    segments = parse_segments(extensions.get("segments"), "segments", catalog)
    section, offers = _section(extensions.get("offers"), segments, catalog, tiers)
    raw = extensions.get("triggers") or []
    if not isinstance(raw, list):
        raise InvalidInput("triggers", "expected a list of triggers")
    rules: list[TriggerRule] = []
    for index, item in enumerate(raw):
        rule = _trigger(item, f"triggers[{index}]", catalog, segments, section.contact_policy, offers)
        if any(existing.id == rule.id for existing in rules):
            raise InvalidInput(f"triggers[{index}].id", f"duplicate trigger id {rule.id!r}")
        rules.append(rule)
    return DecisioningConfig(segments, section, offers, rules)


class DecisioningBook:
    """The decisioning configuration of every program version; ``at(t)`` the one in force at ``t``."""

    def __init__(self, starts: Sequence[int], configs: Sequence[DecisioningConfig]) -> None:
        self._starts = list(starts)
        self.configs = tuple(configs)

    @classmethod
    def from_book(cls, book: ProgramBook) -> DecisioningBook:
        """Parse every version's sections; errors are ``VersionError(document, field, reason)``."""
        configs = []
        for document, version in enumerate(book.versions):
            program = version.program
            specimen = loyalty_summary(book, new_state("specimen"), version.effective_from)
            try:
                configs.append(parse_decisioning(program.extensions, [t.name for t in program.tiers.levels],
                                                 specimen))
            except InvalidInput as exc:
                raise VersionError(document, exc.field, exc.reason) from None
        return cls([version.effective_from for version in book.versions], configs)

    def at(self, timestamp: int) -> DecisioningConfig:
        return self.configs[max(bisect_right(self._starts, timestamp) - 1, 0)]

    @property
    def latest(self) -> DecisioningConfig:
        return self.configs[-1]
