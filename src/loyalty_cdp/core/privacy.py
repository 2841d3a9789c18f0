"""Data-subject requests: validation, statuses, deadlines per regime, and plain-language ADMT accounts (pure).

A request names a right (:data:`REQUEST_TYPES`), the person by one identifier, optionally
the regime it is made under, and, for a correction, the corrected traits. Deadlines follow
the regime: GDPR art. 12(3) one month (extendable by two more), CCPA 45 days (extendable
by 45 more; opt-outs of sale/sharing and of ADMT within 15 business days). Without a
regime both apply and the earlier deadline governs. Times are epoch milliseconds, UTC.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.identifiers import EXTERNAL_PREFIX, PRIORITY, normalise_identifier
from loyalty_cdp.errors import Conflict, InvalidInput

ACCESS = "access"
ERASURE = "erasure"
OPT_OUT_SALE = "opt_out_sale"
OPT_OUT_ADMT = "opt_out_admt"
CORRECTION = "correction"
ADMT_ACCESS = "admt_access"
REQUEST_TYPES = (ACCESS, ERASURE, OPT_OUT_SALE, OPT_OUT_ADMT, CORRECTION, ADMT_ACCESS)
REGIMES = ("gdpr", "ccpa")

RECEIVED = "received"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
REJECTED = "rejected"
FAILED = "failed"
STATUSES = (RECEIVED, IN_PROGRESS, COMPLETED, REJECTED, FAILED)
OPEN_STATUSES = (RECEIVED, IN_PROGRESS, FAILED)
_TRANSITIONS = {
    RECEIVED: {IN_PROGRESS, COMPLETED, REJECTED, FAILED},
    IN_PROGRESS: {COMPLETED, REJECTED, FAILED},
    FAILED: {IN_PROGRESS, COMPLETED, REJECTED},  # a failed run may be retried
    COMPLETED: set(),
    REJECTED: set(),
}

MAX_CORRECTIONS = 100
MAX_TRAIT_NAME_CHARS = 128
MAX_TRAIT_TEXT_CHARS = 1024
_EXTERNAL_TYPE = re.compile(r"[a-z0-9_.\-]{1,64}")
_BODY_FIELDS = frozenset({"type", "identifier", "regime", "corrections"})


class PrivacyRequestSpec(msgspec.Struct, frozen=True):
    """A validated request; ``identifier_value`` is normalised (emails lower-cased, phones E.164)."""

    type: str
    identifier_type: str
    identifier_value: str
    regime: str | None = None
    corrections: dict[str, Any] | None = None


def _identifier_type(raw: Any) -> str:
    if isinstance(raw, str):
        kind = raw.strip().lower()
        if kind in PRIORITY:
            return kind
        if kind.startswith(EXTERNAL_PREFIX) and _EXTERNAL_TYPE.fullmatch(kind[len(EXTERNAL_PREFIX):]):
            return kind
    raise InvalidInput("identifier.type", f"must be one of {', '.join(PRIORITY)} or ext.<type>, got {str(raw)[:40]!r}")


def _corrections(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput("corrections", "a correction needs a non-empty object of trait name -> corrected value")
    if len(raw) > MAX_CORRECTIONS:
        raise InvalidInput("corrections", f"at most {MAX_CORRECTIONS} traits per request")
    for name, value in raw.items():
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_TRAIT_NAME_CHARS:
            raise InvalidInput("corrections", f"trait names must be 1 to {MAX_TRAIT_NAME_CHARS} characters")
        field = f"corrections.{name}"
        if isinstance(value, str):
            if len(value) > MAX_TRAIT_TEXT_CHARS or "\x00" in value:
                raise InvalidInput(field, f"must be at most {MAX_TRAIT_TEXT_CHARS} characters, without NUL")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInput(field, "must be a finite number")
        elif value is not None and not isinstance(value, (bool, int)):
            raise InvalidInput(field, "must be a string, number, boolean or null (null removes the trait)")
    return dict(raw)


def parse_request(body: Any, default_region: str | None = None) -> PrivacyRequestSpec:
    """Validate a request body; :class:`InvalidInput` names the offending field.

    Shape: ``{"type": "erasure", "identifier": {"type": "email", "value": "ann@example.com"},
    "regime"?: "gdpr"|"ccpa", "corrections"?: {trait: value}}`` (corrections only, and
    always, for ``correction``). ``default_region`` reads national phone numbers.
    """
    if not isinstance(body, dict):
        raise InvalidInput("", "the body must be a JSON object")
    unknown = sorted(str(key) for key in set(body) - _BODY_FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown field; allowed: {', '.join(sorted(_BODY_FIELDS))}")
    kind = body.get("type")
    if kind not in REQUEST_TYPES:
        raise InvalidInput("type", f"must be one of {', '.join(REQUEST_TYPES)}, got {str(kind)[:40]!r}")
    identifier = body.get("identifier")
    if not isinstance(identifier, dict):
        raise InvalidInput("identifier", 'is required: {"type": "email", "value": "..."}')
    extra = sorted(str(key) for key in set(identifier) - {"type", "value"})
    if extra:
        raise InvalidInput(f"identifier.{extra[0]}", "unknown field; allowed: type, value")
    identifier_type = _identifier_type(identifier.get("type"))
    raw_value = identifier.get("value")
    if not isinstance(raw_value, str) or not raw_value.strip():
        raise InvalidInput("identifier.value", "is required, a non-empty string")
    value = normalise_identifier(identifier_type, raw_value, default_region)
    if value is None:
        raise InvalidInput("identifier.value", f"is not a usable {identifier_type}")
    regime = body.get("regime")
    if regime is not None and regime not in REGIMES:
        raise InvalidInput("regime", f"must be one of {', '.join(REGIMES)}, got {str(regime)[:40]!r}")
    corrections = body.get("corrections")
    if kind == CORRECTION:
        corrections = _corrections(corrections)
    elif corrections is not None:
        raise InvalidInput("corrections", "only a correction request carries corrections")
    return PrivacyRequestSpec(kind, identifier_type, value, regime, corrections)


def _moment(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def add_months(epoch_ms: int, months: int) -> int:
    """The same day and time ``months`` later; a day the month lacks becomes its last day
    (31 January + one month = 28 or 29 February), as EU Regulation 1182/71 counts months."""
    moment = _moment(epoch_ms)
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return _epoch_ms(moment.replace(year=year, month=month + 1, day=day))


def add_business_days(epoch_ms: int, days: int) -> int:
    """The same time ``days`` working days (Monday to Friday) later; public holidays are not
    skipped, which can only make the deadline earlier than the law's."""
    moment = _moment(epoch_ms)
    left = days
    while left:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            left -= 1
    return _epoch_ms(moment)


def _regime_deadline(regime: str, kind: str, received_at: int, extended: bool) -> int:
    if regime == "gdpr":
        return add_months(received_at, 3 if extended else 1)
    if kind in (OPT_OUT_SALE, OPT_OUT_ADMT):
        return add_business_days(received_at, 15)  # CCPA regs §7026(f); no extension
    return received_at + timedelta(days=90 if extended else 45) // timedelta(milliseconds=1)


def deadline(kind: str, regime: str | None, received_at: int, extended: bool = False) -> int:
    """When a request must be answered (epoch ms); without a regime, the earlier of both."""
    if kind not in REQUEST_TYPES:
        raise InvalidInput("type", f"must be one of {', '.join(REQUEST_TYPES)}")
    regimes = REGIMES if regime is None else (regime,)
    if any(r not in REGIMES for r in regimes):
        raise InvalidInput("regime", f"must be one of {', '.join(REGIMES)}")
    return min(_regime_deadline(r, kind, received_at, extended) for r in regimes)


def check_transition(current: str, new: str) -> None:
    """Raise unless a request in status ``current`` may move to ``new``."""
    if new not in STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}, got {new!r}")
    if new not in _TRANSITIONS[current]:
        raise Conflict(f"a {current} request cannot become {new}")


def is_overdue(status: str, deadline_at: int, now_ms: int) -> bool:
    return status in OPEN_STATUSES and now_ms > deadline_at


# ---- ADMT access: a plain-language account of each automated decision ----


class ScoreExplanation(msgspec.Struct, frozen=True):
    """A score as the scoring job stored it: the model, its inputs and its own explanation."""

    name: str
    value: float
    model: str
    model_version: str
    computed_at: int
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    explanation: str = ""


class DecisionRecord(msgspec.Struct, frozen=True):
    """What decisioning records for each decision about a member.

    ``method`` is ``model`` when predictions took part, ``rules`` when only fixed rules did;
    ``score_values`` holds the predictions as they were at decision time; ``inputs`` the
    other facts the rule read (tier, balance, channel); ``holdout_arm`` is ``treatment``,
    ``control`` or None.
    """

    decision_id: str
    made_at: int
    purpose: str
    outcome: str
    method: str
    rule: str = ""
    score_values: dict[str, float] = msgspec.field(default_factory=dict)
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    holdout_arm: str | None = None
    reasons: tuple[str, ...] = ()
    channel: str | None = None


SCORE_WORDS = {
    "p_alive": ("the estimated probability that you are still an active customer", "percent"),
    "lapse_risk": ("the estimated risk that you stop buying from us", "percent"),
    "expected_purchases_90d": ("the number of purchases we expect from you in the next 90 days", "number"),
    "clv": ("the predicted value of your future purchases", "amount"),
}


def _words(name: str) -> str:
    return SCORE_WORDS.get(name, (name.replace("_", " "), "number"))[0]


def _shown(name: str, value: float) -> str:
    unit = SCORE_WORDS.get(name, ("", "number"))[1]
    if unit == "percent":
        return f"{value:.0%}"
    if unit == "amount":
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _fact(name: str, value: Any) -> str:
    return f"{name.replace('_', ' ')}: {value}"


def explain_decision(decision: DecisionRecord, scores: Mapping[str, ScoreExplanation]) -> dict[str, Any]:
    """The account of one decision: its purpose, logic, inputs and outcome, in plain words.

    ``scores`` are the member's stored scores by name; a score the decision used but whose
    explanation is no longer stored is named as such rather than left out.
    """
    automated = decision.method == "model"
    used = []
    for name in sorted(decision.score_values):
        value = decision.score_values[name]
        stored = scores.get(name)
        entry: dict[str, Any] = {"name": name, "meaning": _words(name), "value_at_decision": value,
                                 "shown_as": _shown(name, value)}
        if stored is None:
            entry["explanation"] = "The explanation of this score is no longer stored."
        else:
            entry.update(model=stored.model, model_version=stored.model_version,
                         computed_at=format_time(stored.computed_at), inputs=dict(stored.inputs),
                         explanation=stored.explanation)
        used.append(entry)
    if automated and used:
        estimates = "; ".join(f"{e['meaning']} ({e['shown_as']})" for e in used)
        logic = (f"A statistical model estimated, from your purchase history, {estimates}. "
                 f"The rule then applied was: {decision.rule or 'not recorded'}.")
    else:
        logic = f"No prediction was used: a fixed rule decided. The rule was: {decision.rule or 'not recorded'}."
    facts = [_fact(k, decision.inputs[k]) for k in sorted(decision.inputs)]
    holdout = {
        "control": "You were in the comparison group that receives no offer, so that the offer's "
                   "effect can be measured; this was chosen at random, not from your data.",
        "treatment": "You were in the group that receives offers (a random comparison group does not).",
    }.get(decision.holdout_arm or "", "")
    outcome = f"Outcome: {decision.outcome}."
    if decision.reasons:
        outcome += " Reasons: " + "; ".join(decision.reasons) + "."
    summary = " ".join(part for part in (
        f"On {format_time(decision.made_at)[:10]} an automated system decided how to {decision.purpose}.",
        logic,
        ("It also used these facts: " + "; ".join(facts) + ".") if facts else "",
        outcome,
        holdout,
    ) if part)
    return {
        "decision_id": decision.decision_id,
        "made_at": format_time(decision.made_at),
        "channel": decision.channel,
        "purpose": decision.purpose,
        "uses_predictions": automated,
        "logic": logic,
        "inputs": [{"name": k, "value": decision.inputs[k]} for k in sorted(decision.inputs)],
        "scores": used,
        "outcome": outcome,
        "holdout": holdout or None,
        "summary": summary,
    }


def admt_report(
    decisions: Sequence[DecisionRecord], scores: Mapping[str, ScoreExplanation], *, profiling_allowed: bool
) -> dict[str, Any]:
    """The answer to an ADMT access request: every decision explained, newest first, and the right to opt out."""
    ordered = sorted(decisions, key=lambda d: (d.made_at, d.decision_id), reverse=True)
    status = ("You have not opted out of automated decision-making."
              if profiling_allowed else
              "You have opted out of automated decision-making: no prediction is used to choose "
              "your offers any more; fixed rules apply instead.")
    return {
        "profiling_allowed": profiling_allowed,
        "status": status,
        "how_to_opt_out": 'Make a privacy request of type "opt_out_admt".',
        "decisions": [explain_decision(d, scores) for d in ordered],
        "scores": [
            {"name": s.name, "meaning": _words(s.name), "value": s.value, "shown_as": _shown(s.name, s.value),
             "model": s.model, "model_version": s.model_version, "computed_at": format_time(s.computed_at),
             "inputs": dict(s.inputs), "explanation": s.explanation}
            for s in sorted(scores.values(), key=lambda s: s.name)
        ],
    }
