"""The lease-aware sweep and the drop-or-defer decision, against a real redis-server, with unacked
entries laid out exactly as kombu's Redis transport keeps them."""

from __future__ import annotations

import json
import time
from typing import Any

from producer.broker import keys, wire
from producer.broker.queues import list_name
from worker.runtime import recovery

JOB = {"content": "s3://inputs/c.png", "style": "s3://inputs/s.png", "output": "s3://outputs/"}


def take(
    redis: Any, job_id: str, queue: str = "q", priority: int = 5, age_s: float = 100.0, eta: float | None = None
) -> str:
    """Put a message in kombu's unacked hash, as a worker that took it (``age_s`` ago) leaves it."""
    e = wire.envelope(job_id, JOB, queue, priority, eta=eta)
    payload = json.loads(e.payload)
    tag = payload["properties"]["delivery_tag"]
    redis.hset(keys.UNACKED, tag, json.dumps([payload, "", queue]))
    redis.zadd(keys.UNACKED_INDEX, {tag: time.time() - age_s})
    return tag


def test_a_running_job_is_kept_and_its_visibility_extended(fresh_redis: Any) -> None:
    tag = take(fresh_redis, "running", age_s=5000)  # older than any visibility timeout
    fresh_redis.set(keys.LEASE.format("running"), "host:1:x|" + tag, px=30_000)
    report = recovery.sweep(fresh_redis, ["q"], grace_s=30)
    assert report.kept_alive == 1 and not report.restored
    assert fresh_redis.hexists(keys.UNACKED, tag)
    assert time.time() - fresh_redis.zscore(keys.UNACKED_INDEX, tag) < 5  # kombu will not redeliver it


def test_an_abandoned_job_goes_back_to_the_front_with_a_new_tag(fresh_redis: Any) -> None:
    waiting = wire.envelope("waiting", JOB, "q", 5)
    fresh_redis.lpush(waiting.list_name, waiting.payload)
    tag = take(fresh_redis, "orphan", age_s=60)
    report = recovery.sweep(fresh_redis, ["q"], grace_s=30)
    assert report.restored == ["orphan"]
    assert not fresh_redis.hexists(keys.UNACKED, tag) and fresh_redis.zscore(keys.UNACKED_INDEX, tag) is None
    first = json.loads(fresh_redis.rpop(list_name("q", 5)))  # consumers take from the right: it is next
    assert first["headers"]["id"] == "orphan" and first["headers"]["redelivered"]
    assert first["properties"]["delivery_tag"] != tag  # the dead run's late ack cannot remove the new delivery


def test_a_just_delivered_message_and_a_held_eta_are_left_alone(fresh_redis: Any) -> None:
    take(fresh_redis, "just-taken", age_s=1)
    take(fresh_redis, "later", age_s=60, eta=time.time() + 600)
    take(fresh_redis, "other-queue", queue="someone-elses", age_s=60)
    assert recovery.sweep(fresh_redis, ["q"], grace_s=30).restored == []
    assert fresh_redis.hlen(keys.UNACKED) == 3


def test_a_lease_taken_during_the_sweep_stops_the_restore(fresh_redis: Any) -> None:
    """The check and the restore are one script: a run that takes the lease in between wins."""
    take(fresh_redis, "raced", age_s=60)
    (entry,) = recovery._unacked(fresh_redis)
    fresh_redis.set(keys.LEASE.format("raced"), "host:2:y|tag", px=30_000)
    assert not recovery._restore(fresh_redis, entry)
    assert fresh_redis.hlen(keys.UNACKED) == 1


def test_lists_of_earlier_versions_are_migrated_in_order(fresh_redis: Any) -> None:
    for i in range(3):
        fresh_redis.lpush("q:5", f"m{i}")  # m0 is the oldest
    fresh_redis.lpush(list_name("q", 5), "already-here")
    assert recovery.sweep(fresh_redis, ["q"], grace_s=30).migrated == 3
    taken = [fresh_redis.rpop(list_name("q", 5)) for _ in range(4)]
    assert taken == [b"m0", b"m1", b"m2", b"already-here"]  # the waiting old jobs first, in order


def test_step_aside_drops_only_when_the_holders_message_is_safe(fresh_redis: Any) -> None:
    holder = take(fresh_redis, "j", age_s=1)
    assert recovery.step_aside(fresh_redis, "j", "my-tag", holder, JOB, "q", 5, 31) == "dropped"
    # The holder's message is gone from unacked (handed back, or it is this very message): keep a copy.
    assert recovery.step_aside(fresh_redis, "j", "my-tag", "gone-tag", JOB, "q", 5, 31) == "deferred"
    assert recovery.step_aside(fresh_redis, "j", holder, holder, JOB, "q", 5, 31) == "deferred"
    copies = [json.loads(m) for m in fresh_redis.lrange(list_name("q", 5), 0, -1)]
    assert len(copies) == 2 and all(c["headers"]["id"] == "j" and c["headers"]["eta"] for c in copies)


def test_only_one_worker_sweeps_an_interval(fresh_redis: Any) -> None:
    assert recovery.try_lock(fresh_redis, "q", 10) and not recovery.try_lock(fresh_redis, "q", 10)
    assert recovery.try_lock(fresh_redis, "other", 10)  # another queue's workers sweep their own


def test_a_claimed_message_is_left_to_its_worker(fresh_redis: Any) -> None:
    """A worker received it and its pool child is still loading the model: no lease yet, not abandoned."""
    tag = take(fresh_redis, "loading", age_s=60)
    recovery.claim(fresh_redis, tag, ttl_s=30)
    assert recovery.sweep(fresh_redis, ["q"], grace_s=3).restored == []
    assert time.time() - fresh_redis.zscore(keys.UNACKED_INDEX, tag) < 5  # nor does kombu's own restore take it
    fresh_redis.delete(keys.CLAIM.format(tag))  # the claim ran out: that worker died before starting it
    assert recovery.sweep(fresh_redis, ["q"], grace_s=3).restored == []  # kept alive a moment ago
    later = time.time() + 5  # a grace period after the last keep-alive: abandoned
    assert recovery.sweep(fresh_redis, ["q"], grace_s=3, now=later).restored == ["loading"]
