"""The worker's policies, one module each, connected to Celery's signals when a worker starts.

================== ==========================================================================
module             policy
================== ==========================================================================
``logs``           text or JSON logs (``STYLEQUEUE_LOG_FORMAT``), ``job_id`` on every line of a job
``metrics``        Prometheus metrics of the pool, served by the parent
``health``         per-child state files behind ``stylequeue health``
``dead_letters``   a job that fails for good is kept (``stylequeue dead``) and its end recorded
``refused``        a message refused before any code ran (pickle) gets a final state too
``revoked``        a job Celery revoked before it ran (a plain client's cancel) gets one too
``sweep``          the recovery sweep (:mod:`worker.runtime.recovery`), in a thread of the parent, and
                   the claims on received messages it respects
``model``          each pool child loads the model before it takes a job
``traces``         each pool child exports its spans (``OTEL_EXPORTER_OTLP_ENDPOINT`` set)
================== ==========================================================================

Nothing here runs at import: :class:`worker.app.Setup` calls :func:`install` when a worker is
built (before the pool forks, so children inherit the handlers) and :func:`start` /
:func:`stop` around its life.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

from producer.core.settings import Settings

_progress_hooks: list[Callable[[int, int], None]] = []
_stops: list[Callable[[], None]] = []


def install(settings: Settings) -> None:
    """Connect every policy's signal handlers (call once per worker, in the parent)."""
    _metrics_dir()
    from worker.signals import dead_letters, health, logs, metrics, model, refused, revoked, sweep, traces

    logs.install(settings)
    traces.install(settings)  # before the model: a child's tracer is there before its first S3 call
    metrics.install(settings)
    model.install(settings)  # before health: a child's state file appears once its model is loaded
    health.install(settings)
    dead_letters.install(settings)
    refused.install(settings)
    revoked.install(settings)
    sweep.install(settings)


def _metrics_dir() -> None:
    """Give prometheus_client its multiprocess directory before the worker's metrics are made.

    Pool children inherit the variable through fork; files of an earlier worker with the same pid
    are removed. prometheus_client picks its value store when first imported, and a Celery CLI
    plugin may import it before this runs (Flower does), so the store is picked again here.
    """
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        path = os.path.join(tempfile.gettempdir(), f"stylequeue-metrics-{os.getpid()}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def start(settings: Settings, hostname: str) -> None:
    """The worker's parent process starts: serve metrics and start the sweep."""
    from worker.signals import metrics, sweep

    metrics.serve(settings)
    _stops.append(sweep.start(settings, hostname))


def stop() -> None:
    """The worker stops: stop what :func:`start` started."""
    while _stops:
        _stops.pop()()


def on_progress(hook: Callable[[int, int], None]) -> None:
    """Register ``hook(iteration, total)``, called at every iteration of a job."""
    _progress_hooks.append(hook)


def progressed(iteration: int, total: int) -> None:
    """Called by the task at every iteration."""
    for hook in _progress_hooks:
        hook(iteration, total)
