"""Decisioning: triggers, the offer catalog, the contact policy, next-best-action arbitration,
holdouts and uplift measurement, as pure functions over member facts (``docs/decisioning.md``)."""

from loyalty_cdp.core.decisioning.arbitration import decide, history_of, rank_offers
from loyalty_cdp.core.decisioning.config import DecisioningBook, DecisioningConfig, parse_decisioning
from loyalty_cdp.core.decisioning.content import VARIABLES, ContentError
from loyalty_cdp.core.decisioning.holdout import assign_arm, period_label
from loyalty_cdp.core.decisioning.offers import OFFER_GRANTED, Offer, grant_event
from loyalty_cdp.core.decisioning.policy import ContactPolicy, Send, check_contact
from loyalty_cdp.core.decisioning.records import Candidate, Chosen, Decision, decision_id
from loyalty_cdp.core.decisioning.triggers import (
    PRODUCT_PRICE_CHANGED,
    Occurrence,
    TriggerRule,
    due,
    next_due_at,
    on_event,
    price_changed_product,
)
from loyalty_cdp.core.decisioning.uplift import GroupOutcomes, UpliftReport, attribute, measure_uplift

__all__ = [
    "OFFER_GRANTED",
    "PRODUCT_PRICE_CHANGED",
    "VARIABLES",
    "Candidate",
    "Chosen",
    "ContactPolicy",
    "ContentError",
    "Decision",
    "DecisioningBook",
    "DecisioningConfig",
    "GroupOutcomes",
    "Occurrence",
    "Offer",
    "Send",
    "TriggerRule",
    "UpliftReport",
    "assign_arm",
    "attribute",
    "check_contact",
    "decide",
    "decision_id",
    "due",
    "grant_event",
    "history_of",
    "measure_uplift",
    "next_due_at",
    "on_event",
    "parse_decisioning",
    "period_label",
    "price_changed_product",
    "rank_offers",
]
