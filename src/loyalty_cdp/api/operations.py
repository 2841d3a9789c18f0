"""Operations endpoints: ``GET /healthz`` and Prometheus ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from loyalty_cdp.api.errors import json_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness and readiness")
async def healthz(request: Request) -> Response:
    components = request.app.state.components
    return json_response(
        {
            "status": "ok",
            "storage": components.settings.storage,
            "ingest_queue_events": components.appender.queued_events,
            "scoring": components.scheduler.status(),
        }
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "The Prometheus text exposition format",
                             "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    registry = request.app.state.components.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
