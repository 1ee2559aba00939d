"""Cancelling a job: a queued job ends at once, a running one at its next iteration.

One Lua script decides, atomically with the worker's lease scripts (:mod:`worker.runtime.guard`):

* the job has ended → nothing changes (``"ended"``);
* a run holds its lease → the cancel flag ``stylequeue:cancel:<job>`` is set and the run stops
  at its next iteration, recording ``REVOKED`` itself (``"stopping"``);
* otherwise (queued, or between runs) → the flag is set **and** the final state ``REVOKED`` is
  written now (``"cancelled"``). A worker that takes the message later finds the job ended and
  only publishes that again; the lease script refuses to start a job that has ended, so no run can
  slip in between.

Works for any job id the broker's Redis knows, whoever sent it.
"""

from __future__ import annotations

import json
from typing import Any

from producer.broker import keys, scripts
from producer.core.errors import JobCancelled
from producer.core.states import REVOKED, FinalState

# KEYS: done marker, lease, cancel flag. ARGV: final state JSON, expiry (s).
_CANCEL = scripts.load("producer.broker", "cancel")

#: The error type recorded for a cancelled job.
CANCELLED_ERROR = JobCancelled.__name__


def request(redis: Any, job_id: str, expires_s: int, at: float) -> tuple[str, FinalState | None]:
    """Cancel ``job_id``: ``("cancelled", final)``, ``("stopping", None)`` or ``("ended", None)``.

    ``final`` is the ``REVOKED`` state written, for the caller to publish (result backend, events).
    """
    final = FinalState(REVOKED, at, error_type=CANCELLED_ERROR, error_message=f"job {job_id} was cancelled")
    value = json.dumps(final.to_dict(), separators=(",", ":"))
    outcome = _CANCEL(
        redis, 3, keys.DONE.format(job_id), keys.LEASE.format(job_id), keys.CANCEL.format(job_id), value, expires_s
    )
    outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    return outcome, (final if outcome == "cancelled" else None)
