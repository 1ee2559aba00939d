"""Prometheus metrics of a worker, served by the Celery parent process on ``STYLEQUEUE_METRICS_PORT``.

Pool children record into prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``,
set by :mod:`worker.app` before this module is imported); the parent serves them merged, plus
the queue depth read from Redis at scrape time. Names follow celery-exporter where it has one.

====================================== ========= =========================================================
metric                                 type      meaning
====================================== ========= =========================================================
``celery_task_succeeded_total``        counter   jobs done, by task ``name``
``celery_task_failed_total``           counter   jobs failed for good, by ``name`` and ``exception``
``celery_task_retried_total``          counter   transient failures that will run again
``celery_task_revoked_total``          counter   jobs cancelled by a client
``stylequeue_deliveries_dropped_total`` counter   duplicate deliveries not run (job done, or leased elsewhere)
``celery_task_runtime_seconds``        histogram wall time of a job (download to upload)
``celery_queue_length``                gauge     ``queue_name``'s jobs: every priority list plus unacked
``stylequeue_queue_ready``             gauge     waiting jobs by ``queue`` and ``priority``
``stylequeue_queue_unacked``           gauge     jobs taken by a worker and not yet acknowledged
``stylequeue_job_queue_wait_seconds``  histogram time from submit (``submitted_at``) to start
``stylequeue_iterations_per_second``   gauge     L-BFGS iterations per second, summed over children
``stylequeue_job_progress_ratio``      gauge     iteration / total of each child's current job
``stylequeue_model_load_seconds``      gauge     time the slowest live child took to fetch and load the weights
``stylequeue_gpu_memory_bytes``        gauge     GPU memory in use by all children (GPU workers only)
====================================== ========= =========================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from producer.queues import depth

log = logging.getLogger(__name__)

_TIME_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

succeeded = Counter("celery_task_succeeded", "Jobs done", ["name"])
failed = Counter("celery_task_failed", "Jobs failed for good", ["name", "exception"])
retried = Counter("celery_task_retried", "Transient failures that will run again", ["name"])
revoked = Counter("celery_task_revoked", "Jobs cancelled", ["name"])
dropped = Counter("stylequeue_deliveries_dropped", "Duplicate deliveries not run (job done or leased)", ["name"])
runtime = Histogram("celery_task_runtime_seconds", "Wall time of a job", ["name"], buckets=_TIME_BUCKETS)
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

    def __init__(self, redis_client: Any, queue: str) -> None:
        self.redis = redis_client
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the queue-depth gauges; nothing when the broker is unreachable."""
        try:
            d = depth(self.redis, self.queue)
        except Exception as e:  # a scrape must not fail because Redis blinked
            log.warning("queue depth unavailable: %s", e)
            return
        length = GaugeMetricFamily(
            "celery_queue_length", "Jobs in the queue: all priorities plus unacked", labels=["queue_name"]
        )
        length.add_metric([self.queue], d.total)
        ready = GaugeMetricFamily("stylequeue_queue_ready", "Waiting jobs", labels=["queue", "priority"])
        for p, n in d.ready.items():
            ready.add_metric([self.queue, str(p)], n)
        unacked = GaugeMetricFamily("stylequeue_queue_unacked", "Jobs taken, not yet acknowledged", labels=["queue"])
        unacked.add_metric([self.queue], d.unacked)
        yield from (length, ready, unacked)


def serve(port: int, broker_url: str, queue: str) -> None:
    """Serve ``/metrics`` on ``port`` from the parent process (children's files merged)."""
    import redis

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(QueueDepthCollector(redis.Redis.from_url(broker_url, socket_timeout=2), queue))
    start_http_server(port, registry=registry)
    log.info("metrics on :%d/metrics", port)


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

    def finish(self, name: str, state: str, exception: str = "") -> None:
        """The job ended in ``state``: SUCCESS, FAILURE, RETRY, IGNORED (a cancel) or DROPPED (a duplicate)."""
        runtime.labels(name).observe(time.monotonic() - self.started)
        if state == "SUCCESS":
            succeeded.labels(name).inc()
        elif state == "RETRY":
            retried.labels(name).inc()
        elif state == "IGNORED":
            revoked.labels(name).inc()
        elif state == "DROPPED":
            dropped.labels(name).inc()
        else:
            failed.labels(name, exception).inc()
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
