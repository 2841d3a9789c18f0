"""The outbox on disk: atomic with the caller's own rows, exactly one place per message, leases after a crash."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from destination_support import NOW_MS, StatusLog, eventually, fast_policy, message, run
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.adapters.destinations.webhook import WebhookDestination
from loyalty_cdp.adapters.outbox import Outbox, create_schema, stage
from loyalty_cdp.core.messages import MESSAGE_SENT, status_event
from loyalty_cdp.errors import InvalidInput, StorageUnavailable
from loyalty_cdp.services.dispatcher import Dispatcher


def hook_message(message_id: str) -> object:
    return message(message_id, "hook", "webhook", "")


def test_messages_commit_or_roll_back_with_the_callers_rows(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    with outbox.transaction() as conn:
        conn.execute("CREATE TABLE decisions (decision_id TEXT PRIMARY KEY)")
    with pytest.raises(RuntimeError), outbox.transaction() as conn:
        conn.execute("INSERT INTO decisions VALUES ('dec-1')")
        stage(conn, [hook_message("m-1")], 1)
        raise RuntimeError("the decision store failed after the insert")
    with outbox.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (0,)
    assert outbox.pending() == 0
    with outbox.transaction() as conn:
        conn.execute("INSERT INTO decisions VALUES ('dec-1')")
        assert stage(conn, [hook_message("m-1"), hook_message("m-1")], 1) == 1
    assert outbox.pending() == 1
    with pytest.raises(InvalidInput):  # one bad message: nothing of the batch is staged
        outbox.enqueue([hook_message("m-2"), message("m-3", "hook", "sms", "not-a-number", body="x")], 1)
    assert outbox.pending() == 1
    outbox.close()


def test_the_outbox_tables_can_live_in_the_decision_stores_own_file(tmp_path: Path) -> None:
    decisions = sqlite3.connect(tmp_path / "decisions.db", isolation_level=None)
    decisions.execute("PRAGMA journal_mode = WAL")
    decisions.execute("BEGIN IMMEDIATE")
    decisions.execute("CREATE TABLE decisions (decision_id TEXT PRIMARY KEY)")
    create_schema(decisions)
    decisions.execute("INSERT INTO decisions VALUES ('dec-m-1')")
    stage(decisions, [hook_message("m-1")], 1)
    decisions.execute("COMMIT")
    decisions.close()
    outbox = Outbox(tmp_path / "decisions.db")
    [pending] = outbox.claim("hook", NOW_MS, 5, 1000)
    assert pending.message.message_id == "m-1"
    outbox.close()


def test_a_message_created_for_later_is_due_then_and_not_before(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    later = NOW_MS + 9 * 3_600_000  # after the member's quiet hours, as the contact policy asked
    outbox.enqueue([hook_message("now"), message("later", "hook", "webhook", "", created_at=later)], NOW_MS)
    assert [p.message.message_id for p in outbox.claim("hook", NOW_MS, 5, 1000)] == ["now"]
    outbox.finish("now", "sent", NOW_MS)
    assert outbox.next_due_at("hook") == later
    assert outbox.claim("hook", later - 1, 5, 1000) == []
    assert [p.message.message_id for p in outbox.claim("hook", later, 5, 1000)] == ["later"]
    outbox.close()


def test_messages_leased_by_a_crashed_dispatcher_are_sent_after_the_lease(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.enqueue([hook_message("m-1")], int(time.time() * 1000))
    # A dispatcher claims the message with a 300 ms lease, then dies before sending it.
    assert len(outbox.claim("hook", int(time.time() * 1000), 10, 300)) == 1
    claimed_at = time.monotonic()
    status = StatusLog()

    async def scenario() -> None:
        destination = WebhookDestination("hook", sink.url, "secret", allow_networks=["127.0.0.1/32"])
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=lambda u: {})
        await dispatcher.start()
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 1, what="the leased message")
        await dispatcher.close()

    run(scenario())
    outbox.close()
    assert len(sink.requests) == 1
    assert sink.requests[0].at - claimed_at >= 0.28  # not before the lease ran out


def test_status_events_survive_a_failing_receiver(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    received: list[str] = []
    failures = [ConnectionError("event log busy")]

    def flaky(events) -> None:
        if failures:
            raise failures.pop()
        received.extend(event.message_id for event in events)

    async def broken(events) -> None:
        raise ConnectionError("event log down")

    async def deliver_with(on_status) -> tuple[Outbox, Dispatcher]:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = WebhookDestination("hook", sink.url, "secret", allow_networks=["127.0.0.1/32"])
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=on_status, consent_of=lambda u: {})
        await dispatcher.start()
        return outbox, dispatcher

    async def scenario() -> None:
        outbox, dispatcher = await deliver_with(broken)
        await dispatcher.enqueue([hook_message("m-1")])
        await eventually(lambda: outbox.finished("m-1") is not None, what="the send")
        await dispatcher.close(drain_timeout_s=0.5)
        assert len(outbox.status_backlog()) == 2  # kept for the next start
        outbox.close()
        outbox, dispatcher = await deliver_with(flaky)  # fails once, then takes them
        await eventually(lambda: len(received) == 2, timeout_s=5, what="the kept status events")
        await dispatcher.close()
        assert outbox.status_backlog() == []
        outbox.close()

    run(scenario())
    assert received == ["m-1:sent", "m-1:delivered"] and len(sink.requests) == 1


operations = st.lists(
    st.tuples(st.sampled_from(["enqueue", "claim", "finish", "retry", "dead", "replay"]), st.integers(0, 5)),
    max_size=30,
)


@settings(max_examples=30, deadline=None)
@given(operations)
def test_every_message_is_in_exactly_one_place(tmp_path_factory, steps) -> None:
    outbox = Outbox(tmp_path_factory.mktemp("outbox") / "outbox.db")
    staged: set[str] = set()
    now = 1_000
    for operation, n in steps:
        now += 10
        message_id = f"m-{n}"
        if operation == "enqueue":
            outbox.enqueue([hook_message(message_id)], now)
            staged.add(message_id)
        elif operation == "claim":
            outbox.claim("hook", now, n + 1, 5)
        elif operation == "finish":
            outbox.finish(message_id, "sent", now, status_events=[status_event(hook_message(message_id), MESSAGE_SENT,
                                                                                now, attempts=1)])
        elif operation == "retry":
            outbox.retry_later(message_id, 1, now + 50, "HTTP 500")
        elif operation == "dead":
            outbox.dead_letter(message_id, "gave up", 3, now)
        else:
            outbox.replay(now, message_ids=[message_id])
    with outbox.transaction() as conn:
        places = {
            table: {row[0] for row in conn.execute(f"SELECT message_id FROM {table}")}
            for table in ("outbox_messages", "outbox_finished", "outbox_dead_letters")
        }
    outbox.close()
    assert set().union(*places.values()) == staged
    assert sum(len(ids) for ids in places.values()) == len(staged)


def test_a_lost_outcome_record_means_a_resend_with_the_same_key_not_a_dead_lane(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    status = StatusLog()
    outbox = Outbox(tmp_path / "outbox.db")
    record_outcome = outbox.finish
    failures = [StorageUnavailable("disk full")]

    def finish_failing_once(*args, **kwargs) -> None:
        if failures:
            raise failures.pop()
        record_outcome(*args, **kwargs)

    outbox.finish = finish_failing_once  # type: ignore[method-assign]

    async def scenario() -> None:
        destination = WebhookDestination("hook", sink.url, "secret", allow_networks=["127.0.0.1/32"])
        dispatcher = Dispatcher(outbox, [(destination, fast_policy(concurrency=1, lease_s=0.4))], on_status=status,
                                consent_of=lambda u: {})
        await dispatcher.start()
        await dispatcher.enqueue([hook_message("m-1")])
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 1, what="the resend after the lease")
        await dispatcher.enqueue([hook_message("m-2")])
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 2, what="the next message")
        await dispatcher.close()

    run(scenario())
    outbox.close()
    assert [r.headers["idempotency-key"] for r in sink.requests] == ["m-1", "m-1", "m-2"]
