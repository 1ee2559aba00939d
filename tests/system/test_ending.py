"""One way to end a job, tried by real means: a lost reply to the end, and a stale run killed by
the hard time limit while another run finishes the job.

Real processes: ``stylequeue worker`` (``celery worker``) processes, a real redis-server (behind a
TCP proxy of the test's own that loses one reply), the session's SeaweedFS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from support.processes import child_running, events, own_workers
from support.proxy import ReplyDroppingProxy
from support.store import objects
from support.waiting import wait_for

from producer.broker import connect, deadletters, keys, scripts
from producer.core.errors import JobFailed
from producer.core.states import SUCCESS
from producer.devstack import RedisServer

pytestmark = pytest.mark.slow

C, S = "s3://inputs/test/content.png", "s3://inputs/test/style.jpg"


def completed_events(redis: Any, job_id: str) -> list[dict[str, Any]]:
    return [
        {"id": f[b"id"].decode(), **json.loads(f[b"data"])}
        for _, f in redis.xrange(keys.EVENTS)
        if f[b"job_id"].decode() == job_id and f[b"type"] == b"job.completed"
    ]


def test_a_lost_reply_to_the_end_is_retried_and_the_job_ends_once(stack_env, inputs, store, tmp_path: Path) -> None:
    """The worker's Redis connection goes through a proxy that lets the end's script run and drops
    its reply (a reset connection). The retry finds its own end recorded: the task finishes as if
    the reply had come — SUCCESS in Celery's result, one ``job.completed``, nothing left behind."""
    server = RedisServer(tmp_path / "redis").start()
    end_script = scripts.load("producer.broker", "job_end")
    direct = connect(server.url)
    direct.script_load(end_script.source)  # known to the server: the first EVALSHA is the one that runs
    proxy = ReplyDroppingProxy(server.port, end_script.sha.encode())
    try:
        env = {"STYLEQUEUE_BROKER_URL": proxy.url, "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "2"}
        with own_workers(stack_env, tmp_path, "lostreply", **env) as (client, workers):
            job = client.submit(C, S, "s3://outputs/lostreply/", {"size": 32, "iterations": 6})
            result = job.wait(timeout=180)
            assert proxy.dropped.is_set()  # the reply was lost, and the job ended all the same
            assert result.iterations == 6 and job.status() == SUCCESS
            assert json.loads(direct.get(keys.DONE.format(job.id)))["state"] == SUCCESS
            ends = completed_events(direct, job.id)
            assert len(ends) == 1 and ends[0]["state"] == SUCCESS
            assert not direct.exists(keys.LEASE.format(job.id), keys.RUNS.format(job.id))
            assert len(events(workers, "job_done", job.id)) == 1
            assert not [r for w in workers for r in w.lines() if r.get("event", "").startswith("delivery_")]
            assert objects(store, "outputs", "lostreply/") == [f"lostreply/{job.id}.png"]  # checkpoint gone
    finally:
        proxy.close()
        server.stop()


def test_a_stale_run_killed_by_the_hard_limit_does_not_fail_a_job_another_run_finished(
    stack_env, inputs, tmp_path: Path
) -> None:
    """The run holding a job is frozen (SIGSTOP) mid-job: its lease lapses and the other worker takes
    the job over and finishes it. The frozen run's parent then kills it at the hard time limit, where
    Celery writes FAILURE: that goes through the job's one end, which finds the job ended (or, on a
    slow machine, still held by the live run): no FAILURE, no dead letter, one end in every store."""
    env = {
        "STYLEQUEUE_LEASE_TTL_S": "3",
        "STYLEQUEUE_SWEEP_INTERVAL_S": "1",
        "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "5",
        # The taker's whole run (≤ 100 iterations at 32 px, seconds when idle) must fit the soft
        # limit on a loaded machine too: three pytest processes on 2 cores took it past 25 s.
        "STYLEQUEUE_SOFT_TIME_LIMIT_S": "45",
        "STYLEQUEUE_HARD_TIME_LIMIT_S": "50",
    }
    with own_workers(stack_env, tmp_path, "hardlimit", count=2, **env) as (client, workers):
        params = {"size": 32, "iterations": 100, "init": "noise", "seed": 5}
        job = client.submit(C, S, "s3://outputs/hardlimit/", params)
        wait_for(job.progress, 120, "the job's first progress")
        stale, pid = wait_for(lambda: child_running(workers, job.id), 60, "the run")
        os.kill(pid, signal.SIGSTOP)  # the run freezes holding the job; its worker's parent lives on
        try:
            job.wait(timeout=240)  # the other worker took it over and finished it
            wait_for(lambda: stale.events("killed_run_fenced", job.id), 120, "the frozen run's hard limit")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        taker = next(w for w in workers if w is not stale)
        assert taker.events("job_done", job.id) and not stale.events("job_done", job.id)
        redis = connect(stack_env["STYLEQUEUE_BROKER_URL"])
        assert job.status() == SUCCESS  # Celery's result: the hard limit's FAILURE did not replace it
        assert json.loads(redis.get(keys.DONE.format(job.id)))["state"] == SUCCESS
        assert deadletters.get(redis, job.id) is None
        assert [e["state"] for e in completed_events(redis, job.id)] == [SUCCESS]


def test_a_run_killed_at_the_hard_limit_while_it_holds_the_job_fails_it(stack_env, inputs, tmp_path: Path) -> None:
    """The run holding the job hangs (SIGSTOP: as in a stuck GPU call, it answers no signal) with its
    lease still live; the parent kills it at the hard time limit. The killed run was the owner: the
    job ends FAILURE in every store, with a dead letter, once."""
    env = {
        "STYLEQUEUE_LEASE_TTL_S": "120",  # the lease outlives the hang: the killed run still holds it
        # far beyond the job's first progress on a loaded machine (the soft limit would end a
        # run that answers signals first); the run is frozen soon after that progress
        "STYLEQUEUE_SOFT_TIME_LIMIT_S": "30",
        "STYLEQUEUE_HARD_TIME_LIMIT_S": "35",
    }
    with own_workers(stack_env, tmp_path, "hung", **env) as (client, workers):
        job = client.submit(C, S, "s3://outputs/hung/", {"size": 32, "iterations": 2000})
        wait_for(job.progress, 120, "the job's first progress")
        _, pid = wait_for(lambda: child_running(workers, job.id), 60, "the run")
        os.kill(pid, signal.SIGSTOP)  # killed by the parent at the hard limit (SIGKILL needs no CONT)
        with pytest.raises(JobFailed, match="TimeLimitExceeded"):
            job.wait(timeout=120)
        redis = connect(stack_env["STYLEQUEUE_BROKER_URL"])
        assert json.loads(redis.get(keys.DONE.format(job.id)))["error_type"] == "TimeLimitExceeded"
        assert deadletters.get(redis, job.id)["error_type"] == "TimeLimitExceeded"
        assert [e["state"] for e in completed_events(redis, job.id)] == ["FAILURE"]
        assert [r["outcome"] for r in workers[0].events("killed_run_fenced", job.id)] == ["failed"]


def test_a_run_terminated_by_a_celery_revoke_ends_its_job_revoked(stack_env, inputs, tmp_path: Path) -> None:
    """``AsyncResult(id).revoke(terminate=True)`` from a plain Celery client kills the run: the job
    ends REVOKED in every store, once (the killed run cannot record it; its lease says it was it)."""
    with own_workers(stack_env, tmp_path, "terminate") as (client, _):
        job = client.submit(C, S, "s3://outputs/terminate/", {"size": 32, "iterations": 2000})
        wait_for(job.progress, 120, "the job's first progress")
        client.app.AsyncResult(job.id).revoke(terminate=True)
        with pytest.raises(JobFailed, match="JobCancelled"):
            job.wait(timeout=120)
        redis = connect(stack_env["STYLEQUEUE_BROKER_URL"])
        done = wait_for(lambda: redis.get(keys.DONE.format(job.id)), 30, "the done marker")
        assert json.loads(done)["state"] == "REVOKED" and job.status() == "REVOKED"
        assert [e["state"] for e in completed_events(redis, job.id)] == ["REVOKED"]
        assert not redis.exists(keys.LEASE.format(job.id))
