"""The cheaper ways normalising takes give what the plain ones give: exact epoch milliseconds, a body
spliced byte for byte as the encoder writes it, and request ids made only for calls without one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from loyalty_cdp.core.events import normalise, normalise_request, parse_time

NOW = 1_767_323_045_678  # 2026-01-02T03:04:05.678Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
       st.integers(-1439, 1439))
def test_parse_time_is_the_exact_floor_of_milliseconds(moment: datetime, offset_minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert parse_time(aware.isoformat(), "t") == (aware - EPOCH) // timedelta(milliseconds=1)
    assert parse_time(moment.isoformat(), "t") == (moment.replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


@given(st.sampled_from([None, "2026-01-02T03:04:00Z", "2026-01-02T03:04:05.678Z"]),
       st.sampled_from([None, "2026-01-02T03:00:00Z", "2026-01-02T03:04:05.678Z"]),
       st.sampled_from([None, "2026-01-02T02:00:00.5Z"]),
       st.text(max_size=6))
def test_the_body_is_the_encoders_bytes_of_stable_part_and_tail(timestamp: str | None, sent_at: str | None,
                                                                original: str | None, text: str) -> None:
    call: dict[str, object] = {"userId": "ann", "type": "track", "event": "E \"q\" é", "properties": {"t": text}}
    for key, value in (("timestamp", timestamp), ("sentAt", sent_at), ("originalTimestamp", original)):
        if value is not None:
            call[key] = value
    if sent_at is None and timestamp is not None:
        call["sentAt"] = None  # sent as null: kept as null
    event = normalise(call, call_type=None, received_at=NOW, default_message_id="m-1")
    decoded = msgspec.json.decode(event.body)
    stable = {key: value for key, value in decoded.items() if key not in ("timestamp", "receivedAt", "sentAt")}
    tail = {"timestamp": decoded["timestamp"], "receivedAt": "2026-01-02T03:04:05.678Z"}
    if "sentAt" in call:
        tail["sentAt"] = call["sentAt"]
    assert event.body == msgspec.json.encode({**stable, **tail})
    assert list(decoded)[-len(tail):] == list(tail)


def test_a_request_id_function_is_called_once_and_only_when_a_call_needs_it() -> None:
    made: list[int] = []

    def request_id() -> str:
        made.append(1)
        return f"req-{len(made)}"

    with_ids = msgspec.json.encode({"batch": [{"userId": "a", "type": "identify", "messageId": "x"}]})
    events, _ = normalise_request(with_ids, call_type=None, received_at=NOW, request_id=request_id)
    assert made == [] and events[0].message_id == "x"
    without = msgspec.json.encode({"batch": [{"userId": "a", "type": "identify"}, {"userId": "b", "type": "identify"}]})
    events, _ = normalise_request(without, call_type=None, received_at=NOW, request_id=request_id)
    assert made == [1] and [event.message_id for event in events] == ["req-1-0", "req-1-1"]
    events, _ = normalise_request(b'{"userId": "c"}', call_type="identify", received_at=NOW, request_id=request_id)
    assert made == [1, 1] and events[0].message_id == "req-2"
    events, _ = normalise_request(b'{"userId": "d"}', call_type="identify", received_at=NOW, request_id="plain")
    assert events[0].message_id == "plain"
