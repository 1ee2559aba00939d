"""A job that fails for good is kept as a dead letter.

Runs on Celery's ``task_failure`` in the pool child, for errors the task raised: the task has
recorded the job's end by then (an error that escaped it ends the job here). A dead letter is
kept only when the job's recorded end is ``FAILURE``: not when a live run holds the job, nor when
it ended otherwise first. A run killed at the hard time limit is left to :mod:`worker.killed`,
which records its end and its dead letter once it knows them.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_failure

from producer import broker
from producer.broker import deadletters
from producer.broker.events import Announcer
from producer.core.settings import Settings
from producer.core.states import FAILURE, FinalState
from worker.runtime import finish
from worker.runtime.guard import now

log = logging.getLogger(__name__)


def install(settings: Settings) -> None:
    """Record a dead letter for every job that fails for good."""
    announcers: list[Announcer] = []

    @task_failure.connect(weak=False)
    def _failed(
        sender: Any = None, task_id: str = "", exception: BaseException | None = None, args: Any = (), **_: Any
    ) -> None:
        from celery.exceptions import TimeLimitExceeded

        from worker.signals import metrics

        if isinstance(exception, TimeLimitExceeded):
            return  # worker.killed ends it and keeps its dead letter
        if not announcers:
            announcers.append(Announcer(broker.of(settings), settings))
        redis = announcers[0].redis
        payload = args[0] if args else None
        if len(repr(payload)) > settings.max_message_bytes:
            payload = None  # an oversized message is not copied into Redis again
        error_type, message = type(exception).__name__, str(exception)
        try:
            failed = FinalState(FAILURE, now(), error_type=error_type, error_message=message)
            ended = finish.finish(announcers[0], task_id, failed)
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
