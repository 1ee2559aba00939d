"""A job Celery revoked before it ran still gets its final ``REVOKED`` state and event.

A plain Celery client cancels with ``AsyncResult(id).revoke()``; a worker that then receives the
message drops it before any stylequeue code runs, and Celery writes ``REVOKED`` through the
task's backend, which ends the job first (:class:`worker.killed.Fenced`). ``revoke(terminate=True)``
kills the run: the job then ends with that run's lease (the pid Celery killed). Without this the
job would have no done marker: its HTTP record, its batch and its webhook would wait forever.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_revoked

from producer import broker
from producer.broker import ending
from producer.broker.cancellation import CANCELLED_ERROR
from producer.broker.events import Announcer
from producer.core.settings import Settings
from producer.core.states import REVOKED, FinalState
from worker.runtime import finish
from worker.runtime.guard import now

log = logging.getLogger(__name__)


def install(settings: Settings) -> None:
    """Record ``REVOKED`` for every job Celery revokes (unless it ended already)."""
    redis: list[Any] = []

    @task_revoked.connect(weak=False)
    def _revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
        job_id = getattr(request, "id", None)
        if not job_id:
            return
        if terminated:
            return  # worker.killed ends it, with the terminated run's lease
        try:
            if not redis:
                redis.append(broker.of(settings))
            final = FinalState(REVOKED, now(), error_type=CANCELLED_ERROR, error_message=f"job {job_id} was revoked")
            # The task's backend ended it already (worker.killed.Fenced); this only makes sure.
            ended = ending.end(redis[0], Announcer(redis[0], settings), job_id, final)
            if ended.final is not None and not ended.applied and ended.final.state != REVOKED:
                finish.publish(getattr(sender.backend, "_backend", sender.backend), job_id, ended.final, request)
        except Exception as e:  # Celery has recorded REVOKED in the result backend either way
            log.error("revoked job %s: its end was not recorded: %s", job_id, e)
