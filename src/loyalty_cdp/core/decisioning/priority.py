"""Priority of a candidate offer: propensity x value x business weight x context weight.

**Propensity** is the chance the member acts on the offer. It is read from the score the
offer names (``propensity.score``, a path under ``scores``, a number in [0, 1]) when the
member has it and has not opted out of automated decision-making. Otherwise it is the
documented rule-based default::

    base x lifecycle factor x (1 + affinity_boost x affinity share), capped at 1

where ``base`` is the offer's ``propensity.base`` (else the configured default), the
lifecycle factor is looked up by the member's lifecycle stage (``docs/signals.md``), and
the affinity share is the member's purchase-affinity share of the offer's categories
(the mechanics' categories and, for offers on the trigger's product, its category).

**Value** is the offer's expected value less its cost; the **business weight** is the
offer's. The **context weight** is the product of the weights of the persona strategies
that apply: a strategy names a segment and offer tags, and applies when the member is in
the segment and the offer carries one of the tags ("at-risk members -> win-back offers").
"""

from __future__ import annotations

import msgspec

from loyalty_cdp.core.decisioning.offers import Offer
from loyalty_cdp.core.segments.facts import MemberFacts
from loyalty_cdp.core.segments.fields import FieldPath, is_number

DEFAULT_LIFECYCLE = {"new": 1.2, "active": 1.0, "at_risk": 0.8, "lapsed": 0.5, "prospect": 0.6}
STAGE = FieldPath("signals", ("lifecycle", "stage"), None, "signals.lifecycle.stage")
AFFINITY = FieldPath("signals", ("affinity", "category"), None, "signals.affinity.category")


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the arbitration configuration objects: immutable, unknown keys rejected."""


class PropensityRules(_Config, frozen=True, kw_only=True):
    base: float = 0.1
    lifecycle: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_LIFECYCLE))
    affinity_boost: float = 1.0


class Strategy(_Config, frozen=True, kw_only=True):
    id: str
    segment: str
    tags: tuple[str, ...]
    weight: float
    description: str = ""


class Propensity(msgspec.Struct, frozen=True):
    """A propensity, where it came from (``model`` or ``rules``) and how, in words."""

    value: float
    source: str
    detail: str


def propensity(offer: Offer, score: FieldPath | None, facts: MemberFacts, rules: PropensityRules,
               item_category: str | None) -> Propensity:
    """The member's propensity for ``offer`` (``score`` is the offer's parsed score path)."""
    why_rules = ""
    if score is not None:
        if not facts.automated:
            why_rules = "member opted out of automated decision-making"
        else:
            found = facts.value(score)
            if is_number(found) and 0 <= found <= 1:
                return Propensity(float(found), "model", f"{score.text} = {found:.3g}")
            why_rules = f"no usable {score.text}"
    base = offer.propensity.base if offer.propensity.base is not None else rules.base
    stage = facts.value(STAGE)
    factor = rules.lifecycle.get(stage, 1.0) if isinstance(stage, str) else 1.0
    categories = set(offer.mechanics.match.categories) if offer.mechanics else set()
    if item_category and offer.mechanics and offer.mechanics.trigger_item:
        categories.add(item_category)
    shares = facts.value(AFFINITY) or {}
    share = min(sum(value for key, value in shares.items() if key in categories), 1.0)
    value = min(base * factor * (1 + rules.affinity_boost * share), 1.0)
    detail = f"rules: base {base:g} x {stage or 'unknown'} {factor:g} x (1 + {rules.affinity_boost:g} x " \
             f"affinity {share:.2f})"
    return Propensity(value, "rules", f"{detail}; {why_rules}" if why_rules else detail)


def context_weight(offer: Offer, strategies: tuple[Strategy, ...], facts: MemberFacts) -> tuple[float, list[Strategy]]:
    """The product of the weights of the strategies that apply, and those strategies."""
    tags = set(offer.tags)
    applied = [s for s in strategies if s.segment in facts.segment_ids and tags.intersection(s.tags)]
    weight = 1.0
    for strategy in applied:
        weight *= strategy.weight
    return weight, applied
