"""A job that fails for good is kept as a dead letter.

Runs on Celery's ``task_failure``: in the pool child for errors the task raised, in the parent
for a run killed by the hard time limit. The job's end itself is recorded before the signal (by
the task, or for a killed run by the task's result backend, see :mod:`worker.tasks`); an error
that escaped the task ends the job here. A dead letter is kept only when the job's recorded end
is ``FAILURE``: not when a live run still holds the job (a killed stale run), nor when the job
ended otherwise first.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_failure

from producer import broker
from producer.broker import deadletters, ending
from producer.broker.events import Announcer
from producer.core.settings import Settings
from producer.core.states import FAILURE, FinalState
from worker.runtime.guard import now

log = logging.getLogger(__name__)


def install(settings: Settings) -> None:
    """Record a dead letter for every job that fails for good."""
    announcers: list[Announcer] = []

    @task_failure.connect(weak=False)
    def _failed(
        sender: Any = None, task_id: str = "", exception: BaseException | None = None, args: Any = (), **_: Any
    ) -> None:
        from worker.signals import metrics

        if not announcers:
            announcers.append(Announcer(broker.of(settings), settings))
        redis = announcers[0].redis
        payload = args[0] if args else None
        if len(repr(payload)) > settings.max_message_bytes:
            payload = None  # an oversized message is not copied into Redis again
        error_type, message = type(exception).__name__, str(exception)
        try:
            ended = ending.end(
                redis, announcers[0], task_id, FinalState(FAILURE, now(), error_type=error_type, error_message=message)
            )
            if ended.final is None or ended.final.state != FAILURE:
                log.info("job %s: %s: no dead letter (%s)", task_id, error_type, "held" if ended.held else "ended")
                return
            error_type, message = ended.final.error_type or error_type, ended.final.error_message or message
            dropped = deadletters.record(
                redis,
                task_id,
                payload,
                error_type,
                message,
                1,
                max_entries=settings.dead_letters_max,
                ttl_s=settings.dead_letter_ttl_s,
            )
        except Exception as e:  # the failure itself is already recorded as the job's result
            log.error("dead letter for job %s not recorded: %s", task_id, e)
            return
        if dropped:
            metrics.dead_letters_dropped.inc(dropped)
        log.info(
            "job %s failed for good: %s: %s",
            task_id,
            error_type,
            message,
            extra={"event": "job_failed", "job_id": task_id, "error_type": error_type},
        )
