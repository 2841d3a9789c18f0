"""Next-best offers for on-site, in-app and in-store (``GET /v1/members/{user_id}/offers``).

Served from memory: the member's profile (the processor's view), their loyalty state, their
latest scores and the program's offer catalog go through the pure arbitration
(:func:`loyalty_cdp.core.decisioning.rank_offers`): eligibility, contact policy, then
priority. The answer is ranked offers, each with the ``decision_id`` of this decision and
the plain-language reason it was chosen. Consent is read under the strict default policy
(nothing assumed), so a member who has not allowed profiling gets the rule-based ranking,
as the CCPA's automated-decision rules ask.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.core.decisioning import rank_offers
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.identifiers import USER_ID
from loyalty_cdp.core.segments import MemberFacts
from loyalty_cdp.errors import NotFound

router = APIRouter(tags=["decisioning"])


@router.get("/v1/members/{user_id}/offers", summary="The member's best offers for a channel, ranked, with reasons")
async def offers(
    request: Request,
    user_id: str,
    channel: str = Query(..., description="pos, web, app, ... (the channels of the program's contact policy)"),
    limit: int = Query(3, ge=1, le=20),
    request_id: str | None = Query(None, max_length=100,
                                   description="Your id for this request (basket, session): same id, same decision_id"),
) -> Response:
    components = request.app.state.components
    require(components.keys, key_from_header(request), "read")
    member_id = components.processor.view.find(USER_ID, user_id)
    profile = None if member_id is None else components.processor.view.profile(member_id)
    if profile is None:
        raise NotFound(f"no member with user_id {user_id!r}")
    now = int(time.time() * 1000)
    state = profile.loyalty.get("state")
    facts = MemberFacts(
        profile, now,
        scores=components.scores.get(profile.member_id),
        loyalty=(lambda: components.loyalty_reader(state, now)) if state is not None else None,
    )
    config = components.decisioning.at(now)
    decision = rank_offers(config, facts, channel, [], now, request_id or f"{channel}@{now // 60_000}", limit)
    return json_response({
        "user_id": user_id,
        "channel": channel,
        "decision_id": decision.decision_id,
        "at": format_time(now),
        "automated": decision.automated,
        "reason": decision.reason,
        "offers": [_offer(decision.decision_id, chosen) for chosen in decision.chosen],
    })


def _offer(decision_id: str, chosen: Any) -> dict[str, Any]:
    return {
        "decision_id": decision_id,
        "offer_id": chosen.offer_id,
        "name": chosen.name,
        "channel": chosen.channel,
        "score": chosen.score,
        "content": chosen.content,
        "reason": chosen.reason,
        "grant": chosen.grant,
    }
