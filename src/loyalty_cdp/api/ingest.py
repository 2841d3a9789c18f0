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
import zlib
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from loyalty_cdp.adapters.keystore import ApiKey, KeyStore
from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.core.events import CALL_TYPES, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, decode_json
from loyalty_cdp.errors import InvalidInput, LoyaltyCdpError, PayloadTooLarge

router = APIRouter(tags=["ingest"])
_SUCCESS = Response(b'{"success":true}', media_type="application/json")

_CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Segment call (spec: segment.com/docs/connections/spec). userId or anonymousId is required.",
    "properties": {
        "userId": {"type": ["string", "integer"], "description": "at most 256 characters"},
        "anonymousId": {"type": ["string", "integer"], "description": "at most 256 characters"},
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
    503: {"description": "Not acknowledged: the event log is unavailable (its writer is being replaced, or the "
                         "server is shutting down); resend, the retry is deduplicated by messageId"},
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated if gzip'd, refusing more than ``limit`` bytes either way."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("body", f"is {declared} bytes, over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("body", f"is over the {limit} byte limit")
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
        raise PayloadTooLarge("body", f"is over the {limit} byte limit once inflated")
    if not inflater.eof:
        raise InvalidInput("Content-Encoding", "gzip body is truncated")
    return inflated


class _CallEnvelope(msgspec.Struct, rename="camel"):
    """What the server reads of a body to authenticate it: ``writeKey`` (the rest is skipped)."""

    write_key: Any = None


class _BatchEnvelope(msgspec.Struct):
    """What the server reads of a batch before the writer: its calls, undecoded."""

    batch: list[msgspec.Raw] | None = None


_call_envelope = msgspec.json.Decoder(_CallEnvelope)
_batch_envelope = msgspec.json.Decoder(_BatchEnvelope)


def _body_key(body: bytes, keys: KeyStore) -> ApiKey:
    """The key given as ``writeKey`` in the body, if it is valid for ingest (401 or 403 otherwise)."""
    try:
        key = decode_json(body, _call_envelope).write_key
    except msgspec.ValidationError:  # not a JSON object: no key in it
        key = None
    return require(keys, key if isinstance(key, str) else None, "ingest")


def _count_calls(body: bytes, call_type: str | None) -> int:
    """Check the request's shape and count its calls.

    Only the envelope is decoded here (the calls are skipped, not built), so that the event
    loop stays free; the writer decodes and normalises the calls.
    """
    if call_type is not None:
        return 1
    try:
        envelope: _BatchEnvelope | None = decode_json(body, _batch_envelope)
    except msgspec.ValidationError:  # not an object, or "batch" not an array
        envelope = None
    if envelope is None and body.lstrip()[:1] != b"{":
        raise InvalidInput("body", "must be a JSON object with a 'batch' array")
    if envelope is None or envelope.batch is None:
        raise InvalidInput("batch", "must be an array of calls")
    if len(envelope.batch) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge("batch", f"holds {len(envelope.batch)} events, over the {MAX_BATCH_EVENTS} limit")
    return len(envelope.batch)


async def _ingest(request: Request, call_type: str | None) -> Response:
    components = request.app.state.components
    metrics = components.metrics
    try:
        header_key = key_from_header(request)
        record = require(components.keys, header_key, "ingest") if header_key is not None else None
        body = await read_body(request, MAX_EVENT_BYTES if call_type else MAX_BATCH_BYTES)
        received_at = int(time.time() * 1000)
        if record is None:
            record = _body_key(body, components.keys)
        calls = _count_calls(body, call_type)
        stored = await components.appender.submit_request(call_type, body, received_at, calls,
                                                          commands_allowed="loyalty" in record.scopes)
    except LoyaltyCdpError as exc:
        metrics.rejected.labels(type(exc).__name__).inc()
        raise
    metrics.accepted.inc(stored.accepted)
    if stored.suppressed:
        metrics.rejected.labels("Suppressed").inc(stored.suppressed)
    if not stored.rejections:
        return _SUCCESS
    metrics.rejected.labels("InvalidEvent").inc(len(stored.rejections))
    rejected = len(stored.rejections)
    return json_response(
        {
            "success": False,
            "message": f"{rejected} of {rejected + stored.accepted} events rejected; "
                       f"the other {stored.accepted} were stored",
            "accepted": stored.accepted,
            "rejected": rejected,
            "errors": stored.rejections,
        },
        400,
    )


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
