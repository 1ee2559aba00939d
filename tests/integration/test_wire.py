"""The job message as it lies in Redis: the same as what Celery's send_task writes."""

import base64
import json
from typing import Any

from producer.broker import keys, registry, wire
from producer.broker.queues import list_name, list_names

JOB = {"content": "s3://inputs/c.png", "style": "s3://inputs/s.png", "output": "s3://outputs/"}


def celery_message(redis_url: str, fresh_redis: Any, priority: int) -> tuple[bytes, dict]:
    """What a default Celery app writes for send_task, and where (captured from a real Redis)."""
    from celery import Celery

    app = Celery(broker=redis_url, broker_transport_options={"priority_steps": list(range(10))})
    app.send_task("stylequeue.transfer", args=[JOB], task_id="job-1", queue="stylequeue", priority=priority)
    (name,) = [n for n in list_names("stylequeue") if fresh_redis.llen(n)]
    return name.encode(), json.loads(fresh_redis.lpop(name))


def test_envelope_matches_celery_send_task(unit_redis_server: Any, fresh_redis: Any) -> None:
    name, theirs = celery_message(unit_redis_server.url, fresh_redis, 5)
    ours = wire.envelope("job-1", JOB, "stylequeue", 5)
    mine = json.loads(ours.payload)
    assert ours.list_name.encode() == name == b"stylequeue\x06\x165"
    assert set(mine) == set(theirs)
    skip = {"origin", "argsrepr"}  # who sent it, and a repr for monitors
    assert {k: v for k, v in mine["headers"].items() if k not in skip} == {
        k: v
        for k, v in theirs["headers"].items()
        if k not in skip | {"replaced_task_nesting", "stamped_headers", "stamps"}
    }
    for k in ("correlation_id", "delivery_mode", "delivery_info", "priority", "body_encoding"):
        assert mine["properties"][k] == theirs["properties"][k], k
    decode = lambda m: json.loads(base64.b64decode(m["body"]))  # noqa: E731
    assert decode(mine) == decode(theirs)


def test_push_is_one_transaction_with_the_index_and_a_batch_marker(fresh_redis: Any) -> None:
    batch = [wire.envelope(f"j{i}", JOB, "q", p) for i, p in enumerate([0, 5, 9])]
    wire.push(fresh_redis, batch, index_max=100, index_ttl_s=60, batch_id="b1")
    assert [fresh_redis.llen(list_name("q", p)) for p in (0, 5, 9)] == [1, 1, 1]
    assert wire.went_through(fresh_redis, "b1") and not wire.went_through(fresh_redis, "b2")
    assert registry.first_seen(fresh_redis, "j1") is not None
    assert fresh_redis.ttl(keys.JOBS) > 0 and fresh_redis.ttl(keys.SENT.format("b1")) > 0


def test_the_index_is_capped(fresh_redis: Any) -> None:
    for n in range(3):
        wire.push(fresh_redis, [wire.envelope(f"j{n}-{i}", JOB, "q", 5) for i in range(10)], 25, 60, f"b{n}")
    assert fresh_redis.zcard(keys.JOBS) == 25


def test_registry_finds_jobs_queued_by_other_clients(unit_redis_server: Any, fresh_redis: Any) -> None:
    from celery import Celery

    Celery(broker=unit_redis_server.url).send_task(
        "stylequeue.transfer", args=[JOB], task_id="plain-1", queue="q", priority=5
    )
    assert registry.first_seen(fresh_redis, "plain-1") is None  # not indexed: sent by another client ...
    assert registry.queued(fresh_redis, "q", "plain-1")  # ... but waiting in the queue
    assert not registry.queued(fresh_redis, "q", "plain-2")
    assert not registry.queued(fresh_redis, "q", "plain")  # a prefix of an id is not the id
