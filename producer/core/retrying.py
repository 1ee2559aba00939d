"""Transient failures are waited out in place, for a time budget, not a number of attempts.

A store or Redis outage is measured in minutes; an attempt counter with a short backoff burns
through its attempts in seconds and fails (and dead-letters) every job that touches the outage.
:func:`patiently` keeps trying the same operation, with exponential backoff capped at
``cap_s`` and jitter, until ``budget_s`` seconds have passed since its first failure, then lets
the error through. A worker waiting here holds its one job and takes no other, so the queue is
not burnt through while the store is down.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: First wait after a failure (s); it doubles at each further failure, up to the cap.
FIRST_WAIT_S = 0.5


def backoff(attempt: int, cap_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``.

    ``min(cap, 0.5 · 2^(attempt-1))``, jittered to between half and all of it, so that many
    waiters do not retry in lockstep.
    """
    ceiling = min(cap_s, FIRST_WAIT_S * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def patiently(
    action: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    budget_s: float,
    cap_s: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; while it raises one of ``retry_on``, wait and run it again, for ``budget_s``.

    Args:
        action: The operation (must be safe to repeat).
        retry_on: Exceptions that mean "try again later".
        budget_s: Seconds after the first failure when the error is let through.
        cap_s: Longest single wait.
        what: What is being done, for the log.
        clock: Monotonic clock (tests pass a fake one).
        sleep: How to wait (tests pass a fake one).

    Raises:
        The last error of ``retry_on`` once the budget is spent; any other error at once.
    """
    first: float | None = None
    attempt = 0
    while True:
        try:
            return action()
        except retry_on as e:
            now = clock()
            first = now if first is None else first
            left = budget_s - (now - first)
            if left <= 0:
                log.error("%s: still failing after %.0f s, giving up: %s", what, now - first, e)
                raise
            attempt += 1
            delay = min(backoff(attempt, cap_s), left)
            log.warning(
                "%s failed (%s); attempt %d in %.1f s (%.0f s of %.0f s left)",
                what,
                e,
                attempt + 1,
                delay,
                left,
                budget_s,
                extra={"event": "retrying", "what": what},
            )
            sleep(delay)
