"""Prometheus metrics of one server, in a registry of its own, and the middleware that times requests.

Destinations (``docs/destinations.md``, "Metrics"): the dispatcher's per-lane counters and
gauges are read at scrape time by :class:`DestinationCollector`, labelled by ``destination``;
send durations go to the ``lcdp_destination_send_seconds`` histogram.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loyalty_cdp.adapters.eventlog.base import AppendResult

disable_created_metrics()  # the *_created series only add noise to every scrape
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# LaneStats attribute -> (metric name, help); counters get ``_total`` on exposition.
DESTINATION_COUNTERS = {
    "sent": ("lcdp_destination_sent", "Messages the destination accepted"),
    "delivered": ("lcdp_destination_delivered", "Messages the destination confirmed as delivered"),
    "failed": ("lcdp_destination_failed", "Messages dead-lettered (retry cap or permanent failure)"),
    "bounced": ("lcdp_destination_bounced", "Messages dead-lettered because the recipient was refused"),
    "retried": ("lcdp_destination_retried", "Failed attempts scheduled for a retry"),
    "suppressed": ("lcdp_destination_suppressed", "Messages not sent for lack of consent or after STOP"),
    "deferred": ("lcdp_destination_deferred", "Sends put off without an attempt (quiet hours)"),
}
DESTINATION_GAUGES = {
    "queue_depth": ("lcdp_destination_queue_depth", "Messages held in memory by the lane (queued or in flight)"),
    "in_flight": ("lcdp_destination_in_flight", "Sends in progress"),
    "backlog": ("lcdp_destination_backlog", "Messages of the destination waiting in the outbox"),
}


class DestinationCollector(Collector):
    """The dispatcher's lane statistics, read when Prometheus scrapes (nothing is copied between scrapes)."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []  # names depend on the lanes present at scrape time

    def collect(self) -> Iterator[Any]:
        stats = dict(self.source())
        for attribute, (name, documentation) in DESTINATION_COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=["destination"])
            for destination, lane in sorted(stats.items()):
                family.add_metric([destination], getattr(lane, attribute))
            yield family
        for attribute, (name, documentation) in DESTINATION_GAUGES.items():
            gauge = GaugeMetricFamily(name, documentation, labels=["destination"])
            for destination, lane in sorted(stats.items()):
                gauge.add_metric([destination], getattr(lane, attribute))
            yield gauge
        breaker = GaugeMetricFamily("lcdp_destination_breaker_open",
                                    "1 while the circuit breaker is open or half-open", labels=["destination"])
        for destination, lane in sorted(stats.items()):
            breaker.add_metric([destination], 0 if lane.breaker_state == "closed" else 1)
        yield breaker


class ScoringCollector(Collector):
    """The scheduled scoring job's status (``ScoringScheduler.status``), read at scrape time."""

    def __init__(self, status: Callable[[], Mapping[str, Any]]) -> None:
        self.status = status

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        s = self.status()
        yield CounterMetricFamily("lcdp_scoring_runs", "Scheduled scoring runs finished, failed ones included",
                                  value=s["runs"])
        yield CounterMetricFamily("lcdp_scoring_failures", "Scheduled scoring runs that failed", value=s["failures"])
        yield CounterMetricFamily("lcdp_scoring_skipped", "Scheduled runs skipped: nothing new the same day",
                                  value=s["skipped"])
        yield GaugeMetricFamily("lcdp_scoring_running", "1 while a scoring run is in progress", value=int(s["running"]))
        yield GaugeMetricFamily("lcdp_scoring_last_duration_seconds", "Duration of the last run",
                                value=s["last_duration_s"] or 0)
        yield GaugeMetricFamily("lcdp_scoring_last_success_timestamp_seconds", "End of the last successful run",
                                value=s["last_success_at"] or 0)
        yield GaugeMetricFamily("lcdp_scoring_last_members", "Members scored by the last successful run",
                                value=s["last_members"] or 0)


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
        self.send_seconds = Histogram(
            "lcdp_destination_send_seconds", "Duration of each accepted send, by destination",
            ["destination"], buckets=_SEND_BUCKETS, registry=self.registry,
        )
        self.activation_messages = Counter(
            "lcdp_activation_messages", "Outbound messages built from send decisions, by destination",
            ["destination"], registry=self.registry,
        )
        self.activation_unaddressable = Counter(
            "lcdp_activation_unaddressable",
            "Messages a send decision could not produce (no address, incomplete content), by destination and reason",
            ["destination", "reason"], registry=self.registry,
        )
        self.activation_events = Counter(
            "lcdp_activation_events",
            "Events activation appended to the log (delivery status, email opens and clicks, consent changes)",
            ["event"], registry=self.registry,
        )
        self.audience_rows = Gauge(
            "lcdp_audience_rows", "Rows of the latest audience export, by destination and segment",
            ["destination", "segment"], registry=self.registry,
        )
        self._destinations: DestinationCollector | None = None

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

    def watch_destinations(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Per-destination counters and gauges read from ``stats()`` (``Dispatcher.stats``) at scrape time."""
        if self._destinations is not None:
            self.registry.unregister(self._destinations)
        self._destinations = DestinationCollector(stats)
        self.registry.register(self._destinations)

    def watch_scoring(self, status: Callable[[], Mapping[str, Any]]) -> None:
        """The scheduled scoring job's runs, failures and last success, read from ``status()`` at scrape time."""
        self.registry.register(ScoringCollector(status))

    def observe_send(self, destination: str, seconds: float) -> None:
        """The dispatcher's ``on_latency``: one accepted send's duration."""
        self.send_seconds.labels(destination).observe(seconds)


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
