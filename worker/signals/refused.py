"""A message refused before any code ran still gets a final ``FAILURE`` state and a dead letter.

That is a pickle message, or one of another serializer the worker does not accept; its sender
learns why.

Its body is never decoded nor stored. (A message whose body is not JSON at all is dropped by
Celery's consumer before any hook runs; it is only logged.)
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_rejected

from producer import broker
from producer.broker import deadletters, ending
from producer.broker.events import Announcer
from producer.core.errors import InvalidJob
from producer.core.settings import Settings
from producer.core.states import FAILURE, FinalState
from worker.runtime.guard import now

log = logging.getLogger(__name__)


def install(settings: Settings) -> None:
    """Record a permanent failure for every refused message that carries a task id."""

    @task_rejected.connect(weak=False)
    def _refused(sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
        job_id = (getattr(message, "headers", None) or {}).get("id")
        if not job_id or exc is None:
            return
        error = InvalidJob("message", f"refused: {type(exc).__name__}: {exc}"[:500])
        try:
            redis = broker.of(settings)
            final = FinalState(FAILURE, now(), error_type=InvalidJob.__name__, error_message=str(error))
            ended = ending.end(redis, Announcer(redis, settings), job_id, final)
            if not ended.applied:  # a live run holds that job id, or it had ended: nothing to add
                log.warning(
                    "refused message %s: the job is %s; left as it is", job_id, "held" if ended.held else "ended"
                )
                return
            sender.app.backend.mark_as_failure(job_id, error)
            deadletters.record(
                redis,
                job_id,
                None,
                InvalidJob.__name__,
                str(error),
                1,
                max_entries=settings.dead_letters_max,
                ttl_s=settings.dead_letter_ttl_s,
            )
        except Exception as e:  # the refusal is logged by Celery either way
            log.error("refused message %s not recorded: %s", job_id, e)
