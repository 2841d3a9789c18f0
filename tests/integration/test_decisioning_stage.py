"""The decisioning stage inside the processor, over real SQLite files and simulated traffic.

Ground truth is the event log itself: every ``Tier Upgraded`` the loyalty engine emitted
must have exactly one decision of the tier-upgrade trigger, holdout members get nothing
staged, a replay from scratch decides nothing new, and a crash between storing decisions
and committing the offset sends nothing twice.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loyalty_cdp.adapters.decisionstore import DecisionStore
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.adapters.profilestore.base import Changes
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.bootstrap import open_program
from loyalty_cdp.core.decisioning import Decision
from loyalty_cdp.core.events import Event, format_time, normalise, parse_time
from loyalty_cdp.core.identifiers import decode_event
from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.core.messages import OutboundMessage, message_id_for
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.segments import LoyaltyReader
from loyalty_cdp.services.decisioning_stage import DELIVER_WITHIN_MS, DecisioningStage
from loyalty_cdp.services.processor import Processor
from loyalty_cdp.settings import Settings
from loyalty_cdp.simulator.generator import simulate

DAYS = 60
ALL_GRANTED = {"categoryPreferences": {"email_marketing": True, "sms": True, "push": True, "profiling": True}}


def traffic(members: int, seed: int) -> list[Event]:
    """A simulated program ending now, every member having granted every purpose on their first call."""
    start = (datetime.now(UTC) - timedelta(days=DAYS)).date()
    consented: set[str] = set()
    events: list[Event] = []
    for n, call in enumerate(simulate(members, DAYS, seed, start=start)):
        user = call.get("userId")
        if user and user not in consented:
            consented.add(user)
            events.append(normalise({"type": "identify", "userId": user, "timestamp": call["timestamp"],
                                     "context": {"consent": ALL_GRANTED}}, call_type=None,
                                    received_at=parse_time(call["timestamp"], "timestamp"),
                                    default_message_id=f"consent-{user}"))
        events.append(normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "timestamp"),
                                default_message_id=f"gen-{n}"))
    return events


def deliver(decision: Decision, profile: Profile) -> list[OutboundMessage]:
    """One message per sent decision on a destination named after the channel (the activation service's job)."""
    chosen = decision.chosen[0]
    return [OutboundMessage(message_id=message_id_for(decision.decision_id, chosen.channel),
                            decision_id=decision.decision_id, user_id=profile.user_id or profile.member_id,
                            destination=chosen.channel, channel="webhook", recipient="", created_at=decision.at,
                            data={"offer": chosen.offer_id})]


class Rig:
    """A processor with the example program and the decisioning stage over one data directory."""

    def __init__(self, data_dir: Path, log: SqliteEventLog, profiles: SqliteProfileStore | None = None) -> None:
        book, decisioning = open_program(Settings.from_env(data_dir=data_dir))
        self.store = DecisionStore(Outbox(data_dir / "outbox.db"))
        self.scores = ScoreStore(data_dir)
        self.stage = DecisioningStage(decisioning, LoyaltyReader(book), self.store, lambda: _now(), scores=self.scores,
                                      deliver=deliver)
        self.profiles = profiles or SqliteProfileStore(data_dir / "profiles.db")
        self.processor = Processor(log, self.profiles, loyalty=LoyaltyEngine(book), decisioning=self.stage,
                                   batch_size=700)

    def close(self) -> None:
        self.store.close()
        self.store.outbox.close()
        self.scores.close()
        self.processor.close()


def _now() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def tier_upgrades(log: SqliteEventLog) -> list[Any]:
    return [e for e in log.read(0, 10_000_000) if e.event == "Tier Upgraded"]


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return traffic(250, seed=21)


@pytest.fixture
def rig(tmp_path: Path, events: list[Event]) -> Rig:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append(events)
    rig = Rig(tmp_path, log)
    rig.processor.catch_up()
    yield rig
    rig.close()
    log.close()


def test_every_tier_upgrade_gets_exactly_one_decision_of_its_trigger(rig: Rig) -> None:
    log = rig.processor._log
    upgrades = tier_upgrades(log)
    assert len(upgrades) >= 10
    decisions = rig.store.decisions(trigger_id="tier-upgrade-welcome", limit=100_000)
    keys = Counter(d.occurrence_key for d in decisions)
    assert set(keys) == {f"event:{e.message_id}" for e in upgrades}
    assert max(keys.values()) == 1
    for decision in decisions:
        assert decision.action in ("send", "hold_out", "none")
        if decision.action != "none":
            assert decision.chosen[0].offer_id in ("tier-welcome", "surprise-upgrade")
            assert decision.chosen[0].channel in ("push", "email")


def queued_message_ids(store: DecisionStore) -> set[str]:
    with sqlite3.connect(store.outbox.path) as conn:
        return {row[0] for row in conn.execute("SELECT message_id FROM outbox_messages")}


def test_holdout_members_get_nothing_and_treated_members_get_their_message(rig: Rig) -> None:
    decisions = rig.store.decisions(limit=100_000)
    held = [d for d in decisions if d.action == "hold_out"]
    sent = [d for d in decisions if d.action == "send"]
    assert held and sent
    queued = queued_message_ids(rig.store)
    for decision in held:
        assert decision.arm == "holdout" and decision.chosen[0].grant is None
        assert message_id_for(decision.decision_id, decision.chosen[0].channel) not in queued
    # Sent decisions are delivered when fresh; a simulated occurrence older than a day is recorded, not sent.
    fresh = {message_id_for(d.decision_id, d.chosen[0].channel) for d in sent
             if _now() - (d.occurred_at or 0) <= DELIVER_WITHIN_MS - 60_000}
    stale = [d for d in sent if _now() - (d.occurred_at or 0) > DELIVER_WITHIN_MS + 60_000]
    assert fresh and stale
    assert fresh <= queued
    assert len(queued) <= len(sent) - len(stale)
    assert all("Not delivered" in d.reason for d in stale)
    granted = {decode_event(e).properties.get("decision_id") for e in rig.processor._log.read(0, 10_000_000)
               if e.event == "Offer Granted"}
    assert {d.decision_id for d in sent if d.chosen[0].grant and d not in stale} <= granted
    assert not granted & {d.decision_id for d in [*held, *stale]}


def test_segment_memberships_match_the_profiles_and_the_log(rig: Rig) -> None:
    view = rig.processor.view
    in_segments: Counter[str] = Counter()
    for member_id in view.profiles:
        profile = view.profile(member_id)
        assert profile is not None
        for segment_id, state in profile.segments.items():
            if state["member"]:
                in_segments[segment_id] += 1
    assert in_segments and dict(in_segments) == rig.store.segment_sizes()
    entered = [e for e in rig.processor._log.read(0, 10_000_000) if e.event == "Segment Entered"]
    transitions = rig.store.segment_transitions(limit=1_000_000)
    assert len(entered) == sum(1 for t in transitions if t.kind == "entered")


def test_replaying_the_log_from_scratch_decides_and_sends_nothing_new(rig: Rig, tmp_path: Path) -> None:
    before = rig.store.decisions(limit=100_000)
    pending = rig.store.outbox.pending()
    second = Rig(tmp_path, rig.processor._log, SqliteProfileStore(tmp_path / "replayed.db"))
    try:
        second.processor.catch_up()
        after = second.store.decisions(limit=100_000)
        assert [d.decision_id for d in after] == [d.decision_id for d in before]
        assert second.store.outbox.pending() == pending
        assert second.processor.view.profiles.keys() == rig.processor.view.profiles.keys()
    finally:
        second.close()


class CrashOnCommit(SqliteProfileStore):
    """Fails the first profile commit of a batch that stored new decisions, like a power cut."""

    decisions: DecisionStore | None = None
    known = 0
    crashed = False

    def commit(self, changes: Changes) -> None:
        stored = len(self.decisions.decisions(limit=100_000)) if self.decisions is not None else 0
        if not self.crashed and stored > self.known:
            self.crashed = True
            raise RuntimeError("power cut")
        self.known = stored
        super().commit(changes)


def test_a_crash_after_storing_decisions_sends_nothing_twice(tmp_path: Path, events: list[Event]) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append(events)
    profiles = CrashOnCommit(tmp_path / "a-profiles.db")
    crashing = Rig(tmp_path / "a", log, profiles)
    profiles.decisions = crashing.store
    clean = Rig(tmp_path / "b", log)
    try:
        with pytest.raises(RuntimeError, match="power cut"):
            crashing.processor.catch_up()
        stored_at_crash = len(crashing.store.decisions(limit=100_000))
        assert stored_at_crash > 0
        crashing.close()
        resumed = Rig(tmp_path / "a", log, SqliteProfileStore(tmp_path / "a-profiles.db"))
        resumed.processor.catch_up()
        clean.processor.catch_up()
        assert [d.decision_id for d in resumed.store.decisions(limit=100_000)] == \
            [d.decision_id for d in clean.store.decisions(limit=100_000)]
        assert resumed.store.outbox.pending() == clean.store.outbox.pending()
        resumed.close()
    finally:
        clean.close()
        log.close()


def test_offer_viewed_and_redeemed_events_record_the_outcome(rig: Rig) -> None:
    sent = next(d for d in rig.store.decisions(limit=100_000) if d.action == "send")
    now = _now()
    calls = [{"type": "track", "userId": sent.user_id, "event": name, "messageId": f"outcome-{name}",
              "timestamp": format_time(now), "properties": {"decision_id": sent.decision_id}}
             for name in ("Offer Viewed", "Offer Redeemed")]
    calls.append({"type": "track", "userId": sent.user_id, "event": "Offer Viewed", "messageId": "outcome-unknown",
                  "timestamp": format_time(now), "properties": {"decision_id": "dec-unknown"}})
    rig.processor._log.append([normalise(c, call_type=None, received_at=now, default_message_id=c["messageId"])
                               for c in calls])
    rig.processor.catch_up()
    assert set(rig.store.outcomes(sent.decision_id)) == {"shown", "redeemed"}


def test_a_price_drop_reaches_the_members_with_the_product_on_their_wishlist(tmp_path: Path) -> None:
    now = _now()
    at = [format_time(now - (10 - i) * 60_000) for i in range(10)]
    calls = [
        {"type": "identify", "userId": "w-1", "timestamp": at[0], "context": {"consent": ALL_GRANTED},
         "traits": {"email": "w1@example.com", "first_name": "Wen"}},
        {"type": "identify", "userId": "w-2", "timestamp": at[0], "context": {"consent": ALL_GRANTED},
         "traits": {"email": "w2@example.com"}},
        {"type": "track", "userId": "w-1", "event": "Product Added to Wishlist", "timestamp": at[1],
         "properties": {"product_id": "P-77", "name": "Trail shoes", "category": "Apparel", "price": 80.0}},
        {"type": "track", "userId": "w-2", "event": "Product Added to Wishlist", "timestamp": at[1],
         "properties": {"product_id": "P-12", "name": "Socks", "category": "Apparel", "price": 9.0}},
    ]
    drop = {"type": "track", "anonymousId": "catalog-feed", "event": "Product Price Changed", "timestamp": at[3],
            "properties": {"product_id": "P-77", "price": 60.0, "previous_price": 80.0}}
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([normalise(c, call_type=None, received_at=now, default_message_id=f"w{i}") for i, c in enumerate(calls)])
    rig = Rig(tmp_path, log)
    try:
        rig.processor.catch_up()  # the wishlists are indexed first, the catalog event comes later
        log.append([normalise(drop, call_type=None, received_at=now, default_message_id="drop-1")])
        rig.processor.catch_up()
        [decision] = rig.store.decisions(trigger_id="wishlist-price-drop", limit=100)
        assert decision.user_id == "w-1" and decision.occurrence_key == "price:P-77:event:drop-1"
        assert decision.action == "send" and decision.chosen[0].offer_id == "wishlist-drop-3x"
        assert "Trail shoes" in " ".join(decision.chosen[0].content.values())
        assert rig.store.wishlisted_by("P-77") == [decision.member_id]
    finally:
        rig.close()
        log.close()
