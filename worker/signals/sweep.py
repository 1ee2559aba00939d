"""The recovery sweep (:mod:`worker.runtime.recovery`) in the worker's parent, and the claims it respects.

The sweep runs every ``STYLEQUEUE_SWEEP_INTERVAL_S``; the parent never runs jobs, so it sweeps
while every child is busy. The parent claims each message it receives (until its run can take the
job's lease: a pool child may first have to load the model), so the sweep does not hand a message
that is in hand to another worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery.signals import task_received

from producer import broker
from producer.core.settings import Settings
from worker.runtime import recovery

log = logging.getLogger(__name__)


def install(settings: Settings) -> None:
    """Claim every message this worker receives (in the parent, as it arrives)."""
    redis: list[Any] = []

    @task_received.connect(weak=False)
    def _claim(request: Any = None, **_: Any) -> None:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if not tag:
            return
        if not redis:
            redis.append(broker.of(settings, 2.0))
        try:
            recovery.claim(redis[0], tag, settings.proc_alive_timeout_s + 60)
        except Exception as e:  # without a claim the sweep may hand it on: a duplicate, not a loss
            log.warning("claim of a received message failed: %s", e)


def start(settings: Settings, hostname: str) -> Callable[[], None]:
    """Start sweeping; return the function that stops it."""
    from worker.signals import metrics

    stop = threading.Event()
    redis = broker.of(settings)

    def loop() -> None:
        while not stop.wait(settings.sweep_interval_s):
            try:
                if not recovery.try_lock(redis, settings.queue, settings.sweep_interval_s):
                    continue  # another worker sweeps this interval
                report = recovery.sweep(redis, [settings.queue], grace_s=settings.lease_ttl_s)
            except Exception as e:  # Redis down: the next interval tries again
                log.warning("sweep failed: %s", e)
                continue
            if report.restored:
                metrics.recovered.labels(queue_name=settings.queue).inc(len(report.restored))
            if report.migrated:
                log.warning("moved %d jobs from the list names of an earlier version", report.migrated)

    thread = threading.Thread(target=loop, name=f"stylequeue-sweep-{hostname}", daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(timeout=settings.sweep_interval_s + 15)

    return halt
