"""The FastAPI application: routers, error handlers, metrics middleware, and the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

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

    app = FastAPI(
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
    # Inside the timing middleware, so that the fast reads are measured as the routes are.
    app.add_middleware(members.FastReads)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    return app
