"""The Segment HTTP Tracking API: ``POST /v1/{identify,track,page,screen,group,alias,batch}``.

Batch policy (documented in docs/ingest.md): request-level faults (bad JSON, no key,
over size, more than 2,500 events, ``batch`` not a list) reject the whole request and
store nothing. Otherwise every valid event of the batch is stored and acknowledged; when
some events are invalid the answer is 400 listing each rejected event (index, messageId,
field, reason) with the count of those stored, and the client can resend the corrected
ones (resending the valid ones too is harmless: they are deduplicated by messageId).
"""

from __future__ import annotations

import time
import uuid
import zlib
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.core.events import (
    CALL_TYPES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    Event,
    normalise,
    parse_time,
)
from loyalty_cdp.core.loyalty.inputs import COMMAND_EVENTS
from loyalty_cdp.errors import Forbidden, InvalidInput, LoyaltyCdpError, PayloadTooLarge

router = APIRouter(tags=["ingest"])
_decode = msgspec.json.Decoder().decode
_SUCCESS = Response(b'{"success":true}', media_type="application/json")

_CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Segment call (spec: segment.com/docs/connections/spec). userId or anonymousId is required.",
    "properties": {
        "userId": {"type": "string"},
        "anonymousId": {"type": "string"},
        "messageId": {"type": "string", "maxLength": 99},
        "timestamp": {"type": "string", "format": "date-time"},
        "sentAt": {"type": "string", "format": "date-time"},
        "context": {"type": "object", "properties": {"channel": {"type": "string"}}},
        "integrations": {"type": "object"},
        "event": {"type": "string", "description": "track: the event name"},
        "name": {"type": "string", "description": "page/screen: the page or screen name"},
        "properties": {"type": "object"},
        "traits": {"type": "object"},
        "groupId": {"type": "string", "description": "group: required"},
        "previousId": {"type": "string", "description": "alias: required"},
        "writeKey": {"type": "string", "description": "alternative to HTTP Basic auth"},
    },
}
_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "maxItems": MAX_BATCH_EVENTS,
            "items": {**_CALL_SCHEMA, "required": ["type"],
                      "properties": {**_CALL_SCHEMA["properties"], "type": {"enum": sorted(CALL_TYPES)}}},
        },
        "sentAt": {"type": "string", "format": "date-time"},
        "context": {"type": "object"},
        "writeKey": {"type": "string"},
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Stored durably", "content": {"application/json": {"example": {"success": True}}}},
    400: {"description": "Invalid input: the body names the field and the reason"},
    401: {"description": "No valid API key"},
    403: {"description": "The key lacks the ingest scope"},
    413: {"description": "Over 32 KB per event or 500 KB per batch (inflated)"},
    429: {"description": "Ingest queue full; retry after the Retry-After header's seconds"},
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated if gzip'd, refusing more than ``limit`` bytes either way."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("", f"request body is {declared} bytes, over the {limit} limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("", f"request body is over the {limit} byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise InvalidInput("Content-Encoding", f"{encoding!r} is not supported; use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput("Content-Encoding", f"body is not valid gzip: {exc}") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge("", f"inflated body is over the {limit} byte limit")
    if not inflater.eof:
        raise InvalidInput("Content-Encoding", "gzip body is truncated")
    return inflated


def _decode_json(body: bytes) -> Any:
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput("body", f"is not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise InvalidInput("body", "is nested too deeply to be an event") from None


def _body_key(payload: Any) -> str | None:
    key = payload.get("writeKey") if isinstance(payload, dict) else None
    return key if isinstance(key, str) and key else None


async def _ingest(request: Request, call_type: str | None) -> Response:
    components = request.app.state.components
    metrics = components.metrics
    try:
        header_key = key_from_header(request)
        if header_key is not None:
            record = require(components.keys, header_key, "ingest")
        body = await read_body(request, MAX_EVENT_BYTES if call_type else MAX_BATCH_BYTES)
        payload = _decode_json(body)
        if header_key is None:
            record = require(components.keys, _body_key(payload), "ingest")
        received_at = int(time.time() * 1000)
        if call_type is not None:
            events = [normalise(payload, call_type=call_type, received_at=received_at,
                                default_message_id=f"lcdp-{uuid.uuid4()}")]
            errors: list[dict[str, Any]] = []
        else:
            events, errors = _normalise_batch(payload, received_at)
        _check_commands(events, record.scopes)
        if dropped := components.suppression.suppressed(events):
            # An erased person's events are never stored; the client is answered as usual.
            events = [event for index, event in enumerate(events) if index not in dropped]
            metrics.rejected.labels("Suppressed").inc(len(dropped))
        await components.appender.submit(events)
    except LoyaltyCdpError as exc:
        metrics.rejected.labels(type(exc).__name__).inc()
        raise
    metrics.accepted.inc(len(events))
    if errors:
        metrics.rejected.labels("InvalidEvent").inc(len(errors))
    if not errors:
        return _SUCCESS
    return json_response(
        {
            "success": False,
            "message": f"{len(errors)} of {len(errors) + len(events)} events rejected; "
                       f"the other {len(events)} were stored",
            "accepted": len(events),
            "rejected": len(errors),
            "errors": errors,
        },
        400,
    )


def _check_commands(events: list[Event], scopes: frozenset[str]) -> None:
    """Loyalty commands (a redemption, a points adjustment) move points: they need the ``loyalty``
    scope as well, or any write key could grant itself points. The whole request is refused."""
    if "loyalty" in scopes:
        return
    for event in events:
        if event.type == "track" and event.event in COMMAND_EVENTS:
            raise Forbidden(f"{event.event!r} is a loyalty command: the key needs the 'loyalty' scope")


def _normalise_batch(payload: Any, received_at: int) -> tuple[list[Event], list[dict[str, Any]]]:
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
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    # One random id per request, suffixed per call: unique, and far cheaper than a uuid per call.
    request_id = f"lcdp-{uuid.uuid4()}"
    for index, call in enumerate(calls):
        if shared_context and isinstance(call, dict):
            own = call.get("context")
            if own is None or isinstance(own, dict):
                call = {**call, "context": {**shared_context, **(own or {})}}
        try:
            events.append(normalise(call, call_type=None, received_at=received_at,
                                    default_message_id=f"{request_id}-{index}", batch_sent_at=sent_at))
        except InvalidInput as exc:
            message_id = call.get("messageId") if isinstance(call, dict) else None
            errors.append({
                "index": index,
                "messageId": message_id if isinstance(message_id, str) else None,
                "field": f"batch[{index}]" + (f".{exc.field}" if exc.field else ""),
                "reason": exc.reason,
            })
    return events, errors


def _route(call_type: str | None) -> None:
    name = call_type or "batch"
    schema = _CALL_SCHEMA if call_type else _BATCH_SCHEMA

    async def endpoint(request: Request) -> Response:
        return await _ingest(request, call_type)

    endpoint.__name__ = f"ingest_{name}"
    router.add_api_route(
        f"/v1/{name}", endpoint, methods=["POST"], summary=f"Segment {name} call",
        responses=_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
    )


for _call_type in ("identify", "track", "page", "screen", "group", "alias", None):
    _route(_call_type)
