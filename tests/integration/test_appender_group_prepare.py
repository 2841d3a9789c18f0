"""The writer prepares a group of requests as a whole: one suppression look-up for the group, each
request still answered with its own counts, events kept in request order; a request id is made
only for calls that come without a ``messageId``."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from loyalty_cdp.adapters.suppression import SuppressionList
from loyalty_cdp.core.events import normalise
from loyalty_cdp.services import appender
from loyalty_cdp.services.appender import Stored

NOW = 1_767_323_045_678


def batch(*users: str, prefix: str) -> bytes:
    calls = [{"userId": user, "type": "track", "event": "Order Completed", "messageId": f"{prefix}-{i}"}
             for i, user in enumerate(users)]
    return msgspec.json.encode({"batch": calls})


def test_suppressed_events_are_dropped_per_request_with_one_look_up(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    suppression = SuppressionList(tmp_path)
    suppression.add([("user_id", "erased")])
    looked_up: list[int] = []
    check = suppression.suppressed
    monkeypatch.setattr(suppression, "suppressed", lambda events: looked_up.append(len(events)) or check(events))
    already = normalise({"userId": "erased", "event": "Points Adjusted", "messageId": "cmd"}, call_type="track",
                        received_at=NOW, default_message_id="x")
    group = [
        appender._Calls(None, batch("ann", "erased", "bob", prefix="a"), NOW, False),
        appender._Calls(None, b"not json", NOW, False),
        appender._Events([already]),  # normalised elsewhere: not the ingest's to filter
        appender._Calls(None, batch("erased", "erased", prefix="b"), NOW, False),
        appender._Calls("track", b'{"userId": "cid", "event": "E", "messageId": "c-0"}', NOW, False),
    ]
    try:
        outcomes, events = appender._prepare_group(suppression, group)
    finally:
        suppression.close()
    assert looked_up == [6]
    first, refused, commands, erased, single = outcomes
    assert first == Stored(2, 1, []) and erased == Stored(0, 2, []) and single == Stored(1, 0, [])
    assert commands == Stored(1, 0, [])
    assert isinstance(refused, appender._Refused) and refused.field == "body"
    assert [event.message_id for event in events] == ["a-0", "a-2", "cmd", "c-0"]


def test_a_request_id_is_made_only_for_calls_without_a_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def new_request_id() -> str:
        made.append(f"req-{len(made)}")
        return made[-1]

    monkeypatch.setattr(appender, "_new_request_id", new_request_id)
    with_ids = batch("ann", "bob", prefix="m")
    without = msgspec.json.encode({"batch": [{"userId": "ann", "type": "identify"},
                                             {"userId": "bob", "type": "identify", "messageId": "own"},
                                             {"userId": "cy", "type": "identify"}]})
    group = [appender._Calls(None, with_ids, NOW, False), appender._Calls(None, without, NOW, False),
             appender._Calls("identify", b'{"userId": "dee"}', NOW, False)]
    _, events = appender._prepare_group(None, group)
    assert made == ["req-0", "req-1"]
    assert [event.message_id for event in events] == ["m-0", "m-1", "req-0-0", "own", "req-0-2", "req-1"]
