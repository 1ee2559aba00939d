"""Crash safety with real processes: workers killed, visibility timeouts, outages, poison jobs."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
from conftest import own_workers

from producer.errors import JobFailed
from worker.health import pid_alive

pytestmark = pytest.mark.slow

FAST = {  # short leases, frequent checkpoints and sweeps, so faults resolve in seconds
    "STYLEQUEUE_LEASE_TTL_S": "3",
    "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "5",
    "STYLEQUEUE_CHECKPOINT_EVERY_S": "1000",
    "STYLEQUEUE_RESTORE_INTERVAL_S": "1",
}


def done_runs(workers, job_id: str) -> int:  # type: ignore[no-untyped-def]
    """Completed runs of ``job_id`` across the workers' logs."""
    return sum(len(re.findall(rf"job {job_id} done", w.log_path.read_text(errors="replace"))) for w in workers)


def outputs(store, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    listing = store.client.list_objects_v2(Bucket="outputs", Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def running_child(workers, job_id: str, min_age_s: float = 0.0):  # type: ignore[no-untyped-def]
    """(worker, live child pid) running ``job_id`` for at least ``min_age_s``, from the health files."""
    import json

    for w in workers:
        for f in (w.log_path.parent / f"health-{workers.index(w)}").glob("child-*.json"):
            try:
                state = json.loads(f.read_text())
            except ValueError:
                continue
            fresh = time.time() - float(state.get("started_at") or 0) < min_age_s
            if state.get("job_id") == job_id and not fresh and pid_alive(int(state["pid"])):
                return w, int(state["pid"])
    return None, None


def test_sigkill_mid_job_resumes_from_checkpoint_exactly_once(stack_env, inputs, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fault 1: the worker running a job is SIGKILLed (parent and child); the other takes over."""
    env = {**FAST, "STYLEQUEUE_VISIBILITY_TIMEOUT_S": "6"}
    with own_workers(stack_env, tmp_path, "kill", count=2, **env) as (client, workers):
        job = client.submit(
            inputs["content.png"],
            inputs["style.jpg"],
            "s3://outputs/kill/",
            {"size": 48, "iterations": 80, "init": "noise", "seed": 1},
        )
        killed_at = []

        def on_progress(p) -> None:  # type: ignore[no-untyped-def]
            if not killed_at and p.iteration >= 12:
                victim, _ = running_child(workers, job.id)
                if victim is not None:
                    os.killpg(victim.proc.pid, signal.SIGKILL)  # the whole machine, as it were
                    killed_at.append(p.iteration)

        result = job.wait(timeout=180, on_progress=on_progress)
        assert killed_at, "the job finished before it could be killed"
        assert 5 <= result["resumed_from"] <= killed_at[0]
        cost = killed_at[0] - result["resumed_from"]
        print(f"\ncrash at iteration {killed_at[0]}, resumed from {result['resumed_from']}: cost {cost} iterations")
        assert result["iterations"] == 80
        assert outputs(store, "kill/") == [f"kill/{job.id}.png"]  # one output, checkpoint removed
        assert done_runs(workers, job.id) == 1


def test_visibility_timeout_shorter_than_the_job_does_not_run_it_twice(stack_env, inputs, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fault 2: Redis redelivers the running job to the other worker; the lease stops the rerun."""
    env = {**FAST, "STYLEQUEUE_VISIBILITY_TIMEOUT_S": "2"}
    with own_workers(stack_env, tmp_path, "vis", count=2, **env) as (client, workers):
        job = client.submit(
            inputs["content.png"],
            inputs["style.jpg"],
            "s3://outputs/vis/",
            {"size": 48, "iterations": 200, "init": "noise", "seed": 2},
        )
        result = job.wait(timeout=180)
        assert result["iterations"] == 200 and result["resumed_from"] == 0
        logs = "".join(w.log() for w in workers)
        assert "is leased by" in logs  # a duplicate delivery arrived and was dropped
        assert done_runs(workers, job.id) == 1
        assert outputs(store, "vis/") == [f"vis/{job.id}.png"]


def test_same_job_id_twice_gives_one_output(stack_env, inputs, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fault 8; the dropped copy is counted as such in the metrics, not as a cancel."""
    from test_ops import sample, scrape

    from producer.services import free_port

    port = free_port()
    with own_workers(stack_env, tmp_path, "twice", **FAST, STYLEQUEUE_METRICS_PORT=str(port)) as (client, workers):
        tiny = {"size": 32, "iterations": 3}
        first = client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/twice/", tiny, job_id="same-id")
        again = client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/twice/", tiny, job_id="same-id")
        assert first.wait(timeout=120) == again.wait(timeout=120)
        marker = client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/twice/", tiny)
        marker.wait(timeout=120)  # processed after both copies of same-id: they have been handled
        assert done_runs(workers, "same-id") == 1
        assert "job same-id is done already" in workers[0].log()
        assert outputs(store, "twice/") == sorted(["twice/same-id.png", f"twice/{marker.id}.png"])
        text = scrape(port)
        assert sample(text, "stylequeue_deliveries_dropped_total", name="stylequeue.transfer") == 1
        assert "celery_task_revoked_total{" not in text


def test_poison_input_lands_in_dead_letters_and_can_be_requeued(stack_env, inputs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fault 5."""
    import json
    import subprocess
    import sys

    with own_workers(stack_env, tmp_path, "poison", **FAST) as (client, _):
        bad = client.submit(inputs["not-an-image.jpg"], inputs["style.jpg"], "s3://outputs/poison/", {"size": 32})
        with pytest.raises(JobFailed, match="ImageError"):
            bad.wait(timeout=60)
        dead = {d["job_id"]: d for d in client.dead_letters()}
        entry = dead[bad.id]
        assert entry["error_type"] == "ImageError" and "not an image" in entry["message"]
        assert entry["attempts"] == 1 and entry["payload"]["content"] == inputs["not-an-image.jpg"]
        good = client.submit(
            inputs["content.png"], inputs["style.jpg"], "s3://outputs/poison/", {"size": 32, "iterations": 2}
        )
        assert good.wait(timeout=120)["width"] == 32  # the worker serves on

        env = {**os.environ, **stack_env, "STYLEQUEUE_QUEUE": "stylequeue-poison"}
        cli = [sys.executable, "-m", "producer.cli"]
        listed = json.loads(
            subprocess.run(
                [*cli, "dead", "list"], capture_output=True, text=True, env=env, check=True, timeout=60
            ).stdout
        )
        assert bad.id in [d["job_id"] for d in listed]
        requeued = subprocess.run(
            [*cli, "dead", "requeue", bad.id], capture_output=True, text=True, env=env, check=True, timeout=60
        ).stdout.strip()
        assert requeued == bad.id
        with pytest.raises(JobFailed, match="ImageError"):  # still poison: it fails again ...
            client.job(bad.id).wait(timeout=60)
        assert bad.id in [d["job_id"] for d in client.dead_letters()]  # ... and is dead again


def test_a_job_that_kills_its_worker_stops_after_k_attempts(stack_env, inputs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fault 6: an "OOM killer" SIGKILLs the pool child whenever it runs this job."""
    env = {**FAST, "STYLEQUEUE_MAX_WORKER_LOSSES": "2"}
    with own_workers(stack_env, tmp_path, "oom", **env) as (client, workers):
        job = client.submit(
            inputs["content.png"], inputs["style.jpg"], "s3://outputs/oom/", {"size": 48, "iterations": 2000}
        )
        kills: list[int] = []
        stop = threading.Event()

        def oom_killer() -> None:
            while not stop.is_set():
                # Like the kernel's OOM killer, strike a run that is computing, not one just starting
                # (which, past the cap, refuses the job within milliseconds).
                _, pid = running_child(workers, job.id, min_age_s=1.0)
                if pid is not None and pid not in kills:
                    kills.append(pid)
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)  # the simulated kernel's scan interval

        killer = threading.Thread(target=oom_killer, daemon=True)
        killer.start()
        try:
            with pytest.raises(JobFailed) as err:
                job.wait(timeout=180)
        finally:
            stop.set()
            killer.join()
        assert err.value.error_type == "TooManyCrashes", err.value
        assert len(kills) == 2  # K = 2 crashed runs, then the job is refused, not run again
        entry = {d["job_id"]: d for d in client.dead_letters()}[job.id]
        assert entry["error_type"] == "TooManyCrashes"
        ok = client.submit(
            inputs["content.png"], inputs["style.jpg"], "s3://outputs/oom/", {"size": 32, "iterations": 2}
        )
        assert ok.wait(timeout=120)["iterations"] == 2  # the worker serves on


def test_object_store_down_before_upload_is_waited_out(stack_env, inputs, weights_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fault 4: the store goes away mid-job and comes back; the upload is retried in place."""
    from conftest import png_bytes, random_rgb

    from producer.services import SeaweedS3

    s3 = SeaweedS3(tmp_path / "s3", buckets=["inputs", "outputs"]).start()
    try:
        client_s3 = s3.client()
        client_s3.put_object(Bucket="inputs", Key="c.png", Body=png_bytes(random_rgb(48, 64, 1)))
        client_s3.put_object(Bucket="inputs", Key="s.png", Body=png_bytes(random_rgb(40, 40, 2)))
        env = {
            **FAST,
            "STYLEQUEUE_S3_ENDPOINT_URL": s3.endpoint,
            "STYLEQUEUE_WEIGHTS": weights_file,
            "STYLEQUEUE_ALLOWED_BUCKETS": "inputs,outputs",
            "STYLEQUEUE_UPLOAD_ATTEMPTS": "10",
            "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "100000",  # no checkpoint traffic during the outage
        }
        with own_workers(stack_env, tmp_path, "s3down", **env) as (client, (w,)):
            job = client.submit(
                "s3://inputs/c.png", "s3://inputs/s.png", "s3://outputs/r/", {"size": 32, "iterations": 40}
            )
            outage = []

            def store_outage() -> None:
                s3.stop()
                outage.append(time.monotonic())
                # The store stays down until the worker has failed an upload, whatever the CPU speed.
                deadline = time.monotonic() + 120
                while "upload failed" not in w.log_path.read_text(errors="replace") and time.monotonic() < deadline:
                    time.sleep(0.1)
                s3.start()

            def on_progress(p) -> None:  # type: ignore[no-untyped-def]
                if not outage and not any(t.name == "outage" for t in threading.enumerate()):
                    threading.Thread(target=store_outage, name="outage", daemon=True).start()

            result = job.wait(timeout=180, on_progress=on_progress)
            assert outage and result["output"] == f"s3://outputs/r/{job.id}.png"
            assert "upload failed" in w.log()  # it was down at upload time, and retried
            head = s3.client().head_object(Bucket="outputs", Key=f"r/{job.id}.png")
            assert head["ContentType"] == "image/png"
    finally:
        s3.stop()


def test_redis_restart_mid_job(stack_env, inputs, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fault 3: Redis (with its append-only file) restarts mid-job; the job completes, and a submit
    made during the outage goes through once Redis is back."""
    from producer.services import RedisServer

    redis_server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        env = {**FAST, "STYLEQUEUE_BROKER_URL": redis_server.url, "STYLEQUEUE_VISIBILITY_TIMEOUT_S": "5"}
        with own_workers(stack_env, tmp_path, "redisdown", **env) as (client, workers):
            job = client.submit(
                inputs["content.png"],
                inputs["style.jpg"],
                "s3://outputs/redis/",
                {"size": 48, "iterations": 120, "init": "noise", "seed": 3},
            )
            during: list = []

            def outage() -> None:
                redis_server.stop()
                # The client publishes while Redis is down: it retries until Redis is back.
                submitter = threading.Thread(
                    target=lambda: during.append(
                        client.submit(
                            inputs["content.png"],
                            inputs["style.jpg"],
                            "s3://outputs/redis/",
                            {"size": 32, "iterations": 2},
                        )
                    )
                )
                submitter.start()
                time.sleep(3)  # how long Redis stays down
                redis_server.start()
                submitter.join(60)

            restart = threading.Thread(target=outage, daemon=True)
            started: list = []

            def on_progress(p) -> None:  # type: ignore[no-untyped-def]
                if not started and p.iteration >= 5:
                    started.append(p.iteration)
                    restart.start()

            first = job.wait(timeout=240, on_progress=on_progress)
            restart.join(60)
            assert started and first["iterations"] == 120
            assert during, "the submit made during the outage did not go through"
            assert during[0].wait(timeout=120)["iterations"] == 2
            assert done_runs(workers, job.id) == 1
            assert outputs(store, "redis/").count(f"redis/{job.id}.png") == 1
    finally:
        redis_server.stop()


def test_load_1000_jobs_through_2_workers_none_lost_or_duplicated(stack_env, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """1,000 small jobs, 2 workers: every job succeeds once, with one output each."""
    from conftest import png_bytes, random_rgb

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
        handles = client.submit_many([message] * 1000)
        results = [h.wait(timeout=600) for h in handles]
        elapsed = time.monotonic() - started
        print(f"\n1000 jobs through 2 workers in {elapsed:.1f} s ({1000 / elapsed:.1f} jobs/s)")
        assert len({h.id for h in handles}) == 1000
        assert sorted(r["job_id"] for r in results) == sorted(h.id for h in handles)
        keys = []
        token = None
        while True:  # list every output (pages of 1000)
            page = store.client.list_objects_v2(
                Bucket="outputs", Prefix="load/", **({"ContinuationToken": token} if token else {})
            )
            keys += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                break
        assert sorted(keys) == sorted(f"load/{h.id}.png" for h in handles)  # no extra, none missing
        runs = "".join(w.log_path.read_text(errors="replace") for w in workers)
        assert len(re.findall(r"job \w+ done", runs)) == 1000  # each ran to completion exactly once
        per_worker = [len(re.findall(r"job \w+ done", w.log_path.read_text(errors="replace"))) for w in workers]
        assert all(n > 0 for n in per_worker), per_worker  # both workers took part
