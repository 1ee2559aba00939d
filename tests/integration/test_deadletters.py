"""Dead letters are bounded: a cap (oldest dropped first, and counted) and a TTL."""

from typing import Any

import pytest

from producer.broker import deadletters, keys


def test_cap_drops_the_oldest_and_says_how_many(fresh_redis: Any) -> None:
    dropped = [
        deadletters.record(fresh_redis, f"j{i}", {"n": i}, "ImageError", "bad", 1, max_entries=20) for i in range(25)
    ]
    assert sum(dropped) == 5 and fresh_redis.hlen(keys.DEAD) == 20
    ids = [e["job_id"] for e in deadletters.entries(fresh_redis, 100)]
    assert ids[0] == "j24" and ids[-1] == "j5"  # newest first; j0..j4 were dropped


def test_a_burst_of_1000_drops_exactly_the_oldest_arrivals(fresh_redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """All 1,000 arrive within one clock tick (the clock is frozen): arrival order still decides."""
    monkeypatch.setattr(deadletters.time, "time", lambda: 1_800_000_000.0)
    dropped = sum(deadletters.record(fresh_redis, f"j{i}", None, "X", "m", 1, max_entries=100) for i in range(1000))
    ids = [e["job_id"] for e in deadletters.entries(fresh_redis, 1000)]
    assert dropped == 900 and ids == [f"j{i}" for i in range(999, 899, -1)]  # newest first; j0..j899 went


def test_a_worker_whose_clock_is_behind_still_adds_the_newest(
    fresh_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([1_800_000_000.0, 1_799_999_990.0])  # the second worker's clock is 10 s behind
    monkeypatch.setattr(deadletters.time, "time", lambda: next(clock))
    deadletters.record(fresh_redis, "first", None, "X", "m", 1, max_entries=1)
    assert deadletters.record(fresh_redis, "second", None, "X", "m", 1, max_entries=1) == 1
    assert [e["job_id"] for e in deadletters.entries(fresh_redis)] == ["second"]


def test_entries_older_than_the_ttl_go_and_both_keys_expire(fresh_redis: Any) -> None:
    deadletters.record(fresh_redis, "old", None, "X", "m", 1, ttl_s=100)
    fresh_redis.zadd(keys.DEAD_INDEX, {"old": 1.0})  # it failed long ago
    assert deadletters.record(fresh_redis, "new", None, "X", "m", 1, ttl_s=100) == 1
    assert deadletters.get(fresh_redis, "old") is None and deadletters.get(fresh_redis, "new")
    assert 0 < fresh_redis.ttl(keys.DEAD) <= 100 and 0 < fresh_redis.ttl(keys.DEAD_INDEX) <= 100


def test_replace_and_remove(fresh_redis: Any) -> None:
    deadletters.record(fresh_redis, "j", {"a": 1}, "ImageError", "first", 1)
    deadletters.record(fresh_redis, "j", {"a": 1}, "ImageError", "second", 2)
    assert [e["message"] for e in deadletters.entries(fresh_redis)] == ["second"]
    deadletters.remove(fresh_redis, "j")
    assert deadletters.entries(fresh_redis) == []
