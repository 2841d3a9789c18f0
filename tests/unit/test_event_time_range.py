"""The event time range: a skew-corrected (or uncorrected) timestamp outside it is a 400 naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty_cdp.core.events import (
    FIRST_EVENT_MS,
    LAST_EVENT_MS,
    format_time,
    normalise,
    normalise_request,
    parse_time,
)
from loyalty_cdp.errors import InvalidInput

NOW = 1_767_323_045_678  # 2026-01-02T03:04:05.678Z


def track(**fields: object) -> dict:
    return {"type": "track", "userId": "ann", "event": "Order Completed", **fields}


def event_time(**fields: object) -> int:
    return normalise(track(**fields), call_type=None, received_at=NOW, default_message_id="m").timestamp


def refusal(**fields: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        normalise(track(**fields), call_type=None, received_at=NOW, default_message_id="m")
    return caught.value


def test_the_range_is_1970_to_the_end_of_2999() -> None:
    assert format_time(FIRST_EVENT_MS) == "1970-01-01T00:00:00.000Z"
    assert format_time(LAST_EVENT_MS) == "2999-12-31T23:59:59.999Z"
    assert event_time(timestamp="1970-01-01T00:00:00.000Z") == FIRST_EVENT_MS
    assert event_time(timestamp="2999-12-31T23:59:59.999Z") == LAST_EVENT_MS


def test_a_corrected_timestamp_after_the_range_names_timestamp() -> None:
    # Client clock 1,000 years slow: its event of 2999 is, in server time, after 3999.
    error = refusal(timestamp="2999-06-01T00:00:00Z", sentAt="1026-01-02T03:04:05.678Z")
    assert error.field == "timestamp"
    assert "corrected by receivedAt - sentAt" in error.reason
    assert "1026-01-02T03:04:05.678Z" in error.reason  # the sentAt that moved it
    assert "2999-12-31T23:59:59.999Z" in error.reason  # the limit


def test_a_corrected_timestamp_before_1970_names_timestamp() -> None:
    error = refusal(timestamp="1971-01-01T00:00:00Z", sentAt="2900-01-01T00:00:00Z")
    assert error.field == "timestamp"
    assert "corrected" in error.reason


def test_a_correction_past_the_year_9999_is_refused_not_crashed() -> None:
    error = refusal(timestamp="9999-12-31T00:00:00Z", sentAt="0001-01-01T00:00:00Z")
    assert error.field == "timestamp"
    assert "beyond the year 9999" in error.reason


def test_a_correction_that_brings_a_broken_clock_back_into_range_is_accepted() -> None:
    # Client clock stuck in 1960: timestamp and sentAt are both there, the event is now-ish.
    assert event_time(timestamp="1960-01-01T00:00:00Z", sentAt="1960-01-01T00:00:01Z") == NOW - 1000


def test_uncorrected_times_outside_the_range_name_their_field() -> None:
    assert refusal(timestamp="3000-01-01T00:00:00Z").field == "timestamp"
    assert refusal(timestamp="1969-12-31T23:59:59.999Z").field == "timestamp"
    assert refusal(originalTimestamp="0500-01-01T00:00:00Z").field == "originalTimestamp"


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59.999999-01:00", "0001-01-01T00:00:00+01:00"])
def test_an_offset_pushing_a_date_time_out_of_the_years_1_to_9999_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_time(text, "sentAt")
    assert caught.value.field == "sentAt"
    assert "out of range" in caught.value.reason
    assert refusal(timestamp=text).field == "timestamp"


def test_parse_time_is_exact_to_the_millisecond() -> None:
    assert parse_time("2026-01-02T03:04:05.007Z", "t") == 1_767_323_045_007
    assert parse_time("2026-01-02T04:04:05.007999+01:00", "t") == 1_767_323_045_007
    assert parse_time("1969-12-31T23:59:59.999Z", "t") == -1


def test_a_batch_rejects_only_the_event_out_of_range() -> None:
    body = (b'{"sentAt": "1000-01-01T00:00:00Z", "batch": ['
            b'{"type": "track", "userId": "a", "event": "E", "timestamp": "2990-01-01T00:00:00Z", "messageId": "x"},'
            b'{"type": "track", "userId": "a", "event": "E", "timestamp": "1000-01-01T00:00:00Z", "messageId": "y"}]}')
    events, rejections = normalise_request(body, call_type=None, received_at=NOW, request_id="r")
    assert [e.message_id for e in events] == ["y"]
    assert [(r.field, r.message_id) for r in rejections] == [("batch[0].timestamp", "x")]


_MOMENTS = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)  # years 1 to 9999


@given(client=_MOMENTS, sent=st.none() | _MOMENTS, received=st.integers(min_value=0, max_value=LAST_EVENT_MS))
def test_any_representable_times_give_an_event_in_range_or_a_400_naming_a_time_field(
    client: int, sent: int | None, received: int
) -> None:
    fields = {"timestamp": format_time(client)}
    if sent is not None:
        fields["sentAt"] = format_time(sent)
    try:
        event = normalise(track(**fields), call_type=None, received_at=received, default_message_id="m")
    except InvalidInput as error:
        assert error.field == "timestamp"
        expected = client if sent is None else client + received - sent
        assert not FIRST_EVENT_MS <= expected <= LAST_EVENT_MS
        return
    assert FIRST_EVENT_MS <= event.timestamp <= LAST_EVENT_MS
    assert event.timestamp == (client if sent is None else client + received - sent)
    assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=event.timestamp) < datetime(3000, 1, 1, tzinfo=UTC)
