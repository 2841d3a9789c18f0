"""Post Segment calls to a server's ``/v1/batch``: batching, pacing and retries (httpx).

Batches hold at most 500 calls and stay under 500 KB. With a ``rate`` the sender paces
itself to that many calls per second, in batches of a tenth of a second each. A 429 is
retried after its ``Retry-After``; 5xx answers and transport errors are retried with
exponential backoff (a batch that did arrive is deduplicated by ``messageId``). A 400 that
says which events it rejected (the server stored the others) is recorded in ``rejected``
and sending goes on; 401/403 and other 4xx answers stop the run with the server's reason.
Used by ``loyalty-cdp simulate --target`` and ``loyalty-cdp import --target``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx
import msgspec

from loyalty_cdp.core.events import MAX_EVENT_BYTES
from loyalty_cdp.errors import (
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    StorageUnavailable,
    Unauthorized,
)

MAX_BATCH_CALLS = 500
MAX_BATCH_BODY = 500_000  # bytes: under Segment's 500 KB however a KB is counted
_PREFIX, _SUFFIX = b'{"batch":[', b"]}"
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 10.0

_encode = msgspec.json.Encoder().encode


def batch_url(target: str) -> str:
    """The ``/v1/batch`` endpoint of a server given by its base URL (or the endpoint itself)."""
    url = httpx.URL(target)
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidInput("target", f"must be an http(s) URL such as http://127.0.0.1:8080, "
                                     f"got {target!r}")
    path = url.path.rstrip("/")
    if not path.endswith("/v1/batch"):
        path += "/v1/batch"
    return str(url.copy_with(path=path))


def validate_rate(rate: float | None) -> None:
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise InvalidInput("rate", f"must be a positive number of events per second, got {rate}")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), BACKOFF_MAX * 6) if math.isfinite(seconds) else None


class PartialBatch(msgspec.Struct):
    """The 400 answer to a batch whose valid events were stored (see docs/ingest.md)."""

    accepted: int
    errors: list[dict[str, Any]]


def _partial_rejection(response: httpx.Response) -> PartialBatch | None:
    try:
        return msgspec.json.decode(response.content, type=PartialBatch)
    except msgspec.DecodeError:
        return None


class BatchSender:
    """Collects calls with :meth:`add` and posts them in batches; :meth:`flush` sends the rest.

    ``on_sent(n)`` is told after each batch the server accepted. ``sleep`` and ``clock``
    exist so that tests can run the pacing and backoff without waiting.
    """

    def __init__(
        self,
        target: str,
        write_key: str,
        rate: float | None = None,
        *,
        client: httpx.Client | None = None,
        max_attempts: int = 8,
        on_sent: Callable[[int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate_rate(rate)
        if not write_key:
            raise InvalidInput("write_key", "must not be empty")
        self.url = batch_url(target)
        self.sent = 0
        self.retries = 0
        # The server's per-event errors ({"messageId", "field", "reason", ...}) of batches it
        # stored only in part.
        self.rejected: list[dict[str, Any]] = []
        self._auth = httpx.BasicAuth(write_key, "")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=30.0)
        self._rate = rate
        self._batch_calls = MAX_BATCH_CALLS if rate is None else (
            max(1, min(MAX_BATCH_CALLS, int(rate / 10)))
        )
        self._max_attempts = max_attempts
        self._on_sent = on_sent
        self._sleep = sleep
        self._clock = clock
        self._started: float | None = None
        self._parts: list[bytes] = []
        self._size = len(_PREFIX) + len(_SUFFIX)

    def add(self, call: Mapping[str, Any]) -> None:
        encoded = _encode(call)
        if len(encoded) > MAX_EVENT_BYTES:
            raise PayloadTooLarge("", f"a call of {len(encoded)} bytes is over the "
                                      f"{MAX_EVENT_BYTES}-byte limit")
        if self._parts and (
            len(self._parts) >= self._batch_calls
            or self._size + len(encoded) + 1 > MAX_BATCH_BODY
        ):
            self.flush()
        self._parts.append(encoded)
        self._size += len(encoded) + 1

    def send(self, calls: Iterable[Mapping[str, Any]]) -> int:
        """Add every call, then flush; returns the number sent so far."""
        for call in calls:
            self.add(call)
        self.flush()
        return self.sent

    def flush(self) -> None:
        if not self._parts:
            return
        count = len(self._parts)
        body = _PREFIX + b",".join(self._parts) + _SUFFIX
        self._pace(count)
        accepted = self._post(body, count)
        self._parts = []
        self._size = len(_PREFIX) + len(_SUFFIX)
        self.sent += accepted
        if self._on_sent is not None:
            self._on_sent(accepted)

    def _pace(self, count: int) -> None:
        if self._rate is None:
            return
        now = self._clock()
        if self._started is None:
            self._started = now
        due = self._started + (self.sent + count) / self._rate
        if due > now:
            self._sleep(due - now)

    def _post(self, body: bytes, count: int) -> int:
        """Deliver one batch of ``count`` calls; returns how many the server accepted."""
        reason = ""
        for attempt in range(self._max_attempts):
            if attempt:
                self.retries += 1
            try:
                response = self._client.post(
                    self.url, content=body, auth=self._auth,
                    headers={"content-type": "application/json"},
                )
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self._sleep(self._backoff(attempt))
                continue
            status = response.status_code
            if status < 300:
                return count
            if status == 401:
                raise Unauthorized(f"{self.url} rejected the write key (401)")
            if status == 403:
                raise Forbidden(f"{self.url}: the write key lacks the ingest scope (403)")
            if status == 429:
                reason = "429 Too Many Requests"
                wait = _retry_after(response)
                self._sleep(self._backoff(attempt) if wait is None else wait)
                continue
            if status >= 500:
                reason = f"{status} {response.text[:200]}"
                self._sleep(self._backoff(attempt))
                continue
            partial = _partial_rejection(response) if status == 400 else None
            if partial is not None:
                self.rejected.extend(partial.errors)
                return partial.accepted
            raise InvalidInput("batch", f"{self.url} answered {status}: {response.text[:300]}")
        raise StorageUnavailable(
            f"{self.url}: gave up after {self._max_attempts} attempts (last: {reason})"
        )

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(BACKOFF_FIRST * 2.0**attempt, BACKOFF_MAX)

    def close(self) -> None:
        """Release the HTTP client (if this sender made it); unflushed calls are not sent."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> BatchSender:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
