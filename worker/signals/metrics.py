"""Prometheus metrics of a worker, served by the Celery parent process on ``STYLEQUEUE_METRICS_PORT``.

Pool children record into prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``,
set by :func:`worker.signals.install` before this module is imported); the parent serves them
merged, plus the queue depth read from Redis at scrape time (the gauges of
:func:`producer.broker.queues.gauges`, the same definition the light exporter renders). Names and labels
follow celery-exporter where it has one (``name``, ``hostname``, ``queue_name``).

======================================== ========= =======================================================
metric                                   type      meaning
======================================== ========= =======================================================
``celery_task_succeeded_total``          counter   jobs done
``celery_task_failed_total``             counter   jobs failed for good, by ``exception``
``celery_task_revoked_total``            counter   jobs cancelled by a client
``celery_task_runtime``                  histogram wall time of a run (download to upload), seconds
``stylequeue_deliveries_total``          counter   deliveries that ran nothing, by ``outcome``:
                                                   ``republished`` (the job had ended), ``dropped`` or
                                                   ``deferred`` (another live run held it)
``stylequeue_jobs_recovered_total``      counter   jobs the sweep handed back after their worker died
``stylequeue_dead_letters_dropped_total`` counter  old dead letters dropped by the cap or the TTL
``celery_queue_length``                  gauge     ``queue_name``'s jobs: every priority list plus unacked
``stylequeue_queue_ready``               gauge     waiting jobs by ``queue_name`` and ``priority``
``stylequeue_queue_unacked``             gauge     jobs taken by a worker and not yet acknowledged
``stylequeue_job_queue_wait_seconds``    histogram time from submit (``submitted_at``) to start
``stylequeue_iterations_per_second``     gauge     L-BFGS iterations per second, summed over children
``stylequeue_job_progress_ratio``        gauge     iteration / total of each child's current job
``stylequeue_model_load_seconds``        gauge     time the slowest live child took to fetch and load the weights
``stylequeue_gpu_memory_bytes``          gauge     GPU memory in use by all children (GPU workers only)
======================================== ========= =======================================================
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from producer import broker
from producer.broker.queues import depth, gauges
from producer.core.settings import Settings
from producer.core.states import FAILURE, SUCCESS
from worker import signals
from worker.runtime import outcomes

log = logging.getLogger(__name__)

_TIME_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
_TASK = ["name", "hostname", "queue_name"]

succeeded = Counter("celery_task_succeeded", "Jobs done", _TASK)
failed = Counter("celery_task_failed", "Jobs failed for good", [*_TASK, "exception"])
revoked = Counter("celery_task_revoked", "Jobs cancelled", _TASK)
deliveries = Counter("stylequeue_deliveries", "Deliveries that ran nothing, by outcome", [*_TASK, "outcome"])
recovered = Counter("stylequeue_jobs_recovered", "Jobs handed back after their worker died", ["queue_name"])
dead_letters_dropped = Counter("stylequeue_dead_letters_dropped", "Old dead letters dropped (cap or TTL)")
runtime = Histogram("celery_task_runtime", "Wall time of a job run, seconds", _TASK, buckets=_TIME_BUCKETS)
queue_wait = Histogram("stylequeue_job_queue_wait_seconds", "Submit to start", buckets=_TIME_BUCKETS)
iterations_per_second = Gauge(
    "stylequeue_iterations_per_second", "L-BFGS iterations per second", multiprocess_mode="livesum"
)
progress_ratio = Gauge(
    "stylequeue_job_progress_ratio", "Iteration / total of the current job", multiprocess_mode="liveall"
)
model_load_seconds = Gauge(
    "stylequeue_model_load_seconds", "Weights fetch and load time (slowest live child)", multiprocess_mode="livemax"
)
gpu_memory_bytes = Gauge(
    "stylequeue_gpu_memory_bytes", "GPU memory in use (all live children)", multiprocess_mode="livesum"
)


class QueueDepthCollector(Collector):
    """Reads the queue depth from the broker at each scrape (so it is right even with no job running)."""

    def __init__(self, redis: Any, queue: str) -> None:
        self.redis = redis
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the queue-depth gauges; nothing when the broker is unreachable."""
        try:
            d = depth(self.redis, self.queue)
        except Exception as e:  # a scrape must not fail because Redis blinked
            log.warning("queue depth unavailable: %s", e)
            return
        families: dict[str, GaugeMetricFamily] = {}
        for g in gauges(d):
            if g.name not in families:
                families[g.name] = GaugeMetricFamily(g.name, g.help, labels=list(g.labels))
            families[g.name].add_metric(list(g.labels.values()), g.value)
        yield from families.values()


def serve(settings: Settings) -> None:
    """Serve ``/metrics`` from the parent process (children's files merged); port 0: off."""
    if not settings.metrics_port:
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(QueueDepthCollector(broker.of(settings, 2.0), settings.queue))
    try:
        start_http_server(settings.metrics_port, registry=registry)
    except OSError as e:  # jobs matter more than metrics: say it loudly, keep working
        log.error("cannot serve metrics on port %d: %s", settings.metrics_port, e)
        return
    log.info("metrics on :%d/metrics", settings.metrics_port)


def labels(task: Any) -> dict[str, str]:
    """celery-exporter's labels of a task: its name, the worker's host, its queue."""
    request = getattr(task, "request", None)
    node = str(getattr(request, "hostname", "") or "")
    info = getattr(request, "delivery_info", None) or {}
    return {
        "name": str(getattr(task, "name", "")),
        "hostname": node.split("@", 1)[-1],
        "queue_name": str(info.get("routing_key") or ""),
    }


class JobTimer:
    """Per-child bookkeeping of the current job for the runtime and rate metrics."""

    def __init__(self) -> None:
        self.started = 0.0
        self._last: tuple[float, int] | None = None

    def start(self, submitted_at: float | None) -> None:
        """A job starts; ``submitted_at`` is the client's epoch time, if the message has it."""
        self.started = time.monotonic()
        self._last = None
        if submitted_at is not None:
            queue_wait.observe(max(0.0, time.time() - submitted_at))
        progress_ratio.set(0)

    def progress(self, iteration: int, total: int) -> None:
        """One iteration done."""
        now = time.monotonic()
        if self._last is not None and iteration > self._last[1]:
            iterations_per_second.set((iteration - self._last[1]) / max(1e-9, now - self._last[0]))
        self._last = (now, iteration)
        progress_ratio.set(iteration / max(1, total))

    def finish(self, task: Any, state: str, error: str) -> None:
        """A delivery ended in Celery ``state``; what it amounted to is in ``request.stylequeue_outcome``."""
        names = labels(task)
        outcome = outcomes.of(getattr(task, "request", None))
        if outcome in outcomes.RAN_NOTHING:
            deliveries.labels(**names, outcome=outcome.value).inc()
        elif outcome is outcomes.Outcome.CANCELLED:
            revoked.labels(**names).inc()
            runtime.labels(**names).observe(time.monotonic() - self.started)
        elif state == SUCCESS:
            succeeded.labels(**names).inc()
            runtime.labels(**names).observe(time.monotonic() - self.started)
        elif state == FAILURE:
            failed.labels(**names, exception=error).inc()
            runtime.labels(**names).observe(time.monotonic() - self.started)
        iterations_per_second.set(0)
        progress_ratio.set(0)
        record_gpu_memory()


def record_gpu_memory() -> None:
    """Set the GPU memory gauge from TensorFlow (no-op without a GPU)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        gpu_memory_bytes.set(tf.config.experimental.get_memory_info(gpus[0].name)["current"])


timer = JobTimer()


def install(settings: Settings) -> None:
    """Record job metrics from Celery's task signals (in the pool children)."""
    signals.on_progress(timer.progress)

    @task_prerun.connect(weak=False)
    def _started(args: Any = (), **_: Any) -> None:
        message = args[0] if args else None
        submitted = message.get("submitted_at") if isinstance(message, dict) else None
        timer.start(submitted if isinstance(submitted, (int, float)) and not isinstance(submitted, bool) else None)

    @task_postrun.connect(weak=False)
    def _ended(task: Any = None, retval: Any = None, state: str = "", **_: Any) -> None:
        timer.finish(task, state or "", type(retval).__name__ if isinstance(retval, BaseException) else "")

    @worker_process_shutdown.connect(weak=False)
    def _child_exit(**_: Any) -> None:
        multiprocess.mark_process_dead(os.getpid())
