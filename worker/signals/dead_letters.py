"""A job that fails for good is kept as a dead letter, and its end is recorded as final.

Runs on Celery's ``task_failure``: in the pool child for errors the task raised, in the parent
for a run killed by the hard time limit. Either way the job's final state is settled (if its run
did not record it, as a killed run cannot), so no later delivery runs the job again.
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
from worker.runtime.guard import JobRecord, now

log = logging.getLogger(__name__)


def install(settings: Settings) -> None:
    """Record a dead letter for every job that fails for good."""
    redis: list[Any] = []

    @task_failure.connect(weak=False)
    def _failed(
        sender: Any = None, task_id: str = "", exception: BaseException | None = None, args: Any = (), **_: Any
    ) -> None:
        from worker.signals import metrics

        if not redis:
            redis.append(broker.connect(settings.broker_url))
        payload = args[0] if args else None
        if len(repr(payload)) > settings.max_message_bytes:
            payload = None  # an oversized message is not copied into Redis again
        error_type, message = type(exception).__name__, str(exception)
        try:
            JobRecord(redis[0], task_id, settings.result_expires_s, Announcer(redis[0], settings).ended).settle(
                FinalState(FAILURE, now(), error_type=error_type, error_message=message)
            )
            dropped = deadletters.record(
                redis[0],
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
