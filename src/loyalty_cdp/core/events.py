"""Validate and normalise Segment Tracking API calls into canonical events (pure: no I/O, no clock).

:func:`normalise` turns a decoded Segment call into an :class:`Event`: the checks the
Segment API makes (identity present, ``messageId`` length, types of the well-known
fields), Segment's clock-skew correction, and the canonical JSON that the event log
stores. :func:`normalise_request` does it for a whole request body, one call or a batch.
Time and generated ids are passed in, so the results depend on the arguments only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
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
# Left out of the stored body's stable part (see normalise): the server's fields (a client's
# values are replaced, never trusted) and the fields that change on every retry of the same
# message. The body appends the skew-corrected ``timestamp``, ``receivedAt`` and ``sentAt``.
_NOT_STABLE = ("sentAt", "writeKey", "receivedAt", "timestamp")
# A JSON text with at most this many brackets cannot nest any field deeper than MAX_DEPTH.
_SURELY_SHALLOW = MAX_DEPTH + 1
_CONTAINERS = (dict, list)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


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


class Rejection(msgspec.Struct, frozen=True, rename="camel"):
    """One invalid call of a batch, as the 400 answer lists it (the valid ones are stored)."""

    index: int
    message_id: str | None
    field: str
    reason: str


def parse_time(value: Any, field: str) -> int:
    """Parse an ISO-8601 timestamp (as Segment sends it) into epoch milliseconds.

    Any instant a date-time can name in UTC (years 1 to 9999) is representable; whether an
    event may carry it is :func:`normalise`'s rule (``FIRST_EVENT_MS`` to ``LAST_EVENT_MS``).
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be an ISO-8601 date-time string")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, f"{value[:40]!r} is not an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Exact integer arithmetic (a float timestamp can be a millisecond off), from the parts of the
    # timedelta (dividing it by a timedelta costs twice as much); an offset can push a date-time
    # of year 1 or 9999 out of the years UTC can name, so the range is checked too.
    since = moment - _EPOCH
    epoch_ms = since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000
    if not _FIRST_MS <= epoch_ms <= _LAST_MS:
        raise InvalidInput(field, f"{value[:40]!r} is out of range: not between years 1 and 9999 in UTC")
    return epoch_ms


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# The instants an ISO-8601 date-time can name (years 1 to 9999), in epoch milliseconds.
_FIRST_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_MS
_LAST_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _ONE_MS
# The times an event may carry, once skew-corrected: from the Unix epoch to the end of year
# 2999. Wide enough for any real history and any client clock, narrow enough that every time
# derived from an event (points expiry, pending periods, tier reviews, day buckets) stays
# representable: points earned on 9999-12-31 would become active after year 9999.
FIRST_EVENT_MS = 0
LAST_EVENT_MS = (datetime(3000, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_MS - 1
EVENT_TIME_RANGE = "between 1970-01-01T00:00:00.000Z and 2999-12-31T23:59:59.999Z"


@lru_cache(maxsize=4096)
def _second(epoch_s: int) -> str:
    # isoformat, not strftime: %Y drops the leading zeros of years before 1000 on Linux.
    return (_EPOCH + timedelta(seconds=epoch_s)).isoformat(timespec="seconds")[:19]


_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


def format_time(epoch_ms: int) -> str:
    """Epoch milliseconds as Segment's ISO-8601 form, ``2026-01-02T03:04:05.678Z``.

    Events arrive clustered in time, so the date-time part is cached per second and the
    milliseconds come from a table: formatting is the dearest step of normalising otherwise.
    """
    return _second(epoch_ms // 1000) + _MILLIS[epoch_ms % 1000]


def _describe(epoch_ms: int) -> str:
    """An event time for an error message, even one that no date-time can name."""
    if _FIRST_MS <= epoch_ms <= _LAST_MS:
        return format_time(epoch_ms)
    return f"{epoch_ms} ms from the Unix epoch, beyond the year 9999 or before the year 1"


def _identifier(value: Any, key: str) -> str | None:
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


def _is_object(value: Any) -> bool:
    return value is None or isinstance(value, dict)


def _deeper_than(value: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether a decoded JSON container nests more than ``levels`` deep (scalars cost one type check)."""
    if levels <= 0:
        return True
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, _CONTAINERS) and _deeper_than(child, levels - 1):
            return True
    return False


def _deep_field(call: dict[str, Any], keys: Iterable[Any]) -> str | None:
    """The first of ``keys`` whose value nests deeper than MAX_DEPTH, if any (exact, bounded recursion)."""
    for key in keys:
        value = call.get(key)
        if isinstance(value, _CONTAINERS) and _deeper_than(value, MAX_DEPTH):
            return str(key)
    return None


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

    The body is the call's *stable part* (everything but ``sentAt``, ``writeKey``,
    ``receivedAt`` and ``timestamp``, with ``type``, ``messageId``, ``originalTimestamp``
    and the ids normalised), followed by the skew-corrected ``timestamp``, ``receivedAt``
    and the client's ``sentAt`` if it sent one. The payload hash is the hash of the stable
    part, so a retry (new ``sentAt``, new ``receivedAt``) hashes the same and any change of
    content does not. The stable part is encoded once for the hash, the depth check and the body.
    """
    return _normalise(call, call_type, received_at, format_time(received_at), _GeneratedIds(default_message_id),
                      None, batch_sent_at)


class _GeneratedIds:
    """The message ids of a request's calls that come without one: the request id, suffixed by
    ``-<index>`` in a batch. A request id given as a function is made on first use, if any."""

    __slots__ = ("_request_id",)

    def __init__(self, request_id: str | Callable[[], str]) -> None:
        self._request_id = request_id

    def of(self, index: int | None) -> str:
        if not isinstance(self._request_id, str):
            self._request_id = self._request_id()
        return self._request_id if index is None else f"{self._request_id}-{index}"


def _normalise(
    call: Any,
    call_type: str | None,
    received_at: int,
    received_text: str,
    generated_ids: _GeneratedIds,
    index: int | None,
    batch_sent_at: int | None,
) -> Event:
    """:func:`normalise` for a call of a request: ``received_text`` is formatted once per request, and the
    generated message id (the call's index in a batch, else None) only when needed.

    Every check of :func:`normalise`, in the same order (the first failing one names the field),
    with the dictionary read once per field: this runs for every ingested call.
    """
    if not isinstance(call, dict):
        raise InvalidInput("", "each call must be a JSON object")
    get = call.get
    kind = call_type if call_type is not None else get("type")
    if not isinstance(kind, str) or kind not in CALL_TYPES:
        raise InvalidInput(
            "type", f"must be one of {', '.join(sorted(CALL_TYPES))}, got {str(kind)[:40]!r}"
        )
    user_id = _identifier(get("userId"), "userId")
    anonymous_id = _identifier(get("anonymousId"), "anonymousId")
    if user_id is None and anonymous_id is None:
        raise InvalidInput("userId", "userId or anonymousId is required")

    message_id = get("messageId")
    if message_id is None or message_id == "":
        message_id = generated_ids.of(index)
    elif not isinstance(message_id, str) or "\x00" in message_id:
        raise InvalidInput("messageId", "must be a string without NUL characters")
    elif len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise InvalidInput("messageId", f"must be under {MAX_MESSAGE_ID_CHARS + 1} characters")

    context = get("context")
    if not (_is_object(context) and _is_object(get("integrations")) and _is_object(get("properties"))
            and _is_object(get("traits"))):
        raise InvalidInput(next(key for key in _OBJECT_FIELDS if not _is_object(get(key))), "must be a JSON object")
    # The fields left out of the stable part escape the bracket count below: check them here.
    timestamp_value, sent_value = get("timestamp"), get("sentAt")
    if isinstance(sent_value, _CONTAINERS) or isinstance(get("writeKey"), _CONTAINERS) \
            or isinstance(get("receivedAt"), _CONTAINERS) or isinstance(timestamp_value, _CONTAINERS):
        deep = _deep_field(call, _NOT_STABLE)
        if deep is not None:
            raise InvalidInput(deep, f"is nested deeper than {MAX_DEPTH} levels")

    name: str | None = None
    if kind == "track":
        name = get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("event", "track calls need a non-empty event name")
        if "\x00" in name:
            raise InvalidInput("event", "must not contain the NUL character")
    elif kind in ("page", "screen"):
        name = get("name")
        if name is not None and (not isinstance(name, str) or "\x00" in name):
            raise InvalidInput("name", "must be a string without NUL characters")
    elif kind == "group":
        if _identifier(get("groupId"), "groupId") is None:
            raise InvalidInput("groupId", "group calls need a groupId")
    elif kind == "alias":
        if _identifier(get("previousId"), "previousId") is None:
            raise InvalidInput("previousId", "alias calls need a previousId")
        if user_id is None:
            raise InvalidInput("userId", "alias calls need a userId")

    original_value = get("originalTimestamp")
    client_time = None if timestamp_value is None else parse_time(timestamp_value, "timestamp")
    sent_at = batch_sent_at if sent_value is None else parse_time(sent_value, "sentAt")
    original_time = None if original_value is None else parse_time(original_value, "originalTimestamp")
    if client_time is None:
        client_time = original_time
    if client_time is None:
        timestamp = received_at
    elif sent_at is not None:
        # Segment's skew correction: the client clock's offset is receivedAt - sentAt.
        timestamp = client_time + (received_at - sent_at)
        if not FIRST_EVENT_MS <= timestamp <= LAST_EVENT_MS:
            raise InvalidInput("timestamp", f"is {_describe(timestamp)} once corrected by receivedAt - sentAt "
                                            f"(sentAt {format_time(sent_at)}); it must fall {EVENT_TIME_RANGE}")
    else:
        timestamp = client_time
        if not FIRST_EVENT_MS <= timestamp <= LAST_EVENT_MS:
            field = "timestamp" if timestamp_value is not None else "originalTimestamp"
            raise InvalidInput(field, f"is {_describe(timestamp)}; it must fall {EVENT_TIME_RANGE}")

    channel = None if not context else context.get("channel")
    if channel is not None and (not isinstance(channel, str) or "\x00" in channel):
        raise InvalidInput("context.channel", "must be a string without NUL characters")

    stable = call.copy()
    for key in _NOT_STABLE:
        stable.pop(key, None)
    stable["type"] = kind
    stable["messageId"] = message_id
    original_text = None if client_time is None else format_time(client_time)
    if original_text is not None:
        stable["originalTimestamp"] = original_text
    if user_id is not None:
        stable["userId"] = user_id
    if anonymous_id is not None:
        stable["anonymousId"] = anonymous_id
    try:
        encoded = _encoder.encode(stable)
    except RecursionError:
        encoded = None
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:  # ValueError: lone surrogates
        raise InvalidInput("", f"cannot be encoded as JSON: {exc}") from None
    if encoded is None or encoded.count(b"{") + encoded.count(b"[") > _SURELY_SHALLOW:
        deep = _deep_field(call, call.keys())
        if deep is not None:
            raise InvalidInput(deep, f"is nested deeper than {MAX_DEPTH} levels")
        if encoded is None:
            raise InvalidInput("", "cannot be encoded as JSON: nested too deeply")
    if timestamp == received_at:
        timestamp_text = received_text
    elif timestamp == client_time and original_text is not None:
        timestamp_text = original_text
    else:
        timestamp_text = format_time(timestamp)
    # The times are plain ASCII, so they need no encoder; "type" is always in the stable part, a
    # non-empty object whose closing brace the tail replaces.
    tail = f',"timestamp":"{timestamp_text}","receivedAt":"{received_text}"'.encode()
    if "sentAt" in call:
        body = b"".join((encoded[:-1], tail, b',"sentAt":', _encoder.encode(sent_value), b"}"))
    else:
        body = b"".join((encoded[:-1], tail, b"}"))
    if len(body) > MAX_EVENT_BYTES:
        raise PayloadTooLarge("", f"event is {len(body)} bytes, over the {MAX_EVENT_BYTES} limit")
    return Event(message_id, kind, name, user_id, anonymous_id, timestamp, received_at, channel, body,
                 hashlib.blake2b(encoded, digest_size=16).digest())


def decode_json(body: bytes, decoder: msgspec.json.Decoder[Any] = _decoder) -> Any:
    """Decode a request body; malformed JSON or UTF-8 and absurd nesting are :class:`InvalidInput`.

    A typed ``decoder``'s :class:`msgspec.ValidationError` passes through for the caller to word.
    """
    try:
        return decoder.decode(body)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput("body", f"is not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise InvalidInput("body", "is nested too deeply to be an event") from None


def normalise_request(
    body: bytes, *, call_type: str | None, received_at: int, request_id: str | Callable[[], str]
) -> tuple[list[Event], list[Rejection]]:
    """Decode one ingest request and normalise its calls: the valid events and the rejections.

    ``call_type`` is the endpoint's (``None`` for ``batch``). A single call's fault, and a
    fault of the request itself (JSON, shape, size, the batch's ``sentAt`` or ``context``),
    raises :class:`InvalidInput`; a batch's invalid calls are rejected one by one. Calls
    without a ``messageId`` get ``request_id`` (suffixed by their index in a batch); a function
    there is called for it once, and only if a call needs it (making a unique id costs more than
    normalising a small request).
    """
    payload = decode_json(body)
    generated_ids = _GeneratedIds(request_id)
    if call_type is not None:
        try:
            return [_normalise(payload, call_type, received_at, format_time(received_at), generated_ids, None,
                               None)], []
        except InvalidInput as exc:
            if exc.field:
                raise
            # A fault of the call as a whole: for a single call, that is the request body.
            raise type(exc)("body", exc.reason) from None
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object with a 'batch' array")
    calls = payload.get("batch")
    if not isinstance(calls, list):
        raise InvalidInput("batch", "must be an array of calls")
    if len(calls) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge("batch", f"holds {len(calls)} events, over the {MAX_BATCH_EVENTS} limit")
    sent_at = parse_time(payload["sentAt"], "sentAt") if payload.get("sentAt") is not None else None
    shared_context = payload.get("context")
    if shared_context is not None and not isinstance(shared_context, dict):
        raise InvalidInput("context", "must be a JSON object")
    received_text = format_time(received_at)
    events: list[Event] = []
    rejections: list[Rejection] = []
    for index, call in enumerate(calls):
        if shared_context and isinstance(call, dict):
            own = call.get("context")
            if own is None or isinstance(own, dict):
                call = {**call, "context": {**shared_context, **(own or {})}}
        try:
            events.append(_normalise(call, None, received_at, received_text, generated_ids, index, sent_at))
        except InvalidInput as exc:
            message_id = call.get("messageId") if isinstance(call, dict) else None
            rejections.append(Rejection(
                index=index,
                message_id=message_id if isinstance(message_id, str) else None,
                field=f"batch[{index}]" + (f".{exc.field}" if exc.field else ""),
                reason=exc.reason,
            ))
    return events, rejections
