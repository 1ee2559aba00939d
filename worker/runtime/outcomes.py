"""What a delivery of a job amounted to, when it did not simply run the job to its end.

The task records it on Celery's request (:func:`mark`); the metrics policy reads it (:func:`of`)
to count deliveries that ran nothing apart from jobs that succeeded, failed or were cancelled.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class Outcome(str, Enum):
    """One spelling for each outcome (also the ``outcome`` label of ``stylequeue_deliveries_total``)."""

    REPUBLISHED = "republished"  # the job had ended: its final state was published again
    DROPPED = "dropped"  # another live run holds the job (or it ended meanwhile): acknowledged
    DEFERRED = "deferred"  # another run holds it, but its message cannot vouch for it: a copy rechecks later
    CANCELLED = "cancelled"  # a client cancelled the job: it ended REVOKED
    HANDED_BACK = "handed_back"  # the run gave the job back (a warm shutdown, a broker outage)

    def __str__(self) -> str:
        return self.value


#: Outcomes that ran nothing: counted as deliveries, not as jobs.
RAN_NOTHING = frozenset({Outcome.REPUBLISHED, Outcome.DROPPED, Outcome.DEFERRED})


def mark(request: Any, outcome: Outcome, reason: str = "") -> None:
    """Record on Celery's ``request`` what this delivery amounted to, and why."""
    request.stylequeue_outcome = outcome
    request.stylequeue_reason = reason


def of(request: Any) -> Outcome | None:
    """What :func:`mark` recorded on ``request``, if anything."""
    outcome = getattr(request, "stylequeue_outcome", None)
    return outcome if isinstance(outcome, Outcome) else None
