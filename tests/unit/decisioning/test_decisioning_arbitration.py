"""Arbitration: eligibility, policy, priority with persona strategies, records, holdout, grants."""

from __future__ import annotations

import msgspec
import pytest
from decisioning_support import RETAIL, config, consents, day, facts, member, order, track

from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.core.decisioning import (
    DecisioningBook,
    Send,
    decide,
    grant_event,
    history_of,
    on_event,
    rank_offers,
)
from loyalty_cdp.core.decisioning.triggers import Occurrence
from loyalty_cdp.core.loyalty.program import EarnRule
from loyalty_cdp.errors import InvalidInput

CONFIG = config()
GOLD = {"tier": "Gold", "points_balance": 1200,
        "progress": {"metric": "qualifying_spend", "next_tier": "Platinum", "remaining": 300.0}}


def _upgrade(message_id: str = "t1", at: int = day(40)) -> Occurrence:
    return Occurrence(trigger_id="tier-up", member_id="u1", key=f"event:{message_id}", at=at,
                      event={"name": "Tier Upgraded", "message_id": message_id, "properties": {"to_tier": "Gold"}})


def _treated_member(user: str = "u1") -> str:
    """A member id outside the 10% holdout of tier-up in 2026-Q1."""
    from loyalty_cdp.core.decisioning import assign_arm
    return next(f"{user}-{n}" for n in range(100) if assign_arm(f"{user}-{n}", "tier-up", "2026-Q1", 0.1) ==
                "treatment")


def test_a_tier_upgrade_sends_the_configured_offer_with_content_and_grant() -> None:
    user = _treated_member()
    profile = member([order("o1", day(0), user=user)], user=user, loyalty=GOLD,
                     traits={}, consent=consents(email_marketing=True, push=True, profiling=True))
    profile.traits.update(_traits(first_name="Ann"))
    occurrence = msgspec.structs.replace(_upgrade(), member_id=user)
    noon = day(40.5)
    decision = decide(CONFIG, occurrence, facts(profile, noon), [], noon)
    assert decision.action == "send" and decision.arm == "treatment" and decision.automated
    assert {c.offer_id for c in decision.candidates} == {"welcome"}  # only the trigger's offers
    best = decision.chosen[0]
    assert (best.offer_id, best.channel) == ("welcome", "push")  # ties go to the first channel
    assert best.content == {"body": "You made Gold"}
    assert decision.reason.startswith("Send “Gold welcome” by push: priority 1 = propensity 0.1 (rules: ")
    rule = msgspec.convert(best.grant["rule"], EarnRule)  # type: ignore[index]
    assert rule.points == 100 and str(rule.starts) == "2026-02-10" and str(rule.ends) == "2026-02-23"  # type: ignore[union-attr]
    call = grant_event(profile.member_id, profile.user_id, best.grant, noon)  # type: ignore[arg-type]
    assert call["event"] == "Offer Granted" and call["messageId"].startswith("dec-")
    assert decision.inputs["loyalty.tier"] == "Gold"
    again = decide(CONFIG, occurrence, facts(profile, noon), [], noon)
    assert again == decision


def _traits(**values: object) -> dict:
    from loyalty_cdp.core.profile import Trait
    return {key: Trait(value, 0, "m") for key, value in values.items()}


def test_ineligible_and_blocked_candidates_are_recorded_with_reasons() -> None:
    profile = member([order("o1", day(0))], loyalty={"tier": "Silver"}, consent=consents(email_marketing=True))
    decision = decide(CONFIG, _upgrade(), facts(profile, day(40)), [], day(40))
    assert decision.action == "none" and decision.chosen == []
    assert [c.blocked[0] for c in decision.candidates] == ["tier Silver is not one of Gold, Platinum"] * 2
    gold = member([order("o1", day(0))], loyalty=GOLD, consent=consents(email_marketing=False))
    blocked = decide(CONFIG, _upgrade(), facts(gold, day(40)), [], day(40))
    assert [c.blocked for c in blocked.candidates] == [["no consent for push"], ["no consent for email_marketing"]]
    assert "Nothing to send for tier-up" in blocked.reason


def test_holdout_members_get_the_arbitration_recorded_and_nothing_sent() -> None:
    from loyalty_cdp.core.decisioning import assign_arm
    held = next(f"h{n}" for n in range(1000) if assign_arm(f"h{n}", "tier-up", "2026-Q1", 0.1) == "holdout")
    profile = member([order("o1", day(0), user=held)], user=held, loyalty=GOLD)
    decision = decide(CONFIG, msgspec.structs.replace(_upgrade(), member_id=held), facts(profile, day(40)), [],
                      day(40))
    assert decision.action == "hold_out" and decision.arm == "holdout" and decision.holdout_period == "2026-Q1"
    assert decision.chosen[0].offer_id == "welcome" and decision.chosen[0].grant is None
    assert "10% control group of campaign tier-up for 2026-Q1" in decision.reason
    assert history_of([decision]) == []


def test_persona_strategy_and_model_propensity_pick_the_winner() -> None:
    # At day 40, orders at days 0 and 10: at risk, in the at-risk segment.
    history = [order("o1", day(0), discount=5), order("o2", day(10), discount=5)]
    at_risk = member(history, segments={"at-risk": {"member": True, "since": 0, "entries": 1},
                                        "price-sensitive": {"member": True, "since": 0, "entries": 1}},
                     scores={"propensity": {"win_back": 0.05}})
    ranked = rank_offers(CONFIG, facts(at_risk, day(40)), "web", [], day(40), "req-1")
    assert ranked.action == "show" and [c.offer_id for c in ranked.chosen] == ["value", "win-back"]
    value, win_back = (next(c for c in ranked.candidates if c.offer_id == key) for key in ("value", "win-back"))
    # value: rules 0.1 x at_risk 0.8 x (1 + 1 x Pet Food share 1.0) = 0.16; x 10 x 1 x 2 (price-sensitive)
    assert value.propensity == pytest.approx(0.16) and value.score == pytest.approx(3.2)
    assert value.strategies == ["value"] and value.propensity_source == "rules"
    # win-back: model 0.05 x 20 x 1 x 3 (at-risk -> win-back) = 3.0
    assert win_back.propensity_source == "model" and win_back.score == pytest.approx(3.0)
    eager = msgspec.structs.replace(at_risk, scores={"propensity": {"win_back": 0.2}})
    top = rank_offers(CONFIG, facts(eager, day(40)), "web", [], day(40), "req-1", limit=1)
    assert [c.offer_id for c in top.chosen] == ["win-back"]
    assert "strategy: At-risk members get win-back offers" in top.reason


def test_opting_out_of_automated_decisions_uses_rules_only() -> None:
    history = [order("o1", day(0)), order("o2", day(10))]
    opted_out = member(history, segments={"at-risk": {"member": True, "since": 0, "entries": 1}},
                       scores={"propensity": {"win_back": 0.9}},
                       consent=consents(email_marketing=True, profiling=False))
    ranked = rank_offers(CONFIG, facts(opted_out, day(40)), "web", [], day(40), "req-2")
    win_back = next(c for c in ranked.candidates if c.offer_id == "win-back")
    assert win_back.propensity_source == "rules" and "opted out" in (win_back.propensity_detail or "")
    assert not ranked.automated and ranked.reason.endswith("has not allowed automated decision-making (profiling).")
    assert not any(key.startswith("scores.") and value is not None for key, value in ranked.inputs.items())


def test_decision_ids_depend_on_member_and_occurrence_or_request() -> None:
    profile = member([order("o1", day(0))], loyalty=GOLD)
    one = decide(CONFIG, _upgrade("t1"), facts(profile, day(40)), [], day(40))
    later = decide(CONFIG, _upgrade("t1"), facts(profile, day(41)), [], day(41))
    other = decide(CONFIG, _upgrade("t2"), facts(profile, day(40)), [], day(40))
    assert one.decision_id == later.decision_id != other.decision_id
    first = rank_offers(CONFIG, facts(profile, day(40)), "web", [], day(40), "session-9")
    assert first.decision_id == rank_offers(CONFIG, facts(profile, day(50)), "web", [], day(50), "session-9").decision_id
    assert first.decision_id != rank_offers(CONFIG, facts(profile, day(40)), "pos", [], day(40), "session-9").decision_id
    with pytest.raises(InvalidInput, match="unknown channel 'fax'"):
        rank_offers(CONFIG, facts(profile, day(40)), "fax", [], day(40), "x")
    with pytest.raises(InvalidInput, match="unknown trigger"):
        decide(CONFIG, msgspec.structs.replace(_upgrade(), trigger_id="nope"), facts(profile, day(40)), [], day(40))


def test_the_contact_history_blocks_and_defers() -> None:
    profile = member([order("o1", day(0))], loyalty=GOLD)
    pushed = [Send(day(40) - 3_600_000, "push", "value")]
    decision = decide(CONFIG, _upgrade(), facts(profile, day(40)), pushed, day(40))
    assert decision.candidates[0].blocked == ["push cap of 1 per 1 days reached"]
    assert decision.chosen[0].channel == "email"
    night = day(40) + 22 * 3_600_000  # 23:00 in Paris
    deferred = decide(CONFIG, _upgrade(), facts(profile, night), [], night)
    assert deferred.chosen[0].send_at == day(41) + 7 * 3_600_000  # 08:00 in Paris
    assert "deferred past quiet hours" in deferred.reason
    assert history_of([deferred]) == [Send(day(41) + 7 * 3_600_000, "push", "welcome")]


def test_content_that_fails_for_this_member_blocks_only_that_candidate() -> None:
    refill = Occurrence(trigger_id="refill", member_id="u1", key="item:x:1", at=day(28), item=None)
    decision = decide(CONFIG, refill, facts(member([order("o1", day(0))]), day(28)), [], day(28))
    assert decision.action == "none"
    assert [c.blocked for c in decision.candidates] == [
        ["content could not be rendered: refill.content.push.title: 'None' has no attribute 'name'"],
        ["content could not be rendered: refill.content.email.subject: 'None' has no attribute 'name'"]]


def test_the_retail_program_end_to_end_for_a_replenishment_and_a_price_drop() -> None:
    retail = DecisioningBook.from_book(load_program(RETAIL)).latest
    prediction = {"product_id": "PET-1", "name": "Dry Dog Food 12kg", "category": "Pet Food",
                  "last_purchase": "2026-01-01", "predicted_date": "2026-01-31"}
    wished = track("w1", day(0), "Product Added to Wishlist", "web", "u1", product_id="HOM-2", name="Linen throw",
                   category="Home", price=60)
    profile = member([order("o1", day(0)), wished], scores={"replenishment": [prediction]}, traits={})
    profile.traits.update(_traits(first_name="Ann"))
    from loyalty_cdp.core.decisioning import due
    (refill,) = due(retail.triggers, facts(profile, day(28)))
    decision = decide(retail, refill, facts(profile, day(28) + 10 * 3_600_000), [], day(28) + 10 * 3_600_000)
    assert decision.chosen[0].content["title"] == "Running low on Dry Dog Food 12kg?"
    assert decision.chosen[0].grant["rule"]["match"]["product_ids"] == ["PET-1"]  # type: ignore[index]
    drop = track("p1", day(29), "Product Price Changed", "catalog", "u1", product_id="HOM-2", price=45)
    (occurrence,) = on_event(retail.triggers, drop, facts(profile, day(29)))
    sent = decide(retail, occurrence, facts(profile, day(29)), history_of([decision]), day(29) + 3_600_000 * 14)
    assert sent.chosen[0].content["body"] == "Linen throw is now $45.00, plus 3x points today."
    assert sent.chosen[0].grant["rule"]["multiplier"] == 3  # type: ignore[index]
