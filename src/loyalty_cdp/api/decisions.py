"""Decisions over HTTP: the full record of one decision, its outcomes, a member's decisions, and uplift reports.

``GET /v1/decisions/{decision_id}`` answers the stored record (inputs, candidates with their
scores or the reasons they were blocked, the winner and the reason, the holdout arm) with
the outcomes reported for it, which is how a privacy officer shows why a member got an
offer. ``POST /v1/decisions/{decision_id}/outcome`` records ``shown``, ``accepted``,
``dismissed`` or ``redeemed`` (the first report of each is kept: repeating it changes
nothing), as ``Offer Viewed`` / ``Offer Redeemed`` events do. ``GET /v1/reports/uplift``
measures campaigns against their holdout (:mod:`loyalty_cdp.services.uplift`).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from loyalty_cdp.adapters.decisionstore import OUTCOMES
from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.api.ingest import read_body
from loyalty_cdp.core.decisioning import Decision
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.identifiers import USER_ID
from loyalty_cdp.errors import InvalidInput, NotFound
from loyalty_cdp.services.uplift import UpliftService

router = APIRouter(tags=["decisioning"])

CURSOR = re.compile(r"^(\d{1,16}):(dec-[0-9a-f]{1,64})$")


def _components(request: Request, scope: str) -> Any:
    components = request.app.state.components
    require(components.keys, key_from_header(request), scope)
    return components


def render(decision: Decision, outcomes: dict[str, int]) -> dict[str, Any]:
    """The stored record as JSON (times in epoch ms, as stored), with its outcomes (ISO times)."""
    body: dict[str, Any] = msgspec.to_builtins(decision)
    body["time"] = format_time(decision.at)
    body["outcomes"] = {outcome: format_time(at) for outcome, at in sorted(outcomes.items(), key=lambda kv: kv[1])}
    return body


@router.get("/v1/decisions/{decision_id}", summary="One decision: inputs, candidates, scores, reason, outcomes")
async def get_decision(request: Request, decision_id: str) -> Response:
    components = _components(request, "read")
    decision = components.decisions.get(decision_id)
    if decision is None:
        raise NotFound(f"no decision {decision_id!r}")
    return json_response(render(decision, components.decisions.outcomes(decision_id)))


@router.post("/v1/decisions/{decision_id}/outcome",
             summary="Report what the member did with the offer: shown, accepted, dismissed or redeemed (idempotent)")
async def record_outcome(request: Request, decision_id: str) -> Response:
    components = _components(request, "ingest")
    raw = await read_body(request, 4 * 1024)
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", 'expected an object such as {"outcome": "shown"}')
    unknown = sorted(set(body) - {"outcome"})
    if unknown:
        raise InvalidInput(unknown[0], "unknown key; the body has only 'outcome'")
    outcome = body.get("outcome")
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        raise InvalidInput("outcome", f"must be one of {', '.join(OUTCOMES)}")
    now = int(time.time() * 1000)
    recorded = components.decisions.record_outcome(decision_id, outcome, now, "api")
    at = components.decisions.outcomes(decision_id).get(outcome, now)
    return json_response({"success": True, "decision_id": decision_id, "outcome": outcome,
                          "recorded": recorded, "at": format_time(at)})


@router.get("/v1/members/{user_id}/decisions", summary="The member's decisions, newest first (paginated)")
async def member_decisions(
    request: Request,
    user_id: str,
    before: str | None = Query(None, max_length=120, description="The 'next' cursor of the previous page"),
    limit: int = Query(20, ge=1, le=200),
) -> Response:
    components = _components(request, "read")
    cursor: tuple[int, str] | None = None
    if before is not None:
        match = CURSOR.match(before)
        if match is None:
            raise InvalidInput("before", "is not a cursor this endpoint gave")
        cursor = (int(match.group(1)), match.group(2))
    member_id = components.processor.view.find(USER_ID, user_id)
    if member_id is None:
        raise NotFound(f"no member with user_id {user_id!r}")
    page = components.decisions.member_decisions(member_id, cursor, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    outcomes = components.decisions.outcomes_of(d.decision_id for d in page)
    return json_response({
        "user_id": user_id,
        "decisions": [render(d, outcomes.get(d.decision_id, {})) for d in page],
        "next": f"{page[-1].at}:{page[-1].decision_id}" if more and page else None,
    })


@router.get("/v1/reports/uplift", summary="Campaign uplift against the holdout, with confidence intervals")
async def uplift(
    request: Request,
    campaign: str | None = Query(None, max_length=64, description="One campaign (default: every campaign)"),
    trigger: str | None = Query(None, max_length=64, description="Only this trigger's decisions"),
    window_days: int = Query(14, description="Attribution window: orders within this many days after the send"),
    active_days: int | None = Query(None, description="Activity window (default: the attribution window)"),
    min_orders: int = Query(1, description="Orders in the activity window that make a member active"),
    confidence: float = Query(0.95, description="Confidence level of the intervals"),
    group_by: Literal["campaign", "trigger"] = Query("campaign", description="One row per campaign or per trigger"),
) -> Response:
    components = _components(request, "admin")
    view = components.processor.view

    def identities(member_id: str) -> dict[str, list[str]] | None:
        profile = view.profile(member_id)
        return None if profile is None else profile.identities

    service = UpliftService(components.decisions, components.event_log, identities)
    now = int(time.time() * 1000)
    summary = await asyncio.to_thread(
        lambda: service.report(now=now, campaign=campaign, trigger_id=trigger, window_days=window_days,
                               active_days=active_days, min_orders=min_orders, confidence=confidence,
                               group_by=group_by))
    return json_response(summary)
