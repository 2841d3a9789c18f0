"""Group commit: many concurrent ingest requests share one durable append.

Delivery guarantee, in the order it happens:

1. a request's validated events join the in-memory queue, unless the queue already holds
   ``capacity`` events, in which case the request is refused with 429 (memory is bounded,
   nothing is buffered beyond it);
2. the writer takes everything queued (up to ``max_batch`` events) and calls
   ``EventLog.append`` once, on a dedicated thread; the append commits durably;
3. only then is each request's future resolved, and only then does the HTTP layer answer
   200. A crash before step 3 means the client never got its ack and will retry; the
   retry is deduplicated by ``messageId``. So nothing acknowledged is lost and nothing is
   stored twice.

On shutdown the writer drains the queue before the log is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from loyalty_cdp.adapters.eventlog.base import AppendResult, EventLog
from loyalty_cdp.core.events import Event
from loyalty_cdp.errors import Overloaded, StorageUnavailable

log = logging.getLogger(__name__)


class GroupCommitAppender:
    def __init__(
        self,
        event_log: EventLog,
        capacity: int,
        max_batch: int = 10_000,
        on_append: Callable[[AppendResult], None] | None = None,
    ) -> None:
        self._log = event_log
        self._capacity = capacity
        self._max_batch = max_batch
        self._on_append = on_append
        self._queue: deque[tuple[Sequence[Event], asyncio.Future[None]]] = deque()
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="append")
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_events(self) -> int:
        return self._queued_events

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, events: Sequence[Event]) -> None:
        """Return once ``events`` are durably appended (or were already in the log)."""
        if not events:
            return
        if self._closing:
            raise StorageUnavailable("the server is shutting down")
        if self._queued_events + len(events) > self._capacity:
            raise Overloaded(retry_after=1)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((events, future))
        self._queued_events += len(events)
        self._wakeup.set()
        # A client that disconnects cancels its request, never the append it joined.
        await asyncio.shield(future)

    async def close(self) -> None:
        """Refuse new work, append everything already queued, stop the writer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            waiting: list[asyncio.Future[None]] = []
            batch: list[Event] = []
            while self._queue and (not batch or len(batch) + len(self._queue[0][0]) <= self._max_batch):
                events, future = self._queue.popleft()
                batch.extend(events)
                waiting.append(future)
            try:
                result = await loop.run_in_executor(self._executor, self._log.append, batch)
            except Exception as exc:  # the store failed: every waiting request gets a 503
                log.exception("event log append failed")
                error = StorageUnavailable(f"event log append failed: {type(exc).__name__}")
                for future in waiting:
                    if not future.done():
                        future.set_exception(error)
            else:
                if self._on_append is not None:
                    self._on_append(result)
                for future in waiting:
                    if not future.done():
                        future.set_result(None)
            finally:
                self._queued_events -= len(batch)
