"""Segment Entered/Exited events do not move the time memberships are evaluated at.

They carry the time of the evaluation that produced them, which may be older than the
member's latest event. Evaluating memberships at it again went back in time: a member who
entered ``new-members`` on their first day and left it a month later re-entered on reading
the old ``Segment Entered`` event, left again on reading the ``Segment Exited`` one, and so on
for ever, each flip a new event in the log. Found by the lookup benchmark's server, whose log
kept growing by about 500 segment events per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loyalty_cdp.adapters.decisionstore import DecisionStore
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.bootstrap import open_program
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.core.segments import LoyaltyReader
from loyalty_cdp.services.decisioning_stage import DecisioningStage
from loyalty_cdp.services.processor import Processor
from loyalty_cdp.settings import Settings

NOW_MS = parse_time("2026-03-01T00:00:00Z", "now")


def order(number: int, timestamp: str) -> dict[str, Any]:
    return {"type": "track", "userId": "u-1", "messageId": f"o-{number}", "event": "Order Completed",
            "timestamp": timestamp, "properties": {"order_id": f"o-{number}", "total": 20.0, "currency": "USD",
                                                   "products": [{"product_id": "p-1", "category": "Coffee",
                                                                 "price": 20.0, "quantity": 1}]}}


CALLS: list[dict[str, Any]] = [
    {"type": "identify", "userId": "u-1", "messageId": "i-1", "timestamp": "2026-01-01T17:01:38Z",
     "traits": {"email": "u1@example.com"}},
    order(1, "2026-01-02T10:00:00Z"),  # the first order: new for 30 days
    order(2, "2026-02-03T12:30:50Z"),  # 32 days later: no longer new
]


def test_reading_old_segment_events_one_at_a_time_changes_no_membership(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "timestamp"),
                          default_message_id=c["messageId"]) for c in CALLS])
    book, decisioning = open_program(Settings.from_env(data_dir=tmp_path))
    decisions = DecisionStore(Outbox(tmp_path / "outbox.db"))
    scores = ScoreStore(tmp_path)
    store = SqliteProfileStore(tmp_path / "profiles.db")
    stage = DecisioningStage(decisioning, LoyaltyReader(book), decisions, lambda: NOW_MS, scores=scores)
    # One event a step: every emitted segment event is read back on its own, as small server steps do.
    processor = Processor(log, store, loyalty=LoyaltyEngine(book), decisioning=stage, batch_size=1)
    steps = 0
    while processor.step() and steps < 200:
        steps += 1
    assert steps < 200, "the processor kept emitting segment events"
    segment_events = [e for e in log.read(0, 1_000) if e.channel == "segments"]
    new_members = [e.event for e in segment_events if b'"new-members"' in e.body]
    assert new_members == ["Segment Entered", "Segment Exited"]
    profile = processor.view.profile(processor.view.find("user_id", "u-1") or "")
    assert profile is not None and not profile.segments["new-members"]["member"]
    for closing in (store, scores, log):
        closing.close()
