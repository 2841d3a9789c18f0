"""Privacy over HTTP (Bearer key with ``privacy``): data-subject requests, their exports, and consent writes.

``POST /v1/privacy/requests`` runs the request in the request cycle and answers it as it
ended (201; 200 when an ``Idempotency-Key`` repeats a stored request, which a failed one
re-runs). The erased members' liability totals are a finance report (``admin``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from loyalty_cdp.adapters.erased_liability import ErasedLiability
from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.api.ingest import read_body
from loyalty_cdp.core.privacy import STATUSES
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.services.privacy import PrivacyContext, PrivacyService

router = APIRouter(tags=["privacy"])
MAX_BODY_BYTES = 256 * 1024  # a correction may carry 100 traits of 1,024 characters
MAX_KEY_CHARS = 200
_decode = msgspec.json.Decoder().decode

_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "identifier"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["access", "erasure", "opt_out_sale", "opt_out_admt", "correction", "admt_access"]},
        "identifier": {
            "type": "object", "required": ["type", "value"], "additionalProperties": False,
            "properties": {"type": {"type": "string", "description": "user_id, anonymous_id, email, phone, card, "
                                                                     "pos_customer_id, device_id or ext.<type>"},
                           "value": {"type": "string"}},
        },
        "regime": {"enum": ["gdpr", "ccpa"]},
        "corrections": {"type": "object", "description": "correction only: {trait: corrected value or null}"},
    },
}
_CONSENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["purpose", "granted"],
    "additionalProperties": False,
    "properties": {
        "purpose": {"enum": ["email_marketing", "sms", "push", "profiling", "sale_sharing"]},
        "granted": {"type": "boolean"},
        "source": {"type": "string", "maxLength": 64},
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _caller(request: Request, scope: str = "privacy") -> tuple[Any, str]:
    components = request.app.state.components
    key = require(components.keys, key_from_header(request), scope)
    return components, f"key:{key.key_id}"


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise InvalidInput("Idempotency-Key", f"must be 1 to {MAX_KEY_CHARS} printable characters")
    return key


async def _json(request: Request) -> Any:
    raw = await read_body(request, MAX_BODY_BYTES)
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput("body", f"is not valid UTF-8 (byte {exc.start})") from None


def _now() -> int:
    return int(time.time() * 1000)


@router.post("/v1/privacy/requests", summary="Make a data-subject request (access, erasure, opt-outs, correction, "
             "ADMT access); it runs at once", status_code=201, openapi_extra=_body(_REQUEST_SCHEMA),
             responses={200: {"description": "The Idempotency-Key repeats a stored request"},
                        400: {"description": "Invalid request: the body names the field"},
                        409: {"description": "The Idempotency-Key was used for a different request"}})
async def create_request(request: Request) -> Response:
    components, actor = _caller(request)
    key = _idempotency_key(request)
    body = await _json(request)
    stored, new = await PrivacyService(PrivacyContext.of(components)).submit(body, actor=actor, request_key=key)
    return json_response(stored.view(_now()), 201 if new else 200)


@router.get("/v1/privacy/requests", summary="List data-subject requests, oldest first (optionally by status, "
            "or only the overdue ones)")
async def list_requests(
    request: Request,
    status: str | None = Query(None, description=f"One of: {', '.join(STATUSES)}"),
    overdue: bool = Query(False, description="Only open requests past their deadline, most overdue first"),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    components, _ = _caller(request)
    store = components.privacy_requests
    found = store.overdue()[:limit] if overdue else store.list(status=status, limit=limit)
    now = _now()
    return json_response({"requests": [r.view(now) for r in found]})


@router.get("/v1/privacy/requests/{request_id}", summary="A data-subject request: status, deadline, result")
async def get_request(request: Request, request_id: str) -> Response:
    components, _ = _caller(request)
    return json_response(components.privacy_requests.get(request_id).view(_now()))


@router.get("/v1/privacy/requests/{request_id}/export",
            summary="The answer of a completed access or ADMT access request, built from the live stores now")
async def export(request: Request, request_id: str) -> Response:
    components, _ = _caller(request)
    service = PrivacyService(PrivacyContext.of(components))
    return json_response(await asyncio.to_thread(service.export, request_id))


@router.post("/v1/members/{user_id}/consent", summary="Record a member's consent for one purpose",
             openapi_extra=_body(_CONSENT_SCHEMA))
async def consent(request: Request, user_id: str) -> Response:
    components, actor = _caller(request)
    key = _idempotency_key(request)
    body = await _json(request)
    answer = await PrivacyService(PrivacyContext.of(components)).record_consent(user_id, body, actor=actor,
                                                                                request_key=key)
    return json_response(answer)


@router.get("/v1/reports/liability/erased", summary="Points liability of erased members, as anonymised daily totals")
async def erased_liability(request: Request) -> Response:
    components, _ = _caller(request, "admin")
    store = ErasedLiability(components.settings.data_dir)
    try:
        return json_response(store.totals())
    finally:
        store.close()
