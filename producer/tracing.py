"""Traces: OpenTelemetry spans exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; else nothing.

Off (no endpoint), every function here returns at once and nothing imports ``opentelemetry``: no
provider, no exporter thread, no header in any message. On, each process exports its spans over
OTLP/HTTP (protobuf) with a ``BatchSpanProcessor``; the SDK reads the standard variables itself
(``OTEL_EXPORTER_OTLP_*`` for the endpoint, headers, timeout and compression, ``OTEL_BSP_*``,
``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_PROPAGATORS``), and
``OTEL_SERVICE_NAME`` defaults per process to :data:`API`, :data:`WORKER` or :data:`NOTIFIER`.
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off again. Anything this
build cannot honour (another ``OTEL_EXPORTER_OTLP_PROTOCOL``, the ``traces`` extra not installed)
is said once in the log and leaves traces off: observability never stops a service.

One trace follows a job (W3C trace context, :func:`headers`): the API's request, the publish
(a span of :class:`producer.client.Client`, which writes the messages itself), the worker's task
(``traceparent`` in the Celery message's headers, read by Celery's instrumentation), its S3
calls (botocore's), and the webhook: the end of the job writes the context into the notifier's
message, and the notifier keeps it with the scheduled event for each attempt's POST.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

#: Default service names (``OTEL_SERVICE_NAME`` wins), one per kind of process.
API = "stylequeue-api"
WORKER = "stylequeue-worker"
NOTIFIER = "stylequeue-notifier"
#: The one OTLP protocol the ``traces`` extra ships an exporter for.
PROTOCOL = "http/protobuf"
#: What must be importable for traces to be on (the ``traces`` extra).
_NEEDS = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")

_lock = threading.Lock()
_provider: Any = None
_tracer: Any = None
_instrumented: set[str] = set()


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


@functools.lru_cache(maxsize=1)
def enabled() -> bool:
    """Whether this process traces: an OTLP endpoint is set and nothing turns traces off.

    Read once per process (the environment does not change under a running service).
    """
    if not (_env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    exporter = _env("OTEL_TRACES_EXPORTER").lower()
    if _env("OTEL_SDK_DISABLED").lower() == "true" or exporter == "none":
        return False
    if exporter not in ("", "otlp"):
        log.warning("OTEL_TRACES_EXPORTER=%s: only otlp is supported; traces are off", exporter)
        return False
    protocol = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOL
    if protocol != PROTOCOL:
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only %s is supported; traces are off", protocol, PROTOCOL)
        return False
    import importlib.util

    try:
        missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    except ModuleNotFoundError as e:
        missing = [str(e.name)]
    if missing:
        log.warning("an OTLP endpoint is set but %s is not installed (pip install 'stylequeue[traces]')", missing[0])
        return False
    return True


def setup(service: str, instrument: Sequence[str] = ()) -> bool:
    """Export this process's spans (once per process) and instrument ``instrument``; whether on.

    Args:
        service: The service name unless ``OTEL_SERVICE_NAME`` (or ``service.name`` in
            ``OTEL_RESOURCE_ATTRIBUTES``) says otherwise.
        instrument: Libraries to instrument: ``"celery"`` (a worker's task spans, and the trace
            context of the messages it takes), ``"botocore"`` (S3 calls).
    """
    if not enabled():
        return False
    global _provider
    with _lock:
        if _provider is None:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            resource = Resource.create()
            if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
                resource = resource.merge(Resource({SERVICE_NAME: service}))
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
            _provider = provider
        for name in instrument:
            if name not in _instrumented:
                _INSTRUMENT[name]()
                _instrumented.add(name)
    return True


def _celery() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument()


def _botocore() -> None:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

    BotocoreInstrumentor().instrument()


_INSTRUMENT = {"celery": _celery, "botocore": _botocore}


def instrument_fastapi(app: Any) -> None:
    """Give ``app`` a server span per request (not for ``/healthz``, ``/readyz``, ``/metrics``).

    ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` (or ``OTEL_PYTHON_EXCLUDED_URLS``) replaces that list.
    """
    if not enabled():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    excluded = _env("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or _env("OTEL_PYTHON_EXCLUDED_URLS")
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=excluded or "/healthz,/readyz,/metrics", exclude_spans=["receive", "send"]
    )


def shutdown() -> None:
    """Export what is left and stop (a pool child exiting, a notifier stopping)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def headers() -> dict[str, str]:
    """The current trace context as message headers (``traceparent``, ``tracestate``); ``{}`` when none.

    Nothing else the propagators carry (baggage), and no ``tracestate`` over 512 characters.
    """
    if not enabled():
        return {}
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    # Only the trace context, bounded: a caller's baggage (or an oversized tracestate) would be
    # copied into every message of a batch.
    kept = {k: v for k, v in carrier.items() if k == "traceparent" or (k == "tracestate" and len(v) <= 512)}
    return kept


@contextlib.contextmanager
def attached(carrier: Any) -> Iterator[None]:
    """Run the block in the trace context ``carrier`` holds (what :func:`headers` returned, kept as JSON)."""
    if not carrier or not isinstance(carrier, Mapping) or not enabled():
        yield
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract({str(k): str(v) for k, v in carrier.items()}))
    try:
        yield
    finally:
        context.detach(token)


class Span:
    """One span, or nothing when traces are off: what callers set on it, without OpenTelemetry's types."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set an attribute."""
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, description: str, error_type: str | None = None) -> None:
        """Mark the span as failed (its status ``ERROR``, and ``error.type``)."""
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, description))
            self._span.set_attribute("error.type", error_type or description)


_OFF = Span()


@contextlib.contextmanager
def span(name: str, kind: str = "internal", attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span around the block, child of the current one; ``kind``: internal, client, producer, ...

    An exception leaving the block is recorded on it and marks it failed.
    """
    if not enabled():
        yield _OFF
        return
    from opentelemetry import trace

    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("stylequeue")  # a proxy until setup(): it follows the provider
    with _tracer.start_as_current_span(
        name, kind=trace.SpanKind[kind.upper()], attributes=dict(attributes or {})
    ) as current:
        yield Span(current)
