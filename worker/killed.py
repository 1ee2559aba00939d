"""Runs the pool's parent kills or a client revokes: ended through the job's one end, not by Celery.

Celery ends these itself, from the pool's parent, without asking whether the run it names still
owns the job:

* **the hard time limit** (``STYLEQUEUE_HARD_TIME_LIMIT_S``): billiard reports the failure
  (``Request.on_failure``), then the timeout (``Request.on_timeout``), then kills the child; both
  write ``FAILURE`` and send ``task_failure``;
* **a revoke**: ``Request.revoked`` / ``Request.terminate`` write ``REVOKED``.

Here the task's result backend (:class:`Fenced`) and request (:class:`TransferRequest`) send
each through :func:`producer.broker.ending.end` first. A killed run is recognised by its lease
(``host:pid:…`` is the child Celery kills): the job fails (or is revoked) only then, or when
nobody holds it; a live run elsewhere (the killed run had lost the job) keeps it and nothing is
written; a job that had ended keeps its end, published again. The end of a killed run is recorded
by a thread of the parent (it may wait a Redis outage out without stalling the worker), which then
writes Celery's result and the dead letter.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request

from producer import broker
from producer.broker import deadletters
from producer.broker.ending import Ended
from producer.broker.events import Announcer
from producer.core.settings import Settings
from producer.core.states import FAILURE, REVOKED, FinalState
from worker.app import app
from worker.runtime import finish
from worker.runtime.guard import now

log = logging.getLogger(__name__)

_announcers: list[Announcer] = []


def parent_announcer() -> Announcer:
    """The pool parent's own connection for ending jobs (it has no runtime)."""
    if not _announcers:
        settings = Settings.from_env()
        _announcers.append(Announcer(broker.of(settings), settings))
    return _announcers[0]


class Fenced:
    """The task's result backend, except for the final states Celery writes on its own (see the module)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def mark_as_failure(self, task_id: str, exc: BaseException, *args: Any, **kwargs: Any) -> Any:
        """Celery's, except the hard time limit's: :func:`end_killed` writes that once the end is known."""
        if isinstance(exc, TimeLimitExceeded):
            return None
        return self._backend.mark_as_failure(task_id, exc, *args, **kwargs)

    def mark_as_revoked(self, task_id: str, reason: str = "", *args: Any, **kwargs: Any) -> Any:
        """``REVOKED`` only if the revoke ended the job; a running job stops at its next iteration."""
        final = FinalState(REVOKED, now(), error_type="JobCancelled", error_message=f"job {task_id} was revoked")
        ended = finish.finish(parent_announcer(), task_id, final, cancel=True)
        if ended.held:  # a live run holds it: it saw the cancel flag, it ends the job itself
            return None
        if ended.final is not None and ended.final.state != REVOKED:  # it had ended otherwise
            finish.publish(self._backend, task_id, ended.final, kwargs.get("request"))
            return None
        return self._backend.mark_as_revoked(task_id, reason, *args, **kwargs)


class TransferRequest(Request):
    """Celery's request of a job in the pool's parent: a run killed at the hard time limit is ended once.

    By :func:`end_killed`, in a thread, whichever of Celery's two reports of it comes first.
    """

    _fenced = False

    def on_timeout(self, soft: bool, timeout: float) -> None:
        """Celery's, after the end of a hard-killed run was set going."""
        if not soft:
            self._fence(timeout)
        super().on_timeout(soft, timeout)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        """Celery's, after the end of a hard-killed run was set going."""
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # billiard's ExceptionWithTraceback
        if isinstance(exc, TimeLimitExceeded):
            self._fence(exc.args[0] if exc.args else None)
        super().on_failure(exc_info, send_failed_event, return_ok)

    def terminate(self, pool: Any, signal: Any = None) -> None:
        """Celery's ``revoke(terminate=True)``: the run is killed, then the job ends with its lease."""
        pid, running = self.worker_pid, self.time_start is not None
        super().terminate(pool, signal)
        if running and not self._fenced:
            self._fenced = True
            args = (self.task, self.id, pid)
            threading.Thread(target=end_terminated, args=args, name=f"stylequeue-killed-{self.id}", daemon=True).start()

    def _fence(self, limit: Any) -> None:
        if self._fenced:
            return
        self._fenced = True
        args = (self.task, self.id, self.worker_pid, limit, self.args)
        threading.Thread(target=end_killed, args=args, name=f"stylequeue-killed-{self.id}", daemon=True).start()


def end_terminated(task: Any, job_id: str, pid: int | None) -> Ended | None:
    """End the job of a run Celery terminated (a revoke), ``REVOKED``, with the run's lease."""
    final = FinalState(REVOKED, now(), error_type="JobCancelled", error_message=f"job {job_id} was revoked")
    try:
        ended = finish.finish_killed(parent_announcer(), job_id, final, pid)
        if ended.final is not None:
            finish.publish(_real(task.backend), job_id, ended.final)
    except Exception as e:
        log.error("job %s: its run was terminated; its end could not be recorded: %s", job_id, e)
        return None
    return ended


def _real(backend: Any) -> Any:
    return backend._backend if isinstance(backend, Fenced) else backend


def end_killed(task: Any, job_id: str, pid: int | None, limit: Any, args: Any) -> Ended | None:
    """End the job of a run killed at the hard time limit (see the module); returns what happened."""
    announcer = parent_announcer()
    settings = announcer.settings
    message = f"job {job_id} ran past the hard time limit ({limit} s): its process was killed"
    final = FinalState(FAILURE, now(), error_type=TimeLimitExceeded.__name__, error_message=message)
    try:
        ended = finish.finish_killed(announcer, job_id, final, pid)
    except broker.errors() as e:
        log.error("job %s: killed at the hard time limit; its end could not be recorded: %s", job_id, e)
        return None
    what = "failed" if ended.applied else "held by a live run" if ended.held else "ended already"
    log.warning(
        "job %s: its run was killed at the hard time limit; the job is %s",
        job_id,
        what,
        extra={"event": "killed_run_fenced", "job_id": job_id, "outcome": what},
    )
    backend = _real(task.backend)
    try:
        if ended.applied:  # the dead letter first: Celery's result is what waiters wait on
            payload = args[0] if args else None
            deadletters.record(
                announcer.redis,
                job_id,
                payload if len(repr(payload)) <= settings.max_message_bytes else None,
                TimeLimitExceeded.__name__,
                message,
                1,
                max_entries=settings.dead_letters_max,
                ttl_s=settings.dead_letter_ttl_s,
            )
            backend.mark_as_failure(job_id, TimeLimitExceeded(limit))
        elif ended.final is not None:
            finish.publish(backend, job_id, ended.final)
    except Exception as e:  # the end is recorded; Celery's copy of it is best effort here
        log.error("job %s: its end is recorded but not published to the result backend: %s", job_id, e)
    return ended


class Transfer(app.Task):
    """The task class: its backend is :class:`Fenced`, its request :class:`TransferRequest`."""

    Request = "worker.killed:TransferRequest"

    @property
    def backend(self) -> Any:
        """The result backend, fenced."""
        return Fenced(self._backend if self._backend is not None else self.app.backend)

    @backend.setter
    def backend(self, value: Any) -> None:
        self._backend = value
