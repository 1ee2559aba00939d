"""The Celery task ``stylequeue.transfer``: thin glue between a delivery and :func:`worker.runtime.jobs.run`.

What each delivery does (the decisions live in :mod:`worker.runtime.guard` and :mod:`worker.runtime.recovery`):

1. The job already ended (done marker) → its final state is published again (``SUCCESS`` with the
   same result; ``FAILURE``/``REVOKED`` with the same error); it never runs again.
2. The message breaks the contract, or its ``job_id`` differs from its task id → ``FAILURE`` with
   :class:`~producer.core.errors.InvalidJob`, final.
3. Another live run holds the job's lease → this delivery steps aside (dropped, or deferred for a
   re-check when dropping could leave the job without a message).
4. Otherwise it takes the lease and runs the job; transient failures are waited out in place for
   ``STYLEQUEUE_RETRY_FOR_S`` (so there is no Celery-level retry); the job ends with one fenced
   write of its final state. A run that finds the job taken over by another live run stops
   without publishing anything. A run that cannot reach Redis for that long stops and hands the
   job back (it cannot know whether it still owns it); a store that stays down fails the job.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, NoReturn

from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

from producer import broker
from producer.broker import keys, registry, scripts
from producer.broker.queues import DEFAULT_PRIORITY
from producer.core.contract import TASK_NAME, Job, check_message_size
from producer.core.errors import (
    InvalidJob,
    JobCancelled,
    PermanentError,
    StylequeueError,
    TooManyCrashes,
    TransientError,
)
from producer.core.retrying import patiently
from producer.core.states import FAILURE, PROGRESS, REVOKED, SUCCESS, FinalState, JobProgress
from worker import killed, runtime, signals
from worker.app import app
from worker.runtime import finish, jobs, outcomes, recovery
from worker.runtime.guard import JobRecord, Lease, Superseded, now, split
from worker.runtime.outcomes import Outcome

log = logging.getLogger(__name__)

#: After a failed progress write (the result backend is down), skip progress writes this long (s).
PROGRESS_BACKOFF_S = 30.0

# Celery's PROGRESS state, written the way its Redis backend writes states (SET + PUBLISH on the
# key), unless the job already has a final state. KEYS: the meta key. ARGV: meta JSON, expiry (s).
_PUBLISH_PROGRESS = scripts.load("worker.runtime", "publish_progress")


class Reporter:
    """Per-iteration callback: publishes PROGRESS (throttled), honours cancellation and the lease.

    Args:
        task: The bound Celery task.
        job_id: The job.
        rt: The process's runtime.
        lease: The run's lease.
    """

    def __init__(self, task: Any, job_id: str, rt: runtime.Runtime, lease: Lease) -> None:
        self.task = task
        self.job_id = job_id
        self.rt = rt
        self.lease = lease
        self._last = 0.0
        self._quiet_until = 0.0
        self._tenth = 0

    def cancelled(self) -> bool:
        """Whether a client asked to cancel this job (``False`` while Redis cannot be asked)."""
        try:
            return bool(self.rt.redis.exists(keys.CANCEL.format(self.job_id)))
        except Exception as e:  # a blip must not stop, or restart, a long job
            log.warning("job %s: cancel check failed: %s", self.job_id, e)
            return False

    def __call__(self, p: Any) -> None:
        """Report one :class:`worker.nst.engine.Progress`; raise to stop a cancelled or superseded run."""
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled at iteration {p.iteration}/{p.total}")
        if self.lease.lost.is_set():
            self.lease.ensure()  # re-takes a lease nobody holds; Superseded if another run does
        signals.progressed(p.iteration, p.total)
        t = time.monotonic()
        if t < self._quiet_until or (t - self._last < self.rt.settings.progress_interval_s and p.iteration != p.total):
            return
        self._last = t
        progress = JobProgress(
            self.job_id,
            p.iteration,
            p.total,
            p.loss,
            p.content_loss,
            p.style_loss,
            p.tv_loss,
            round(p.elapsed_s, 3),
            p.level,
            p.levels,
        )
        # Not update_state: that would copy the job's arguments into every update and retry for a
        # minute on a backend outage. Progress is best effort: one short try, then quiet a while.
        meta: dict[str, Any] = {"status": PROGRESS, "result": progress.to_dict(), "traceback": None, "children": []}
        try:
            _PUBLISH_PROGRESS(
                self.rt.backend_redis,
                1,
                keys.CELERY_META.format(self.job_id),
                json.dumps({**meta, "date_done": None, "task_id": self.job_id}),
                self.rt.settings.result_expires_s,
            )
            self._tenth = self.rt.announcer.progress(self.job_id, progress, self._tenth)
        except Exception as e:
            log.warning("job %s: progress update failed (%s); next try in %.0f s", self.job_id, e, PROGRESS_BACKOFF_S)
            self._quiet_until = t + PROGRESS_BACKOFF_S


def _republish(task: Any, job_id: str, final: FinalState) -> NoReturn:
    """Publish a finished job's recorded final state again for this delivery, and end the delivery."""
    outcomes.mark(task.request, Outcome.REPUBLISHED)
    log.info("job %s ended already (%s): published again", job_id, final.state, extra={"event": "job_republished"})
    finish.publish(task.backend, job_id, final, task.request)
    raise Ignore()


def _step_aside(task: Any, message: Any, job_id: str, tag: str | None, holder_tag: str | None, why: str) -> NoReturn:
    rt = runtime.current()
    info = task.request.delivery_info or {}
    priority = info.get("priority")
    what = recovery.step_aside(
        rt.redis,
        job_id,
        tag,
        holder_tag,
        message,
        info.get("routing_key") or rt.settings.queue,
        int(priority) if priority is not None else DEFAULT_PRIORITY,
        rt.settings.lease_ttl_s + 1,
    )
    outcomes.mark(task.request, what, why)
    log.info("job %s: %s; this delivery is %s", job_id, why, what, extra={"event": f"delivery_{what}", "reason": why})
    raise Ignore()


def _announce(action: Any) -> None:
    """Publish an event; a failure only logs (the job goes on)."""
    try:
        action()
    except Exception as e:
        log.warning("event not published: %s", e)


def _patient(rt: runtime.Runtime, action: Any, what: str) -> Any:
    """Run a Redis operation of the job's bookkeeping, waiting out a Redis outage in place."""
    return patiently(
        action,
        retry_on=broker.errors(),
        budget_s=rt.settings.retry_for_s,
        cap_s=rt.settings.retry_backoff_max_s,
        what=what,
    )


@app.task(name=TASK_NAME, bind=True, base=killed.Transfer)
def transfer(self: Any, message: Any) -> dict[str, Any]:
    """Run one style-transfer job; see :mod:`producer.core.contract` for ``message``."""
    rt = runtime.current()
    settings = rt.settings
    job_id = self.request.id
    tag = (self.request.properties or {}).get("delivery_tag")
    record = JobRecord(rt.redis, job_id, settings.result_expires_s)

    def end_unleased(final: FinalState, output: Any = None) -> None:
        """End a job this delivery never ran; return if ``final`` is the job's end now.

        Else publish the end recorded first, or step aside for the run holding the job (both raise).
        """
        ended = finish.finish(rt.announcer, job_id, final)
        if ended.held:
            _step_aside(self, message, job_id, tag, _holder_tag(rt, job_id), "a live run holds it")
        if not ended.applied:
            assert ended.final is not None
            _republish(self, job_id, ended.final)
        finish.remove_checkpoint(rt.store, output, job_id)

    final = _patient(rt, record.final, f"job {job_id}: reading its state")
    if final is not None:
        return _republish(self, job_id, final)
    try:
        check_message_size(message, settings.max_message_bytes)
        job = Job.from_message(message)
        job.resolve_id(job_id)
    except InvalidJob as e:
        end_unleased(FinalState(FAILURE, now(), error_type=InvalidJob.__name__, error_message=str(e)))
        raise
    if _patient(rt, lambda: rt.redis.exists(keys.CANCEL.format(job_id)), f"job {job_id}: reading its cancel flag"):
        reason = f"job {job_id} was cancelled before it started"
        end_unleased(
            FinalState(REVOKED, now(), error_type=JobCancelled.__name__, error_message=reason), job.output_ref(job_id)
        )
        self.backend.mark_as_revoked(job_id, reason=reason, request=self.request)
        outcomes.mark(self.request, Outcome.CANCELLED)
        raise Ignore()

    lease = Lease(rt.redis, job_id, tag, settings.lease_ttl_s, patience_s=settings.retry_for_s)
    try:
        acquired = _patient(rt, lease.acquire, f"job {job_id}: taking its lease")
    except Superseded:  # it ended a moment ago: publish that
        ended = _patient(rt, record.final, f"job {job_id}: reading its state")
        if ended is None:  # its end was undone meanwhile (sent again): the other copy runs it
            _step_aside(self, message, job_id, tag, _holder_tag(rt, job_id), "its end was undone")
        _republish(self, job_id, ended)
    if not acquired:
        _step_aside(self, message, job_id, tag, _holder_tag(rt, job_id), "another live run holds it")

    def end(final: FinalState) -> None:
        """End the job as its owner; Superseded if another run holds it or ended it first."""
        ended = finish.finish(rt.announcer, job_id, final, lease=lease.value)
        if ended.held:
            raise Superseded(job_id, _holder_tag(rt, job_id))
        if not ended.applied:
            raise Superseded(job_id, None, ended=True)
        if final.state != SUCCESS:  # a success's run removed the checkpoint it saved
            finish.remove_checkpoint(rt.store, job.output_ref(job_id), job_id)

    superseded: Superseded | None = None
    with lease:
        try:
            try:
                _patient(
                    rt,
                    lambda: registry.remember(rt.redis, job_id, settings.jobs_index_max, settings.result_expires_s),
                    f"job {job_id}: recording it",
                )
                crashed = _patient(rt, lambda: record.start_run(lease), f"job {job_id}: counting its run")
                if crashed >= settings.max_worker_losses:
                    raise TooManyCrashes(f"job {job_id}: {crashed} earlier runs killed their worker; not run again")
                _announce(lambda: rt.announcer.started(job_id))
                if crashed:
                    log.warning(
                        "job %s: taking over after %d run(s) that did not finish",
                        job_id,
                        crashed,
                        extra={"event": "job_taken_over"},
                    )
                result = jobs.run(
                    job,
                    job_id,
                    rt,
                    lease,
                    commit=lambda r: end(FinalState(SUCCESS, now(), result=r.to_dict())),
                    on_progress=Reporter(self, job_id, rt, lease),
                )
                return result.to_dict()
            except Superseded as e:
                superseded = e
            except JobCancelled as e:
                try:
                    end(FinalState(REVOKED, now(), error_type=JobCancelled.__name__, error_message=str(e)))
                except Superseded as lost:
                    superseded = lost
                else:
                    log.info("%s", e, extra={"event": "job_cancelled"})
                    # REVOKED with a TaskRevokedError result, as Celery records its own revokes.
                    self.backend.mark_as_revoked(job_id, reason=str(e), request=self.request)
                    outcomes.mark(self.request, Outcome.CANCELLED)
                    raise Ignore() from None
            except (PermanentError, TransientError, SoftTimeLimitExceeded) as e:
                error = (
                    e
                    if isinstance(e, StylequeueError)
                    else PermanentError(f"job {job_id} ran past the soft time limit ({settings.soft_time_limit_s} s)")
                )
                try:
                    end(FinalState(FAILURE, now(), error_type=type(error).__name__, error_message=str(error)))
                except Superseded as lost:
                    superseded = lost
                else:
                    raise error from None
            except broker.errors():
                raise  # handed back below
            except Exception as e:  # outside the error tree (a bug, a library's own error): the job fails
                try:
                    end(FinalState(FAILURE, now(), error_type=type(e).__name__, error_message=str(e)[:2000]))
                except Superseded as lost:
                    superseded = lost
                else:
                    raise
        except broker.errors() as e:
            # Redis stayed unreachable past STYLEQUEUE_RETRY_FOR_S (running the job, or recording its
            # end): this run cannot know whether it still owns the job. It stops and hands the job
            # back (the sweep does it, if the requeue itself cannot reach Redis); the next run
            # resumes from the checkpoint.
            log.error(
                "job %s: Redis unreachable (%s): this run stops, the job goes back to the queue",
                job_id,
                e,
                extra={"event": "job_handed_back"},
            )
            record.leave(lease)  # no crash (if Redis answers by now)
            outcomes.mark(self.request, Outcome.HANDED_BACK)
            raise Reject(str(e), requeue=True) from None
    assert superseded is not None
    if superseded.ended:
        outcomes.mark(self.request, Outcome.DROPPED, "ended")
        log.info(
            "job %s ended in another run; this run stops",
            job_id,
            extra={"event": "delivery_dropped", "reason": "ended"},
        )
        raise Ignore()
    record.leave(lease)  # it stepped aside: no crash
    _step_aside(self, message, job_id, tag, superseded.holder_tag, "another live run took it over")
    raise AssertionError("not reached")


def _holder_tag(rt: runtime.Runtime, job_id: str) -> str | None:
    """The delivery tag of the run holding the job now (``None``: nobody, or unknown)."""
    try:
        value = _patient(rt, lambda: rt.redis.get(keys.LEASE.format(job_id)), f"job {job_id}: reading its lease")
    except broker.errors():
        return None
    holder = split(value)
    return holder[1] if holder else None
