"""Prometheus metrics of one server, in a registry of its own, and the middleware that times requests."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loyalty_cdp.adapters.eventlog.base import AppendResult

disable_created_metrics()  # the *_created series only add noise to every scrape
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "lcdp_ingest_events_accepted", "Events accepted by ingest (valid, before dedup)",
            registry=self.registry,
        )
        self.rejected = Counter(
            "lcdp_ingest_events_rejected", "Events or requests rejected by ingest, by reason",
            ["reason"], registry=self.registry,
        )
        self.appended = Counter(
            "lcdp_eventlog_appended", "Events newly stored in the event log", registry=self.registry
        )
        self.deduplicated = Counter(
            "lcdp_ingest_events_deduplicated", "Events dropped as repeats of a stored messageId",
            registry=self.registry,
        )
        self.conflicts = Counter(
            "lcdp_ingest_messageid_conflicts",
            "Repeated messageIds whose content differed from the stored event (first wins)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "lcdp_http_request_duration_seconds", "HTTP request latency",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "lcdp_ingest_queue_events", "Events waiting for the durable append", registry=self.registry
        )
        self.log_events = Gauge(
            "lcdp_eventlog_events", "Events stored in the event log", registry=self.registry
        )
        self.log_bytes = Gauge(
            "lcdp_eventlog_bytes", "Bytes the event log occupies", registry=self.registry
        )
        self.processor_lag = Gauge(
            "lcdp_processor_lag_events", "Events in the log not yet folded into profiles",
            registry=self.registry,
        )
        self.members = Gauge("lcdp_members", "Member profiles held", registry=self.registry)

    def record_append(self, result: AppendResult) -> None:
        self.appended.inc(result.appended)
        self.deduplicated.inc(result.duplicates)
        self.conflicts.inc(result.conflicts)

    def watch(
        self, queue_depth: Callable[[], float], log_events: Callable[[], float],
        log_bytes: Callable[[], float], processor_lag: Callable[[], float],
        members: Callable[[], float],
    ) -> None:
        """Gauges read at scrape time, so they cost nothing between scrapes."""
        self.queue_depth.set_function(queue_depth)
        self.log_events.set_function(log_events)
        self.log_bytes.set_function(log_bytes)
        self.processor_lag.set_function(processor_lag)
        self.members.set_function(members)


class TimingMiddleware:
    """Observes every HTTP request's latency under its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
