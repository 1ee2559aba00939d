"""One delivery of a job, from the moment Celery hands it over: what it amounts to, decided step by step.

What each delivery does (the decisions live in :mod:`worker.runtime.guard`,
:mod:`worker.runtime.recovery` and :mod:`producer.broker.ending`):

1. The job already ended (done marker) → its final state is published again (``SUCCESS`` with the
   same result; ``FAILURE``/``REVOKED`` with the same error); it never runs again.
2. The message breaks the contract, or its ``job_id`` differs from its task id → ``FAILURE`` with
   :class:`~producer.core.errors.InvalidJob`, final (unless a live run holds the job).
3. Another live run holds the job's lease → this delivery steps aside (dropped, or deferred for a
   re-check when dropping could leave the job without a message).
4. Otherwise it takes the lease and runs the job; transient failures are waited out in place for
   ``STYLEQUEUE_RETRY_FOR_S`` (so there is no Celery-level retry); the job ends through the one
   end, fenced by the lease. A run that finds the job taken over by another live run stops
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
from producer.core.contract import Job, check_message_size
from producer.core.errors import (
    InvalidJob,
    JobCancelled,
    PermanentError,
    StylequeueError,
    TooManyCrashes,
    TransientError,
)
from producer.core.states import FAILURE, PROGRESS, REVOKED, SUCCESS, FinalState, JobProgress
from worker import runtime, signals
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


class Delivery:
    """One delivery of a job to this process (see the module docstring): :meth:`handle` it once.

    Args:
        task: The bound Celery task (its request, its backend).
        rt: The process's runtime.
        message: The task's argument, the job's message.
    """

    def __init__(self, task: Any, rt: runtime.Runtime, message: Any) -> None:
        self.task = task
        self.rt = rt
        self.message = message
        self.job_id: str = task.request.id
        self.tag: str | None = (task.request.properties or {}).get("delivery_tag")
        self.record = JobRecord(rt.redis, self.job_id, rt.settings.result_expires_s)

    def handle(self) -> dict[str, Any]:
        """Run the job, or say why not; returns the result's dict (Celery stores it) or raises."""
        final = self.patient(self.record.final, "reading its state")
        if final is not None:
            self.republish(final)
        job = self.admit()
        lease = self.take(job)
        return self.run(job, lease)

    def admit(self) -> Job:
        """The job, validated, unless it breaks the contract or was cancelled before it started."""
        job_id, settings = self.job_id, self.rt.settings
        try:
            check_message_size(self.message, settings.max_message_bytes)
            job = Job.from_message(self.message)
            job.resolve_id(job_id)
        except InvalidJob as e:
            self.end_unleased(FinalState(FAILURE, now(), error_type=InvalidJob.__name__, error_message=str(e)))
            raise
        if self.patient(lambda: self.rt.redis.exists(keys.CANCEL.format(job_id)), "reading its cancel flag"):
            reason = f"job {job_id} was cancelled before it started"
            final = FinalState(REVOKED, now(), error_type=JobCancelled.__name__, error_message=reason)
            self.end_unleased(final, job.output_ref(job_id))
            self.task.backend.mark_as_revoked(job_id, reason=reason, request=self.task.request)
            outcomes.mark(self.task.request, Outcome.CANCELLED)
            raise Ignore()
        return job

    def take(self, job: Job) -> Lease:
        """This run's lease on the job, or the delivery steps aside (or republishes) and raises."""
        settings = self.rt.settings
        lease = Lease(self.rt.redis, self.job_id, self.tag, settings.lease_ttl_s, patience_s=settings.retry_for_s)
        try:
            acquired = self.patient(lease.acquire, "taking its lease")
        except Superseded:  # it ended a moment ago: publish that
            ended = self.patient(self.record.final, "reading its state")
            if ended is None:  # its end was undone meanwhile (sent again): the other copy runs it
                self.step_aside(self.holder_tag(), "its end was undone")
            self.republish(ended)
        if not acquired:
            self.step_aside(self.holder_tag(), "another live run holds it")
        return lease

    def run(self, job: Job, lease: Lease) -> dict[str, Any]:
        """Run the job under ``lease`` and end it (see the module docstring)."""
        job_id, rt, settings = self.job_id, self.rt, self.rt.settings

        def end(final: FinalState) -> None:
            """End the job as its owner; Superseded if another run holds it or ended it first."""
            ended = finish.finish(rt.announcer, job_id, final, lease=lease.value)
            if ended.held:
                raise Superseded(job_id, self.holder_tag())
            if not ended.applied:
                raise Superseded(job_id, None, ended=True)
            if final.state != SUCCESS:  # a success's run removed the checkpoint it saved
                finish.remove_checkpoint(rt.store, job.output_ref(job_id), job_id)

        superseded: Superseded | None = None
        with lease:
            try:
                try:
                    self.start(lease)
                    result = jobs.run(
                        job,
                        job_id,
                        rt,
                        lease,
                        commit=lambda r: end(FinalState(SUCCESS, now(), result=r.to_dict())),
                        on_progress=Reporter(self.task, job_id, rt, lease),
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
                        self.task.backend.mark_as_revoked(job_id, reason=str(e), request=self.task.request)
                        outcomes.mark(self.task.request, Outcome.CANCELLED)
                        raise Ignore() from None
                except (PermanentError, TransientError, SoftTimeLimitExceeded) as e:
                    limit = settings.soft_time_limit_s
                    error = (
                        e
                        if isinstance(e, StylequeueError)
                        else PermanentError(f"job {job_id} ran past the soft time limit ({limit} s)")
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
                self.hand_back(lease, e)
        assert superseded is not None
        self.stop(lease, superseded)

    def start(self, lease: Lease) -> None:
        """Bookkeeping before the run: the job index, the runs set (the crash cap), ``job.started``."""
        job_id, rt, settings = self.job_id, self.rt, self.rt.settings
        self.patient(
            lambda: registry.remember(rt.redis, job_id, settings.jobs_index_max, settings.result_expires_s),
            "recording it",
        )
        crashed = self.patient(lambda: self.record.start_run(lease), "counting its run")
        if crashed >= settings.max_worker_losses:
            raise TooManyCrashes(f"job {job_id}: {crashed} earlier runs killed their worker; not run again")
        try:
            rt.announcer.started(job_id)
        except Exception as e:  # an event: best effort, the job goes on
            log.warning("event not published: %s", e)
        if crashed:
            log.warning(
                "job %s: taking over after %d run(s) that did not finish",
                job_id,
                crashed,
                extra={"event": "job_taken_over"},
            )

    def hand_back(self, lease: Lease, error: BaseException) -> NoReturn:
        """Stop and hand the job back: Redis stayed unreachable past ``STYLEQUEUE_RETRY_FOR_S``.

        Running the job or recording its end, this run cannot know whether it still owns the job.
        The job goes back to the queue (the sweep does it, if the requeue itself cannot reach
        Redis); the next run resumes from the checkpoint.
        """
        log.error(
            "job %s: Redis unreachable (%s): this run stops, the job goes back to the queue",
            self.job_id,
            error,
            extra={"event": "job_handed_back"},
        )
        self.record.leave(lease)  # no crash (if Redis answers by now)
        outcomes.mark(self.task.request, Outcome.HANDED_BACK)
        raise Reject(str(error), requeue=True) from None

    def stop(self, lease: Lease, superseded: Superseded) -> NoReturn:
        """The run lost the job: to an end recorded elsewhere (dropped), or to a live run (steps aside)."""
        if superseded.ended:
            outcomes.mark(self.task.request, Outcome.DROPPED, "ended")
            log.info(
                "job %s ended in another run; this run stops",
                self.job_id,
                extra={"event": "delivery_dropped", "reason": "ended"},
            )
            raise Ignore()
        self.record.leave(lease)  # it stepped aside: no crash
        self.step_aside(superseded.holder_tag, "another live run took it over")

    def end_unleased(self, final: FinalState, output: Any = None) -> None:
        """End a job this delivery never ran; return if ``final`` is the job's end now.

        Else publish the end recorded first, or step aside for the run holding the job (both raise).
        """
        ended = finish.finish(self.rt.announcer, self.job_id, final)
        if ended.held:
            self.step_aside(self.holder_tag(), "a live run holds it")
        if not ended.applied:
            assert ended.final is not None
            self.republish(ended.final)
        finish.remove_checkpoint(self.rt.store, output, self.job_id)

    def republish(self, final: FinalState) -> NoReturn:
        """Publish a finished job's recorded final state again for this delivery, and end the delivery."""
        request = self.task.request
        outcomes.mark(request, Outcome.REPUBLISHED)
        log.info(
            "job %s ended already (%s): published again", self.job_id, final.state, extra={"event": "job_republished"}
        )
        finish.publish(self.task.backend, self.job_id, final, request)
        raise Ignore()

    def step_aside(self, holder_tag: str | None, why: str) -> NoReturn:
        """Leave the job to the run holding it: this message is dropped or deferred (see recovery)."""
        rt, request = self.rt, self.task.request
        info = request.delivery_info or {}
        priority = info.get("priority")
        what = recovery.step_aside(
            rt.redis,
            self.job_id,
            self.tag,
            holder_tag,
            self.message,
            info.get("routing_key") or rt.settings.queue,
            int(priority) if priority is not None else DEFAULT_PRIORITY,
            rt.settings.lease_ttl_s + 1,
        )
        outcomes.mark(request, what, why)
        log.info(
            "job %s: %s; this delivery is %s",
            self.job_id,
            why,
            what,
            extra={"event": f"delivery_{what}", "reason": why},
        )
        raise Ignore()

    def holder_tag(self) -> str | None:
        """The delivery tag of the run holding the job now (``None``: nobody, or unknown)."""
        try:
            value = self.patient(lambda: self.rt.redis.get(keys.LEASE.format(self.job_id)), "reading its lease")
        except broker.errors():
            return None
        holder = split(value)
        return holder[1] if holder else None

    def patient(self, action: Any, what: str) -> Any:
        """Run a Redis operation of the job's bookkeeping, waiting out a Redis outage in place."""
        return finish.patient(self.rt.settings, action, f"job {self.job_id}: {what}")
