"""The API's Prometheus metrics (``GET /metrics``).

=========================================== ========= ============================================
metric                                      type      meaning
=========================================== ========= ============================================
``stylequeue_api_requests_total``           counter   requests by ``route`` (the path template),
                                                      ``method`` and ``status``
``stylequeue_api_request_seconds``          histogram their latency, by ``route`` and ``method``
``stylequeue_api_jobs_submitted_total``     counter   jobs accepted, by ``tenant``
``stylequeue_api_streams_open``             gauge     Server-Sent Event streams open now
``stylequeue_webhooks_delivered_total``     counter   webhook deliveries a receiver acknowledged
                                                      (all notifiers: kept in Redis)
``stylequeue_webhooks_failed_total``        counter   webhooks given up after the retry period
``stylequeue_webhook_attempts_failed_total`` counter  attempts that failed and were retried
=========================================== ========= ============================================

A stream (``/v1/jobs/{id}/events``, ``/v1/events``) is counted as a request but not timed: it
lasts as long as its client stays. Request metrics are this replica's (Prometheus sums the
replicas); the webhook counters are the deployment's, read from ``stylequeue:webhooks`` at each
scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from producer import broker
from producer.broker import keys

#: Latency buckets (s): an API call is milliseconds; a 10,000-job batch about a second.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The counters of ``stylequeue:webhooks`` and their metric names.
WEBHOOK_COUNTERS = {
    "delivered": "stylequeue_webhooks_delivered",
    "failed": "stylequeue_webhooks_failed",
    "attempts_failed": "stylequeue_webhook_attempts_failed",
}


class ApiMetrics:
    """The API's metrics in their own registry.

    Args:
        redis: Client of the broker's Redis (the webhook counters).
        streams_open: How many event streams are open now.
    """

    def __init__(self, redis: Any, streams_open: Callable[[], int] = lambda: 0) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stylequeue_api_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "stylequeue_api_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.submitted = Counter("stylequeue_api_jobs_submitted", "Jobs accepted", ["tenant"], registry=self.registry)
        streams = Gauge("stylequeue_api_streams_open", "Event streams open", registry=self.registry)
        streams.set_function(streams_open)
        self.registry.register(_WebhookCounters(redis))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request."""
        self.requests.labels(route, method, str(status)).inc()
        if not route.endswith("/events"):
            self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _WebhookCounters:
    """A collector reading the webhook counters every notifier increments in Redis."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        try:
            raw = self.redis.hgetall(keys.WEBHOOKS)
        except broker.errors():
            return  # Redis down: these are absent from this scrape (readyz says why)
        values = {k.decode(): float(v) for k, v in raw.items()}
        for field, name in WEBHOOK_COUNTERS.items():
            family = CounterMetricFamily(name, f"Webhooks: {field.replace('_', ' ')}")
            family.add_metric([], values.get(field, 0.0))
            yield family

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only


class Measure:
    """ASGI middleware: every request counted by route template, method and status, and timed."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on; count and time it by its route template once it is answered."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(route, scope["method"], status[0], time.perf_counter() - started)
