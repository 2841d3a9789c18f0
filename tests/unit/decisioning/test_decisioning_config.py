"""Configuration: the shipped retail program parses, and bad sections are refused naming the key."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from decisioning_support import EXTENSIONS, RETAIL, TIERS, config

from loyalty_cdp.adapters.program_yaml import ProgramFileError, load_program, parse_program
from loyalty_cdp.core.decisioning import DecisioningBook, parse_decisioning
from loyalty_cdp.core.decisioning.triggers import (
    ConditionTrigger,
    EventTrigger,
    PriceDropTrigger,
    ReplenishmentTrigger,
    SegmentTrigger,
)
from loyalty_cdp.core.loyalty.program import VersionError
from loyalty_cdp.errors import InvalidInput

PERSONAS = {"price-sensitive": "value", "brand-enthusiasts": "early_access", "at-risk": "win_back",
            "high-value": "surprise_upgrade", "new-members": "onboarding"}


def _book_of(text: str) -> DecisioningBook:
    """What the lead's glue does: parse, and turn a VersionError into FILE:LINE."""
    source = parse_program(text, "retail.yaml")
    try:
        return DecisioningBook.from_book(source.book)
    except VersionError as exc:
        raise source.error(exc.document, exc.field, exc.reason) from None


def test_the_retail_program_configures_every_version_with_the_seed_examples() -> None:
    book = DecisioningBook.from_book(load_program(RETAIL))
    assert len(book.configs) == 2
    for version in book.configs:
        strategies = {(s.segment, tag) for s in version.strategies for tag in s.tags}
        assert set(PERSONAS.items()) <= strategies
        triggers = version.by_trigger
        assert isinstance(triggers["tier-upgrade-welcome"].config, EventTrigger)
        refill = triggers["replenishment-reminder"].config
        assert isinstance(refill, ReplenishmentTrigger) and refill.lead_days == 2
        assert version.offers["replenish-2x"].offer.mechanics.multiplier == 2  # type: ignore[union-attr]
        assert isinstance(triggers["wishlist-price-drop"].config, PriceDropTrigger)
        assert version.offers["wishlist-drop-3x"].offer.mechanics.multiplier == 3  # type: ignore[union-attr]
        assert isinstance(triggers["at-risk-win-back"].config, ConditionTrigger)
        assert isinstance(triggers["new-member-quick-win"].config, SegmentTrigger)
        assert triggers["lapse-risk-win-back"].campaign == triggers["at-risk-win-back"].campaign == "win-back"
        assert "pet-food-lapsing" in version.segments.by_id and version.segments.plan
    assert book.at(0) is book.configs[0] and book.latest is book.configs[1]


def test_an_error_in_a_template_points_at_its_line_in_the_program_file() -> None:
    text = RETAIL.read_text()
    broken = text.replace("Running low on {{ running_low.name }}?", "Running low on {{ runing_low.name }}?", 1)
    with pytest.raises(ProgramFileError) as error:
        _book_of(broken)
    line = broken.splitlines()[error.value.line - 1]
    assert "runing_low" in line
    assert "unknown template variable 'runing_low'" in str(error.value)
    assert str(error.value).startswith(f"retail.yaml:{error.value.line}: offers.catalog[2].content.push.title:")


def test_an_error_in_the_second_version_names_that_document() -> None:
    text = RETAIL.read_text()
    first, second = text.split("\n---\n")
    broken = first + "\n---\n" + second.replace("segment: at-risk\n      tags: [win_back]",
                                                 "segment: at-risky\n      tags: [win_back]")
    with pytest.raises(ProgramFileError) as error:
        _book_of(broken)
    assert error.value.line > first.count("\n") + 1
    assert "unknown segment 'at-risky'" in str(error.value)


def _broken(path: str, value: Any) -> dict[str, Any]:
    extensions = copy.deepcopy(EXTENSIONS)
    node: Any = extensions
    keys = path.split("/")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return extensions


@pytest.mark.parametrize(("path", "value", "field", "reason"), [
    ("offers/catalog/0/content/email/subject", "Hi {{ frist_name }}", "offers.catalog[0].content.email.subject",
     "unknown template variable 'frist_name'"),
    ("offers/catalog/0/content/email/subject", "{{ offer.multiplir }}", "offers.catalog[0].content.email.subject",
     "has no attribute 'multiplir'"),
    ("offers/catalog/0/content/email/subject", "{% if %}", "offers.catalog[0].content.email.subject",
     "template syntax error"),
    ("offers/catalog/0/content/email/subject", "{{ ''.__class__ }}", "offers.catalog[0].content.email.subject",
     "unsafe"),
    ("offers/catalog/0/content/fax", {"body": "x"}, "offers.catalog[0].content.fax", "unknown channel"),
    ("offers/catalog/0/eligibility/tiers", ["Diamond"], "offers.catalog[0].eligibility.tiers[0]", "unknown tier"),
    ("offers/catalog/0/eligibility/segments", ["vips"], "offers.catalog[0].eligibility.segments[0]",
     "unknown segment 'vips'"),
    ("offers/catalog/0/eligibility/channels", ["sms"], "offers.catalog[0].eligibility.channels[0]",
     "no content for sms"),
    ("offers/catalog/0/eligibility/when", {"field": "signals.nope", "eq": 1}, "offers.catalog[0].eligibility.when.field",
     "unknown field 'nope'"),
    ("offers/catalog/0/expected_value", 0.5, "offers.catalog[0].expected_value", "must exceed the cost"),
    ("offers/catalog/0/colour", "red", "offers.catalog[0].colour", "unknown key 'colour'"),
    ("offers/catalog/0/expected_value", KeyError, "offers.catalog[0].expected_value", "required key is missing"),
    ("offers/catalog/0/mechanics", {"type": "points_multiplier", "multiplier": 20},
     "offers.catalog[0].mechanics.multiplier", "at most 10"),
    ("offers/catalog/0/mechanics", {"type": "cashback", "percent": 5}, "offers.catalog[0].mechanics.type",
     "Invalid value 'cashback'"),
    ("offers/catalog/0/propensity", {"score": "signals.purchase.orders"}, "offers.catalog[0].propensity.score",
     "read from 'scores'"),
    ("offers/catalog/1/id", "welcome", "offers.catalog[1].id", "duplicate offer id"),
    ("offers/contact_policy/timezone", "Mars/Olympus", "offers.contact_policy.timezone", "unknown time zone"),
    ("offers/contact_policy/channels/sms/quiet_hours", {"start": "25:00", "end": "09:00"},
     "offers.contact_policy.channels.sms.quiet_hours", "not a time of day"),
    ("offers/contact_policy/channels/web/caps", [{"count": 1, "days": 1}], "offers.contact_policy.channels.web",
     "inbound channel"),
    ("offers/contact_policy/channels/email/consent", "emails", "offers.contact_policy.channels.email.consent",
     "unknown purpose"),
    ("offers/contact_policy/channels/whatsapp", {"caps": []}, "offers.contact_policy.channels.whatsapp.consent",
     "needs the consent purpose"),
    ("offers/contact_policy/channels/sms/colour", "red", "offers.contact_policy.channels.sms.colour",
     "unknown key 'colour'"),
    ("offers/catalog/0/content/email/subject", 3, "offers.catalog[0].content.email.subject", "expected a template"),
    ("offers/catalog/0/eligibility/consent", ["newsletter"], "offers.catalog[0].eligibility.consent[0]",
     "unknown purpose"),
    ("offers/strategies/0/segment", "nobody", "offers.strategies[0].segment", "unknown segment 'nobody'"),
    ("offers/strategies/0/weight", 0, "offers.strategies[0].weight", "must be positive"),
    ("triggers/0/type", "webhook", "triggers[0].type", "must be one of event, segment"),
    ("triggers/0/offers", ["nothing"], "triggers[0].offers[0]", "unknown offer 'nothing'"),
    ("triggers/0/channels", ["fax"], "triggers[0].channels[0]", "unknown channel"),
    ("triggers/0/channels", ["sms"], "triggers[0].offers[0]", "no content for these channels"),
    ("triggers/0/holdout", {"share": 1.0}, "triggers[0].holdout.share", "must be in [0, 1)"),
    ("triggers/0/properties", {"to_tier": {"a": 1}}, "triggers[0].properties.to_tier", "expected a text"),
    ("triggers/1/condition", {"field": "event.x", "eq": 1}, "triggers[1].condition.field",
     "only in trigger conditions"),
    ("triggers/1/once_per", "signals.purchase.last_orderat", "triggers[1].once_per", "did you mean"),
    ("triggers/2/lead_days", -1, "triggers[2].lead_days", "lead_days must be in [0, 365]"),
    ("triggers/3/min_drop_percent", 100, "triggers[3].min_drop_percent", "must be in [0, 100)"),
    ("triggers/4/segment", "nobody", "triggers[4].segment", "unknown segment 'nobody'"),
    ("triggers/4/id", "tier-up", "triggers[4].id", "duplicate trigger id"),
    ("segments/0/when", {"field": "scores.x", "gte": "high"}, "segments[0].when.gte", "expected a number"),
    ("offers", [1, 2], "offers", "expected an object"),
    ("triggers", {"id": "x"}, "triggers", "expected a list"),
])
def test_errors_name_the_key(path: str, value: Any, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_decisioning(_broken(path, value), TIERS)
    assert error.value.field == field
    assert reason in error.value.reason


def test_defaults_without_sections() -> None:
    empty = parse_decisioning({}, TIERS)
    assert not empty.offers and not empty.triggers and len(empty.segments) == 0
    assert set(empty.policy.channels) == {"email", "sms", "push", "web", "app", "pos"}
    assert config().by_trigger["tier-up"].campaign == "tier-up"
