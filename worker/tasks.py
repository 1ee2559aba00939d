"""The Celery task ``stylequeue.transfer``: thin glue around :func:`worker.jobs.run`.

Policy lives in the task's declaration and in :mod:`worker.guard`, not in the job's code:

* :class:`~producer.errors.TransientError` (store unreachable, throttled, 5xx) and Redis
  connection errors are retried with exponential backoff, full jitter and a cap
  (``STYLEQUEUE_RETRY_BACKOFF_MAX_S``), at most ``STYLEQUEUE_MAX_RETRIES`` times;
* every other error fails the job at once and for good (and files a dead letter, see
  :mod:`worker.monitor`): its class and message are the result;
* exactly once: a job already done is not run again; a job whose lease another run holds is not
  run twice; a job whose earlier runs killed their worker ``STYLEQUEUE_MAX_WORKER_LOSSES`` times
  fails with ``TooManyCrashes`` instead of looping;
* a cancelled job (``stylequeue cancel``) ends in state ``REVOKED`` at its next iteration.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.exceptions import Ignore

from producer.contract import CANCEL_KEY, TASK_NAME
from producer.errors import JobCancelled, TooManyCrashes, TransientError
from worker import jobs, monitor, runtime
from worker.app import app, settings
from worker.guard import JobGuard, Lease

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This run's lease expired (a long Redis outage): another run may own the job now."""


class Reporter:
    """Per-iteration callback: publishes PROGRESS (throttled), honours cancellation and the lease.

    Args:
        task: The bound Celery task.
        job_id: The job (task) id.
        interval_s: Least seconds between two progress updates; the last iteration always goes.
        lease: The run's lease, or ``None``.
    """

    def __init__(self, task: Any, job_id: str, interval_s: float, lease: Lease | None = None) -> None:
        self.task = task
        self.job_id = job_id
        self.interval_s = interval_s
        self.lease = lease
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
        """Report one :class:`worker.engine.Progress`; raise to stop a cancelled or lost run."""
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled at iteration {p.iteration}/{p.total}")
        if self.lease is not None and self.lease.lost.is_set():
            raise LeaseLost(self.job_id)
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


def _defer_duplicate(task: Any, message: Any, job_id: str, holder: str | None) -> None:
    """Drop a delivery of a job another run holds, leaving one re-check for after the lease TTL.

    The re-check matters when the holder died: ``task_reject_on_worker_lost`` requeues its job at
    once, while the dead run's lease still has up to a TTL to expire. If the holder is alive,
    the re-check finds the job done (or still leased, and waits again) and is dropped in turn.
    """
    countdown = settings.lease_ttl_s + 1
    log.warning("job %s is leased by %s: this delivery is dropped, re-checked in %d s", job_id, holder, countdown)
    task.app.send_task(
        TASK_NAME,
        args=[message],
        task_id=job_id,
        queue=task.request.delivery_info.get("routing_key") or settings.queue,
        countdown=countdown,
        priority=task.request.delivery_info.get("priority"),
    )


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
    client = self.backend.client
    guard = JobGuard(client, job_id, settings.result_expires_s)
    if guard.is_done():
        log.info("job %s is done already: delivery dropped", job_id)
        self.request.dropped = True  # for the metrics: not a cancel
        raise Ignore()
    lease = Lease(client, job_id, settings.lease_ttl_s)
    if not lease.acquire():
        _defer_duplicate(self, message, job_id, lease.holder())
        self.request.dropped = True
        raise Ignore()
    reporter = Reporter(self, job_id, settings.progress_interval_s, lease)
    try:
        crashed = guard.start_run()
        if crashed >= settings.max_worker_losses:
            raise TooManyCrashes(f"job {job_id}: {crashed} earlier runs killed their worker; not requeued again")
        if crashed:
            log.warning("job %s: taking over after %d run(s) that did not finish", job_id, crashed)
        if reporter.cancelled():
            raise JobCancelled(f"job {job_id} was cancelled before it started")
        result = jobs.run(message, job_id, runtime.current(settings), on_progress=reporter)
        guard.mark_done()
        return result
    except JobCancelled as e:
        log.info("%s", e)
        # REVOKED with a TaskRevokedError result, as Celery records its own revokes.
        self.backend.mark_as_revoked(job_id, reason=str(e), request=self.request)
        raise Ignore() from None
    except LeaseLost:
        log.error("job %s: lease lost mid-run; stopping, the run that holds it now finishes the job", job_id)
        raise Ignore() from None
    finally:
        guard.end_run()
        lease.release()
