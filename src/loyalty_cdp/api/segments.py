"""Segments over HTTP: definitions, sizes and their history, members (paginated), JSON definitions, previews.

Reads need the ``read`` scope, writes ``admin``. The segments in force are the program's and
those defined here (:class:`~loyalty_cdp.services.segments.SegmentRegistry`, the server's
``components.segments``); memberships and their history come from the decision store, which
the processor keeps current in real time. Defining a segment recomputes its membership over
every member in batch (vectorised) before answering; a preview estimates a draft's size from
a stable sample of members and stores nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from loyalty_cdp.api.auth import key_from_header, require
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.api.ingest import read_body
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.services.segments import Preview, Recomputation, SegmentInfo

router = APIRouter(prefix="/v1/segments", tags=["segments"])

MAX_BODY = 64 * 1024
HISTORY_DAYS = Query(30, ge=1, le=3650, description="Days of size history to show, ending today")


def _components(request: Request, scope: str) -> Any:
    components = request.app.state.components
    require(components.keys, key_from_header(request), scope)
    return components


async def _json_body(request: Request) -> Any:
    raw = await read_body(request, MAX_BODY)
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None


def history(components: Any, segment_id: str, days: int, now: int) -> list[dict[str, Any]]:
    """The segment's size at the end of each of the last ``days`` UTC days, with that day's entries and exits."""
    buckets = components.decisions.segment_size_history(segment_id, DAY_MS)
    first = (now // DAY_MS - days + 1) * DAY_MS
    size = sum(entered - exited for start, entered, exited in buckets if start < first)
    by_day = {start: (entered, exited) for start, entered, exited in buckets if start >= first}
    series = []
    for day in range(first, now // DAY_MS * DAY_MS + 1, DAY_MS):
        entered, exited = by_day.get(day, (0, 0))
        size += entered - exited
        series.append({"date": format_time(day)[:10], "entered": entered, "exited": exited, "size": size})
    return series


def render(info: SegmentInfo, size: int, series: list[dict[str, Any]] | None) -> dict[str, Any]:
    definition = info.definition
    body: dict[str, Any] = {
        "id": definition.id,
        "name": definition.name,
        "description": definition.description,
        "when": definition.when,
        "source": info.source,
        "time_dependent": definition.time_dependent,
        "size": size,
    }
    if info.created_at is not None:
        body["created_at"] = format_time(info.created_at)
    if info.updated_at is not None:
        body["updated_at"] = format_time(info.updated_at)
    if series is not None:
        body["history"] = series
    return body


def _recomputation(result: Recomputation) -> dict[str, Any]:
    return {"at": format_time(result.at), "evaluated": result.evaluated, "size": result.size,
            "entered": result.entered, "exited": result.exited, "seconds": round(result.seconds, 3)}


@router.get("", summary="The segments in force (program and API), with their current size and size history")
async def list_segments(request: Request, history_days: int = HISTORY_DAYS) -> Response:
    components = _components(request, "read")
    now = int(time.time() * 1000)
    sizes = components.decisions.segment_sizes()
    segments = [render(info, sizes.get(info.definition.id, 0),
                       history(components, info.definition.id, history_days, now))
                for info in components.segments.segments(now)]
    return json_response({"segments": segments})


@router.post("/preview", summary="Estimate the size of a draft segment definition (nothing is stored)")
async def preview(request: Request) -> Response:
    components = _components(request, "read")
    raw = await _json_body(request)
    now = int(time.time() * 1000)
    view = components.processor.view
    result: Preview = await asyncio.to_thread(components.segments.preview, raw, view.all_profiles(), len(view), now)
    estimate = result.estimate
    return json_response({
        "when": result.definition.when,
        "at": format_time(now),
        "estimate": estimate.estimate,
        "low": estimate.low,
        "high": estimate.high,
        "confidence": estimate.confidence,
        "exact": estimate.exact,
        "matched": estimate.matched,
        "sampled": estimate.sampled,
        "population": estimate.population,
        "unkept_counts": result.unkept_counts,
    })


@router.post("", summary="Define (or replace) a segment in JSON; its membership is recomputed in batch",
             status_code=201, responses={200: {"description": "An API segment of that id was replaced"},
                                         409: {"description": "The id is a segment of the program file"}})
async def define(request: Request) -> Response:
    components = _components(request, "admin")
    raw = await _json_body(request)
    info, created = components.segments.define(raw)
    now = int(time.time() * 1000)
    result: Recomputation = await asyncio.to_thread(components.segments.recompute, info.definition.id,
                                                    components.processor.view.all_profiles(), now)
    # The members who moved get their Segment Entered / Exited events and triggers now.
    await asyncio.to_thread(components.processor.reevaluate, [t.member_id for t in result.transitions], now)
    body = render(info, result.size, None)
    body["recomputed"] = _recomputation(result)
    return json_response(body, 201 if created else 200)


@router.get("/{segment_id}", summary="One segment: definition, source, current size and size history")
async def get_segment(request: Request, segment_id: str, history_days: int = HISTORY_DAYS) -> Response:
    components = _components(request, "read")
    now = int(time.time() * 1000)
    info = components.segments.get(segment_id, now)
    size = components.decisions.segment_sizes().get(segment_id, 0)
    return json_response(render(info, size, history(components, segment_id, history_days, now)))


@router.get("/{segment_id}/members", summary="The segment's current members, by user id, with when they entered")
async def members(
    request: Request,
    segment_id: str,
    after: str | None = Query(None, max_length=200, description="The 'next' cursor of the previous page"),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    components = _components(request, "read")
    components.segments.get(segment_id, int(time.time() * 1000))  # 404 for a segment not in force
    page = components.decisions.segment_members(segment_id, after, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    view = components.processor.view
    rows = []
    for member in page:
        profile = view.profile(member.member_id)
        rows.append({"user_id": profile.user_id if profile is not None else None, "member_id": member.member_id,
                     "since": format_time(member.since)})
    return json_response({"segment_id": segment_id, "members": rows,
                          "next": page[-1].member_id if more and page else None})


@router.delete("/{segment_id}", summary="Delete a segment defined through the API; its members exit it",
               responses={409: {"description": "The segment is defined in the program file"}})
async def delete(request: Request, segment_id: str) -> Response:
    components = _components(request, "admin")
    exits = await asyncio.to_thread(components.segments.delete, segment_id)
    return json_response({"success": True, "id": segment_id, "exited": len(exits)})
