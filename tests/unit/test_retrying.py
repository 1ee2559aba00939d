"""Transient failures are waited out for a time budget, with capped, jittered backoff."""

import random

import pytest

from producer.core.errors import ImageError, StoreUnavailable
from producer.core.retrying import backoff, patiently


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.waits.append(s)
        self.now += s


def test_an_outage_shorter_than_the_budget_is_waited_out() -> None:
    clock = Clock()
    calls = []

    def action() -> str:
        calls.append(clock.now)
        if clock.now < 170:  # a store down for 170 s
            raise StoreUnavailable("down")
        return "ok"

    assert (
        patiently(
            action, retry_on=(StoreUnavailable,), budget_s=900, cap_s=30, what="x", clock=clock, sleep=clock.sleep
        )
        == "ok"
    )
    assert max(clock.waits) <= 30  # capped
    assert len(calls) < 20  # backoff, not a hot loop


def test_the_budget_is_time_not_attempts() -> None:
    clock = Clock()

    def down() -> None:
        raise StoreUnavailable("down")

    with pytest.raises(StoreUnavailable):
        patiently(down, retry_on=(StoreUnavailable,), budget_s=60, cap_s=5, what="x", clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(60)  # gave up when the budget was spent, not after N tries


def test_other_errors_are_not_retried() -> None:
    clock = Clock()

    def bad() -> None:
        raise ImageError("not an image")

    with pytest.raises(ImageError):
        patiently(bad, retry_on=(StoreUnavailable,), budget_s=60, cap_s=5, what="x", clock=clock, sleep=clock.sleep)
    assert clock.waits == []


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    rng = random.Random(0)
    waits = [backoff(n, 8.0, rng) for n in range(1, 9)]
    assert 0.25 <= waits[0] <= 0.5 and all(w <= 8.0 for w in waits) and waits[-1] >= 4.0
