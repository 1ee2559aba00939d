"""Each pool child pins its GPU (optionally) and loads the model before it takes a job."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from producer.core.settings import Settings


def install(settings: Settings) -> None:
    """Load the model in every pool child, at its start."""

    @worker_process_init.connect(weak=False)
    def _load(**_: Any) -> None:
        from billiard import current_process

        from worker import runtime
        from worker.signals import metrics

        runtime.pin_gpu(current_process().index)
        started = runtime.start(settings)
        metrics.model_load_seconds.set(started.model_load_s)
