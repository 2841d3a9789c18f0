"""Member reads (Bearer key with ``read``): the unified profile, lookup by any identifier,
the cross-channel timeline and the identity graph. Served from the processor's view: no
network round trip for a profile. The profile answers come from
:class:`~loyalty_cdp.services.member_answers.MemberAnswers`.

The two reads a point of sale makes at checkout (``GET /v1/members/lookup`` and
``GET /v1/members/{user_id}``) also have a fast path, :class:`FastReads`, which the app puts
outside every middleware: it answers them when they succeed without FastAPI's routing,
parameter validation, middleware stack and response machinery (most of a lookup's CPU). It
answers only the plain success case, byte for byte what the routes answer; anything else
(another key scheme, a missing or unknown key, a missing scope, the rate limit, an unknown
type or member, odd parameters, an error of any kind) passes through to the routes, which give
their usual answer.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from fastapi import APIRouter, Query, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.api.metrics import Metrics
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, PRIORITY, USER_ID
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.errors import InvalidInput, NotFound

router = APIRouter(prefix="/v1/members", tags=["members"])
_decode = msgspec.json.Decoder().decode
PREFIX = "/v1/members/"
LOOKUP = "lookup"
MAX_VALUE_CHARS = 256

LOOKUP_TYPES = (*PRIORITY, "card_number")  # "card_number" is an alias of "card"
def _components(request: Request) -> Any:
    components = request.app.state.components
    require(components.keys, key_from_header(request), "read")
    return components


def _member_id(components: Any, kind: str, value: str) -> str:
    member_id: str | None = components.processor.view.find(kind, value)
    if member_id is None:
        raise NotFound(f"no member with {kind} {value!r}")
    return member_id


def _profile(components: Any, member_id: str) -> Profile:
    profile: Profile | None = components.processor.view.profile(member_id)
    if profile is None:
        raise NotFound(f"no member {member_id!r}")
    return profile


def _answer(components: Any, member_id: str) -> Response:
    body: bytes | None = components.answers.answer(member_id, int(time.time() * 1000))
    if body is None:
        raise NotFound(f"no member {member_id!r}")
    return Response(body, media_type="application/json")


@router.get("/lookup", summary="Find a member by any identifier")
async def lookup(
    request: Request,
    type: str = Query(..., description=f"One of: {', '.join(LOOKUP_TYPES)}, or ext.<type>"),
    value: str = Query(..., min_length=1, max_length=MAX_VALUE_CHARS),
) -> Response:
    components = _components(request)
    kind = "card" if type == "card_number" else type
    if kind not in PRIORITY and not kind.startswith("ext."):
        raise InvalidInput("type", f"must be one of {', '.join(LOOKUP_TYPES)} or ext.<type>, got {type!r}")
    return _answer(components, _member_id(components, kind, value))


@router.get("/{user_id}", summary="The unified member profile")
async def member(request: Request, user_id: str) -> Response:
    components = _components(request)
    return _answer(components, _member_id(components, USER_ID, user_id))


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


class FastReads:
    """ASGI middleware: answers a successful ``GET /v1/members/lookup`` or ``GET
    /v1/members/{user_id}`` itself; passes every other request, and every one of those two
    that would not succeed, to ``app`` (the routes answer those exactly as before).

    Outside the other middlewares it times its own answers into ``metrics`` (when given) under
    the route's template, as ``TimingMiddleware`` does for the routes; it also sets
    ``scope["route"]`` for a middleware that wraps it."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self._routes: dict[Any, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX):
                started = time.perf_counter()
                try:
                    body = self._answer(scope, path[len(PREFIX):])
                except Exception:  # the route meets the same error and answers it as errors are answered
                    body = None
                if body is not None:
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-length", str(len(body)).encode("latin-1")),
                        (b"content-type", b"application/json"),
                    ]})
                    await send({"type": "http.response.body", "body": body})
                    if self.metrics is not None:
                        self.metrics.latency.labels("GET", scope["route"].path, "200").observe(
                            time.perf_counter() - started)
                    return
        await self.app(scope, receive, send)

    def _route(self, endpoint: Any) -> Any:
        if self._routes is None:
            self._routes = {getattr(r, "endpoint", None): r for r in router.routes}
        return self._routes.get(endpoint)

    def _answer(self, scope: Scope, rest: str) -> bytes | None:
        """The body of the answer when the request succeeds; None to let the routes answer."""
        if not rest or "/" in rest:
            return None
        if rest == LOOKUP:
            query = scope["query_string"]
            if not query:
                return None
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if len(pairs) != 2 or {name for name, _ in pairs} != {"type", "value"}:
                return None
            given = dict(pairs)
            kind, value = given["type"], given["value"]
            kind = "card" if kind == "card_number" else kind
            if not 1 <= len(value) <= MAX_VALUE_CHARS or (kind not in PRIORITY and not kind.startswith("ext.")):
                return None
            endpoint: Any = lookup
        elif scope["query_string"]:  # the route ignores a query; nothing to gain from reading it here
            return None
        else:
            kind, value, endpoint = USER_ID, rest, member
        route = self._route(endpoint)
        components = getattr(scope["app"].state, "components", None)
        if route is None or components is None:
            return None
        member_id = components.processor.view.find(kind, value)
        body: bytes | None = None if member_id is None else components.answers.answer(
            member_id, int(time.time() * 1000))
        # The key is checked last: the rate limiter takes a token only from a request answered here.
        if body is None or not _authorised(scope, components.keys):
            return None
        scope["route"] = route
        return body


def _authorised(scope: Scope, keys: Any) -> bool:
    """Whether the request carries a Bearer key with ``read``, within its rate limit (as ``require``)."""
    header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    if header is None:
        return False
    scheme, _, credentials = header.decode("latin-1").partition(" ")
    key = credentials.strip()
    if scheme.lower() != "bearer" or not key:
        return False
    record = keys.verify(key)
    if record is None or "read" not in record.scopes:
        return False
    return keys.limiter is None or bool(keys.limiter.allow(record.key_id))
