"""Waiting on conditions that have nothing to block on, within a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout_s: float = 60.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (and return that) or ``timeout_s`` passes.

    For things with nothing to block on: a server starting up, a counter or an ack landing just
    after the result a test waited for, a key expiring. ``check`` may raise ``OSError`` while not
    ready.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.05)  # nothing to block on: poll, within the deadline
