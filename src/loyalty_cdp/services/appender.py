"""Group commit: many concurrent ingest requests share one durable append, made by a writer.

Delivery guarantee, in the order it happens:

1. a request joins the in-memory queue, unless the queue already holds ``capacity`` calls,
   in which case it is refused with 429 (memory is bounded, nothing is buffered beyond it);
2. the writer takes a group of queued requests (up to ``max_batch`` calls), decodes and
   normalises the raw ones, refuses a request holding a loyalty command its key may not
   send, leaves out the events that carry an erased person's identifier (the suppression
   list), and stores the group's events with one ``EventLog.append``, which commits durably;
3. only then does the writer answer, and only then is each request's future resolved and
   the HTTP answer 200. A crash before step 3 means the client never got its ack and will
   retry; the retry is deduplicated by ``messageId``. So nothing acknowledged is lost and
   nothing is stored twice.

The writer runs in a process of its own when that process can open the event log itself (the
embedded SQLite log), else in a thread over ``event_log``. A process has its own interpreter
lock: decoding, normalising and appending (about 15-25 us of CPU per event on the 2-core
benchmark machine) then run beside the profile processor instead of taking turns with it,
and the event loop only authenticates, counts the calls and passes bytes along. There can be
``writers`` such processes, each fed its own groups from the one queue: they normalise at the
same time and take turns at the log's write lock (see ``SqliteEventLog``), which they hold
only to insert and commit. One writer process tops out at a core: normalising is two thirds of
its work. Either way
the writer speaks the same protocol over a socket pair: length-prefixed msgpack frames, a
group per frame, one reply per group, in order, with up to three groups in flight so that
the writer never waits for the event loop. Inside the writer two stages overlap: one thread
decodes and normalises a group and inserts it (``SqliteEventLog.stage``) as soon as the
previous group's commit released the log, while a committer thread commits the previous
group (the fsync) and sends its reply; the reply still goes only after the commit. A log
that cannot stage (PostgreSQL) is appended whole by the committer thread. A writer process
that dies (killed, out of memory) fails the requests it held with 503 (nothing of theirs was
acknowledged; what it appended before dying is found again by ``messageId`` when the clients
resend) and another is started half a second later, while new requests wait in the bounded
queue (or go to the other writers). A request that makes normalising raise anything but
:class:`InvalidInput` (a bug) fails alone with a 500; its group is still written and the writer
lives on. A writer exits
when the server closes its socket, and with the server.

On shutdown the queue is drained before the writer stops and the log is closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import queue
import signal
import socket
import sys
import threading
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import msgspec

from loyalty_cdp.adapters.eventlog.base import AppendResult, EventLog
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.suppression import SuppressionList
from loyalty_cdp.core.events import Event, Rejection, normalise_request
from loyalty_cdp.core.loyalty.inputs import COMMAND_EVENTS
from loyalty_cdp.errors import (
    Forbidden,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

_HEADER = 4  # bytes of a frame's little-endian length
_IN_FLIGHT_GROUPS = 3  # one committing, one being normalised, the next waiting in the socket
_RESTART_PAUSE = 0.5  # seconds before a writer that died is replaced (no busy loop of crashes)


class _Calls(msgspec.Struct, array_like=True, tag="calls"):
    """A raw ingest request body: the writer decodes and normalises it."""

    call_type: str | None
    body: bytes
    received_at: int
    commands_allowed: bool  # the key holds the loyalty scope (see _command_refusal)


class _Events(msgspec.Struct, array_like=True, tag="events"):
    """Events normalised already (loyalty commands, for instance)."""

    events: list[Event]


class Stored(msgspec.Struct, array_like=True, tag="stored"):
    """A request's ``accepted`` events are durably in the log, ``suppressed`` ones were left out
    (they carry an erased person's identifier), and ``rejections`` lists its invalid calls."""

    accepted: int
    suppressed: int
    rejections: list[Rejection]


class _Refused(msgspec.Struct, array_like=True, tag="refused"):
    """The request as a whole broke a rule: an :class:`InvalidInput` raised in the writer (its
    field and reason), or a loyalty command from a key without the scope (``field`` None).
    ``internal``: normalising it raised something else, a bug of ours (the request alone fails,
    with a 500, and the writer carries on with the rest of the group)."""

    field: str | None
    reason: str
    too_large: bool = False
    internal: bool = False

    def error(self) -> Exception:
        if self.internal:
            return WriterBug(self.reason)
        if self.field is None:
            return Forbidden(self.reason)
        return (PayloadTooLarge if self.too_large else InvalidInput)(self.field, self.reason)


class WriterBug(RuntimeError):
    """Normalising a request raised an unexpected error in the writer (answered as a bare 500)."""


class _Reply(msgspec.Struct, array_like=True):
    outcomes: list[Stored | _Refused]
    result: AppendResult | None
    failure: str | None  # why the append failed; every request with events then gets a 503


_Item = _Calls | _Events
_encode = msgspec.msgpack.Encoder().encode
_decode_group = msgspec.msgpack.Decoder(list[_Item]).decode
_decode_reply = msgspec.msgpack.Decoder(_Reply).decode


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(_HEADER, "little") + payload


def _receive_exactly(sock: socket.socket, size: int) -> bytearray | None:
    """``size`` bytes from ``sock``, or None if it is closed first."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            return None
        received += count
    return buffer


def _command_refusal(events: list[Event]) -> str | None:
    """Why a request may not be stored with a key lacking the ``loyalty`` scope: a loyalty
    command (a redemption, a points adjustment) moves points, so any write key could
    otherwise grant itself points. The whole request is refused."""
    for event in events:
        if event.type == "track" and event.event in COMMAND_EVENTS:
            return f"{event.event!r} is a loyalty command: the key needs the 'loyalty' scope"
    return None


def _write_group(event_log: EventLog, suppression: SuppressionList | None, items: list[_Item]) -> _Reply:
    """Normalise a group and append it in one go (what the pipelined writer does in two stages)."""
    outcomes, events = _prepare_group(suppression, items)
    return _finish(outcomes, partial(event_log.append, events))


def _finish(outcomes: list[Stored | _Refused], append: Callable[[], AppendResult]) -> _Reply:
    """The group's reply once ``append`` made its events durable, or why it could not."""
    try:
        result = append()
    except Exception as exc:  # the store failed: the server answers 503 to each waiting request
        return _Reply(outcomes, None, f"{type(exc).__name__}: {exc}")
    return _Reply(outcomes, result, None)


def _failed(exc: Exception) -> AppendResult:
    raise exc


def _prepare_group(suppression: SuppressionList | None, items: list[_Item]) -> tuple[list[Stored | _Refused],
                                                                                     list[Event]]:
    """Each request's outcome, and the group's events to append (suppressed ones left out)."""
    normalised = [None if isinstance(item, _Events) else _normalise_request(item) for item in items]
    ingested: list[Event] = []  # the accepted events of the raw requests, in order
    for outcome in normalised:
        if isinstance(outcome, tuple):
            ingested.extend(outcome[0])
    # An erased person stays out: ingested events carrying a suppressed identifier are not
    # stored (the client is answered as usual). One look-up serves the whole group.
    dropped = suppression.suppressed(ingested) if suppression is not None else set()
    outcomes: list[Stored | _Refused] = []
    events: list[Event] = []
    start = 0  # where the next raw request's events are in ``ingested``
    for item, outcome in zip(items, normalised, strict=True):
        if isinstance(item, _Events):
            outcomes.append(Stored(len(item.events), 0, []))
            events.extend(item.events)
        elif isinstance(outcome, _Refused):
            outcomes.append(outcome)
        elif outcome is not None:
            accepted, rejections = outcome
            end = start + len(accepted)
            if dropped:
                accepted = [ingested[i] for i in range(start, end) if i not in dropped]
            outcomes.append(Stored(len(accepted), end - start - len(accepted), rejections))
            events.extend(accepted)
            start = end
    return outcomes, events


def _normalise_request(item: _Calls) -> tuple[list[Event], list[Rejection]] | _Refused:
    """A raw request's accepted events and rejected calls, or why it is refused as a whole."""
    try:
        accepted, rejections = normalise_request(
            item.body, call_type=item.call_type, received_at=item.received_at, request_id=_new_request_id
        )
    except InvalidInput as exc:
        return _Refused(exc.field, exc.reason, isinstance(exc, PayloadTooLarge))
    except Exception as exc:  # a bug: this request fails alone; its group, and the writer, go on
        log.exception("normalising an ingest request failed")
        return _Refused(None, f"{type(exc).__name__} while normalising the request", internal=True)
    if not item.commands_allowed and (refusal := _command_refusal(accepted)):
        return _Refused(None, refusal)
    return accepted, rejections


def _new_request_id() -> str:
    """The id that a request's calls without a ``messageId`` are named after (made only for them)."""
    return f"lcdp-{uuid.uuid4()}"


_Job = tuple[list[Stored | _Refused], Callable[[], AppendResult]]


def _serve(sock: socket.socket, event_log: EventLog, suppression: SuppressionList | None) -> None:
    """The writer: read a group, normalise and append it, answer; until the other end closes the socket.

    This thread reads and normalises each group and, when the log can stage an append, inserts
    it (waiting for the previous group's commit to release the log); the committer thread
    commits and answers, in order. Whatever way this ends, every group handed to the committer
    is committed (or fails) and answered before the committer stops.
    """
    jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=1)
    committer = threading.Thread(target=_commit_and_answer, args=(sock, jobs), name="commit", daemon=True)
    committer.start()
    stage = getattr(event_log, "stage", None)
    try:
        while (header := _receive_exactly(sock, _HEADER)) is not None:
            group = _receive_exactly(sock, int.from_bytes(header, "little"))
            if group is None:
                return
            outcomes, events = _prepare_group(suppression, _decode_group(group))
            if stage is None:
                jobs.put((outcomes, partial(event_log.append, events)))
                continue
            try:
                append = stage(events).commit
            except Exception as exc:  # the log is unavailable: this group's requests get 503
                append = partial(_failed, exc)
            jobs.put((outcomes, append))
    finally:
        jobs.put(None)
        committer.join()


def _commit_and_answer(sock: socket.socket, jobs: queue.Queue[_Job | None]) -> None:
    """The committer: make each group durable, then answer it, in the order the groups came."""
    answering = True
    while (job := jobs.get()) is not None:
        reply = _finish(*job)  # always run: a staged append holds the log until committed
        if not answering:
            continue
        try:
            sock.sendall(_frame(_encode(reply)))
        except OSError:  # the server is gone; what was appended is simply not acknowledged
            answering = False


def _writer_process(sock: socket.socket, open_log: Callable[[], EventLog], data_dir: Path | None) -> None:
    """The writer process's main: its own event log connection, then :func:`_run_writer`."""
    # Ctrl-C reaches the whole process group, and so does the SIGTERM of `timeout`, systemd or a
    # container runtime: the server drains the queue, then closes the socket, which ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Requests are decoded and freed one at a time and nothing here is cyclic, so the young
    # generation's default threshold (700) would only rescan the live request again and again.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # The committer thread needs the interpreter for a moment after each fsync, while this
    # process's main thread normalises: a short switch interval keeps that wait short (acks).
    sys.setswitchinterval(0.0005)
    event_log = open_log()
    try:
        _run_writer(sock, event_log, data_dir)
    finally:
        event_log.close()


def _reopener(event_log: EventLog) -> Callable[[], EventLog] | None:
    """How a writer process opens the log that ``event_log`` gives access to, if it can.

    The embedded SQLite log reopens by its path (processes may share its file: appends take
    the database's write lock and first index what others appended). Other logs are
    written from a thread of this process.
    """
    if isinstance(event_log, SqliteEventLog):
        return partial(SqliteEventLog, event_log.path)
    return None


def _run_writer(sock: socket.socket, event_log: EventLog, data_dir: Path | None) -> None:
    """A writer's life, in a thread or a process: open the suppression list, serve, close.

    The socket is closed on the way out whatever happens, so the server always learns
    that this writer stopped.
    """
    with sock:
        suppression = None if data_dir is None else SuppressionList(data_dir)
        try:
            _serve(sock, event_log, suppression)
        finally:
            if suppression is not None:
                suppression.close()


class _Pending(msgspec.Struct):
    item: _Item
    calls: int
    future: asyncio.Future[Stored]


class GroupCommitAppender:
    """``data_dir`` holds the suppression list the writer checks; for the SQLite log it
    defaults to the log's directory, else without it no events are left out at ingest."""

    def __init__(
        self,
        event_log: EventLog,
        capacity: int,
        max_batch: int = 10_000,
        on_append: Callable[[AppendResult], None] | None = None,
        data_dir: Path | None = None,
        writers: int = 1,
    ) -> None:
        if writers < 1:
            raise ValueError(f"writers must be at least 1, got {writers}")
        self._log = event_log
        self._reopen = _reopener(event_log)
        # A writer in a thread shares the interpreter lock with the event loop: a second one
        # would only take turns with the first. Writer processes normalise side by side.
        self._writers = writers if self._reopen is not None else 1
        if data_dir is None and isinstance(event_log, SqliteEventLog):
            data_dir = event_log.path.parent
        self._data_dir = data_dir
        self._capacity = capacity
        self._max_batch = max_batch
        self._on_append = on_append
        self._queue: deque[_Pending] = deque()
        self._queued_calls = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_events(self) -> int:
        """Calls accepted but not yet answered (queued, or with the writer)."""
        return self._queued_calls

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, events: Sequence[Event]) -> None:
        """Return once ``events`` (normalised already) are durably appended, or were in the log."""
        if events:
            await self._enqueue(_Events(list(events)), len(events))

    async def submit_request(self, call_type: str | None, body: bytes, received_at: int, calls: int,
                             commands_allowed: bool) -> Stored:
        """Normalise and durably append one raw ingest request of ``calls`` calls (see
        :func:`~loyalty_cdp.core.events.normalise_request`); raises its :class:`InvalidInput`,
        or :class:`Forbidden` for a loyalty command unless ``commands_allowed``."""
        return await self._enqueue(_Calls(call_type, body, received_at, commands_allowed), max(calls, 1))

    async def _enqueue(self, item: _Item, calls: int) -> Stored:
        if self._closing:
            raise StorageUnavailable("the server is shutting down")
        if self._queued_calls + calls > self._capacity:
            raise Overloaded(retry_after=1)
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, calls, future))
        self._queued_calls += calls
        self._wakeup.set()
        # A client that disconnects cancels its request, never the append it joined.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Refuse new work, append everything already queued, stop the writer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        """Keep every writer fed until closing with nothing left."""
        await asyncio.gather(*(self._keep_writer() for _ in range(self._writers)))

    async def _keep_writer(self) -> None:
        """Feed a writer until closing with nothing left; start another if one dies."""
        while self._queue or not self._closing:
            try:
                stopped = await self._feed_writer()
            except OSError as exc:  # no writer could be started (out of processes or descriptors)
                stopped = f"cannot start: {exc}"
                while self._queue:
                    self._fail([self._queue.popleft()], StorageUnavailable(f"the event log writer {stopped}"))
            if stopped is not None:
                log.error("event log writer stopped (%s); its requests got 503, starting another", stopped)
                await asyncio.sleep(_RESTART_PAUSE)

    async def _feed_writer(self) -> str | None:
        """Run one writer: None once closing and drained, else why the writer stopped."""
        sock, stop_writer = self._start_writer()
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        in_flight: deque[list[_Pending]] = deque()
        receiving = asyncio.get_running_loop().create_task(self._receive(reader, in_flight))
        try:
            await self._send(writer, in_flight, receiving)
        except OSError:  # the writer closed its end while a group was being sent
            pass
        finally:
            writer.close()
            stopped = await _why_stopped(receiving)
            for group in in_flight:
                self._fail(group, StorageUnavailable(f"the event log writer stopped: {stopped}"))
            await stop_writer()
        return stopped

    def _start_writer(self) -> tuple[socket.socket, Callable[[], Awaitable[None]]]:
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        if self._reopen is None:
            thread = threading.Thread(target=_run_writer, args=(theirs, self._log, self._data_dir), name="append",
                                      daemon=True)
            thread.start()
            return ours, partial(loop.run_in_executor, None, thread.join)
        process = multiprocessing.get_context("spawn").Process(
            target=_writer_process, args=(theirs, self._reopen, self._data_dir), name="lcdp-writer", daemon=True
        )
        try:
            process.start()
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours, partial(loop.run_in_executor, None, process.join)

    async def _send(self, writer: asyncio.StreamWriter, in_flight: deque[list[_Pending]],
                    receiving: asyncio.Task[None]) -> None:
        """Send groups while the writer lives; return when it stopped, or when closing and drained."""
        while not receiving.done():
            if not self._queue or len(in_flight) >= _IN_FLIGHT_GROUPS:
                if self._closing and not self._queue and not in_flight:
                    return
                self._wakeup.clear()
                waker = asyncio.ensure_future(self._wakeup.wait())
                await asyncio.wait((waker, receiving), return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                continue
            group = [self._queue.popleft()]
            calls = group[0].calls
            while self._queue and calls + self._queue[0].calls <= self._max_batch:
                calls += self._queue[0].calls
                group.append(self._queue.popleft())
            in_flight.append(group)
            writer.write(_frame(_encode([pending.item for pending in group])))
            await writer.drain()

    async def _receive(self, reader: asyncio.StreamReader, in_flight: deque[list[_Pending]]) -> None:
        """Answer each group's requests as the writer's replies arrive (they come in order)."""
        while True:
            header = await reader.readexactly(_HEADER)
            reply = _decode_reply(await reader.readexactly(int.from_bytes(header, "little")))
            group = in_flight.popleft()
            if reply.result is not None and self._on_append is not None:
                self._on_append(reply.result)
            for pending, outcome in zip(group, reply.outcomes, strict=True):
                self._queued_calls -= pending.calls
                if pending.future.done():
                    continue
                if isinstance(outcome, _Refused):
                    pending.future.set_exception(outcome.error())
                elif reply.failure is not None and outcome.accepted:
                    pending.future.set_exception(StorageUnavailable(f"event log append failed: {reply.failure}"))
                else:
                    pending.future.set_result(outcome)
            self._wakeup.set()

    def _fail(self, group: list[_Pending], error: StorageUnavailable) -> None:
        for pending in group:
            self._queued_calls -= pending.calls
            if not pending.future.done():
                pending.future.set_exception(error)


async def _why_stopped(receiving: asyncio.Task[None]) -> str | None:
    """None if the server stopped receiving (closing); else how the writer's socket ended."""
    if not receiving.done():
        receiving.cancel()
    try:
        await receiving
    except asyncio.CancelledError:
        return None
    except Exception as exc:  # the socket ended (the writer died), or answering its reply failed
        return f"{type(exc).__name__}: {exc}"
    return "its socket ended"
