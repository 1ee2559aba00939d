"""Connects Celery's signals to the metrics and the health state files (policy outside the task).

Imported by :mod:`worker.app`, which sets ``PROMETHEUS_MULTIPROC_DIR`` first.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_rejected,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from prometheus_client import multiprocess

from producer import deadletters
from producer.errors import InvalidJob
from producer.settings import Settings
from worker import metrics
from worker.health import ChildState

log = logging.getLogger(__name__)

_state: ChildState | None = None


def install(settings: Settings) -> None:
    """Connect the handlers for ``settings``' worker (call once, at import of the worker app)."""

    @worker_init.connect(weak=False)
    def _serve_metrics(**_: Any) -> None:  # the parent, before the pool starts
        if settings.metrics_port:
            try:
                metrics.serve(settings.metrics_port, settings.broker_url, settings.queue)
            except OSError as e:  # jobs matter more than metrics: say it loudly, keep working
                log.error("cannot serve metrics on port %d: %s", settings.metrics_port, e)

    @worker_process_init.connect(weak=False)
    def _child_ready(**_: Any) -> None:  # each pool child, after the model is loaded (see worker.app)
        global _state
        _state = ChildState(settings.health_dir)
        _state.idle()

    @worker_process_shutdown.connect(weak=False)
    def _child_exit(**_: Any) -> None:
        multiprocess.mark_process_dead(os.getpid())
        if _state is not None:
            _state.remove()

    @task_prerun.connect(weak=False)
    def _job_started(task_id: str = "", args: Any = (), **_: Any) -> None:
        message = args[0] if args else None
        submitted = message.get("submitted_at") if isinstance(message, dict) else None
        metrics.timer.start(submitted if isinstance(submitted, (int, float)) else None)
        if _state is not None:
            _state.started(task_id)

    @task_failure.connect(weak=False)
    def _dead_letter(
        sender: Any = None, task_id: str = "", exception: BaseException | None = None, args: Any = (), **_: Any
    ) -> None:
        """A job failed for good (permanent error, retries exhausted, too many crashes): keep it."""
        try:
            deadletters.record(
                sender.backend.client,
                task_id,
                args[0] if args else None,
                type(exception).__name__,
                str(exception),
                int(sender.request.retries or 0) + 1,
            )
        except Exception as e:  # the failure itself is already recorded as the job's result
            log.error("dead letter for job %s not recorded: %s", task_id, e)

    @task_rejected.connect(weak=False)
    def _refused(sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
        """Record a permanent failure for a message refused before any code ran.

        That is pickle or another disallowed serializer; its (undecoded) body is never stored.
        """
        job_id = (getattr(message, "headers", None) or {}).get("id")
        if not job_id or exc is None:
            return
        error = InvalidJob("message", f"refused: {type(exc).__name__}: {exc}"[:500])
        try:
            sender.app.backend.mark_as_failure(job_id, error)
            deadletters.record(sender.app.backend.client, job_id, None, "InvalidJob", str(error), 1)
        except Exception as e:  # the refusal is logged by Celery either way
            log.error("refused message %s not recorded: %s", job_id, e)

    @task_postrun.connect(weak=False)
    def _job_ended(task: Any = None, retval: Any = None, state: str = "", **_: Any) -> None:
        error = type(retval).__name__ if isinstance(retval, BaseException) else ""
        if getattr(getattr(task, "request", None), "dropped", False):
            state = "DROPPED"  # a duplicate delivery the guard did not run
        metrics.timer.finish(getattr(task, "name", ""), state or "", error)
        if _state is not None:
            _state.idle()


def on_progress(iteration: int, total: int) -> None:
    """Called by the task at each iteration."""
    metrics.timer.progress(iteration, total)
    if _state is not None:
        _state.progressed()
