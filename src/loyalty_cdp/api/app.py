"""The FastAPI application: routers, error handlers, metrics middleware, and the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from loyalty_cdp import __version__
from loyalty_cdp.api import (
    decisions,
    email,
    errors,
    ingest,
    loyalty,
    members,
    offers,
    operations,
    privacy,
    segments,
    sms,
)
from loyalty_cdp.api.metrics import Metrics, TimingMiddleware
from loyalty_cdp.bootstrap import build
from loyalty_cdp.settings import Settings


class _App(FastAPI):
    """The FastAPI app with the member fast path (:class:`members.FastReads`) outside every
    middleware: the checkout reads skip the error, body-limit, telemetry and timing layers
    (FastReads times its answers itself) and only the requests it passes on go through them."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    def build_middleware_stack(self) -> ASGIApp:
        return members.FastReads(super().build_middleware_stack(), self._metrics)


def create_app(settings: Settings) -> FastAPI:
    """An app whose stores are opened when it starts and closed (queue drained) when it stops."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        components = build(settings, metrics)
        app.state.components = components
        await components.start()
        try:
            yield
        finally:
            await components.close()

    app = _App(
        metrics,
        title="loyalty-cdp",
        version=__version__,
        description="Customer data platform for loyalty programs. "
        "Ingest is the Segment HTTP Tracking API.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(ingest.router)
    app.include_router(members.router)
    app.include_router(loyalty.router)
    app.include_router(offers.router)
    app.include_router(operations.router)
    app.include_router(privacy.router)
    app.include_router(email.router)
    app.include_router(sms.router)
    app.include_router(segments.router)
    app.include_router(decisions.router)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    return app
