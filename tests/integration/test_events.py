"""Job events and cancellation against a real redis-server: each transition once, however often
it is announced; batch completion once; cancel atomic with the lease."""

from __future__ import annotations

import base64
import json

from producer.broker import cancellation, ending, keys
from producer.broker.events import WEBHOOK_TASK, Announcer
from producer.broker.queues import list_name
from producer.core.settings import Settings
from producer.core.states import SUCCESS, FinalState, JobProgress


def api_job(redis, job_id: str, batch: str | None = None, webhook: str = "", events: str = "completed") -> None:
    fields = {"tenant": "acme", "state": "PENDING", "created_at": 1.0}
    if batch:
        fields["batch"] = batch
    if webhook:
        fields.update(webhook=webhook, webhook_events=events)
    redis.hset(keys.JOB.format(job_id), mapping=fields)
    redis.zadd(keys.TENANT_INFLIGHT.format("acme"), {job_id: 1.0})


def deliveries(redis, settings: Settings) -> list[dict]:
    raw = redis.lrange(list_name(settings.webhook_queue, 0), 0, -1)
    out = []
    for payload in raw:
        message = json.loads(payload)
        assert message["headers"]["task"] == WEBHOOK_TASK
        out.append(json.loads(base64.b64decode(message["body"]))[0][0])
    return out


def test_transitions_happen_once_however_often_announced(fresh_redis) -> None:
    settings = Settings()
    a = Announcer(fresh_redis, settings)
    api_job(fresh_redis, "acme.1", webhook="https://h.example.com/x", events="started,completed")
    final = FinalState(SUCCESS, 5.0, result=None)
    for _ in range(2):  # a retried call (its reply lost), a second run
        a.started("acme.1")
        assert ending.end(fresh_redis, a, "acme.1", final).applied
    record = fresh_redis.hgetall(keys.JOB.format("acme.1"))
    assert record[b"state"] == b"SUCCESS" and record[b"finished_at"] == b"5.0"
    assert not fresh_redis.zscore(keys.TENANT_INFLIGHT.format("acme"), "acme.1")
    types = [f[b"type"] for _, f in fresh_redis.xrange(keys.EVENTS)]
    assert types.count(b"job.started") == 2 and types.count(b"job.completed") == 1  # the end: once
    ids = {json.loads(d["body"])["type"]: d["event_id"] for d in deliveries(fresh_redis, settings)}
    assert ids == {"job.started": "acme.1.started", "job.completed": "acme.1.completed.5000"}


def test_progress_events_at_each_tenth_only_when_asked(fresh_redis) -> None:
    settings = Settings()
    a = Announcer(fresh_redis, settings)
    api_job(fresh_redis, "acme.2", webhook="https://h.example.com/x", events="progress")
    tenth = 0
    for i in range(1, 101):
        tenth = a.progress("acme.2", JobProgress("acme.2", i, 100, 1.0), tenth)
    events = [f for _, f in fresh_redis.xrange(keys.EVENTS) if f[b"type"] == b"job.progress"]
    assert len(events) == 10 and json.loads(events[-1][b"data"])["progress"]["iteration"] == 100
    assert len(deliveries(fresh_redis, settings)) == 10
    # a run taking the job over reports the same tenths again (other losses): nothing is announced
    # twice, so an event id always names one payload
    tenth = 0
    for i in range(1, 101):
        tenth = a.progress("acme.2", JobProgress("acme.2", i, 100, 2.0), tenth)
    assert len([f for _, f in fresh_redis.xrange(keys.EVENTS) if f[b"type"] == b"job.progress"]) == 10


def test_a_batch_completes_once_with_its_counts(fresh_redis) -> None:
    settings = Settings()
    a = Announcer(fresh_redis, settings)
    fresh_redis.hset(
        keys.BATCH.format("b1"),
        mapping={"tenant": "acme", "total": 3, "ended": 0, "webhook": "https://h.example.com/b"},
    )
    for n in range(3):
        api_job(fresh_redis, f"acme.b{n}", batch="b1")
    a.started("acme.b0")
    assert fresh_redis.hget(keys.BATCH.format("b1"), "running") == b"1"
    ending.end(fresh_redis, a, "acme.b0", FinalState(SUCCESS, 2.0))
    ending.end(fresh_redis, a, "acme.b1", FinalState("FAILURE", 2.0, error_type="ImageError", error_message="x"))
    assert not [f for _, f in fresh_redis.xrange(keys.EVENTS) if f[b"type"] == b"batch.completed"]
    last = FinalState("REVOKED", 3.0, error_type="JobCancelled", error_message="x")
    assert ending.end(fresh_redis, a, "acme.b2", last).batch == "b1"
    assert ending.end(fresh_redis, a, "acme.b2", last).batch == "b1"  # its retry (a lost reply) announces again
    assert ending.end(fresh_redis, a, "acme.b2", FinalState(SUCCESS, 4.0)).batch is None  # another end: nothing
    info = fresh_redis.hgetall(keys.BATCH.format("b1"))
    assert info[b"ended"] == b"3" and info[b"running"] == b"0" and info[b"success"] == b"1"
    done = [f for _, f in fresh_redis.xrange(keys.EVENTS) if f[b"type"] == b"batch.completed"]
    counts = {"SUCCESS": 1, "FAILURE": 1, "REVOKED": 1}
    assert len({f[b"id"] for f in done}) == 1 and all(json.loads(f[b"data"])["counts"] == counts for f in done)
    assert {json.loads(d["body"])["type"] for d in deliveries(fresh_redis, settings)} == {"batch.completed"}


def test_cancel_ends_a_queued_job_at_once_and_never_a_leased_one(fresh_redis) -> None:
    a = Announcer(fresh_redis, Settings())
    outcome, final = cancellation.request(fresh_redis, a, "j1", 1.0)
    assert outcome == "cancelled" and final is not None and final.state == "REVOKED"
    assert json.loads(fresh_redis.get(keys.DONE.format("j1")))["state"] == "REVOKED"
    assert cancellation.request(fresh_redis, a, "j1", 1.0)[0] == "cancelled"  # a retry after a lost reply
    assert cancellation.request(fresh_redis, a, "j1", 2.0) == ("ended", None)
    fresh_redis.set(keys.LEASE.format("j2"), "w1|tag")
    assert cancellation.request(fresh_redis, a, "j2", 1.0) == ("stopping", None)
    assert not fresh_redis.exists(keys.DONE.format("j2")) and fresh_redis.exists(keys.CANCEL.format("j2"))
