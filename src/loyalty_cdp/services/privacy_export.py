"""What an access or ADMT access request answers: everything held about a member, built when asked for.

Exports are generated from the live stores at the moment they are read and never stored, so
they never become one more copy of the person to erase. Decisions, messages, segment
memberships and audience exports are read through activation (the decision store, the
outbox, the audience files), under every member id the person's decisions may be filed
under: the member's, each identifier's own (an anonymous visitor's), those merged into it,
and any the decision store holds for the person's user ids. Each automated decision is also
explained in plain words (``admt``), with whether only rules decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from loyalty_cdp.adapters.privacy_requests import MAX_LIST, PrivacyRequest, PrivacyRequestStore
from loyalty_cdp.adapters.suppression import identifier_digest, load_or_create_secret
from loyalty_cdp.core.consent import (
    PROFILING,
    SALE_SHARING,
    STRICT_POLICY,
    ConsentState,
    allowed,
    consent_from_builtins,
    consent_view,
    policy_for,
)
from loyalty_cdp.core.decisioning import Decision
from loyalty_cdp.core.events import format_time, parse_time
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, EMAIL, PHONE, USER_ID, identifier_key
from loyalty_cdp.core.identity import canonical_id
from loyalty_cdp.core.loyalty import loyalty_summary
from loyalty_cdp.core.privacy import DecisionRecord, ScoreExplanation, admt_report
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.signals import compute_signals
from loyalty_cdp.services.loyalty_stage import loyalty_state

EXPORT_FORMAT = 2  # 2: decisions, messages, segments, audiences and the ADMT account of decisions are filled in
NO_MEMBER = "No member holds this identifier: nothing is held about the person under it."
NO_ACTIVATION = ("Opened without activation (decision store, outbox, audience exports): these stores were not "
                 "read.")
AUDIENCE_NOTE = ("Retail-media audience files list SHA-256 hashes of members' email addresses and phone numbers "
                 "for advertising networks to match; a member is listed only when they allow sale/sharing of "
                 "personal information.")
MESSAGE_TIMES = "Times are epoch milliseconds (UTC)."
RANKING = ("eligible offers (allowed by consent and the contact policy) are ranked by propensity x value x business "
           "weight x context weight, and the first is chosen")
HOLDOUT_ARMS = {"holdout": "control", "treatment": "treatment"}

# The model behind each stored score, in words, and the inputs each explanation quotes.
SCORE_MODELS = {
    "p_alive": "BG/NBD purchase model (Fader, Hardie and Lee 2005)",
    "lapse_risk": "BG/NBD probability of being active, weighed against the member's own purchase interval",
    "expected_purchases_90d": "BG/NBD purchase model (Fader, Hardie and Lee 2005)",
    "clv": "BG/NBD purchase model with the Gamma-Gamma spend model",
}
SCORE_INPUTS = ("orders", "days_since_last_purchase", "usual_interval_days", "lapse_window_days", "expected_spend")

_decode = msgspec.json.Decoder().decode


def consent_state(profile: Profile | None) -> ConsentState:
    if profile is None or not profile.consent:
        return ConsentState(purposes={})
    return consent_from_builtins(profile.consent)


def score_explanations(row: Mapping[str, Any] | None) -> dict[str, ScoreExplanation]:
    """The stored scores of one member as :class:`ScoreExplanation` objects (none when not scored for targeting)."""
    if not row or not row.get("scored_for_targeting"):
        return {}
    computed_at = parse_time(row["scored_at"], "scored_at")
    reasons = "; ".join(str(reason.get("text", "")) for reason in row.get("explanation", ()))
    inputs = {name: row[name] for name in SCORE_INPUTS if row.get(name) is not None}
    return {
        name: ScoreExplanation(name, float(row[name]), model, str(row["model_version"]), computed_at, inputs, reasons)
        for name, model in SCORE_MODELS.items()
        if isinstance(row.get(name), int | float)
    }


def merged_member_ids(history: Iterable[Mapping[str, Any]]) -> set[str]:
    """The member ids an identity history says were absorbed into the member by merges."""
    return {str(r["other_id"]) for r in history if r.get("action") == "merge" and r.get("other_id")}


def person_member_ids(context: Any, profile: Profile) -> set[str]:
    """Every member id the person's decisions and memberships may be filed under."""
    identities = profile.identities
    ids = {profile.member_id} | {canonical_id({kind: [value]}) for kind, values in identities.items()
                                 for value in values}
    ids |= merged_member_ids(context.processor.history_of(profile.member_id))
    if context.activation is not None:
        ids |= context.activation.person_member_ids(set(identities.get(USER_ID, [])))
    return ids


def _score_names(decision: Decision) -> dict[str, float]:
    """The predictions a decision read: scores in its inputs, and model propensities of its candidates."""
    found: dict[str, float] = {}
    for key, value in decision.inputs.items():
        if key.startswith("scores.") and isinstance(value, int | float) and not isinstance(value, bool):
            found[key.removeprefix("scores.")] = float(value)
    for candidate in decision.candidates:
        if candidate.propensity_source == "model" and candidate.propensity is not None:
            path = (candidate.propensity_detail or "").split(" = ")[0].removeprefix("scores.")
            found.setdefault(path or f"propensity for {candidate.offer_id}", float(candidate.propensity))
    return found


def decision_record(decision: Decision) -> DecisionRecord:
    """A stored decision as the ADMT account explains it: purpose, logic (model or rules), inputs, outcome."""
    first = decision.chosen[0] if decision.chosen else None
    scores = _score_names(decision)
    inputs = {key: value for key, value in decision.inputs.items() if key.removeprefix("scores.") not in scores}
    if decision.trigger_id is not None:
        purpose = f"choose whether to send you an offer, and which, after “{decision.trigger_id}”"
    else:
        purpose = f"choose the offers shown to you on {decision.channel or 'a channel'}"
    if decision.action == "send" and first is not None:
        outcome = f"“{first.name}” was sent by {first.channel}"
    elif decision.action == "hold_out":
        outcome = "nothing was sent (comparison group)"
    elif decision.action == "show":
        outcome = f"{len(decision.chosen)} offer(s) shown: " + ", ".join(f"“{c.name}”" for c in decision.chosen)
    else:
        outcome = "nothing was sent"
    rule = RANKING + (f"; “{first.name}”: {first.reason}" if first is not None else "")
    return DecisionRecord(
        decision_id=decision.decision_id, made_at=decision.at, purpose=purpose, outcome=outcome,
        method="model" if scores else "rules", rule=rule, score_values=scores, inputs=inputs,
        holdout_arm=HOLDOUT_ARMS.get(decision.arm or ""), reasons=(decision.reason,),
        channel=first.channel if first is not None else decision.channel,
    )


def explained_decisions(decisions: list[Decision], scores: Mapping[str, ScoreExplanation],
                        profiling_allowed: bool) -> dict[str, Any]:
    """``admt_report`` over the stored decisions, each also with its own reason and whether only rules decided."""
    report = admt_report([decision_record(d) for d in decisions], scores, profiling_allowed=profiling_allowed)
    by_id = {d.decision_id: d for d in decisions}
    for entry in report["decisions"]:
        decision = by_id[entry["decision_id"]]
        entry["reason"] = decision.reason
        entry["rule_based_only"] = not entry["uses_predictions"]
        entry["automated_decision_making_allowed"] = decision.automated
        entry["propensities"] = {f"{c.offer_id}/{c.channel}": c.propensity_source for c in decision.candidates
                                 if c.propensity_source is not None}
    return report


def _activation_sections(context: Any, profile: Profile, decisions: list[Decision]) -> dict[str, Any]:
    """The decisions, messages, segments and audiences sections of an access export."""
    activation = context.activation
    if activation is None:
        return {section: {"records": [], "note": NO_ACTIVATION}
                for section in ("decisions", "messages", "segments", "audiences")}
    ids = person_member_ids(context, profile)
    outcomes = activation.decisions.outcomes_of([d.decision_id for d in decisions])
    segments = activation.person_segments(ids)
    ever = set(profile.segments) | {row["segment_id"] for part in segments.values() for row in part}
    emails, phones = set(profile.identities.get(EMAIL, [])), set(profile.identities.get(PHONE, []))
    shares = allowed(consent_state(profile), SALE_SHARING, STRICT_POLICY)
    return {
        "decisions": {"records": [{**msgspec.to_builtins(d), "outcomes": outcomes.get(d.decision_id, {})}
                                  for d in decisions], "note": MESSAGE_TIMES},
        "messages": {"records": activation.person_messages({d.decision_id for d in decisions}),
                     "note": MESSAGE_TIMES},
        "segments": {"current": segments["current"], "history": segments["history"], "note": MESSAGE_TIMES},
        "audiences": {"records": activation.person_audiences(ever, emails, phones),
                      "sale_sharing_allowed": shares, "note": AUDIENCE_NOTE},
    }


def _decisions_of(context: Any, profile: Profile) -> list[Decision]:
    if context.activation is None:
        return []
    decisions: list[Decision] = context.activation.person_decisions(person_member_ids(context, profile))
    return decisions


def _profile_view(profile: Profile, now_ms: int) -> dict[str, Any]:
    return {
        "member_id": profile.member_id,
        "user_id": profile.user_id,
        "traits": {key: {"value": trait.value, "updated_at": format_time(trait.updated_at),
                         "message_id": trait.message_id} for key, trait in sorted(profile.traits.items())},
        "signals": compute_signals(profile, now_ms),
        "activity": msgspec.to_builtins(profile.activity),
        "segments": profile.segments,
    }


def _loyalty_view(processor: Any, profile: Profile, now_ms: int) -> dict[str, Any]:
    state = loyalty_state(profile)
    if processor.loyalty is None or state is None:
        return {"enrolled": False}
    return {
        "enrolled": True,
        "summary": loyalty_summary(processor.loyalty.engine.book, state, now_ms),
        "ledger": msgspec.to_builtins(state),  # every lot, entry, order, redemption; times in epoch ms
    }


def _requests_about(data_dir: Any, requests: PrivacyRequestStore, identities: Mapping[str, list[str]],
                    now_ms: int) -> list[dict[str, Any]]:
    """The privacy requests made about any of the member's identifiers (matched by their keyed hash)."""
    secret = load_or_create_secret(data_dir)
    digests = {identifier_digest(secret, identifier_key(kind, value))
               for kind, values in identities.items() for value in values}
    return [r.view(now_ms) for r in requests.list(limit=MAX_LIST) if r.identifier_digest in digests]


def _subject(request: PrivacyRequest, now_ms: int) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "request_id": request.request_id,
        "request_type": request.type,
        "generated_at": format_time(now_ms),
        "identifier": {"type": request.identifier_type, "value": request.identifier_value},
    }


def access_export(context: Any, request: PrivacyRequest, profile: Profile | None, now_ms: int) -> dict[str, Any]:
    """Everything held about the member ``profile`` (None: nobody holds the identifier), JSON-ready."""
    if profile is None:
        return {**_subject(request, now_ms), "member_found": False, "note": NO_MEMBER}
    processor = context.processor
    identities = profile.identities
    events = context.event_log.read_member(identities.get(USER_ID, []), identities.get(ANONYMOUS_ID, []))
    row = context.scores.get(profile.member_id)
    policy = policy_for(request.regime)
    consent = consent_state(profile)
    decisions = _decisions_of(context, profile)
    explained = explained_decisions(decisions, score_explanations(row), allowed(consent, PROFILING, policy))
    return {
        **_subject(request, now_ms),
        "member_found": True,
        "profile": _profile_view(profile, now_ms),
        "identities": identities,
        "identity_history": processor.history_of(profile.member_id),
        "events": [{"offset": e.offset, **_decode(e.body)} for e in events],
        "loyalty": _loyalty_view(processor, profile, now_ms),
        "scores": {"stored": row, "explanations": explained["scores"]},
        "consent": {"policy": policy.name, "purposes": consent_view(consent, policy)},
        **_activation_sections(context, profile, decisions),
        "admt": {key: explained[key] for key in ("profiling_allowed", "status", "how_to_opt_out", "decisions")},
        "privacy_requests": _requests_about(context.data_dir, context.requests, identities, now_ms),
    }


def admt_account(context: Any, request: PrivacyRequest, profile: Profile | None, now_ms: int) -> dict[str, Any]:
    """The plain-language account of the automated decisions and predictions about the member."""
    if profile is None:
        return {**_subject(request, now_ms), "member_found": False, "note": NO_MEMBER}
    row = context.scores.get(profile.member_id)
    # ADMT is the CCPA's notion: without a regime, its opt-out default reads the member's consent.
    policy = policy_for(request.regime or "ccpa")
    report = explained_decisions(_decisions_of(context, profile), score_explanations(row),
                                 allowed(consent_state(profile), PROFILING, policy))
    return {
        **_subject(request, now_ms),
        "member_found": True,
        **report,
        "scored_for_targeting": None if row is None else row["scored_for_targeting"],
    }
