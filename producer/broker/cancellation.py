"""Cancelling a job: a queued job ends at once, a running one at its next iteration.

The cancel is an end of the job like any other (:func:`producer.broker.ending.end`, with the
cancel flag), decided atomically with the worker's lease scripts:

* the job has ended → nothing changes (``"ended"``);
* a run holds its lease → only the cancel flag ``stylequeue:cancel:<job>`` is set; the run stops
  at its next iteration and ends the job ``REVOKED`` itself (``"stopping"``);
* otherwise (queued, or between runs) → the flag is set **and** the job ends ``REVOKED`` now
  (``"cancelled"``). A worker that takes the message later finds the job ended and only
  publishes that again; the lease script refuses to start a job that has ended, so no run can
  slip in between.

Works for any job id the broker's Redis knows, whoever sent it.
"""

from __future__ import annotations

from typing import Any

from producer.broker import ending
from producer.broker.events import Announcer
from producer.core.errors import JobCancelled
from producer.core.states import REVOKED, FinalState

#: The error type recorded for a cancelled job.
CANCELLED_ERROR = JobCancelled.__name__


def request(redis: Any, announcer: Announcer, job_id: str, at: float) -> tuple[str, FinalState | None]:
    """Cancel ``job_id``: ``("cancelled", final)``, ``("stopping", None)`` or ``("ended", None)``.

    ``final`` is the ``REVOKED`` state recorded, for the caller to publish as Celery's result.
    Safe to call again after a lost reply (the second call says ``"cancelled"`` again).
    """
    final = FinalState(REVOKED, at, error_type=CANCELLED_ERROR, error_message=f"job {job_id} was cancelled")
    ended = ending.end(redis, announcer, job_id, final, cancel=True)
    if ended.held:
        return "stopping", None
    return ("cancelled", final) if ended.applied else ("ended", None)
