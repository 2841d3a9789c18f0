"""A batch whose every event belongs to an erased person still moves the processor on: catching up
(``loyalty-cdp replay`` included) does not stop there."""

from __future__ import annotations

from pathlib import Path

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.suppression import SuppressionList
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.services.processor import Processor


def identify(user_id: str, n: int) -> dict[str, object]:
    return {"type": "identify", "userId": user_id, "messageId": f"{user_id}-{n}",
            "timestamp": f"2026-05-01T09:00:0{n}Z", "traits": {"first_name": user_id}}


def test_catch_up_goes_past_a_batch_of_suppressed_events(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    calls = [identify("u-gone", n) for n in range(3)] + [identify("u-kept", n) for n in range(3)]
    log.append([normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "timestamp"),
                          default_message_id=str(c["messageId"])) for c in calls])
    suppression = SuppressionList(tmp_path)
    suppression.add([("user_id", "u-gone")])
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, batch_size=3, suppression=suppression)
    assert processor.catch_up() == 6
    assert processor.view.find("user_id", "u-kept") is not None
    assert processor.view.find("user_id", "u-gone") is None
    assert processor.offset == log.last_offset()
    store.close()
    suppression.close()
    log.close()
