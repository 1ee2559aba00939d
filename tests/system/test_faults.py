"""Crash safety with real processes: workers killed, visibility timeouts, outages, poison jobs, load."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from support.images import png_bytes, random_rgb
from support.metrics import sample, scrape
from support.processes import child_running, cli, events, frozen, own_workers
from support.store import objects
from support.waiting import wait_for

from producer.core.errors import JobFailed

pytestmark = pytest.mark.slow

FAST = {  # short leases, frequent checkpoints and sweeps, so faults resolve in seconds
    "STYLEQUEUE_LEASE_TTL_S": "3",
    "STYLEQUEUE_SWEEP_INTERVAL_S": "1",
    "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "5",
    "STYLEQUEUE_CHECKPOINT_EVERY_S": "1000",
}
C, S = "s3://inputs/test/content.png", "s3://inputs/test/style.jpg"


def test_node_loss_with_the_default_visibility_timeout_is_recovered_within_the_lease_ttl(
    stack_env, inputs, store, tmp_path
) -> None:
    """A whole worker (parent and children) SIGKILLed mid-job, as when a spot instance is reclaimed:
    another worker takes the job over within twice the lease TTL plus a sweep interval (not the hour-long
    visibility timeout, left at its default), resumes from the checkpoint, and it completes once."""
    with own_workers(stack_env, tmp_path, "node", count=2, **FAST) as (client, workers):
        job = client.submit(C, S, "s3://outputs/node/", {"size": 48, "iterations": 80, "init": "noise", "seed": 1})
        killed: list[tuple[int, float]] = []

        def on_progress(p: Any) -> None:
            if not killed and p.iteration >= 12:
                found = child_running(workers, job.id)
                if found is not None:
                    os.killpg(found[0].proc.pid, signal.SIGKILL)  # the whole machine, as it were
                    killed.append((p.iteration, time.time()))

        result = job.wait(timeout=180, on_progress=on_progress)
        assert killed, "the job finished before it could be killed"
        resumed = events(workers, "job_resumed", job.id)
        assert len(resumed) == 1
        takeover_s = resumed[0]["ts"] - killed[0][1]
        print(f"\nkilled at iteration {killed[0][0]}, resumed from {result.resumed_from} after {takeover_s:.1f} s")
        assert takeover_s <= 2 * 3 + 1 + 10  # 2 lease TTLs + a sweep interval + taking it, reading the checkpoint
        assert 5 <= result.resumed_from <= killed[0][0] and result.iterations == 80
        assert objects(store, "outputs", "node/") == [f"node/{job.id}.png"]  # one output, checkpoint removed
        assert len(events(workers, "job_done", job.id)) == 1


def test_a_job_running_past_the_visibility_timeout_is_not_delivered_again(
    stack_env, inputs, store, services, worker, tmp_path
) -> None:
    """The sweep keeps a leased job's message visible: kombu never redelivers it, however long it runs,
    whatever else sweeps the same Redis (here the session's worker, on another queue, sweeping every
    10 s: its sweep lock is its queue's, not this one's).

    The job is held for as long as the test needs, on any CPU: after its first progress the store is
    frozen (SIGSTOP), so the run blocks in its next checkpoint write (boto3's read timeout, 60 s, is
    far off) while its lease is renewed, as behind a slow store. After three visibility timeouts
    (kombu's restore looks every second, in the idle second worker too) nothing delivered it again;
    the store thaws, the same run goes on, and it is cancelled: REVOKED, once, with no output.
    """
    from producer.broker import connect, keys
    from producer.broker.queues import depth

    _, s3 = services
    visibility_s = 6  # a sweep a second (FAST) against it: 5 s of slack for a loaded machine
    env = {
        **FAST,
        "STYLEQUEUE_VISIBILITY_TIMEOUT_S": str(visibility_s),
        "STYLEQUEUE_RESTORE_INTERVAL_S": "1",
    }
    with own_workers(stack_env, tmp_path, "vis", count=2, **env) as (client, workers):
        redis = connect(stack_env["STYLEQUEUE_BROKER_URL"])
        params = {"size": 48, "iterations": 2000, "init": "noise", "seed": 2}
        job = client.submit(C, S, "s3://outputs/vis/", params)
        wait_for(job.progress, 120, "the job's first progress")
        with frozen(s3.proc.pid):
            held = time.monotonic()
            # another queue's sweeper on this Redis holds its lock the whole time (as a slow one
            # does for 90% of its interval): this queue's sweep goes on
            redis.set(keys.SWEEPER.format("stylequeue"), "bystander", px=60_000)
            lease = keys.LEASE.format(job.id)
            while time.monotonic() - held < 3 * visibility_s:
                assert redis.exists(lease), "the lease lapsed while the run was alive"
                time.sleep(0.5)
            assert job.status() == "PROGRESS"
            assert redis.scard(keys.RUNS.format(job.id)) == 1  # one run ever started
            assert depth(redis, "stylequeue-vis").ready == {p: 0 for p in range(10)}  # not put back on any list
            assert not [r for w in workers for r in w.lines() if r.get("event", "").startswith("delivery_")]
            at = job.progress().iteration
        wait_for(lambda: (p := job.progress()) is not None and p.iteration > at, 120, "the same run going on")
        assert redis.scard(keys.RUNS.format(job.id)) == 1

        assert job.cancel() == "stopping"
        with pytest.raises(JobFailed, match="JobCancelled"):
            job.wait(timeout=120)
        assert len(events(workers, "job_cancelled", job.id)) == 1
        assert not [r for w in workers for r in w.lines() if r.get("event", "").startswith("delivery_")]
        assert objects(store, "outputs", "vis/") == []  # no output, and its checkpoint removed


def test_same_job_id_twice_gives_one_output(stack_env, inputs, store, tmp_path) -> None:
    """The second copy is dropped (the first run holds the job) or republishes its result; counted as such."""
    from producer.devstack import free_port

    port = free_port()
    with own_workers(stack_env, tmp_path, "twice", **FAST, STYLEQUEUE_METRICS_PORT=str(port)) as (client, workers):
        tiny = {"size": 32, "iterations": 3}
        first = client.submit(C, S, "s3://outputs/twice/", tiny, job_id="same-id")
        again = client.submit(C, S, "s3://outputs/twice/", tiny, job_id="same-id")
        assert first.wait(timeout=120) == again.wait(timeout=120)
        marker = client.submit(C, S, "s3://outputs/twice/", tiny)
        marker.wait(timeout=120)  # processed after both copies of same-id: they have been handled
        assert len(events(workers, "job_done", "same-id")) == 1
        assert objects(store, "outputs", "twice/") == sorted(["twice/same-id.png", f"twice/{marker.id}.png"])
        text = wait_for(lambda: "stylequeue_deliveries_total{" in scrape(port) and scrape(port), 30)
        outcomes = sum(
            sample(text, "stylequeue_deliveries_total", outcome=o)
            for o in ("dropped", "republished")
            if f'outcome="{o}"' in text
        )
        assert outcomes == 1 and "celery_task_revoked_total{" not in text


def test_poison_input_lands_in_dead_letters_and_can_be_requeued(stack_env, inputs, tmp_path) -> None:
    import json

    with own_workers(stack_env, tmp_path, "poison", **FAST) as (client, _):
        bad = client.submit(inputs["not-an-image.jpg"], S, "s3://outputs/poison/", {"size": 32})
        with pytest.raises(JobFailed, match="ImageError"):
            bad.wait(timeout=60)
        entry = wait_for(lambda: {d["job_id"]: d for d in client.dead_letters()}.get(bad.id), 30, "the dead letter")
        assert entry["error_type"] == "ImageError" and "not an image" in entry["message"]
        assert entry["attempts"] == 1 and entry["payload"]["content"] == inputs["not-an-image.jpg"]
        good = client.submit(C, S, "s3://outputs/poison/", {"size": 32, "iterations": 2})
        assert good.wait(timeout=120).width == 32  # the worker serves on

        env = {**stack_env, "STYLEQUEUE_QUEUE": "stylequeue-poison"}
        listed = json.loads(cli("dead", "list", env=env).stdout)
        assert bad.id in [d["job_id"] for d in listed]
        requeued = cli("dead", "requeue", bad.id, env=env)
        assert requeued.returncode == 0 and requeued.stdout.strip() == bad.id
        with pytest.raises(JobFailed, match="ImageError"):  # still poison: it runs and fails again ...
            client.job(bad.id).wait(timeout=60)
        wait_for(lambda: bad.id in [d["job_id"] for d in client.dead_letters()], 30, "the new dead letter")


def test_a_job_that_kills_its_worker_stops_after_k_attempts(stack_env, inputs, tmp_path) -> None:
    """An "OOM killer" SIGKILLs the pool child whenever it runs this job."""
    env = {**FAST, "STYLEQUEUE_MAX_WORKER_LOSSES": "2"}
    with own_workers(stack_env, tmp_path, "oom", **env) as (client, workers):
        job = client.submit(C, S, "s3://outputs/oom/", {"size": 48, "iterations": 2000})
        kills: list[int] = []
        stop = threading.Event()

        def oom_killer() -> None:
            while not stop.is_set():
                # Like the kernel's OOM killer, strike a run that is computing, not one just starting
                # (which, past the cap, refuses the job within milliseconds).
                found = child_running(workers, job.id, min_age_s=1.0)
                if found is not None and found[1] not in kills:
                    kills.append(found[1])
                    os.kill(found[1], signal.SIGKILL)
                time.sleep(0.05)  # the simulated kernel's scan interval

        killer = threading.Thread(target=oom_killer, daemon=True)
        killer.start()
        try:
            with pytest.raises(JobFailed) as err:
                job.wait(timeout=240)
        finally:
            stop.set()
            killer.join()
        assert err.value.error_type == "TooManyCrashes", err.value
        assert len(kills) == 2  # K = 2 crashed runs, then the job is refused, not run again
        entry = wait_for(lambda: {d["job_id"]: d for d in client.dead_letters()}.get(job.id), 30, "the dead letter")
        assert entry["error_type"] == "TooManyCrashes"
        assert client.job(job.id).status() == "FAILURE"
        ok = client.submit(C, S, "s3://outputs/oom/", {"size": 32, "iterations": 2})
        assert ok.wait(timeout=120).iterations == 2  # the worker serves on


def test_a_store_outage_with_50_jobs_queued_dead_letters_none(stack_env, weights_file, tmp_path) -> None:
    """The store goes away for half a minute while 50 jobs wait: the workers wait it out (time, not
    attempts), take no new job meanwhile, and every job completes; none is dead-lettered."""
    from producer.devstack import SeaweedS3

    s3 = SeaweedS3(tmp_path / "s3", buckets=["inputs", "outputs"]).start()
    try:
        s3.client().put_object(Bucket="inputs", Key="c.png", Body=png_bytes(random_rgb(24, 24, 1)))
        s3.client().put_object(Bucket="inputs", Key="s.png", Body=png_bytes(random_rgb(24, 24, 2)))
        env = {
            **FAST,
            "STYLEQUEUE_S3_ENDPOINT_URL": s3.endpoint,
            "STYLEQUEUE_WEIGHTS": weights_file,
            "STYLEQUEUE_INPUT_BUCKETS": "inputs",
            "STYLEQUEUE_OUTPUT_BUCKETS": "outputs",
            "STYLEQUEUE_RETRY_FOR_S": "180",
            "STYLEQUEUE_RETRY_BACKOFF_MAX_S": "4",
        }
        with own_workers(stack_env, tmp_path, "s3down", count=2, **env) as (client, workers):
            message = {
                "content": "s3://inputs/c.png",
                "style": "s3://inputs/s.png",
                "output": "s3://outputs/r/",
                "params": {"size": 16, "iterations": 1},
            }
            handles = client.submit_many([message] * 50)
            wait_for(lambda: len(events(workers, "job_done")) >= 3, 60, "the first jobs")
            s3.stop()
            time.sleep(30)  # the outage: longer than any attempt-counting retry policy would wait
            s3.start()
            results = [h.wait(timeout=300) for h in handles]
        assert len({r.output for r in results}) == 50
        assert not [d for d in client.dead_letters() if d["job_id"] in {h.id for h in handles}]
        assert events(workers, "retrying"), "no job met the outage"
    finally:
        s3.stop()


def test_a_broker_restart_mid_job_does_not_wait_for_the_visibility_timeout(stack_env, inputs, store, tmp_path) -> None:
    """Redis (with its append-only file) restarts mid-job, the visibility timeout at its default: the
    job completes within seconds, once, and a submit made during the outage goes through."""
    from producer.devstack import RedisServer

    redis_server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        # The client's budget (STYLEQUEUE_CLIENT_TIMEOUT_S) outlasts the 3 s outage and the restart.
        env = {**FAST, "STYLEQUEUE_BROKER_URL": redis_server.url, "STYLEQUEUE_CLIENT_TIMEOUT_S": "30"}
        with own_workers(stack_env, tmp_path, "redisdown", **env) as (client, workers):
            job = client.submit(
                C, S, "s3://outputs/redis/", {"size": 48, "iterations": 120, "init": "noise", "seed": 3}
            )
            during: list = []

            def outage() -> None:
                redis_server.stop()
                submitter = threading.Thread(
                    target=lambda: during.append(
                        client.submit(C, S, "s3://outputs/redis/", {"size": 32, "iterations": 2})
                    )
                )
                submitter.start()  # the client retries its publish until Redis is back
                time.sleep(3)  # how long Redis stays down
                redis_server.start()
                submitter.join(60)

            restart = threading.Thread(target=outage, daemon=True)
            started: list = []

            def on_progress(p: Any) -> None:
                if not started and p.iteration >= 5:
                    started.append(time.monotonic())
                    restart.start()

            first = job.wait(timeout=240, on_progress=on_progress)
            restart.join(60)
            assert started and first.iterations == 120
            assert time.monotonic() - started[0] < 180  # not the 70 minutes of the visibility timeout
            assert during, "the submit made during the outage did not go through"
            assert during[0].wait(timeout=120).iterations == 2
            assert len(events(workers, "job_done", job.id)) == 1
            assert objects(store, "outputs", "redis/").count(f"redis/{job.id}.png") == 1
    finally:
        redis_server.stop()


LOAD_JOBS = 200


@pytest.mark.timeout(900)
def test_a_load_of_small_jobs_through_2_workers_none_lost_or_duplicated(stack_env, store, tmp_path) -> None:
    """200 small jobs, 2 workers: every job succeeds once, with one output each (200: the suite's time)."""
    store.client.put_object(Bucket="inputs", Key="load/c.png", Body=png_bytes(random_rgb(32, 32, 1)))
    store.client.put_object(Bucket="inputs", Key="load/s.png", Body=png_bytes(random_rgb(32, 32, 2)))
    env = {**FAST, "STYLEQUEUE_PROGRESS_INTERVAL_S": "5"}
    with own_workers(stack_env, tmp_path, "load", count=2, **env) as (client, workers):
        message = {
            "content": "s3://inputs/load/c.png",
            "style": "s3://inputs/load/s.png",
            "output": "s3://outputs/load/",
            "params": {"size": 16, "iterations": 1},
        }
        started = time.monotonic()
        handles = client.submit_many([message] * LOAD_JOBS)
        results = [h.wait(timeout=600) for h in handles]
        elapsed = time.monotonic() - started
        print(f"\n{LOAD_JOBS} jobs through 2 workers in {elapsed:.1f} s ({LOAD_JOBS / elapsed:.1f} jobs/s)")
        assert len({h.id for h in handles}) == LOAD_JOBS
        assert sorted(r.job_id for r in results) == sorted(h.id for h in handles)
        assert objects(store, "outputs", "load/") == sorted(
            f"load/{h.id}.png" for h in handles
        )  # no extra, none missing
        done = [events([w], "job_done") for w in workers]
        assert sorted(e["job_id"] for d in done for e in d) == sorted(h.id for h in handles)  # each ran once
        assert all(done), [len(d) for d in done]  # both workers took part
