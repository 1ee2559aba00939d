"""The Celery task ``stylequeue.transfer``: thin glue around :func:`worker.jobs.run`.

Policy lives in the task's declaration, not in its body:

* :class:`~producer.errors.TransientError` (store unreachable, throttled, 5xx) and Redis
  connection errors are retried with
  exponential backoff, full jitter and a cap (``STYLEQUEUE_RETRY_BACKOFF_MAX_S``), at most
  ``STYLEQUEUE_MAX_RETRIES`` times;
* every other error fails the job at once and for good: its class and message are the result;
* a cancelled job (``stylequeue cancel``) ends in state ``REVOKED`` at its next iteration.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.exceptions import Ignore

from producer.contract import CANCEL_KEY, TASK_NAME
from producer.errors import JobCancelled, TransientError
from worker import jobs, monitor, runtime
from worker.app import app, settings

log = logging.getLogger(__name__)


class Reporter:
    """Per-iteration callback: publishes PROGRESS (throttled) and honours cancellation.

    Args:
        task: The bound Celery task.
        job_id: The job (task) id.
        interval_s: Least seconds between two progress updates; the last iteration always goes.
    """

    def __init__(self, task: Any, job_id: str, interval_s: float) -> None:
        self.task = task
        self.job_id = job_id
        self.interval_s = interval_s
        self._last = 0.0
        self._redis = getattr(task.backend, "client", None)

    def cancelled(self) -> bool:
        """Whether a client asked to cancel this job (``False`` while Redis cannot be asked)."""
        try:
            return bool(self._redis is not None and self._redis.exists(CANCEL_KEY.format(self.job_id)))
        except redis.exceptions.RedisError as e:  # a blip must not stop, or restart, a long job
            log.warning("job %s: cancel check failed: %s", self.job_id, e)
            return False

    def __call__(self, p: Any) -> None:
        """Report one :class:`worker.engine.Progress`; raise :class:`JobCancelled` if cancelled."""
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled at iteration {p.iteration}/{p.total}")
        monitor.on_progress(p.iteration, p.total)
        now = time.monotonic()
        if now - self._last >= self.interval_s or p.iteration == p.total:
            self._last = now
            meta = {
                "job_id": self.job_id,
                "iteration": p.iteration,
                "total": p.total,
                "loss": p.loss,
                "content_loss": p.content_loss,
                "style_loss": p.style_loss,
                "tv_loss": p.tv_loss,
                "elapsed_s": round(p.elapsed_s, 3),
            }
            try:
                self.task.update_state(state="PROGRESS", meta=meta)
            except redis.exceptions.RedisError as e:  # progress is best effort; the job goes on
                log.warning("job %s: progress update failed: %s", self.job_id, e)


@app.task(
    name=TASK_NAME,
    bind=True,
    autoretry_for=(TransientError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
    retry_backoff=2,
    retry_backoff_max=settings.retry_backoff_max_s,
    retry_jitter=True,
    max_retries=settings.max_retries,
)
def transfer(self: Any, message: Any) -> dict[str, Any]:
    """Run one style-transfer job; see :mod:`producer.contract` for ``message``."""
    job_id = self.request.id
    reporter = Reporter(self, job_id, settings.progress_interval_s)
    try:
        if reporter.cancelled():
            raise JobCancelled(f"job {job_id} was cancelled before it started")
        return jobs.run(message, job_id, runtime.current(settings), on_progress=reporter)
    except JobCancelled as e:
        log.info("%s", e)
        # REVOKED with a TaskRevokedError result, as Celery records its own revokes.
        self.backend.mark_as_revoked(job_id, reason=str(e), request=self.request)
        raise Ignore() from None
