"""What an access or ADMT access request answers: everything held about a member, built when asked for.

Exports are generated from the live stores at the moment they are read and never stored, so
they never become one more copy of the person to erase. Sections for stores the running
server does not have yet (decisions, messages sent, audience exports) are present, empty,
and say why, so that a reader can tell "nothing held" from "not looked at".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from loyalty_cdp.adapters.privacy_requests import MAX_LIST, PrivacyRequest, PrivacyRequestStore
from loyalty_cdp.adapters.suppression import identifier_digest, load_or_create_secret
from loyalty_cdp.core.consent import (
    PROFILING,
    ConsentState,
    allowed,
    consent_from_builtins,
    consent_view,
    policy_for,
)
from loyalty_cdp.core.events import format_time, parse_time
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, USER_ID, identifier_key
from loyalty_cdp.core.loyalty import loyalty_summary
from loyalty_cdp.core.privacy import ScoreExplanation, admt_report
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.signals import compute_signals
from loyalty_cdp.services.loyalty_stage import loyalty_state

EXPORT_FORMAT = 1
NO_DECISIONS = ("Decisioning does not store its decisions in the running server yet (no offers endpoint "
                "serves them), so no decision about the person is held.")
NO_MESSAGES = ("The message outbox is not wired into the running server yet, so no message to the person "
               "has been sent or recorded.")
NO_AUDIENCES = "No audience export runs in the server yet, so the person is in no exported audience."
NO_MEMBER = "No member holds this identifier: nothing is held about the person under it."

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
    explained = admt_report([], score_explanations(row), profiling_allowed=allowed(consent, PROFILING, policy))
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
        "decisions": {"records": [], "note": NO_DECISIONS},
        "messages": {"records": [], "note": NO_MESSAGES},
        "audiences": {"records": [], "note": NO_AUDIENCES},
        "privacy_requests": _requests_about(context.data_dir, context.requests, identities, now_ms),
    }


def admt_account(context: Any, request: PrivacyRequest, profile: Profile | None, now_ms: int) -> dict[str, Any]:
    """The plain-language account of the automated decisions and predictions about the member."""
    if profile is None:
        return {**_subject(request, now_ms), "member_found": False, "note": NO_MEMBER}
    row = context.scores.get(profile.member_id)
    # ADMT is the CCPA's notion: without a regime, its opt-out default reads the member's consent.
    policy = policy_for(request.regime or "ccpa")
    report = admt_report([], score_explanations(row), profiling_allowed=allowed(consent_state(profile), PROFILING,
                                                                                  policy))
    return {
        **_subject(request, now_ms),
        "member_found": True,
        **report,
        "scored_for_targeting": None if row is None else row["scored_for_targeting"],
        "decisions_note": NO_DECISIONS,
    }
