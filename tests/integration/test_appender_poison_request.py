"""A request that makes normalising fail unexpectedly (a bug) fails alone: the writer stores the
rest of its group and lives on, instead of dying and failing every request it held with 503."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.core import events as core_events
from loyalty_cdp.services import appender
from loyalty_cdp.services.appender import Stored, WriterBug

NOW = 1_767_323_045_678


def call(message_id: str) -> bytes:
    return f'{{"userId": "ann", "event": "Order Completed", "messageId": "{message_id}"}}'.encode()


def test_a_poison_request_fails_alone_and_the_group_is_written(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def normalise_request(body: bytes, **kwargs: object) -> tuple[list[core_events.Event], list[core_events.Rejection]]:
        if b"poison" in body:
            raise OverflowError("date value out of range")
        return core_events.normalise_request(body, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(appender, "normalise_request", normalise_request)
    log = SqliteEventLog(tmp_path / "events.db")
    try:
        group = [appender._Calls("track", call(name), NOW, False) for name in ("first", "poison", "last")]
        reply = appender._write_group(log, None, group)
        assert reply.failure is None
        first, poison, last = reply.outcomes
        assert first == Stored(1, 0, []) and last == Stored(1, 0, [])
        assert isinstance(poison, appender._Refused) and poison.internal
        assert isinstance(poison.error(), WriterBug)
        assert "OverflowError" in str(poison.error())
        assert [event.message_id for event in log.read(0, 10)] == ["first", "last"]
    finally:
        log.close()
