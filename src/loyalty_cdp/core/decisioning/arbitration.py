"""Next-best-action arbitration: from a trigger occurrence or a request to one recorded decision.

For every candidate (offer, channel) in order: eligibility (dates, channel, tiers,
segments, consent purposes, the offer's condition), then the contact policy (channel
consent, quiet hours, caps, cool-down), then the content must render; the survivors are
scored ``propensity x value x business weight x context weight`` (:mod:`.priority`) and
the highest score wins, ties going to the earlier offer and channel in the configuration.
A trigger decision sends at most one message; a request (``GET /v1/members/{id}/offers``)
ranks the offers for one channel. Holdout members of a trigger's campaign get the same
arbitration, recorded, and nothing sent. Pure: time, the member's facts and their contact
history are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loyalty_cdp.core.decisioning.config import CompiledOffer, DecisioningConfig
from loyalty_cdp.core.decisioning.content import ContentError, member_context, render
from loyalty_cdp.core.decisioning.holdout import assign_arm, period_label
from loyalty_cdp.core.decisioning.offers import consent_path, grant, ineligible, offer_view
from loyalty_cdp.core.decisioning.policy import Send, check_contact
from loyalty_cdp.core.decisioning.priority import context_weight, propensity
from loyalty_cdp.core.decisioning.records import Action, Candidate, Chosen, Decision, decision_id
from loyalty_cdp.core.decisioning.triggers import Occurrence, PriceDropTrigger, ReplenishmentTrigger
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.segments.facts import MemberFacts
from loyalty_cdp.core.segments.fields import FieldPath
from loyalty_cdp.errors import InvalidInput

TIMEZONE = FieldPath("traits", ("timezone",), None, "traits.timezone")
OPT_OUT_NOTE = "Rule-based path only: the member has not allowed automated decision-making (profiling)."
LISTED_REFUSALS = 4


class _Option:
    """A candidate that passed every check, with what is needed to deliver it."""

    __slots__ = ("candidate", "compiled", "content", "order", "reason")

    def __init__(self, candidate: Candidate, compiled: CompiledOffer, content: dict[str, str], order: int) -> None:
        self.candidate = candidate
        self.compiled = compiled
        self.content = content
        self.order = order
        self.reason = ""


def _consider(config: DecisioningConfig, offers: Sequence[CompiledOffer], channels: Sequence[str],
              facts: MemberFacts, history: Sequence[Send], at: int, occurrence: Occurrence | None,
              kind: type | None) -> tuple[list[Candidate], list[_Option]]:
    item = occurrence.item if occurrence else None
    running_low = item if kind is ReplenishmentTrigger else None
    wishlist_item = item if kind is PriceDropTrigger else None
    event = occurrence.event["properties"] if occurrence and occurrence.event else {}
    timezone = facts.value(TIMEZONE)
    purposes = {config.policy.purpose(channel) for channel in channels if channel in config.policy.channels}
    allowed = {purpose: facts.value(consent_path(purpose)) is True for purpose in purposes if purpose}
    candidates: list[Candidate] = []
    options: list[_Option] = []
    for compiled in offers:
        offer = compiled.offer
        for channel in channels:
            blocked = ineligible(offer, compiled.when, facts, channel, at)
            send_at, notes = at, []
            if not blocked:
                verdict = check_contact(config.policy, channel, offer.id, offer.cool_down_days, history, at,
                                        allowed, timezone if isinstance(timezone, str) else None)
                blocked = list(verdict.reasons) if not verdict.allowed else []
                send_at, notes = verdict.send_at or at, list(verdict.reasons) if verdict.allowed else []
            content: dict[str, str] = {}
            if not blocked:
                context = member_context(facts.traits, facts.loyalty, facts.signals, running_low,
                                         wishlist_item, offer_view(offer, send_at, item), event, channel)
                try:
                    content = render(compiled.content[channel], context, f"{offer.id}.content.{channel}")
                except ContentError as exc:
                    blocked = [f"content could not be rendered: {exc}"]
            if blocked:
                candidates.append(Candidate(offer_id=offer.id, channel=channel, eligible=False, blocked=blocked))
                continue
            chance = propensity(offer, compiled.score, facts, config.propensity, item.get("category") if item else None)
            weight, applied = context_weight(offer, config.strategies, facts)
            score = chance.value * offer.value * offer.business_weight * weight
            candidate = Candidate(offer_id=offer.id, channel=channel, eligible=True, propensity=chance.value,
                                  propensity_source=chance.source, propensity_detail=chance.detail, value=offer.value,
                                  business_weight=offer.business_weight, context_weight=weight,
                                  strategies=[s.id for s in applied], score=score, send_at=send_at, notes=notes)
            candidates.append(candidate)
            option = _Option(candidate, compiled, content, len(options))
            option.reason = _why(option, config)
            options.append(option)
    options.sort(key=lambda option: (-(option.candidate.score or 0.0), option.order))
    return candidates, options


def _why(option: _Option, config: DecisioningConfig) -> str:
    """The score of an option in words."""
    c = option.candidate
    strategies = {s.id: s for s in config.strategies}
    told = [strategies[s].description or f"{strategies[s].segment} -> {', '.join(strategies[s].tags)}"
            for s in c.strategies]
    text = (f"priority {c.score:.4g} = propensity {c.propensity:.3g} ({c.propensity_detail}) x value "
            f"{c.value:.2f} x business weight {c.business_weight:g} x context weight {c.context_weight:g}")
    if told:
        text += f" (strategy: {'; '.join(told)})"
    if c.notes:
        text += f"; {'; '.join(c.notes)}, sent at {format_time(c.send_at or 0)}"
    return text


def _refusals(candidates: list[Candidate]) -> str:
    refused = [f"{c.offer_id} by {c.channel}: {c.blocked[0]}" for c in candidates if not c.eligible]
    more = len(refused) - LISTED_REFUSALS
    return "; ".join(refused[:LISTED_REFUSALS]) + (f"; and {more} more" if more > 0 else "")


def _chosen(option: _Option, decision: str, item: dict[str, Any] | None, granted: bool = True) -> Chosen:
    c = option.candidate
    offer = option.compiled.offer
    send_at = c.send_at if c.send_at is not None else 0
    return Chosen(offer_id=offer.id, name=offer.title, channel=c.channel, score=c.score or 0.0, send_at=send_at,
                  content=option.content, reason=option.reason,
                  grant=grant(offer, decision, send_at, item) if granted else None)


def decide(config: DecisioningConfig, occurrence: Occurrence, facts: MemberFacts, history: Sequence[Send],
           at: int) -> Decision:
    """The decision for one trigger occurrence, decided at ``at`` (epoch ms).

    ``history`` is what the member was sent (or is scheduled to be sent), for the contact
    policy. The decision id depends only on the member, the trigger and the occurrence key."""
    rule = config.by_trigger.get(occurrence.trigger_id)
    if rule is None:
        raise InvalidInput("trigger_id", f"unknown trigger {occurrence.trigger_id!r}")
    trigger = rule.config
    identifier = decision_id(facts.member_id, "trigger", trigger.id, occurrence.key)
    period = period_label(trigger.holdout.period, occurrence.at)
    share = trigger.holdout.share
    arm = assign_arm(facts.member_id, rule.campaign, period, share) if share > 0 else "treatment"
    offers = [config.offers[offer_id] for offer_id in trigger.offers] or list(config.offers.values())
    candidates, options = _consider(config, offers, trigger.channels, facts, history, at, occurrence, type(trigger))
    chosen = [_chosen(options[0], identifier, occurrence.item, arm == "treatment")] if options else []
    action: Action
    if not chosen:
        action, reason = "none", f"Nothing to send for {trigger.id}: {_refusals(candidates) or 'no candidate offer'}."
    else:
        best = chosen[0]
        sentence = f"“{best.name}” by {best.channel}: {best.reason}; the best of {len(options)} eligible option(s)"
        refused = _refusals(candidates)
        if refused:
            sentence += f". Not eligible: {refused}"
        if arm == "holdout":
            action = "hold_out"
            reason = (f"Held out: the member is in the {share:.0%} control group of campaign {rule.campaign} for "
                      f"{period}, so nothing is sent. Would have sent {sentence}.")
        else:
            action, reason = "send", f"Send {sentence}."
    if not facts.automated:
        reason += f" {OPT_OUT_NOTE}"
    return Decision(decision_id=identifier, member_id=facts.member_id, user_id=facts.profile.user_id, at=at,
                    action=action, reason=reason, automated=facts.automated, trigger_id=trigger.id,
                    occurrence_key=occurrence.key, occurred_at=occurrence.at, campaign=rule.campaign,
                    arm=arm, holdout_period=period if share > 0 else None, chosen=chosen,
                    candidates=candidates, inputs=dict(facts.accessed))


def rank_offers(config: DecisioningConfig, facts: MemberFacts, channel: str, history: Sequence[Send], at: int,
                request_id: str, limit: int = 3) -> Decision:
    """The best offers for ``channel`` right now (on-site, in-app, in-store), ranked.

    ``request_id`` identifies the request (the caller's idempotency key, or channel and
    session): the same request gets the same decision id."""
    if channel not in config.policy.channels:
        raise InvalidInput("channel", f"unknown channel {channel!r}; configured: {', '.join(config.policy.channels)}")
    if limit < 1:
        raise InvalidInput("limit", "must be at least 1")
    identifier = decision_id(facts.member_id, "request", channel, request_id)
    candidates, options = _consider(config, list(config.offers.values()), [channel], facts, history, at, None, None)
    chosen = [_chosen(option, identifier, None) for option in options[:limit]]
    action: Action
    if chosen:
        action = "show"
        reason = f"{len(chosen)} of {len(options)} eligible offer(s) for {channel}, best first: " + "; ".join(
            f"“{c.name}”: {c.reason}" for c in chosen) + "."
    else:
        action, reason = "none", f"No offer for {channel}: {_refusals(candidates) or 'the catalog is empty'}."
    if not facts.automated:
        reason += f" {OPT_OUT_NOTE}"
    return Decision(decision_id=identifier, member_id=facts.member_id, user_id=facts.profile.user_id, at=at,
                    action=action, reason=reason, automated=facts.automated, request_id=request_id, channel=channel,
                    chosen=chosen, candidates=candidates, inputs=dict(facts.accessed))


def history_of(decisions: Sequence[Decision]) -> list[Send]:
    """The contact history the policy reads, from the member's stored decisions (sends only)."""
    return [Send(chosen.send_at, chosen.channel, chosen.offer_id)
            for decision in decisions if decision.action == "send" for chosen in decision.chosen[:1]]
