"""Validate and normalise Segment Tracking API calls into canonical events (pure: no I/O, no clock).

One function, :func:`normalise`, turns a decoded Segment call into an :class:`Event`:
the checks the Segment API makes (identity present, ``messageId`` length, types of
the well-known fields), Segment's clock-skew correction, and the canonical JSON that
the event log stores. Time and generated ids are passed in, so the result depends on
its arguments only.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec

from loyalty_cdp.errors import InvalidInput, PayloadTooLarge

CALL_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_MESSAGE_ID_CHARS = 99  # Segment: "messageId must be under 100 characters"
MAX_ID_CHARS = 256
MAX_DEPTH = 24

_OBJECT_FIELDS = ("context", "integrations", "properties", "traits")
_TIME_FIELDS = ("timestamp", "sentAt", "originalTimestamp")
# Fields the server owns; a client's values are replaced, never trusted.
_SERVER_FIELDS = ("receivedAt", "writeKey")
# Fields left out of the payload hash: they change on every retry of the same message.
_RETRY_VOLATILE = frozenset({"sentAt", "writeKey", "receivedAt"})

_encoder = msgspec.json.Encoder()


class Event(msgspec.Struct, frozen=True, gc=False):
    """One accepted call, as the event log stores it.

    ``timestamp`` and ``received_at`` are epoch milliseconds (UTC); ``body`` is the
    canonical JSON of the whole call with ``messageId``, ``timestamp`` (skew-corrected),
    ``originalTimestamp`` and ``receivedAt`` filled in. ``payload_hash`` identifies the
    client's content, so that a reused ``messageId`` with different content is detected.
    """

    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: int
    received_at: int
    channel: str | None
    body: bytes
    payload_hash: bytes


def parse_time(value: Any, field: str) -> int:
    """Parse an ISO-8601 timestamp (as Segment sends it) into epoch milliseconds."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be an ISO-8601 date-time string")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, f"{value[:40]!r} is not an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise InvalidInput(field, f"{value[:40]!r} is out of range") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def _second(epoch_s: int) -> str:
    return (_EPOCH + timedelta(seconds=epoch_s)).strftime("%Y-%m-%dT%H:%M:%S")


def format_time(epoch_ms: int) -> str:
    """Epoch milliseconds as Segment's ISO-8601 form, ``2026-01-02T03:04:05.678Z``.

    Events arrive clustered in time, so the date-time part is cached per second: formatting
    it is the dearest step of normalising an event otherwise.
    """
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


def _identifier(call: dict[str, Any], key: str) -> str | None:
    value = call.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(key, "must be a string or an integer")
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        raise InvalidInput(key, f"must be at most {MAX_ID_CHARS} characters")
    if "\x00" in text:
        raise InvalidInput(key, "must not contain the NUL character")
    return text or None


def _deeper_than(value: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether a decoded JSON container nests more than ``levels`` deep (scalars cost one type check)."""
    if levels <= 0:
        return True
    for child in value.values() if type(value) is dict else value:
        kind = type(child)
        if (kind is dict or kind is list) and _deeper_than(child, levels - 1):
            return True
    return False


def normalise(
    call: Any,
    *,
    call_type: str | None,
    received_at: int,
    default_message_id: str,
    batch_sent_at: int | None = None,
) -> Event:
    """Validate one Segment call and return its canonical :class:`Event`.

    ``call_type`` is the endpoint's type (``None`` for a ``batch`` item, whose own
    ``type`` field then decides). Raises :class:`InvalidInput` naming the field.
    """
    if not isinstance(call, dict):
        raise InvalidInput("", "each call must be a JSON object")
    kind = call_type if call_type is not None else call.get("type")
    if not isinstance(kind, str) or kind not in CALL_TYPES:
        raise InvalidInput(
            "type", f"must be one of {', '.join(sorted(CALL_TYPES))}, got {str(kind)[:40]!r}"
        )
    user_id = _identifier(call, "userId")
    anonymous_id = _identifier(call, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise InvalidInput("userId", "userId or anonymousId is required")

    message_id = call.get("messageId")
    if message_id is None or message_id == "":
        message_id = default_message_id
    elif not isinstance(message_id, str) or "\x00" in message_id:
        raise InvalidInput("messageId", "must be a string without NUL characters")
    elif len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise InvalidInput("messageId", f"must be under {MAX_MESSAGE_ID_CHARS + 1} characters")

    for key, value in call.items():
        if key in _OBJECT_FIELDS and value is not None and not isinstance(value, dict):
            raise InvalidInput(key, "must be a JSON object")
        if isinstance(value, (dict, list)) and _deeper_than(value, MAX_DEPTH):
            raise InvalidInput(key, f"is nested deeper than {MAX_DEPTH} levels")

    name: str | None = None
    if kind == "track":
        name = call.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("event", "track calls need a non-empty event name")
        if "\x00" in name:
            raise InvalidInput("event", "must not contain the NUL character")
    elif kind in ("page", "screen"):
        raw_name = call.get("name")
        if raw_name is not None and (not isinstance(raw_name, str) or "\x00" in raw_name):
            raise InvalidInput("name", "must be a string without NUL characters")
        name = raw_name
    elif kind == "group":
        if _identifier(call, "groupId") is None:
            raise InvalidInput("groupId", "group calls need a groupId")
    elif kind == "alias":
        if _identifier(call, "previousId") is None:
            raise InvalidInput("previousId", "alias calls need a previousId")
        if user_id is None:
            raise InvalidInput("userId", "alias calls need a userId")

    times = {key: parse_time(call[key], key) for key in _TIME_FIELDS if call.get(key) is not None}
    sent_at = times.get("sentAt", batch_sent_at)
    client_time = times.get("timestamp", times.get("originalTimestamp"))
    if client_time is None:
        timestamp = received_at
    elif sent_at is not None:
        # Segment's skew correction: the client clock's offset is receivedAt - sentAt.
        timestamp = client_time + (received_at - sent_at)
    else:
        timestamp = client_time

    context = call.get("context") or {}
    channel = context.get("channel")
    if channel is not None and (not isinstance(channel, str) or "\x00" in channel):
        raise InvalidInput("context.channel", "must be a string without NUL characters")

    content = {k: v for k, v in call.items() if k not in _RETRY_VOLATILE}
    try:
        payload_hash = hashlib.blake2b(_encoder.encode(content), digest_size=16).digest()
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:  # ValueError: lone surrogates
        raise InvalidInput("", f"cannot be encoded as JSON: {exc}") from None

    body = {k: v for k, v in call.items() if k not in _SERVER_FIELDS}
    body["type"] = kind
    body["messageId"] = message_id
    if client_time is not None:
        body["originalTimestamp"] = format_time(client_time)
    body["timestamp"] = format_time(timestamp)
    body["receivedAt"] = format_time(received_at)
    if user_id is not None:
        body["userId"] = user_id
    if anonymous_id is not None:
        body["anonymousId"] = anonymous_id
    encoded = _encoder.encode(body)
    if len(encoded) > MAX_EVENT_BYTES:
        raise PayloadTooLarge("", f"event is {len(encoded)} bytes, over the {MAX_EVENT_BYTES} limit")
    return Event(
        message_id=message_id,
        type=kind,
        event=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        received_at=received_at,
        channel=channel,
        body=encoded,
        payload_hash=payload_hash,
    )
