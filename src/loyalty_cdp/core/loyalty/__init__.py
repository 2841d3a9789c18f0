"""The loyalty engine's pure core: program objects, earn rules, ledger, tiers, milestones,
rewards, and the fold that runs them on a member's events (see ``docs/loyalty.md``)."""

from loyalty_cdp.core.loyalty.book import ProgramBook, ProgramVersion
from loyalty_cdp.core.loyalty.budgets import CampaignBudgets
from loyalty_cdp.core.loyalty.emit import EMITTED_EVENTS
from loyalty_cdp.core.loyalty.engine import Folded, LoyaltyEngine
from loyalty_cdp.core.loyalty.inputs import (
    COMMAND_EVENTS,
    LoyaltyInput,
    RedemptionRequest,
    from_call,
    from_event,
)
from loyalty_cdp.core.loyalty.liability import LiabilityReport, liability_report
from loyalty_cdp.core.loyalty.program import FUTURE_SECTIONS, Program
from loyalty_cdp.core.loyalty.rewards import RedemptionDecision, redemption_command
from loyalty_cdp.core.loyalty.state import LoyaltyState, decode, encode, snapshot
from loyalty_cdp.core.loyalty.summary import loyalty_summary

__all__ = [
    "COMMAND_EVENTS",
    "EMITTED_EVENTS",
    "FUTURE_SECTIONS",
    "CampaignBudgets",
    "Folded",
    "LiabilityReport",
    "LoyaltyEngine",
    "LoyaltyInput",
    "LoyaltyState",
    "Program",
    "ProgramBook",
    "ProgramVersion",
    "RedemptionDecision",
    "RedemptionRequest",
    "decode",
    "encode",
    "from_call",
    "from_event",
    "liability_report",
    "loyalty_summary",
    "redemption_command",
    "snapshot",
]
