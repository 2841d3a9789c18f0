"""The dispatcher: drains the outbox into each destination through a lane of its own.

Each destination gets a *lane*: a feeder task that leases due messages from the outbox into
a bounded in-memory queue, and ``concurrency`` workers that send them. A lane's state (its
queue, rate limiter, circuit breaker, ``Retry-After`` pause, connections) is its own, so a
destination that fails, hangs or throttles only delays itself.

Per attempt, in order: consent (a refusal finishes the message as *suppressed* and reports
``Message Failed`` with ``suppressed: true``); the gate (a ``Retry-After`` pause, the circuit
breaker, the rate limit); the send, bounded by ``timeout_s``; then one outbox transaction
records the outcome with its status events:

- accepted: finished as sent (``Message Sent``; ``Message Delivered`` too when the
  destination confirms final delivery, as a webhook's 2xx does);
- transient failure (timeout, 5xx, 429, connection refused): due again after a jittered
  exponential backoff (at least ``Retry-After``), the attempt counted; at ``max_attempts``
  it goes to the dead-letter store (``Message Failed``);
- permanent failure: dead-lettered at once (``Message Bounced`` when the recipient itself
  was refused, else ``Message Failed``); :meth:`Dispatcher.replay` brings dead letters back;
- deferred (quiet hours): due again later, no attempt counted.

Status events wait in the outbox until ``on_status`` (the event log's append) returns, then
are dropped: at least once, and their ``messageId`` makes the event log keep each once.

Memory and backpressure: a lane holds at most ``queue_size + concurrency`` messages; the
feeder claims only as many as the queue has room for, so a backlog of any size waits on
disk, never in memory. Producers are never blocked by a slow destination: they write to
the outbox and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from loyalty_cdp.adapters.destinations.base import (
    Deferred,
    DeliveryPolicy,
    Destination,
    PermanentFailure,
    Receipt,
    Suppressed,
    TransientFailure,
)
from loyalty_cdp.adapters.outbox import Outbox, Pending
from loyalty_cdp.core.events import Event
from loyalty_cdp.core.messages import (
    MESSAGE_BOUNCED,
    MESSAGE_DELIVERED,
    MESSAGE_FAILED,
    MESSAGE_SENT,
    OutboundMessage,
    consent_refusal,
    status_event,
)
from loyalty_cdp.errors import InvalidInput

log = logging.getLogger(__name__)

StatusSink = Callable[[list[Event]], Awaitable[None] | None]
ConsentLookup = Callable[[str], Mapping[str, Any]]
LatencyObserver = Callable[[str, float], None]
STATUS_BATCH = 500
_P = ParamSpec("_P")
_T = TypeVar("_T")


def retry_delay(attempt: int, policy: DeliveryPolicy, unit: float) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential up to the cap, "equal jitter".

    ``unit`` is a uniform draw in [0, 1): the delay lies between half and all of
    ``min(cap, base * 2 ** (attempt - 1))``, so retries spread out but never come back at once.
    """
    ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * 2.0 ** min(attempt - 1, 60))
    return ceiling / 2 + unit * ceiling / 2


class CircuitBreaker:
    """closed -> (``failures`` consecutive failures) -> open -> (``reset_s`` later) -> half-open.

    Half-open admits one trial send: success closes the breaker, failure opens it again.
    Times are monotonic seconds passed in by the caller.
    """

    def __init__(self, failures: int, reset_s: float) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.state = "closed"
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.trial_out = False

    def admit(self, now: float) -> float:
        """0 when a send may go now (taking the trial when half-open), else seconds to wait."""
        if self.state == "open":
            if now < self.opened_at + self.reset_s:
                return self.opened_at + self.reset_s - now
            self.state, self.trial_out = "half-open", False
        if self.state == "half-open":
            if self.trial_out:
                return self.reset_s
            self.trial_out = True
        return 0.0

    def succeeded(self) -> None:
        self.state, self.consecutive_failures, self.trial_out = "closed", 0, False

    def failed(self, now: float) -> None:
        self.consecutive_failures += 1
        if self.state == "half-open" or self.consecutive_failures >= self.threshold:
            self.state, self.opened_at, self.trial_out = "open", now, False

    def no_verdict(self) -> None:
        """The admitted send never reached the destination (deferred, suppressed): free the trial."""
        self.trial_out = False


class TokenBucket:
    """``rate`` sends a second with bursts of ``burst``; :meth:`reserve` says how long to wait."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = 0.0

    def reserve(self, now: float) -> float:
        if self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class LaneStats:
    """Counters and gauges of one destination, read by the metrics exporter.

    ``queue_depth`` is messages held in memory (queued or in flight), ``backlog`` the
    destination's rows in the outbox (sampled about once a second).
    """

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    bounced: int = 0
    retried: int = 0
    suppressed: int = 0
    deferred: int = 0
    queue_depth: int = 0
    max_queue_depth: int = 0
    backlog: int = 0
    in_flight: int = 0
    latency_seconds_sum: float = 0.0
    latency_count: int = 0
    breaker_state: str = "closed"


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` pass (``asyncio.timeout``: ``wait_for`` can swallow a cancellation)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()


class _Lane:
    def __init__(self, destination: Destination, policy: DeliveryPolicy, dispatcher: Dispatcher) -> None:
        self.destination = destination
        self.name = destination.name
        self.policy = policy
        self.d = dispatcher
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(policy.queue_size)
        self.held: set[str] = set()
        self.wake = asyncio.Event()
        self.resume = asyncio.Event()
        self.paused_until = 0.0
        self.breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_reset_s)
        rate = policy.rate_per_second
        self.bucket = None if rate is None else TokenBucket(rate, policy.burst or policy.concurrency)
        self.stats = LaneStats()
        self.feeder: asyncio.Task[None] | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.busy: list[bool] = []  # per worker: sending right now
        self.closing = False
        self._backlog_sampled = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.feeder = loop.create_task(self._feed(), name=f"feed-{self.name}")
        for index in range(self.policy.concurrency):
            self.busy.append(False)
            self.workers.append(loop.create_task(self._work(index), name=f"send-{self.name}-{index}"))

    def _signal(self) -> None:
        self.resume.set()
        self.resume.clear()

    def _track_depth(self) -> None:
        self.stats.queue_depth = len(self.held)
        self.stats.max_queue_depth = max(self.stats.max_queue_depth, len(self.held))
        self.stats.breaker_state = self.breaker.state

    async def _feed(self) -> None:
        while not self.closing:
            self.wake.clear()
            try:
                delay = await self._refill()
            except Exception:  # the outbox failed: the lane keeps what it holds and looks again
                log.exception("lane %s cannot read the outbox", self.name)
                delay = self.policy.poll_s
            await _wait(self.wake, delay)

    async def _refill(self) -> float:
        """Claim as many due messages as the queue has room for; returns how long to wait before looking again."""
        outbox, poll = self.d.outbox, self.policy.poll_s
        room = self.queue.maxsize - self.queue.qsize()
        claimed: list[Pending] = []
        if room > 0:
            claimed = await self.d.io(outbox.claim, self.name, self.d.now_ms(), room, int(self.policy.lease_s * 1000))
            for pending in claimed:
                if pending.message.message_id not in self.held:
                    self.held.add(pending.message.message_id)
                    self.queue.put_nowait(pending)
            self._track_depth()
        if time.monotonic() - self._backlog_sampled >= 1.0:
            self._backlog_sampled = time.monotonic()
            self.stats.backlog = await self.d.io(outbox.pending, self.name)
        if room <= 0 or len(claimed) == room:
            return poll  # full: a worker wakes the feeder when there is room
        due = await self.d.io(outbox.next_due_at, self.name)
        return poll if due is None else min(poll, (due - self.d.now_ms()) / 1000)

    async def _work(self, index: int) -> None:
        while not self.closing:
            pending = await self.queue.get()
            self.busy[index] = True
            self.stats.in_flight += 1
            try:
                await self._attempt(pending)
            except Exception:  # the outcome could not be recorded: the lease runs out and it is sent again
                log.exception("lane %s could not record the outcome of %s", self.name, pending.message.message_id)
            finally:
                self.busy[index] = False
                self.stats.in_flight -= 1
                self.held.discard(pending.message.message_id)
                self._track_depth()
                if self.queue.qsize() <= self.queue.maxsize // 2:
                    self.wake.set()

    async def _gate(self) -> None:
        while True:
            now = time.monotonic()
            wait = self.paused_until - now
            if wait <= 0:
                wait = self.breaker.admit(now)
                if wait <= 0:
                    break
            await _wait(self.resume, wait)
        if self.bucket is not None:
            await asyncio.sleep(self.bucket.reserve(time.monotonic()))

    async def _attempt(self, pending: Pending) -> None:
        message = pending.message
        try:
            refusal = consent_refusal(self.destination.consent_purpose, self.d.consent_of(message.user_id))
        except Exception as exc:  # without consent data nothing is sent: ask again in a while
            log.exception("consent lookup failed for %s", message.message_id)
            reason = f"consent unavailable: {type(exc).__name__}"
            await self.d.io(self.d.outbox.defer, message.message_id, self.d.now_ms() + 1000, reason)
            return
        if refusal is not None:
            await self._suppress(pending, refusal)
            return
        await self._gate()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                receipt = await self.destination.send(message, self.d.now_ms())
        except Suppressed as exc:
            self.breaker.no_verdict()
            await self._suppress(pending, exc.reason)
        except Deferred as exc:
            self.breaker.no_verdict()
            self.stats.deferred += 1
            await self.d.io(self.d.outbox.defer, message.message_id, exc.until_ms, exc.reason)
        except PermanentFailure as exc:
            self.breaker.succeeded()  # the destination answered: it is up
            await self._give_up(pending, exc.reason, pending.attempts + 1, bounced=exc.bounced)
        except TransientFailure as exc:
            await self._retry(pending, exc.reason, exc.retry_after)
        except TimeoutError:
            await self._retry(pending, f"timed out after {self.policy.timeout_s:g}s", None)
        except Exception as exc:
            log.exception("destination %s failed unexpectedly", self.name)
            await self._retry(pending, f"{type(exc).__name__}: {exc}"[:300], None)
        else:
            await self._done(pending, receipt, time.monotonic() - started)
        finally:
            self._signal()

    async def _done(self, pending: Pending, receipt: Receipt, seconds: float) -> None:
        self.breaker.succeeded()
        message, at = pending.message, self.d.now_ms()
        details = {"attempts": pending.attempts + 1, "provider_id": receipt.provider_id}
        events = [status_event(message, MESSAGE_SENT, at, **details)]
        if receipt.delivered:
            events.append(status_event(message, MESSAGE_DELIVERED, at, **details))
        outcome = "delivered" if receipt.delivered else "sent"
        await self.d.io(self.d.outbox.finish, message.message_id, outcome, at, provider_id=receipt.provider_id,
                        status_events=events)
        self.stats.sent += 1
        self.stats.delivered += receipt.delivered
        self.stats.latency_seconds_sum += seconds
        self.stats.latency_count += 1
        if self.d.on_latency is not None:
            self.d.on_latency(self.name, seconds)
        self.d.status_wake.set()

    async def _suppress(self, pending: Pending, reason: str) -> None:
        message, at = pending.message, self.d.now_ms()
        event = status_event(message, MESSAGE_FAILED, at, attempts=pending.attempts, replays=pending.replays,
                             reason=reason, suppressed=True)
        await self.d.io(self.d.outbox.finish, message.message_id, "suppressed", at, reason=reason,
                        status_events=[event])
        self.stats.suppressed += 1
        self.d.status_wake.set()

    async def _retry(self, pending: Pending, reason: str, retry_after: float | None) -> None:
        attempts, now = pending.attempts + 1, time.monotonic()
        self.breaker.failed(now)
        if retry_after is not None:
            retry_after = min(retry_after, self.policy.max_retry_after_s)
            self.paused_until = max(self.paused_until, now + retry_after)
        if attempts >= self.policy.max_attempts:
            await self._give_up(pending, f"gave up after {attempts} attempts: {reason}", attempts, bounced=False)
            return
        delay = max(retry_delay(attempts, self.policy, self.d.rng.random()), retry_after or 0.0)
        next_at = self.d.now_ms() + int(delay * 1000)
        await self.d.io(self.d.outbox.retry_later, pending.message.message_id, attempts, next_at, reason)
        self.stats.retried += 1

    async def _give_up(self, pending: Pending, reason: str, attempts: int, *, bounced: bool) -> None:
        message, at = pending.message, self.d.now_ms()
        status = MESSAGE_BOUNCED if bounced else MESSAGE_FAILED
        event = status_event(message, status, at, attempts=attempts, replays=pending.replays, reason=reason)
        await self.d.io(self.d.outbox.dead_letter, message.message_id, reason, attempts, at, [event])
        if bounced:
            self.stats.bounced += 1
        else:
            self.stats.failed += 1
        self.d.status_wake.set()

    async def close(self, drain_timeout_s: float) -> list[str]:
        """Stop; let sends in flight finish for up to ``drain_timeout_s``; returns the ids left unfinished."""
        self.closing = True
        idle = [task for task, busy in zip(self.workers, self.busy, strict=True) if not busy]
        for task in (self.feeder, *idle):
            if task is not None:
                task.cancel()
        busy = [task for task, is_busy in zip(self.workers, self.busy, strict=True) if is_busy]
        if busy:
            await asyncio.wait(busy, timeout=drain_timeout_s)
        unfinished = sorted(self.held)
        for task in self.workers:
            task.cancel()
        await asyncio.gather(*(t for t in (self.feeder, *self.workers) if t is not None), return_exceptions=True)
        return unfinished


class Dispatcher:
    """Sends what the outbox holds through every configured destination.

    ``routes`` pairs each destination with its :class:`DeliveryPolicy`. ``on_status`` receives
    batches of status events (make it the event log's durable append; it may be async);
    ``consent_of(user_id)`` returns the member's consent as ``{purpose: allowed}``;
    ``on_latency(destination, seconds)`` observes each accepted send's duration.
    """

    def __init__(
        self,
        outbox: Outbox,
        routes: Iterable[tuple[Destination, DeliveryPolicy]],
        *,
        on_status: StatusSink,
        consent_of: ConsentLookup,
        on_latency: LatencyObserver | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.outbox = outbox
        self.routes = list(routes)
        names = [destination.name for destination, _ in self.routes]
        if len(set(names)) != len(names):
            raise InvalidInput("destinations", "destination names must be unique")
        self.on_status = on_status
        self.consent_of = consent_of
        self.on_latency = on_latency
        self.clock = clock
        self.rng = random.Random(seed)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._lanes: dict[str, _Lane] = {}
        self._pump: asyncio.Task[None] | None = None
        self._closing = False
        self.status_wake = asyncio.Event()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def io(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run an outbox call on the dispatcher's one storage thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    @property
    def stats(self) -> dict[str, LaneStats]:
        return {name: lane.stats for name, lane in self._lanes.items()}

    async def start(self) -> None:
        """Start every lane and the status pump (call inside the running event loop)."""
        self.status_wake = asyncio.Event()
        for destination, policy in self.routes:
            lane = _Lane(destination, policy, self)
            self._lanes[destination.name] = lane
            lane.start()
        self._pump = asyncio.get_running_loop().create_task(self._pump_status(), name="status-pump")

    def notify(self, destination: str | None = None) -> None:
        """Tell lanes that the outbox has new messages (after staging them in another transaction)."""
        for name, lane in self._lanes.items():
            if destination is None or name == destination:
                lane.wake.set()

    async def enqueue(self, messages: Sequence[OutboundMessage]) -> int:
        """Stage ``messages`` in the outbox and wake their lanes; returns how many were new."""
        unknown = sorted({m.destination for m in messages} - {d.name for d, _ in self.routes})
        if unknown:
            raise InvalidInput("destination", f"no destination named {', '.join(unknown)}")
        added = await self.io(self.outbox.enqueue, messages, self.now_ms())
        for name in {m.destination for m in messages}:
            self.notify(name)
        return added

    async def replay(self, destination: str | None = None, message_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back in the outbox with a fresh attempt budget; returns how many."""
        moved = await self.io(self.outbox.replay, self.now_ms(), destination, message_ids)
        self.notify(destination)
        return moved

    async def _pump_status(self) -> None:
        """Hand status events to ``on_status`` until closing and none are left; acknowledge after each batch."""
        while True:
            self.status_wake.clear()
            try:
                backlog = await self.io(self.outbox.status_backlog, STATUS_BATCH)
            except Exception:
                log.exception("status events cannot be read from the outbox; retrying in 1 s")
                await _wait(self.status_wake, 1.0)
                continue
            if not backlog:
                if self._closing:
                    return
                await _wait(self.status_wake, 1.0)
                continue
            try:
                result = self.on_status([event for _, event in backlog])
                if inspect.isawaitable(result):
                    await result
            except Exception:
                if self._closing:
                    log.exception("status events kept in the outbox for the next start")
                    return
                log.exception("status events could not be handed over; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            try:
                await self.io(self.outbox.acknowledge_status, backlog[-1][0])
            except Exception:  # they are handed over again; their messageIds make the event log keep one copy
                log.exception("status events could not be acknowledged")

    async def close(self, drain_timeout_s: float = 5.0) -> None:
        """Stop every lane, release the leases of unfinished messages, hand over the last status events."""
        per_lane = await asyncio.gather(*(lane.close(drain_timeout_s) for lane in self._lanes.values()))
        unfinished = [message_id for ids in per_lane for message_id in ids]
        if unfinished:  # due again at the next start (a send cut off mid-way is sent again: at least once)
            await self.io(self.outbox.release, unfinished)
        self._closing = True
        self.status_wake.set()
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout_s):
                    await asyncio.shield(self._pump)
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        for destination, _ in self.routes:
            await destination.aclose()
        self._executor.shutdown(wait=True)
