"""The one end of a job (producer.broker.ending) against a real redis-server: who may end a job,
the first end wins, a retried end is recognised, every store written in the same step."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from producer.broker import ending, keys
from producer.broker.events import Announcer
from producer.core.settings import Settings
from producer.core.states import FAILURE, REVOKED, SUCCESS, FinalState
from worker.runtime import finish

OK = FinalState(SUCCESS, 10.0)
BAD = FinalState(FAILURE, 11.0, error_type="ImageError", error_message="not an image")


@pytest.fixture
def announcer(fresh_redis: Any) -> Announcer:
    return Announcer(fresh_redis, Settings())


def completed(redis: Any, job_id: str) -> list[str]:
    return [f[b"id"].decode() for _, f in redis.xrange(keys.EVENTS) if f[b"job_id"].decode() == job_id]


def test_the_first_end_wins_and_a_retry_is_recognised(fresh_redis: Any, announcer: Announcer) -> None:
    first = ending.end(fresh_redis, announcer, "j1", BAD)
    assert first.applied and first.final == BAD
    again = ending.end(fresh_redis, announcer, "j1", BAD)  # the same call again: its reply was lost
    assert again.applied and again.final == BAD
    later = ending.end(fresh_redis, announcer, "j1", OK)  # a later run's success does not replace it
    assert not later.applied and later.final == BAD
    assert json.loads(fresh_redis.get(keys.DONE.format("j1")))["state"] == FAILURE
    assert completed(fresh_redis, "j1") == ["j1.completed.11000"]  # announced once


def test_only_the_owner_ends_a_running_job(fresh_redis: Any, announcer: Announcer) -> None:
    fresh_redis.set(keys.LEASE.format("j2"), "host:1:aa|tag-1", ex=60)
    assert ending.end(fresh_redis, announcer, "j2", BAD, lease="host:2:bb|tag-2").held  # a stale run
    assert ending.end(fresh_redis, announcer, "j2", BAD).held  # a cancel, a revoke, a refused copy
    assert not fresh_redis.exists(keys.DONE.format("j2")) and completed(fresh_redis, "j2") == []
    assert ending.end(fresh_redis, announcer, "j2", BAD, lease="host:1:aa|tag-1").applied  # its owner
    assert not fresh_redis.exists(keys.LEASE.format("j2"))


def test_a_run_whose_lease_lapsed_with_nobody_else_ends_the_job(fresh_redis: Any, announcer: Announcer) -> None:
    fresh_redis.sadd(keys.RUNS.format("j3"), "host:1:aa|t")
    assert ending.end(fresh_redis, announcer, "j3", OK, lease="host:1:aa|t").applied
    assert not fresh_redis.exists(keys.RUNS.format("j3"))


def test_a_cancel_sets_its_flag_even_while_a_run_holds_the_job(fresh_redis: Any, announcer: Announcer) -> None:
    fresh_redis.set(keys.LEASE.format("j4"), "host:1:aa|t", ex=60)
    cancel = FinalState(REVOKED, 12.0, error_type="JobCancelled", error_message="x")
    assert ending.end(fresh_redis, announcer, "j4", cancel, cancel=True).held
    assert fresh_redis.exists(keys.CANCEL.format("j4")) and not fresh_redis.exists(keys.DONE.format("j4"))


def test_the_record_batch_and_in_flight_move_in_the_same_step(fresh_redis: Any, announcer: Announcer) -> None:
    fresh_redis.hset(keys.BATCH.format("b"), mapping={"tenant": "acme", "total": 1, "ended": 0, "running": 1})
    fresh_redis.hset(keys.JOB.format("acme.5"), mapping={"tenant": "acme", "state": "STARTED", "batch": "b"})
    fresh_redis.zadd(keys.TENANT_INFLIGHT.format("acme"), {"acme.5": 1.0})
    ended = ending.end(fresh_redis, announcer, "acme.5", OK)
    assert ended.applied and ended.batch == "b"
    assert fresh_redis.hget(keys.JOB.format("acme.5"), "state") == b"SUCCESS"
    # the record keeps where its end lies in the stream (an API event stream ends there)
    end_entry = [i for i, f in fresh_redis.xrange(keys.EVENTS) if f[b"type"] == b"job.completed"]
    assert [fresh_redis.hget(keys.JOB.format("acme.5"), "completed_event")] == end_entry
    assert fresh_redis.zcard(keys.TENANT_INFLIGHT.format("acme")) == 0
    batch = fresh_redis.hgetall(keys.BATCH.format("b"))
    assert batch[b"ended"] == b"1" and batch[b"success"] == b"1" and batch[b"running"] == b"0"
    assert batch[b"announced_by"] == b"acme.5"


def test_a_job_sent_again_ends_with_a_new_event_id(fresh_redis: Any, announcer: Announcer) -> None:
    fresh_redis.hset(keys.BATCH.format("b2"), mapping={"tenant": "acme", "total": 1, "ended": 0})
    fresh_redis.hset(keys.JOB.format("acme.6"), mapping={"tenant": "acme", "state": "PENDING", "batch": "b2"})
    assert ending.end(fresh_redis, announcer, "acme.6", BAD).batch == "b2"
    assert ending.reopen(fresh_redis, "acme.6") == FAILURE  # a dead letter sent again
    assert fresh_redis.hget(keys.JOB.format("acme.6"), "state") == b"PENDING"
    assert fresh_redis.hget(keys.BATCH.format("b2"), "ended") == b"0"
    assert fresh_redis.zscore(keys.TENANT_INFLIGHT.format("acme"), "acme.6") is not None
    assert ending.end(fresh_redis, announcer, "acme.6", OK).applied
    ids = [f[b"id"].decode() for _, f in fresh_redis.xrange(keys.EVENTS)]
    job_ids = [i for i in ids if i.startswith("acme.6.")]
    batch_ids = [i for i in ids if i.startswith("b2.")]
    assert len(set(job_ids)) == 2 and len(set(batch_ids)) == 2  # one id per end: never two payloads


def test_the_run_being_killed_ends_the_job_another_live_run_keeps_it(fresh_redis: Any, announcer: Announcer) -> None:
    host, killed = socket.gethostname(), 4242  # the pid of the child Celery kills
    fresh_redis.set(keys.LEASE.format("j7"), f"{host}:{killed + 1}:aa|t", ex=60)  # a take-over's run
    assert finish.finish_killed(announcer, "j7", BAD, killed).held
    fresh_redis.set(keys.LEASE.format("j7"), f"elsewhere:{killed}:bb|t", ex=60)  # the same pid elsewhere
    assert finish.finish_killed(announcer, "j7", BAD, killed).held
    fresh_redis.set(keys.LEASE.format("j7"), f"{host}:{killed}:cc|t", ex=60)  # the killed run's own
    assert finish.finish_killed(announcer, "j7", BAD, killed).applied
    assert finish.finish_killed(announcer, "j8", BAD, None).applied  # nobody held it
