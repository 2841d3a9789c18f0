"""The destination contract: what a destination does with one message, and how it reports failure.

A destination sends one :class:`~loyalty_cdp.core.messages.OutboundMessage` and returns a
:class:`Receipt`, or raises one of the :class:`SendFailure` kinds below; the dispatcher
decides what each kind means (retry, dead-letter, defer, record as suppressed). Every
destination owns its own connections (HTTP client, SMTP thread pool), so a destination that
hangs can never exhaust a pool another destination needs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
import msgspec

from loyalty_cdp.core.messages import OutboundMessage
from loyalty_cdp.errors import InvalidInput, LoyaltyCdpError

USER_AGENT = "loyalty-cdp/0.1"


class Receipt(msgspec.Struct, frozen=True):
    """A send the provider accepted: its id for the message, and whether it confirmed final delivery."""

    provider_id: str | None = None
    delivered: bool = False


class SendFailure(LoyaltyCdpError):
    """A send that did not succeed; ``reason`` is short and safe to store and show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientFailure(SendFailure):
    """Worth retrying later (timeouts, 5xx, 429, refused connections); ``retry_after`` in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(SendFailure):
    """Retrying cannot help; ``bounced`` when the recipient itself was refused (unknown address, dead token)."""

    def __init__(self, reason: str, bounced: bool = False) -> None:
        super().__init__(reason)
        self.bounced = bounced


class Suppressed(SendFailure):
    """The message must not be sent at all (no consent, the number texted STOP)."""


class Deferred(SendFailure):
    """Not now (quiet hours): try again at ``until_ms`` without counting an attempt."""

    def __init__(self, reason: str, until_ms: int) -> None:
        super().__init__(reason)
        self.until_ms = until_ms


class Destination(Protocol):
    """One configured channel endpoint. ``consent_purpose`` is what a recipient must have granted."""

    name: str
    channel: str
    consent_purpose: str | None

    async def send(self, message: OutboundMessage, now_ms: int) -> Receipt:
        """Send ``message`` once; raise a :class:`SendFailure` kind when it was not sent."""
        ...

    async def aclose(self) -> None: ...


class DeliveryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the dispatcher drives one destination (the ``delivery:`` keys of its configuration).

    Memory held for the destination is at most ``queue_size + concurrency`` messages; the
    rest of its backlog waits on disk in the outbox.
    """

    concurrency: int = 4
    queue_size: int = 100
    rate_per_second: float | None = None
    burst: int | None = None
    timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    max_retry_after_s: float = 3600.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    lease_s: float = 300.0
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        for field in ("concurrency", "queue_size", "max_attempts", "breaker_failures"):
            if getattr(self, field) < 1:
                raise InvalidInput(field, "must be at least 1")
        for field in ("timeout_s", "backoff_base_s", "backoff_cap_s", "breaker_reset_s", "lease_s", "poll_s"):
            if not getattr(self, field) > 0:
                raise InvalidInput(field, "must be positive")
        if self.rate_per_second is not None and not self.rate_per_second > 0:
            raise InvalidInput("rate_per_second", "must be positive")
        if self.burst is not None and self.burst < 1:
            raise InvalidInput("burst", "must be at least 1")
        if self.backoff_cap_s < self.backoff_base_s:
            raise InvalidInput("backoff_cap_s", "must be at least backoff_base_s")
        if self.lease_s <= self.timeout_s:
            raise InvalidInput("lease_s", "must be longer than timeout_s")


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_s)


def http_failure(response: httpx.Response, detail: str = "") -> SendFailure:
    """The failure kind of a non-2xx answer: 408/425/429/5xx are transient, other 4xx permanent."""
    status = response.status_code
    reason = f"HTTP {status}{': ' + detail if detail else ''}"
    if status in (408, 425, 429) or status >= 500:
        return TransientFailure(reason, parse_retry_after(response.headers.get("Retry-After"), time.time()))
    if 300 <= status < 400:
        return PermanentFailure(f"{reason} (redirects are not followed)")
    return PermanentFailure(reason)


async def post(client: httpx.AsyncClient, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
    """``client.post``, with network errors and timeouts turned into :class:`TransientFailure`."""
    try:
        return await client.post(url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientFailure(f"timed out: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        raise TransientFailure(f"connection failed: {type(exc).__name__}: {exc}"[:300]) from None


def json_object(response: httpx.Response) -> Mapping[str, Any]:
    """The response's JSON object (empty when it is not one), for reading vendor error codes."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
