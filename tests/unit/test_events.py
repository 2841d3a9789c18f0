"""Normalisation of Segment calls: validation, skew correction, canonical body, payload hash."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.events import MAX_EVENT_BYTES, format_time, normalise, parse_time
from loyalty_cdp.errors import InvalidInput, PayloadTooLarge

NOW = parse_time("2026-11-22T12:00:00Z", "t")


def norm(call: object, call_type: str | None = "track", **kw: object) -> object:
    return normalise(call, call_type=call_type, received_at=NOW, default_message_id="gen-1", **kw)  # type: ignore[arg-type]


def test_time_round_trip() -> None:
    assert format_time(parse_time("2026-01-02T03:04:05.678Z", "t")) == "2026-01-02T03:04:05.678Z"
    assert parse_time("2026-01-02T03:04:05+01:00", "t") == parse_time("2026-01-02T02:04:05Z", "t")


def test_skew_correction_uses_received_minus_sent() -> None:
    event = norm({"userId": "u", "event": "E", "timestamp": "2026-11-22T12:59:00Z",
                  "sentAt": "2026-11-22T13:00:00Z"})
    assert event.timestamp == NOW - 60_000
    body = msgspec.json.decode(event.body)
    assert body["originalTimestamp"] == "2026-11-22T12:59:00.000Z"
    assert body["timestamp"] == "2026-11-22T11:59:00.000Z"


def test_batch_sent_at_applies_when_the_call_has_none() -> None:
    event = norm({"userId": "u", "event": "E", "timestamp": "2026-11-22T12:59:00Z"},
                 batch_sent_at=parse_time("2026-11-22T13:00:00Z", "t"))
    assert event.timestamp == NOW - 60_000


def test_no_timestamp_means_received_at_and_generated_message_id() -> None:
    event = norm({"anonymousId": "a", "event": "E"})
    assert event.timestamp == NOW and event.message_id == "gen-1"
    assert event.user_id is None and event.anonymous_id == "a"


def test_numeric_user_id_becomes_a_string_and_channel_is_kept() -> None:
    event = norm({"userId": 42, "event": "E", "context": {"channel": "pos"}})
    assert event.user_id == "42" and event.channel == "pos"


def test_server_fields_are_not_trusted() -> None:
    event = norm({"userId": "u", "event": "E", "writeKey": "secret", "receivedAt": "1999-01-01T00:00:00Z"})
    body = msgspec.json.decode(event.body)
    assert "writeKey" not in body and body["receivedAt"] == format_time(NOW)


@pytest.mark.parametrize(("call", "call_type", "field"), [
    ({"event": "E"}, "track", "userId"),
    ({"userId": "u"}, "track", "event"),
    ({"userId": "u", "event": "  "}, "track", "event"),
    ({"userId": "u"}, "group", "groupId"),
    ({"userId": "u"}, "alias", "previousId"),
    ({"anonymousId": "a", "previousId": "p"}, "alias", "userId"),
    ({"userId": "u", "type": "fly"}, None, "type"),
    ({"userId": "u", "event": "E", "messageId": 7}, "track", "messageId"),
    ({"userId": "u", "event": "E", "context": {"channel": 3}}, "track", "context.channel"),
    ({"userId": "u", "event": "E", "traits": "x"}, "track", "traits"),
    ({"userId": "u", "event": "E", "sentAt": "soon"}, "track", "sentAt"),
    ({"userId": "u", "name": 5}, "page", "name"),
    ({"userId": "u\x00", "event": "E"}, "track", "userId"),
    ({"userId": "u", "event": "E\x00"}, "track", "event"),
    ({"userId": "u", "event": "E", "messageId": "m\x00"}, "track", "messageId"),
    ({"userId": "u", "event": "E", "context": {"channel": "pos\x00"}}, "track", "context.channel"),
    ({"userId": "u", "event": "E", "properties": {"x": "\ud800"}}, "track", ""),
])
def test_invalid_calls_name_the_field(call: dict, call_type: str | None, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        norm(call, call_type)
    assert info.value.field == field


def test_oversize_event() -> None:
    with pytest.raises(PayloadTooLarge):
        norm({"userId": "u", "event": "E", "properties": {"x": "y" * MAX_EVENT_BYTES}})


def test_payload_hash_ignores_retry_fields_only() -> None:
    a = norm({"userId": "u", "event": "E", "messageId": "m", "sentAt": "2026-11-22T12:00:00Z"})
    b = norm({"userId": "u", "event": "E", "messageId": "m", "sentAt": "2026-11-22T12:00:09Z"})
    c = norm({"userId": "u", "event": "F", "messageId": "m"})
    assert a.payload_hash == b.payload_hash != c.payload_hash


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["userId", "anonymousId", "event", "type", "messageId", "timestamp",
                                        "sentAt", "context", "properties", "traits", "name", "groupId",
                                        "previousId"]), json_values, max_size=8),
       st.sampled_from([None, "track", "identify", "page", "screen", "group", "alias"]))
def test_any_json_either_normalises_or_raises_invalid_input(call: dict, call_type: str | None) -> None:
    try:
        event = norm(call, call_type)
    except InvalidInput as exc:
        assert exc.field is not None and exc.reason
    else:
        assert event.user_id or event.anonymous_id
        assert msgspec.json.decode(event.body)["messageId"] == event.message_id
