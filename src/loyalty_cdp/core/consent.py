"""Consent per purpose: read from events, folded order-independently, with history and regime defaults (pure).

Two kinds of event record consent:

- **explicit**: a ``Consent Updated`` track call (written by the consent API, a preference
  centre or a privacy request) with ``properties`` ``purpose``, ``granted`` (boolean),
  ``source`` and ``actor``; every one is kept in the history;
- **ambient**: Segment's ``context.consent.categoryPreferences`` on any call (the state of
  the consent banner, repeated on every event); the category names are mapped to purposes
  by a :class:`ConsentMapping`, and repeats of the same value from the same source are kept
  as one span (first seen, last seen).

The fold is a join: the current value of a purpose is the observation with the latest
event time (ties broken by ``messageId``); explicit records keep the newest
:data:`MAX_EXPLICIT` per purpose, ambient spans the first :data:`MAX_AMBIENT` keys. Every
step is commutative, associative and idempotent, so any arrival order, any batching and
any duplicates give the same :class:`ConsentState`. ``docs/privacy.md`` describes the
purposes, the default mapping and the regime defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.errors import InvalidInput

EMAIL_MARKETING = "email_marketing"
SMS = "sms"
PUSH = "push"
PROFILING = "profiling"  # profiling and automated decision-making (CCPA ADMT, GDPR art. 22)
SALE_SHARING = "sale_sharing"
PURPOSES = (EMAIL_MARKETING, SMS, PUSH, PROFILING, SALE_SHARING)

CONSENT_EVENT = "Consent Updated"
MEMBER_ACTOR = "member"
MAX_EXPLICIT = 20
MAX_AMBIENT = 8
MAX_LABEL_CHARS = 64

# The purpose a destination channel needs before it may send or export.
CHANNEL_PURPOSES = {
    "email": EMAIL_MARKETING,
    "sms": SMS,
    "push": PUSH,
    "audience": SALE_SHARING,
    "retail_media": SALE_SHARING,
}

_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def category_key(name: str) -> str:
    """A consent category name as the mapping matches it: lower case, letters and digits only."""
    return _NOT_ALPHANUMERIC.sub("", name.lower())


class ConsentMapping(msgspec.Struct, frozen=True):
    """Which purposes each ``categoryPreferences`` category speaks for (keys as :func:`category_key`)."""

    categories: dict[str, tuple[str, ...]]

    @classmethod
    def from_config(cls, raw: Any) -> ConsentMapping:
        """A mapping from configuration: ``{category name: purpose or [purposes]}``."""
        if not isinstance(raw, dict):
            raise InvalidInput("consent.categories", "must map category names to purposes")
        categories: dict[str, tuple[str, ...]] = {}
        for name, target in raw.items():
            field = f"consent.categories.{name}"
            key = category_key(name) if isinstance(name, str) else ""
            if not key:
                raise InvalidInput(field, "a category name needs at least one letter or digit")
            purposes = (target,) if isinstance(target, str) else target
            if not isinstance(purposes, (list, tuple)) or not purposes:
                raise InvalidInput(field, "must name a purpose or a list of purposes")
            unknown = [p for p in purposes if p not in PURPOSES]
            if unknown:
                raise InvalidInput(field, f"unknown purpose(s) {unknown}; known: {', '.join(PURPOSES)}")
            categories[key] = tuple(sorted(set(categories.get(key, ()) + tuple(purposes))))
        return cls(categories)


DEFAULT_MAPPING = ConsentMapping.from_config(
    {
        # our own purpose names
        **{purpose: purpose for purpose in PURPOSES},
        "Email": EMAIL_MARKETING,
        "Email Marketing": EMAIL_MARKETING,
        "SMS Marketing": SMS,
        "Push": PUSH,
        "Push Notifications": PUSH,
        "SMS & Push Notifications": [SMS, PUSH],  # Segment consent manager's category
        "Personalization": PROFILING,
        "Personalisation": PROFILING,
        "Automated Decisions": PROFILING,
        "ADMT": PROFILING,
        "Advertising": SALE_SHARING,  # CCPA "sharing" is cross-context behavioural advertising
        "Targeting": SALE_SHARING,
        "Data Sharing": SALE_SHARING,
        "Sale of Personal Information": SALE_SHARING,
    }
)


class Record(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One consent value: a purpose's current value or one line of its history.

    ``at`` and ``message_id`` are the (latest) event that recorded it; ``first_at`` is the
    earliest event of an ambient span (equal to ``at`` for an explicit record).
    """

    granted: bool
    at: int
    message_id: str
    source: str
    actor: str
    explicit: bool
    first_at: int


class PurposeConsent(msgspec.Struct, frozen=True, array_like=True, gc=False, omit_defaults=True):
    """One purpose's history, and its current value when that is not the newest history line
    (only when the span holding it was dropped by the cap, so it is almost never stored)."""

    history: tuple[Record, ...]
    current_outside_history: Record | None = None

    @property
    def current(self) -> Record:
        """The latest observation: last writer wins on event time, then message id."""
        if self.current_outside_history is not None:
            return self.current_outside_history
        return max(self.history, key=_order)


class ConsentState(msgspec.Struct, frozen=True, gc=False):
    """A member's consent: one :class:`PurposeConsent` per purpose ever recorded."""

    purposes: dict[str, PurposeConsent] = msgspec.field(default_factory=dict)


class Observation(msgspec.Struct, frozen=True, gc=False):
    """One purpose's value as one event states it."""

    purpose: str
    record: Record


def _order(record: Record) -> tuple[int, str, bool, bool, str, str]:
    """Last writer wins on event time, then message id; an explicit record beats an ambient one."""
    return (record.at, record.message_id, record.explicit, record.granted, record.source, record.actor)


def _history_order(record: Record) -> tuple[int, int, str, bool, bool, str, str]:
    return (record.first_at, *_order(record))


def _label(value: Any, fallback: str) -> str:
    if not isinstance(value, str) or not value.strip():
        return fallback
    return value.strip()[:MAX_LABEL_CHARS]


def consent_observations(event: DecodedEvent, mapping: ConsentMapping = DEFAULT_MAPPING) -> list[Observation]:
    """Every consent value ``event`` states: an explicit record and/or the ambient categories.

    A malformed ``Consent Updated`` (unknown purpose, non-boolean ``granted``) states
    nothing. When two categories of one event disagree about a purpose, the refusal wins.
    """
    found: list[Observation] = []
    if event.event == CONSENT_EVENT and event.type == "track":
        props = event.properties
        purpose, granted = props.get("purpose"), props.get("granted")
        if purpose in PURPOSES and isinstance(granted, bool):
            source = _label(props.get("source"), event.channel or "api")
            actor = _label(props.get("actor"), MEMBER_ACTOR)
            record = Record(granted, event.timestamp, event.message_id, source, actor, True, event.timestamp)
            found.append(Observation(purpose, record))
    preferences = event.consent.get("categoryPreferences") if event.consent else None
    if isinstance(preferences, dict) and preferences:
        values: dict[str, bool] = {}
        for name, granted in preferences.items():
            if not isinstance(granted, bool) or not isinstance(name, str):
                continue
            for purpose in mapping.categories.get(category_key(name), ()):
                values[purpose] = values.get(purpose, True) and granted
        source = _label(event.channel, "unknown")
        for purpose in sorted(values):
            record = Record(
                values[purpose], event.timestamp, event.message_id, source, MEMBER_ACTOR, False, event.timestamp
            )
            found.append(Observation(purpose, record))
    return found


def _combine(current: Iterable[Record], history: Iterable[Record]) -> PurposeConsent:
    """The join of records: the latest as current, the newest explicit ones, the first spans."""
    explicit: dict[str, Record] = {}
    spans: dict[tuple[bool, str, str], Record] = {}
    for record in history:
        if record.explicit:
            held = explicit.get(record.message_id)
            if held is None or _order(record) > _order(held):
                explicit[record.message_id] = record
            continue
        key = (record.granted, record.source, record.actor)
        held = spans.get(key)
        if held is None:
            spans[key] = record
        else:
            latest = record if (record.at, record.message_id) > (held.at, held.message_id) else held
            first_at = min(record.first_at, held.first_at)
            spans[key] = latest if latest.first_at == first_at else msgspec.structs.replace(latest, first_at=first_at)
    kept = sorted(explicit.values(), key=_order)[-MAX_EXPLICIT:]
    kept.extend(spans[key] for key in sorted(spans)[:MAX_AMBIENT])
    history_kept = tuple(sorted(kept, key=_history_order))
    latest = max(current, key=_order)
    if _order(max(kept, key=_order)) == _order(latest):
        return PurposeConsent(history_kept)
    return PurposeConsent(history_kept, msgspec.structs.replace(latest, first_at=latest.at))


def _join(a: PurposeConsent, b: PurposeConsent) -> PurposeConsent:
    return _combine((a.current, b.current), a.history + b.history)


def record_consent(state: ConsentState, observations: Iterable[Observation]) -> ConsentState:
    """``state`` with ``observations`` recorded; recording one twice changes nothing."""
    new: dict[str, list[Record]] = {}
    for observation in observations:
        new.setdefault(observation.purpose, []).append(observation.record)
    if not new:
        return state
    purposes = dict(state.purposes)
    for purpose, records in new.items():
        held = purposes.get(purpose)
        if held is None:
            purposes[purpose] = _combine(records, records)
        else:
            purposes[purpose] = _combine((held.current, *records), held.history + tuple(records))
    return ConsentState(purposes)


def fold_consent(
    state: ConsentState, events: Iterable[DecodedEvent], mapping: ConsentMapping = DEFAULT_MAPPING
) -> ConsentState:
    """``state`` after the consent ``events`` state; events without consent cost one check."""
    observations: list[Observation] = []
    for event in events:
        if event.consent or event.event == CONSENT_EVENT:
            observations.extend(consent_observations(event, mapping))
    return record_consent(state, observations)


def merge_consent(first: ConsentState, second: ConsentState) -> ConsentState:
    """The consent of two merged members: what folding both members' events would give."""
    purposes = dict(first.purposes)
    for purpose, held in second.purposes.items():
        mine = purposes.get(purpose)
        purposes[purpose] = held if mine is None else _join(mine, held)
    return ConsentState(purposes)


class DefaultPolicy(msgspec.Struct, frozen=True):
    """Whether each purpose is allowed for a member who has recorded nothing about it."""

    name: str
    defaults: dict[str, bool]

    def __post_init__(self) -> None:
        missing = [p for p in PURPOSES if p not in self.defaults]
        if missing:
            raise InvalidInput("defaults", f"a policy must decide every purpose; missing {missing}")


# GDPR-style: every marketing channel, profiling and sharing need a prior opt-in.
GDPR_POLICY = DefaultPolicy("gdpr", dict.fromkeys(PURPOSES, False))
# CCPA-style: sale/sharing and ADMT profiling run until the person opts out; email may be
# sent until an unsubscribe (CAN-SPAM); SMS still needs prior consent (TCPA); push needs the
# app's OS permission, which the app asks for itself.
CCPA_POLICY = DefaultPolicy(
    "ccpa", {EMAIL_MARKETING: True, SMS: False, PUSH: True, PROFILING: True, SALE_SHARING: True}
)
# Regime unknown: only what both regimes allow without a record.
STRICT_POLICY = DefaultPolicy(
    "strict", {p: GDPR_POLICY.defaults[p] and CCPA_POLICY.defaults[p] for p in PURPOSES}
)
POLICIES = {"gdpr": GDPR_POLICY, "ccpa": CCPA_POLICY}


def policy_for(regime: str | None) -> DefaultPolicy:
    """The default policy of a regime (``gdpr``, ``ccpa``); None gives the strict policy."""
    if regime is None:
        return STRICT_POLICY
    policy = POLICIES.get(regime)
    if policy is None:
        raise InvalidInput("regime", f"must be one of {', '.join(POLICIES)}, got {regime!r}")
    return policy


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise InvalidInput("purpose", f"must be one of {', '.join(PURPOSES)}, got {purpose!r}")


def allowed(state: ConsentState, purpose: str, default_policy: DefaultPolicy) -> bool:
    """Whether ``purpose`` may be pursued: the member's latest recorded value, else the policy's default."""
    _check_purpose(purpose)
    held = state.purposes.get(purpose)
    return default_policy.defaults[purpose] if held is None else held.current.granted


def allowed_purposes(state: ConsentState, default_policy: DefaultPolicy) -> dict[str, bool]:
    """``{purpose: allowed}`` for every purpose (what the dispatcher's consent lookup answers)."""
    return {purpose: allowed(state, purpose, default_policy) for purpose in PURPOSES}


def purpose_for_channel(channel: str) -> str | None:
    """The purpose a destination channel needs (``email`` -> ``email_marketing``), or None."""
    return CHANNEL_PURPOSES.get(channel.strip().lower())


def _record_view(record: Record) -> dict[str, Any]:
    view: dict[str, Any] = {
        "granted": record.granted,
        "at": format_time(record.at),
        "source": record.source,
        "actor": record.actor,
        "message_id": record.message_id,
        "kind": "explicit" if record.explicit else "ambient",
    }
    if record.first_at != record.at:
        view["first_at"] = format_time(record.first_at)
    return view


def consent_view(state: ConsentState, default_policy: DefaultPolicy) -> dict[str, Any]:
    """Every purpose, JSON-ready: recorded value (or null), whether allowed, and the history."""
    view: dict[str, Any] = {}
    for purpose in PURPOSES:
        held = state.purposes.get(purpose)
        view[purpose] = {
            "allowed": allowed(state, purpose, default_policy),
            "default": default_policy.defaults[purpose],
            "granted": None if held is None else held.current.granted,
            "current": None if held is None else _record_view(held.current),
            "history": [] if held is None else [_record_view(r) for r in held.history],
        }
    return view


def consent_to_builtins(state: ConsentState) -> dict[str, Any]:
    """The state as plain lists and dicts (for ``Profile.consent``)."""
    result: dict[str, Any] = msgspec.to_builtins(state.purposes)
    return result


def consent_from_builtins(data: Mapping[str, Any]) -> ConsentState:
    """The state stored by :func:`consent_to_builtins`."""
    return ConsentState(msgspec.convert(dict(data), dict[str, PurposeConsent]))


class ConsentUpdate(msgspec.Struct, frozen=True):
    """An explicit consent change the API was asked to record."""

    purpose: str
    granted: bool
    source: str = "api"


def parse_consent_update(body: Any) -> ConsentUpdate:
    """Validate ``{"purpose": ..., "granted": true|false, "source"?: ...}``; InvalidInput names the field."""
    if not isinstance(body, dict):
        raise InvalidInput("", "the body must be a JSON object")
    unknown = sorted(set(body) - {"purpose", "granted", "source"})
    if unknown:
        raise InvalidInput(unknown[0], "unknown field")
    purpose = body.get("purpose")
    if not isinstance(purpose, str):
        raise InvalidInput("purpose", f"is required, one of {', '.join(PURPOSES)}")
    _check_purpose(purpose)
    granted = body.get("granted")
    if not isinstance(granted, bool):
        raise InvalidInput("granted", "is required, true or false")
    source = body.get("source", "api")
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_LABEL_CHARS:
        raise InvalidInput("source", f"must be a non-empty string of at most {MAX_LABEL_CHARS} characters")
    return ConsentUpdate(purpose, granted, source.strip())


def consent_update_call(
    update: ConsentUpdate,
    *,
    actor: str,
    at_ms: int,
    message_id: str,
    user_id: str | None = None,
    anonymous_id: str | None = None,
) -> dict[str, Any]:
    """The Segment track call that records ``update`` in the event log (append it through ingest)."""
    if user_id is None and anonymous_id is None:
        raise InvalidInput("userId", "userId or anonymousId is required")
    call: dict[str, Any] = {
        "type": "track",
        "event": CONSENT_EVENT,
        "messageId": message_id,
        "timestamp": format_time(at_ms),
        "properties": {
            "purpose": update.purpose,
            "granted": update.granted,
            "source": update.source,
            "actor": actor[:MAX_LABEL_CHARS],
        },
    }
    if user_id is not None:
        call["userId"] = user_id
    if anonymous_id is not None:
        call["anonymousId"] = anonymous_id
    return call
