"""Consent: read from events, folded order-independently and idempotently, with history and defaults."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core import consent
from loyalty_cdp.core.consent import (
    CCPA_POLICY,
    CONSENT_EVENT,
    DEFAULT_MAPPING,
    EMAIL_MARKETING,
    GDPR_POLICY,
    MAX_AMBIENT,
    MAX_EXPLICIT,
    PROFILING,
    PURPOSES,
    PUSH,
    SALE_SHARING,
    SMS,
    STRICT_POLICY,
    ConsentMapping,
    ConsentState,
    allowed,
    allowed_purposes,
    consent_from_builtins,
    consent_observations,
    consent_to_builtins,
    consent_update_call,
    consent_view,
    fold_consent,
    merge_consent,
    parse_consent_update,
    policy_for,
    purpose_for_channel,
)
from loyalty_cdp.core.events import normalise
from loyalty_cdp.core.identifiers import DecodedEvent, decode_event
from loyalty_cdp.errors import InvalidInput

EMPTY = ConsentState()


def ambient(message_id: str, at: int, preferences: dict[str, Any], channel: str | None = "web") -> DecodedEvent:
    return DecodedEvent(message_id, "page", None, "u1", None, at, channel,
                        consent={"categoryPreferences": preferences})


def explicit(message_id: str, at: int, purpose: str, granted: Any, source: str = "api",
             actor: str = "key:k1") -> DecodedEvent:
    props = {"purpose": purpose, "granted": granted, "source": source, "actor": actor}
    return DecodedEvent(message_id, "track", CONSENT_EVENT, "u1", None, at, None, properties=props)


def test_segment_categories_map_to_purposes() -> None:
    event = ambient("m1", 1000, {"Advertising": False, "SMS & Push Notifications": True, "Analytics": True,
                                 "Email": "yes"})
    found = {o.purpose: o.record for o in consent_observations(event)}
    assert set(found) == {SALE_SHARING, SMS, PUSH}
    assert found[SALE_SHARING].granted is False and found[SMS].granted is True
    record = found[SMS]
    assert (record.at, record.message_id, record.source, record.actor, record.explicit) == (1000, "m1", "web", "member", False)


def test_conflicting_categories_in_one_event_refuse() -> None:
    event = ambient("m1", 1000, {"Push": True, "SMS & Push Notifications": False})
    state = fold_consent(EMPTY, [event])
    assert allowed(state, PUSH, CCPA_POLICY) is False


def test_explicit_consent_updated_is_recorded_and_malformed_ones_are_ignored() -> None:
    state = fold_consent(EMPTY, [
        explicit("m1", 1000, EMAIL_MARKETING, True, source="preference_center", actor="member"),
        explicit("m2", 1001, "newsletters", True),
        explicit("m3", 1002, SMS, "true"),
    ])
    assert set(state.purposes) == {EMAIL_MARKETING}
    current = state.purposes[EMAIL_MARKETING].current
    assert (current.granted, current.source, current.actor, current.explicit) == (True, "preference_center", "member", True)


def test_last_writer_wins_on_event_time_then_message_id() -> None:
    late_refusal = explicit("a", 2000, SALE_SHARING, False)
    early_grant = explicit("b", 1000, SALE_SHARING, True)
    tie_high_id = explicit("z", 3000, PROFILING, True)
    tie_low_id = explicit("y", 3000, PROFILING, False)
    for events in ([late_refusal, early_grant, tie_high_id, tie_low_id], [tie_low_id, early_grant, tie_high_id, late_refusal]):
        state = fold_consent(EMPTY, events)
        assert allowed(state, SALE_SHARING, CCPA_POLICY) is False
        assert allowed(state, PROFILING, GDPR_POLICY) is True


def test_repeated_ambient_values_are_one_span_and_changes_stay_in_history() -> None:
    events = [ambient(f"m{t}", t, {"Advertising": True}) for t in (100, 200, 300)]
    events.append(ambient("m400", 400, {"Advertising": False}))
    events.append(explicit("m500", 500, SALE_SHARING, True, source="privacy_request", actor="key:k9"))
    state = fold_consent(EMPTY, events)
    history = state.purposes[SALE_SHARING].history
    assert [(r.granted, r.first_at, r.at, r.explicit) for r in history] == [
        (True, 100, 300, False), (False, 400, 400, False), (True, 500, 500, True),
    ]
    assert history[0].message_id == "m300"
    assert state.purposes[SALE_SHARING].current == history[-1]
    assert state.purposes[SALE_SHARING].current_outside_history is None  # not stored twice


def test_history_is_bounded() -> None:
    events = [explicit(f"e{i:03d}", i, SMS, i % 2 == 0) for i in range(MAX_EXPLICIT + 15)]
    events += [ambient(f"a{i:03d}", 10_000 + i, {"SMS": True}, channel=f"channel{i:02d}") for i in range(MAX_AMBIENT + 5)]
    history = fold_consent(EMPTY, events).purposes[SMS].history
    assert sum(r.explicit for r in history) == MAX_EXPLICIT
    assert sum(not r.explicit for r in history) == MAX_AMBIENT
    assert min(r.at for r in history if r.explicit) == 15  # the newest explicit records are kept
    held = fold_consent(EMPTY, events).purposes[SMS]
    # the latest observation came from a channel whose span the cap dropped: kept on its own
    assert held.current.at == 10_000 + MAX_AMBIENT + 4 and held.current_outside_history == held.current


def test_a_capped_span_never_comes_back_partial() -> None:
    """Spans are kept by key, not by time: a key evicted by newer ones would return with a wrong first_at."""
    first, other, again = (ambient("m1", 1, {"Push": True}, "web"), ambient("m2", 3, {"Push": True}, "app"),
                           ambient("m3", 5, {"Push": True}, "web"))
    with caps(MAX_EXPLICIT, 1):
        one_by_one = fold_consent(fold_consent(fold_consent(EMPTY, [first]), [other]), [again])
        assert one_by_one == fold_consent(EMPTY, [first, again, other])


def test_defaults_per_regime() -> None:
    assert not any(allowed(EMPTY, p, GDPR_POLICY) for p in PURPOSES)
    assert allowed(EMPTY, SALE_SHARING, CCPA_POLICY) and allowed(EMPTY, PROFILING, CCPA_POLICY)
    assert not allowed(EMPTY, SMS, CCPA_POLICY)
    assert STRICT_POLICY.defaults == dict.fromkeys(PURPOSES, False)
    assert policy_for("ccpa") is CCPA_POLICY and policy_for(None) is STRICT_POLICY
    opted_out = fold_consent(EMPTY, [explicit("m1", 1, SALE_SHARING, False)])
    assert not allowed(opted_out, SALE_SHARING, CCPA_POLICY)
    assert allowed_purposes(opted_out, CCPA_POLICY) == {
        EMAIL_MARKETING: True, SMS: False, PUSH: True, PROFILING: True, SALE_SHARING: False,
    }
    opted_in = fold_consent(EMPTY, [explicit("m1", 1, EMAIL_MARKETING, True)])
    assert allowed(opted_in, EMAIL_MARKETING, GDPR_POLICY)
    with pytest.raises(InvalidInput) as error:
        policy_for("lgpd")
    assert error.value.field == "regime"
    with pytest.raises(InvalidInput) as error:
        allowed(EMPTY, "telepathy", GDPR_POLICY)
    assert error.value.field == "purpose"


def test_mapping_is_configurable() -> None:
    mapping = ConsentMapping.from_config({"C0004": "sale_sharing", "C0003": ["profiling", "push"]})
    event = ambient("m1", 1, {"C0004": False, "C0003": True, "Advertising": True})
    assert {o.purpose: o.record.granted for o in consent_observations(event, mapping)} == {
        SALE_SHARING: False, PROFILING: True, PUSH: True,
    }
    with pytest.raises(InvalidInput) as error:
        ConsentMapping.from_config({"C0004": "selling"})
    assert error.value.field == "consent.categories.C0004"
    with pytest.raises(InvalidInput):
        ConsentMapping.from_config({"--": "sms"})
    assert DEFAULT_MAPPING.categories["emailmarketing"] == (EMAIL_MARKETING,)


def test_channels_name_their_purpose() -> None:
    assert purpose_for_channel("Email") == EMAIL_MARKETING
    assert purpose_for_channel("retail_media") == SALE_SHARING
    assert purpose_for_channel("on_site") is None


def test_builtins_round_trip_through_msgpack() -> None:
    state = fold_consent(EMPTY, [ambient("m1", 5, {"Advertising": False}), explicit("m2", 6, SMS, True)])
    stored = msgspec.msgpack.encode(consent_to_builtins(state))
    assert consent_from_builtins(msgspec.msgpack.decode(stored)) == state
    assert len(stored) < 100


def test_view_is_json_ready() -> None:
    state = fold_consent(EMPTY, [explicit("m2", 1_767_225_600_000, SMS, True)])
    view = consent_view(state, GDPR_POLICY)
    assert set(view) == set(PURPOSES)
    assert view[SMS]["allowed"] is True and view[SMS]["current"]["at"] == "2026-01-01T00:00:00.000Z"
    assert view[PUSH] == {"allowed": False, "default": False, "granted": None, "current": None, "history": []}
    msgspec.json.encode(view)


def test_api_update_round_trips_through_ingest_and_the_fold() -> None:
    update = parse_consent_update({"purpose": "sale_sharing", "granted": False, "source": "preference_center"})
    call = consent_update_call(update, actor="key:abc123", at_ms=1_767_225_600_000, message_id="c-1", user_id="u1")
    event = decode_event(normalise(call, call_type=None, received_at=1_767_225_600_500, default_message_id="x"))
    state = fold_consent(EMPTY, [event])
    current = state.purposes[SALE_SHARING].current
    assert (current.granted, current.source, current.actor, current.message_id) == (False, "preference_center", "key:abc123", "c-1")
    with pytest.raises(InvalidInput):
        consent_update_call(update, actor="a", at_ms=1, message_id="m")


@pytest.mark.parametrize(("body", "field"), [
    ([], ""),
    ({"granted": True}, "purpose"),
    ({"purpose": "spam", "granted": True}, "purpose"),
    ({"purpose": "sms"}, "granted"),
    ({"purpose": "sms", "granted": 1}, "granted"),
    ({"purpose": "sms", "granted": True, "source": ""}, "source"),
    ({"purpose": "sms", "granted": True, "colour": "red"}, "colour"),
])
def test_bad_consent_updates_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_consent_update(body)
    assert error.value.field == field


# ---- invariants: any order, any batching, any duplicates give the same state ----

@contextmanager
def caps(explicit_entries: int, ambient_entries: int) -> Iterator[None]:
    """Small history caps, so that short event lists exercise eviction."""
    with patch.object(consent, "MAX_EXPLICIT", explicit_entries), patch.object(consent, "MAX_AMBIENT", ambient_entries):
        yield


_purpose = st.sampled_from(PURPOSES)
_category = st.sampled_from(["Advertising", "Email", "SMS & Push Notifications", "Push", "Personalization", "Analytics"])


@st.composite
def consent_events(draw: st.DrawFn) -> DecodedEvent:
    message_id = draw(st.sampled_from([f"m{i}" for i in range(30)]))
    at = draw(st.integers(0, 12))  # few distinct times: ties are common
    if draw(st.booleans()):
        return explicit(message_id, at, draw(_purpose), draw(st.booleans()),
                        source=draw(st.sampled_from(["api", "pos", "privacy_request"])),
                        actor=draw(st.sampled_from(["member", "key:a", "key:b"])))
    preferences = draw(st.dictionaries(_category, st.booleans(), min_size=1, max_size=4))
    return ambient(message_id, at, preferences, channel=draw(st.sampled_from(["web", "app", None])))


_event_lists = st.lists(consent_events(), max_size=40)


@settings(max_examples=150, deadline=None)
@given(events=_event_lists, seed=st.integers(0, 2**32 - 1), small_caps=st.booleans())
def test_fold_is_order_and_batch_independent(events: list[DecodedEvent], seed: int, small_caps: bool) -> None:
    with caps(1 if small_caps else consent.MAX_EXPLICIT, 1 if small_caps else consent.MAX_AMBIENT):
        check_order_and_batch_independence(events, seed)


def check_order_and_batch_independence(events: list[DecodedEvent], seed: int) -> None:
    whole = fold_consent(EMPTY, events)
    rng = random.Random(seed)
    shuffled = events[:]
    rng.shuffle(shuffled)
    state = EMPTY
    start = 0
    while start < len(shuffled):
        size = rng.randint(1, 5)
        state = fold_consent(state, shuffled[start:start + size])
        start += size
    assert state == whole


@settings(max_examples=150, deadline=None)
@given(events=_event_lists, repeats=st.lists(st.integers(0, 39), max_size=20))
def test_fold_is_idempotent(events: list[DecodedEvent], repeats: list[int]) -> None:
    once = fold_consent(EMPTY, events)
    assert fold_consent(once, events) == once
    duplicates = [events[i] for i in repeats if i < len(events)]
    assert fold_consent(EMPTY, events + duplicates) == once


@settings(max_examples=150, deadline=None)
@given(first=_event_lists, second=_event_lists, small_caps=st.booleans())
def test_merge_equals_folding_both_members_events(
    first: list[DecodedEvent], second: list[DecodedEvent], small_caps: bool
) -> None:
    with caps(1 if small_caps else consent.MAX_EXPLICIT, 1 if small_caps else consent.MAX_AMBIENT):
        a, b = fold_consent(EMPTY, first), fold_consent(EMPTY, second)
        both = fold_consent(EMPTY, first + second)
        assert merge_consent(a, b) == both == merge_consent(b, a)
        assert merge_consent(both, a) == both


@settings(max_examples=150, deadline=None)
@given(events=_event_lists)
def test_current_value_is_the_latest_observation(events: list[DecodedEvent]) -> None:
    state = fold_consent(EMPTY, events)
    latest: dict[str, tuple[Any, ...]] = {}
    for event in events:
        for observation in consent_observations(event):
            r = observation.record
            key = (r.at, r.message_id, r.explicit, r.granted, r.source, r.actor)
            latest[observation.purpose] = max(latest.get(observation.purpose, key), key)
    assert {p: (c.current.at, c.current.message_id, c.current.granted) for p, c in state.purposes.items()} == {
        p: (k[0], k[1], k[3]) for p, k in latest.items()
    }
