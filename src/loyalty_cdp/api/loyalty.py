"""Loyalty over HTTP: redemptions (``loyalty`` scope, idempotent), the ledger (``read``), liability (``admin``).

A redemption is decided at once against the member's current state (so an insufficient
balance is a 409 carrying the balance and the cost), then appended to the event log as a
``Reward Redeemed`` command whose message id derives from the member and the
``Idempotency-Key``; the answer is given once the processor has folded it, so it is the
authoritative outcome and a retry with the same key returns the same result, spending once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.api.ingest import read_body
from loyalty_cdp.core.events import format_time, normalise
from loyalty_cdp.core.identifiers import USER_ID
from loyalty_cdp.core.loyalty import LoyaltyState, RedemptionRequest, liability_report, redemption_command
from loyalty_cdp.core.loyalty.inputs import MAX_POINTS, POINTS_ADJUSTED
from loyalty_cdp.errors import Conflict, InvalidInput, NotFound, StorageUnavailable
from loyalty_cdp.services.loyalty_stage import loyalty_state

router = APIRouter(tags=["loyalty"])
FOLD_WAIT_S = 5.0
MAX_KEY_CHARS = 64


class AdjustmentBody(msgspec.Struct, forbid_unknown_fields=True):
    points: int
    reason: str


class RedemptionBody(msgspec.Struct, forbid_unknown_fields=True):
    reward_id: str
    quantity: int = 1
    points: int = 0
    order_id: str = ""


def _write_doc(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI of a loyalty write: its ``Idempotency-Key`` header and its JSON body."""
    return {
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": True,
                        "description": "Your id for this write: a retry with the same key applies it once",
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
    }


_REDEMPTION_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["reward_id"], "additionalProperties": False,
    "properties": {
        "reward_id": {"type": "string", "description": "A reward of the program's catalog"},
        "quantity": {"type": "integer", "minimum": 1, "default": 1},
        "points": {"type": "integer", "minimum": 0, "default": 0,
                   "description": "Pay-with-points rewards: the points to spend"},
        "order_id": {"type": "string", "default": ""},
    },
}
_ADJUSTMENT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["points", "reason"], "additionalProperties": False,
    "properties": {
        "points": {"type": "integer", "minimum": -MAX_POINTS, "maximum": MAX_POINTS, "not": {"const": 0},
                   "description": "Points to add (positive) or remove (negative)"},
        "reason": {"type": "string", "minLength": 1, "description": "Why the points change (audited)"},
    },
}


def _member_state(components: Any, user_id: str) -> tuple[str, LoyaltyState | None]:
    member_id = components.processor.view.find(USER_ID, user_id)
    profile = None if member_id is None else components.processor.view.profile(member_id)
    if profile is None or profile.user_id is None:
        raise NotFound(f"no member with user_id {user_id!r}")
    return member_id, loyalty_state(profile)


def _engine(components: Any) -> Any:
    stage = components.processor.loyalty
    if stage is None:
        raise NotFound("no loyalty program is configured")
    return stage.engine


def _decision_body(decision: Any) -> dict[str, Any]:
    body = msgspec.structs.asdict(decision)
    body["points_balance"] = body.pop("balance")
    return body


@router.post("/v1/members/{user_id}/redemptions", summary="Redeem a reward or pay with points", status_code=201,
             openapi_extra=_write_doc(_REDEMPTION_SCHEMA),
             responses={200: {"description": "The Idempotency-Key repeats a redemption: its outcome, spent once"},
                        404: {"description": "No such member, or no loyalty program"},
                        409: {"description": "Refused: insufficient balance (with balance and cost) or another rule"},
                        503: {"description": "Stored but not applied yet: retry with the same Idempotency-Key"}})
async def redeem(request: Request, user_id: str) -> Response:
    components = request.app.state.components
    require(components.keys, key_from_header(request), "loyalty")
    key = request.headers.get("idempotency-key", "").strip()
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidInput("Idempotency-Key", f"header is required, 1 to {MAX_KEY_CHARS} characters")
    body = _decode_body(await read_body(request, 8 * 1024), RedemptionBody)
    if body.quantity < 1 or body.points < 0:
        raise InvalidInput("quantity" if body.quantity < 1 else "points", "must be positive")
    engine = _engine(components)
    member_id, state = _member_state(components, user_id)
    state = state if state is not None else engine.new_state(user_id)
    now = int(time.time() * 1000)
    wanted = RedemptionRequest(reward_id=body.reward_id, idempotency_key=key, quantity=body.quantity,
                               points=body.points, order_id=body.order_id)
    decision = engine.decide_redemption(state, wanted, now)
    if decision.status == "refused":
        raise _refused(decision)
    if decision.status == "duplicate":
        return json_response(_decision_body(decision), 200)
    call = redemption_command(user_id, wanted, now)
    await components.appender.submit([normalise(call, call_type=None, received_at=now,
                                                default_message_id=call["messageId"])])
    done = await _folded(components, member_id, key)
    recorded = done.redemptions[key]  # the fold's outcome at the command's event time is the answer
    if recorded.status != "accepted":
        raise _refused(msgspec.structs.replace(decision, status="refused", reason=recorded.status))
    final = engine.decide_redemption(done, wanted, now)
    return json_response(_decision_body(msgspec.structs.replace(
        decision, cost=recorded.cost, code=recorded.code, balance=final.balance)), 201)


@router.post("/v1/members/{user_id}/adjustments", summary="Add or remove points by hand, with a reason",
             status_code=202, openapi_extra=_write_doc(_ADJUSTMENT_SCHEMA),
             responses={404: {"description": "No such member, or no loyalty program"}})
async def adjust(request: Request, user_id: str) -> Response:
    components = request.app.state.components
    actor = require(components.keys, key_from_header(request), "loyalty")
    key = request.headers.get("idempotency-key", "").strip()
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidInput("Idempotency-Key", f"header is required, 1 to {MAX_KEY_CHARS} characters")
    body = _decode_body(await read_body(request, 8 * 1024), AdjustmentBody)
    if body.points == 0 or abs(body.points) > MAX_POINTS:
        raise InvalidInput("points", f"must be a non-zero whole number of at most {MAX_POINTS} in size")
    if not body.reason.strip():
        raise InvalidInput("reason", "is required: say why the points change")
    _engine(components)
    _member_state(components, user_id)  # 404 for an unknown member
    now = int(time.time() * 1000)
    call = {
        "type": "track", "userId": user_id, "event": POINTS_ADJUSTED,
        "messageId": f"adjustment-{hashlib.sha256(f'{user_id}|{key}'.encode()).hexdigest()[:40]}",
        "timestamp": format_time(now), "context": {"channel": "loyalty"},
        "properties": {"points": body.points, "reason": body.reason.strip()[:200], "adjustment_id": key,
                       "actor_key_id": actor.key_id},
    }
    await components.appender.submit([normalise(call, call_type=None, received_at=now,
                                                default_message_id=call["messageId"])])
    components.audit.append(f"key:{actor.key_id}", "ledger.adjusted", f"adjustment:{key}",
                            {"points": body.points, "reason": body.reason.strip()[:200]})
    return json_response({"success": True, "adjustment_id": key, "points": body.points,
                          "message_id": call["messageId"]}, 202)


def _decode_body(raw: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidInput("body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None


def _refused(decision: Any) -> Conflict:
    error = Conflict(f"redemption refused: {decision.reason} (balance {decision.balance}, cost {decision.cost})")
    error.details = {"reason": decision.reason, "points_balance": decision.balance, "cost": decision.cost,
                     "reward_id": decision.reward_id}
    return error


async def _folded(components: Any, member_id: str, key: str) -> LoyaltyState:
    """Wait until the processor has folded the redemption command into the member's state."""
    deadline = time.monotonic() + FOLD_WAIT_S
    while time.monotonic() < deadline:
        profile = components.processor.view.profile(member_id)
        state = None if profile is None else loyalty_state(profile)
        if state is not None and key in state.redemptions:
            return state
        await asyncio.sleep(0.002)
    raise StorageUnavailable("the redemption is stored but not applied yet; retry with the same Idempotency-Key")


@router.get("/v1/members/{user_id}/ledger", summary="The member's points lots and ledger entries")
async def ledger(request: Request, user_id: str) -> Response:
    components = request.app.state.components
    require(components.keys, key_from_header(request), "read")
    _engine(components)
    _, state = _member_state(components, user_id)
    if state is None:
        return json_response({"user_id": user_id, "lots": [], "entries": []})
    return json_response({
        "user_id": user_id,
        "lots": [{"source": lot.source, "earned_at": format_time(lot.earned_at),
                  "active_at": format_time(lot.active_at), "expires_at": _time_or_none(lot.expires_at),
                  "points": lot.points, "remaining": lot.remaining,
                  "status": "pending" if lot.pending else "active"} for lot in state.lots],
        "entries": [{"at": format_time(e.at), "kind": e.kind, "points": e.points, "ref": e.ref}
                    for e in state.entries],
    })


def _time_or_none(epoch_ms: int) -> str | None:
    try:
        return format_time(epoch_ms)
    except (OverflowError, ValueError):  # NEVER: the lot does not expire
        return None


@router.get("/v1/reports/liability", summary="Points liability: outstanding by age and tier, expiry forecast",
            responses={404: {"description": "No loyalty program is configured"}})
async def liability(request: Request) -> Response:
    components = request.app.state.components
    require(components.keys, key_from_header(request), "admin")
    engine = _engine(components)
    now = int(time.time() * 1000)
    view = components.processor.view

    def report_now() -> Any:  # in a worker thread: it reads every member's profile
        return liability_report(engine.book, [s for s in map(loyalty_state, view.all_profiles()) if s], now)

    report = await asyncio.to_thread(report_now)
    return json_response(msgspec.structs.asdict(report))
