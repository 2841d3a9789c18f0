"""Member reads (Bearer key with ``read``): the unified profile, lookup by any identifier,
the cross-channel timeline and the identity graph. Served from the processor's in-memory
view: no round trip to any store for a profile."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, PRIORITY, USER_ID
from loyalty_cdp.core.loyalty import loyalty_summary
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.signals import compute_signals
from loyalty_cdp.errors import InvalidInput, NotFound
from loyalty_cdp.services.loyalty_stage import loyalty_state

router = APIRouter(prefix="/v1/members", tags=["members"])
_decode = msgspec.json.Decoder().decode

LOOKUP_TYPES = (*PRIORITY, "card_number")  # "card_number" is an alias of "card"
LOYALTY_DEFAULTS: dict[str, Any] = {
    "points_balance": 0, "pending_points": 0, "lifetime_points": 0, "tier": None,
}


def _components(request: Request) -> Any:
    components = request.app.state.components
    require(components.keys, key_from_header(request), "read")
    return components


def _member_id(components: Any, kind: str, value: str) -> str:
    member_id = components.processor.view.find(kind, value)
    if member_id is None:
        raise NotFound(f"no member with {kind} {value!r}")
    return member_id


def _profile(components: Any, member_id: str) -> Profile:
    profile = components.processor.view.profile(member_id)
    if profile is None:
        raise NotFound(f"no member {member_id!r}")
    return profile


def _loyalty(components: Any, profile: Profile, as_of: int) -> dict[str, Any]:
    stage = components.processor.loyalty
    state = None if stage is None else loyalty_state(profile)
    if state is None:  # not enrolled (anonymous) or no program
        return dict(LOYALTY_DEFAULTS)
    return loyalty_summary(stage.engine.book, state, as_of)


def render(components: Any, profile: Profile, as_of: int) -> dict[str, Any]:
    """The profile as the API answers it: the brief's fields first, then the detail."""
    return {
        "user_id": profile.user_id,
        "member_id": profile.member_id,
        "identities": profile.identities,
        "loyalty": _loyalty(components, profile, as_of),
        "traits": {key: trait.value for key, trait in profile.traits.items()},
        "traits_updated_at": {key: format_time(trait.updated_at) for key, trait in profile.traits.items()},
        "signals": compute_signals(profile, as_of),
        "scores": components.scores.get(profile.member_id) or profile.scores,
        "segments": profile.segments,
        "consent": profile.consent,
    }


@router.get("/lookup", summary="Find a member by any identifier")
async def lookup(
    request: Request,
    type: str = Query(..., description=f"One of: {', '.join(LOOKUP_TYPES)}, or ext.<type>"),
    value: str = Query(..., min_length=1, max_length=256),
) -> Response:
    components = _components(request)
    kind = "card" if type == "card_number" else type
    if kind not in PRIORITY and not kind.startswith("ext."):
        raise InvalidInput("type", f"must be one of {', '.join(LOOKUP_TYPES)} or ext.<type>, got {type!r}")
    member_id = _member_id(components, kind, value)
    return json_response(render(components, _profile(components, member_id), int(time.time() * 1000)))


@router.get("/{user_id}", summary="The unified member profile")
async def member(request: Request, user_id: str) -> Response:
    components = _components(request)
    member_id = _member_id(components, USER_ID, user_id)
    return json_response(render(components, _profile(components, member_id), int(time.time() * 1000)))


@router.get("/{user_id}/identities", summary="The member's identity graph with merge reasons")
async def identities(request: Request, user_id: str) -> Response:
    components = _components(request)
    profile = _profile(components, _member_id(components, USER_ID, user_id))
    return json_response({"user_id": profile.user_id, "member_id": profile.member_id,
                          "identities": profile.identities,
                          "history": components.processor.history_of(profile.member_id)})


@router.get("/{user_id}/events", summary="The member's timeline across channels, oldest first")
async def events(
    request: Request, user_id: str,
    after: int = Query(0, ge=0, description="Return events after this log offset (paging)"),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    components = _components(request)
    profile = _profile(components, _member_id(components, USER_ID, user_id))
    stored = components.event_log.read_member(
        profile.identities.get(USER_ID, []), profile.identities.get(ANONYMOUS_ID, [])
    )
    page = [e for e in stored if e.offset > after][:limit]
    return json_response({
        "user_id": profile.user_id,
        "events": [{"offset": e.offset, **_decode(e.body)} for e in page],
        "next_after": page[-1].offset if len(page) == limit else None,
    })
