"""The HTTP API: submit, poll or be called back, cancel, fetch the output. No TensorFlow.

A stateless ASGI app (FastAPI) over the same queue, contract and workers as the Python client:
every replica reads and writes Redis only, so any number of them can stand behind a load
balancer. ``stylequeue api`` serves it with uvicorn; ``/docs`` browses its OpenAPI document
(``/openapi.json``), whose request schemas are the contract's own JSON Schema
(:mod:`producer.core.schema`), not a second copy.

The pieces: :mod:`producer.api.routes` (one module per resource), :mod:`producer.api.deps` (what
routes depend on: services, the caller's tenant, the body), :mod:`producer.api.submission`
(validating and queueing jobs), :mod:`producer.api.errors` (statuses and the JSON error shape),
:mod:`producer.api.resources` (the JSON returned), :mod:`producer.api.metrics`; with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, a span per request (:mod:`producer.tracing`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from producer import tracing
from producer.api import errors
from producer.api.deps import Services
from producer.api.live import Hub
from producer.api.metrics import Measure
from producer.api.routes import batches, events, jobs, ops, playground, tenant, uploads
from producer.core.settings import Settings


def close_streams_on_exit(hub: Hub) -> None:
    """End the event streams as soon as the server is told to stop (SIGTERM, SIGINT).

    The server (uvicorn) waits for open responses before it shuts the app down, and an event
    stream never ends by itself: its handler is chained, so the streams close first and their
    clients reconnect elsewhere with ``Last-Event-ID``. Only where the server has a handler of its
    own, in the main thread (not under a test client).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if callable(previous):

            def handler(signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
                hub.shut_down()
                previous(signum, frame)

            signal.signal(sig, handler)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app for ``settings`` (from the environment when ``None``).

    Raises:
        ConfigError: the keys document (``STYLEQUEUE_API_KEYS_FILE``/``STYLEQUEUE_API_KEYS``) is wrong.
    """
    settings = settings or Settings.from_env()
    services = Services.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        close_streams_on_exit(services.hub)
        yield
        services.hub.close()

    app = FastAPI(
        lifespan=lifespan,
        title="stylequeue",
        version="1",
        description="Neural style transfer as a service: jobs on a queue of GPU workers. "
        "Authenticate with `Authorization: Bearer <key>`.",
    )
    app.add_middleware(Measure, metrics=services.metrics)
    app.state.settings = settings
    app.state.services = services
    errors.install(app)
    routers = (jobs.router, events.router, batches.router(settings), uploads.router, tenant.router, ops.router)
    for router in (*routers, playground.router):
        app.include_router(router)
    if tracing.setup(tracing.API, instrument=("botocore",)):  # each uvicorn process sets up its own
        tracing.instrument_fastapi(app)
    return app
