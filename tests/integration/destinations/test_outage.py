"""Outages: a destination answering 500, hanging, or throttling with 429 delays only itself; nothing is lost.

Every destination here is a real webhook lane posting to its own local HTTP server. Delivery
settings are scaled down (``fast_policy``) so that outages of about a second play out fast.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
from destination_support import HttpSink, Request, StatusLog, eventually, fast_policy, message, run
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.adapters.destinations.base import DeliveryPolicy
from loyalty_cdp.adapters.destinations.webhook import WebhookDestination
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.core.messages import MESSAGE_FAILED, MESSAGE_SENT
from loyalty_cdp.services.dispatcher import CircuitBreaker, Dispatcher, TokenBucket, retry_delay
from loyalty_cdp.testing import free_port

SECRET = "whsec_outage"
LOCAL = ["127.0.0.1/32"]
OUTAGE_S = 1.2
PER_DESTINATION = 12


def no_consent_needed(user_id: str) -> dict[str, bool]:
    return {}


def hook(name: str, sink_url: str) -> WebhookDestination:
    return WebhookDestination(name, f"{sink_url}/in", SECRET, allow_networks=LOCAL)


def delivered_ids(sink: HttpSink) -> dict[str, list[str]]:
    """For each message id the sink answered 200: the Idempotency-Key header of every such request."""
    keys: dict[str, list[str]] = defaultdict(list)
    for request in sink.requests:
        keys[json.loads(request.body)["id"]].append(request.headers["idempotency-key"])
    return keys


def test_one_destination_down_never_delays_the_others(tmp_path: Path, make_sink) -> None:
    healthy, failing, hanging, throttled = make_sink(), make_sink(), make_sink(), make_sink()
    outage_until = time.monotonic() + 3600.0  # set for real when the scenario starts
    answered: dict[str, list[tuple[str, float]]] = defaultdict(list)  # sink -> (message id, when) answered 200

    def accept(name: str, request: Request) -> tuple[int, dict[str, str], bytes]:
        answered[name].append((json.loads(request.body)["id"], time.monotonic()))
        return 200, {}, b"{}"

    def down_then_up(name: str, during_outage: tuple[int, dict[str, str], bytes] | None):
        return lambda request: during_outage if time.monotonic() < outage_until else accept(name, request)

    healthy.respond = lambda request: accept("healthy", request)
    failing.respond = down_then_up("failing", (500, {}, b'{"error": "boom"}'))
    hanging.respond = down_then_up("hanging", None)  # never answers: the 0.3 s timeout fires
    throttled.respond = down_then_up("throttled", (429, {"Retry-After": "1"}, b"{}"))
    sinks = {"healthy": healthy, "failing": failing, "hanging": hanging, "throttled": throttled}
    status = StatusLog()

    async def scenario() -> float:
        nonlocal outage_until
        outbox = Outbox(tmp_path / "outbox.db")
        routes = [(hook(name, sink.url), fast_policy()) for name, sink in sinks.items()]
        dispatcher = Dispatcher(outbox, routes, on_status=status, consent_of=no_consent_needed, seed=7)
        await dispatcher.start()
        started = time.monotonic()
        outage_until = started + OUTAGE_S
        await dispatcher.enqueue([
            message(f"{name}-{i}", name, "webhook", "") for i in range(PER_DESTINATION) for name in sinks
        ])
        await eventually(lambda: len(answered["healthy"]) >= PER_DESTINATION, timeout_s=OUTAGE_S, what="healthy lane")
        healthy_done = time.monotonic() - started
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 4 * PER_DESTINATION, timeout_s=10,
                         what="recovery")
        stats = dispatcher.stats
        await dispatcher.close()
        assert outbox.pending() == 0 and outbox.dead_letters() == []
        outbox.close()
        assert stats["healthy"].retried == 0
        assert all(stats[name].retried > 0 for name in ("failing", "hanging", "throttled"))
        return healthy_done

    healthy_done = run(scenario())
    # The healthy lane finished while the other three were still down.
    assert healthy_done < OUTAGE_S / 2
    for name, sink in sinks.items():
        keys = delivered_ids(sink)
        expected = {f"{name}-{i}" for i in range(PER_DESTINATION)}
        # Every message arrived at least once, and every attempt carried its own id as the key.
        assert set(keys) == expected
        assert all(all(key == message_id for key in attempts) for message_id, attempts in keys.items())
        assert {message_id for message_id, _ in answered[name]} == expected
    for name in ("failing", "hanging", "throttled"):
        assert all(at >= outage_until for _, at in answered[name])
    # Retry-After: 1 paused the throttled lane: far fewer attempts than the failing lane made.
    during = [r for r in throttled.requests if r.at < outage_until]
    assert len(during) <= 2 * fast_policy().concurrency + 2
    assert len(status.named(MESSAGE_SENT)) == 4 * PER_DESTINATION  # one Message Sent per message


def test_after_the_retry_cap_messages_wait_in_the_dead_letter_store_and_replay(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    sink.respond = lambda request: (503, {}, b'{"error": "maintenance"}')
    status = StatusLog()
    policy = fast_policy(max_attempts=3, breaker_failures=100)

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        dispatcher = Dispatcher(outbox, [(hook("crm", sink.url), policy)], on_status=status,
                                consent_of=no_consent_needed, seed=1)
        await dispatcher.start()
        await dispatcher.enqueue([message(f"m-{i}", "crm", "webhook", "") for i in range(5)])
        await eventually(lambda: len(status.named(MESSAGE_FAILED)) == 5, what="dead letters")
        letters = outbox.dead_letters("crm")
        assert sorted(letter.message.message_id for letter in letters) == [f"m-{i}" for i in range(5)]
        assert all(letter.attempts == 3 for letter in letters)
        assert all(letter.reason == "gave up after 3 attempts: HTTP 503" for letter in letters)
        assert len(sink.requests) == 15  # exactly max_attempts each
        assert outbox.pending() == 0

        sink.respond = lambda request: (200, {}, b"{}")
        assert await dispatcher.replay("crm") == 5
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 5, what="replayed deliveries")
        await dispatcher.close()
        assert outbox.dead_letters() == [] and outbox.pending() == 0
        assert outbox.finished("m-0").outcome == "delivered"
        outbox.close()

    run(scenario())
    keys = delivered_ids(sink)
    assert all(len(attempts) == 4 and set(attempts) == {message_id} for message_id, attempts in keys.items())
    failed = status.named(MESSAGE_FAILED)
    assert {json.loads(e.body)["properties"]["reason"] for e in failed} == {"gave up after 3 attempts: HTTP 503"}


def test_a_permanent_refusal_is_dead_lettered_at_once(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    sink.respond = lambda request: (422, {}, b'{"error": "unknown member"}')
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        dispatcher = Dispatcher(outbox, [(hook("crm", sink.url), fast_policy())], on_status=status,
                                consent_of=no_consent_needed)
        await dispatcher.start()
        await dispatcher.enqueue([message("m-1", "crm", "webhook", "")])
        await eventually(lambda: len(status.named(MESSAGE_FAILED)) == 1, what="dead letter")
        await dispatcher.close()
        [letter] = outbox.dead_letters()
        assert (letter.attempts, letter.reason) == (1, "HTTP 422")
        outbox.close()

    run(scenario())
    assert len(sink.requests) == 1


def test_memory_stays_bounded_while_a_destination_is_down_and_nothing_is_lost(tmp_path: Path, make_sink) -> None:
    port = free_port()  # nothing listens yet: every connection is refused
    backlog = 200
    policy = fast_policy(queue_size=4, concurrency=2, breaker_failures=2, breaker_reset_s=0.1)
    status = StatusLog()
    sink: list[HttpSink] = []

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        dispatcher = Dispatcher(outbox, [(hook("crm", f"http://127.0.0.1:{port}"), policy)], on_status=status,
                                consent_of=no_consent_needed)
        await dispatcher.start()
        await dispatcher.enqueue([message(f"m-{i}", "crm", "webhook", "") for i in range(backlog)])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert dispatcher.stats["crm"].queue_depth <= policy.queue_size + policy.concurrency
            await asyncio.sleep(0.01)
        assert dispatcher.stats["crm"].max_queue_depth <= policy.queue_size + policy.concurrency
        assert dispatcher.stats["crm"].backlog == backlog  # the rest waits on disk
        assert outbox.pending("crm") == backlog
        sink.append(make_sink(port))  # the destination comes back
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == backlog, timeout_s=15, what="the backlog")
        assert dispatcher.stats["crm"].max_queue_depth <= policy.queue_size + policy.concurrency
        await dispatcher.close()
        assert outbox.pending() == 0
        outbox.close()

    run(scenario())
    assert set(delivered_ids(sink[0])) == {f"m-{i}" for i in range(backlog)}


def test_the_circuit_breaker_stops_hammering_a_failing_destination(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    sink.respond = lambda request: (500, {}, b"{}")
    policy = fast_policy(concurrency=1, breaker_failures=3, breaker_reset_s=0.4, backoff_base_s=0.01,
                         backoff_cap_s=0.01)
    states: set[str] = set()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        dispatcher = Dispatcher(outbox, [(hook("crm", sink.url), policy)], on_status=StatusLog(),
                                consent_of=no_consent_needed)
        await dispatcher.start()
        await dispatcher.enqueue([message(f"m-{i}", "crm", "webhook", "") for i in range(20)])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            states.add(dispatcher.stats["crm"].breaker_state)
            await asyncio.sleep(0.005)
        await dispatcher.close()
        outbox.close()

    run(scenario())
    # 3 failures open it; it half-opens every 0.4 s for one trial that fails: about 5 requests, not ~100.
    assert 3 <= len(sink.requests) <= 8
    assert "open" in states


def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = DeliveryPolicy(backoff_base_s=1.0, backoff_cap_s=60.0)
    assert [retry_delay(n, policy, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [retry_delay(n, policy, 0.999999) for n in (1, 2, 3)] == pytest.approx([0.9999995, 1.999999, 3.999998])
    assert retry_delay(30, policy, 0.5) == 45.0 and retry_delay(10_000, policy, 1.0) <= 60.0


@settings(max_examples=200, deadline=None)
@given(attempt=st.integers(1, 200), unit=st.floats(0, 1, exclude_max=True),
       base=st.floats(0.001, 10), factor=st.floats(1, 1000))
def test_retry_delays_stay_within_half_and_all_of_the_capped_exponential(attempt, unit, base, factor) -> None:
    policy = DeliveryPolicy(backoff_base_s=base, backoff_cap_s=base * factor)
    ceiling = min(base * factor, base * 2.0 ** (attempt - 1))
    assert ceiling / 2 <= retry_delay(attempt, policy, unit) <= ceiling


def test_circuit_breaker_states() -> None:
    breaker = CircuitBreaker(failures=2, reset_s=10.0)
    assert breaker.admit(0.0) == 0.0
    breaker.failed(1.0)
    assert breaker.state == "closed" and breaker.admit(1.0) == 0.0
    breaker.failed(2.0)
    assert breaker.state == "open" and breaker.admit(5.0) == 7.0
    assert breaker.admit(12.0) == 0.0 and breaker.state == "half-open"  # the one trial
    assert breaker.admit(12.0) == 10.0  # everyone else waits for its verdict
    breaker.no_verdict()  # the trial was deferred: another may go
    assert breaker.admit(12.5) == 0.0
    breaker.failed(13.0)
    assert breaker.state == "open" and breaker.admit(22.0) == 1.0
    assert breaker.admit(23.0) == 0.0
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.admit(23.0) == 0.0 and breaker.admit(23.0) == 0.0


def test_token_bucket_spaces_sends_after_the_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2)
    assert [bucket.reserve(100.0) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    assert bucket.reserve(101.0) == 0.0  # refilled (up to the burst) after a second


def test_the_rate_limit_holds_end_to_end(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        policy = fast_policy(concurrency=4, rate_per_second=20.0, burst=1)
        dispatcher = Dispatcher(outbox, [(hook("crm", sink.url), policy)], on_status=status,
                                consent_of=no_consent_needed)
        await dispatcher.start()
        await dispatcher.enqueue([message(f"m-{i}", "crm", "webhook", "") for i in range(9)])
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 9, what="nine sends")
        await dispatcher.close()
        outbox.close()

    run(scenario())
    times = sorted(request.at for request in sink.requests)
    assert times[-1] - times[0] >= 8 / 20 * 0.9  # 9 sends at 20/s take at least 0.4 s
