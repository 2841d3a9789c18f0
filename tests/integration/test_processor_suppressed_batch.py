"""The processor leaves out events carrying an erased person's identifier, whichever identifier it is;
a batch whose every event belongs to an erased person still moves it on: catching up (``loyalty-cdp
replay`` included) does not stop there."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.suppression import SuppressionList
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.identity import IdentityRules
from loyalty_cdp.services.processor import Processor


def identify(user_id: str, n: int, **traits: str) -> dict[str, object]:
    return {"type": "identify", "userId": user_id, "messageId": f"{user_id}-{n}",
            "timestamp": f"2026-05-01T09:00:0{n}Z", "traits": {"first_name": user_id, **traits}}


def append(log: SqliteEventLog, calls: list[dict[str, object]]) -> None:
    log.append([normalise(c, call_type=None, received_at=parse_time(str(c["timestamp"]), "timestamp"),
                          default_message_id=str(c["messageId"])) for c in calls])


def test_catch_up_goes_past_a_batch_of_suppressed_events(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    append(log, [identify("u-gone", n) for n in range(3)] + [identify("u-kept", n) for n in range(3)])
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


def test_an_event_carrying_an_erased_email_or_phone_is_left_out_whatever_its_user_id(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    append(log, [identify("u-new-id", 1, email="Gone@Example.com"),  # the erased person under another id
                 identify("u-other", 2, phone="(415) 555-0100"),  # the erased phone, written another way
                 identify("u-kept", 3, email="kept@example.com")])
    suppression = SuppressionList(tmp_path)
    suppression.add([("email", "gone@example.com"), ("phone", "+14155550100")])
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, suppression=suppression)
    assert processor.catch_up() == 3
    assert processor.view.find("user_id", "u-kept") is not None
    assert processor.view.find("user_id", "u-new-id") is None
    assert processor.view.find("user_id", "u-other") is None
    assert len(processor.view) == 1
    store.close()
    suppression.close()
    log.close()


def test_a_suppression_list_normalising_phones_for_another_region_is_refused(tmp_path: Path) -> None:
    suppression = SuppressionList(tmp_path, default_region="GB")
    store = SqliteProfileStore(tmp_path / "profiles.db")
    with pytest.raises(ValueError, match="GB"):
        Processor(SqliteEventLog(tmp_path / "events.db"), store, IdentityRules(default_region="US"),
                  suppression=suppression)
    store.close()
    suppression.close()
