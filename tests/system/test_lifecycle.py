"""No job is ever stranded, silently dropped or clobbered: tried from outside, broken by real means.

Clients that import nothing of this project (a plain ``Celery()`` app, a raw ``LPUSH``), workers
started with the real command, faults made by real means (SIGKILL, SIGSTOP, a deleted key, Redis
refusing writes, a stopped server).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.processes import child_running, cli, events, own_workers, redis_clients_from, tcp_ports
from support.store import objects
from support.waiting import wait_for

from producer.core.contract import ObjectRef
from producer.core.errors import JobFailed, JobNotFound, PartialSubmit

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "STYLEQUEUE_LEASE_TTL_S": "3",
    "STYLEQUEUE_SWEEP_INTERVAL_S": "1",
    "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "5",
    "STYLEQUEUE_CHECKPOINT_EVERY_S": "1000",
}
C, S = "s3://inputs/test/content.png", "s3://inputs/test/style.jpg"


def job_message(output: str, **params: Any) -> dict[str, Any]:
    return {"content": C, "style": S, "output": output, "params": {"size": 32, "iterations": 2, **params}}


def plain_celery(url: str, **conf: Any) -> Any:
    """A Celery app as a backend engineer writes one from docs/contract.md: nothing of stylequeue."""
    from celery import Celery

    app = Celery(broker=url, backend=url)
    app.conf.update(conf)
    return app


def send(app: Any, queue: str, message: dict[str, Any], priority: int | None = None) -> Any:
    """docs/contract.md's send_task: the job id is the task id."""
    job_id = uuid.uuid4().hex
    options: dict[str, Any] = {} if priority is None else {"priority": priority}
    return app.send_task(
        "stylequeue.transfer", args=[{**message, "job_id": job_id}], task_id=job_id, queue=queue, **options
    )


def date_done(app: Any, job_id: str) -> str:
    return str(app.backend.get_task_meta(job_id)["date_done"])


@pytest.mark.parametrize("configured", ["default", "as-the-docs-say"])
def test_any_celery_client_gets_its_jobs_run_counted_and_in_priority_order(
    stack_env, inputs, tmp_path, configured
) -> None:
    """A plain Celery() app: jobs with no priority, 0, 5 and 9 are counted in the queue depth while they
    wait, all run, and in the order of their priorities."""
    conf = {} if configured == "default" else {"broker_transport_options": {"priority_steps": list(range(10))}}
    name = f"plain-{configured}"
    with own_workers(stack_env, tmp_path, name):
        app = plain_celery(stack_env["STYLEQUEUE_BROKER_URL"], **conf)
        queue = f"stylequeue-{name}"
        blocker = send(
            app, queue, job_message(f"s3://outputs/{name}/", iterations=60, init="noise", seed=1), priority=0
        )
        wait_for(lambda: blocker.state in ("STARTED", "PROGRESS"), 120, "the blocking job to start")
        jobs = {p: send(app, queue, job_message(f"s3://outputs/{name}/"), p) for p in (9, 5, 0, None)}
        depth = json.loads(cli("queue", env={**stack_env, "STYLEQUEUE_QUEUE": queue}).stdout)
        assert depth["total"] == 5 and depth["unacked"] == 1, depth  # all four waiting ones, and the running one
        for r in [blocker, *jobs.values()]:
            assert r.get(timeout=180)["output"].startswith(f"s3://outputs/{name}/")
        order = sorted(jobs, key=lambda p: date_done(app, jobs[p].id))
        assert order == [0, None, 5, 9]  # 0 and none share the first list, FIFO; then 5, then 9


def test_flower_started_as_the_compose_file_starts_it_shows_the_true_queue_length(stack_env, inputs, tmp_path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    flower = compose["services"]["flower"]
    from producer.devstack import free_port

    port = free_port()
    argv = [a.replace("redis://redis:6379/0", stack_env["STYLEQUEUE_BROKER_URL"]) for a in flower["command"]]
    argv = [a.replace("--port=5555", f"--port={port}") for a in argv] + ["--address=127.0.0.1"]
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in flower["volumes"]}
    env_file = dict(
        line.split("=", 1)
        for f in flower["env_file"]
        for line in (ROOT / f).read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    env = {**os.environ, **env_file, **{k: str(v) for k, v in flower.get("environment", {}).items()}}
    env["PYTHONPATH"] = os.pathsep.join(str(mounts.get(p, p)) for p in env["PYTHONPATH"].split(os.pathsep))
    user, password = env["FLOWER_BASIC_AUTH"].split(":", 1)
    assert argv[0] == "celery"
    with own_workers(stack_env, tmp_path, "flower") as (client, _):
        queue = "stylequeue-flower"
        blocker = client.submit(
            C, S, "s3://outputs/flower/", {"size": 32, "iterations": 60, "init": "noise", "seed": 2}
        )
        wait_for(lambda: blocker.status() in ("STARTED", "PROGRESS"), 120, "the blocking job to start")
        client.submit(C, S, "s3://outputs/flower/", {"size": 32}, priority=5)  # stylequeue's client: list 5
        send(plain_celery(stack_env["STYLEQUEUE_BROKER_URL"]), queue, job_message("s3://outputs/flower/"), 7)  # list 6
        client.submit(C, S, "s3://outputs/flower/", {"size": 32}, priority=2)  # list 2
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", *argv[1:]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:

            def length() -> int | None:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/queues/length")
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                request.add_header("Authorization", f"Basic {token}")
                with urllib.request.urlopen(request, timeout=5) as r:
                    queues = {q["name"]: q["messages"] for q in json.loads(r.read())["active_queues"]}
                return queues.get(queue)

            assert wait_for(length, 60, "Flower's queue length") == 3
        finally:
            proc.terminate()
            proc.wait(30)
            for job_id in [blocker.id]:
                client.job(job_id).cancel()


def test_a_non_python_producer_pushes_the_documented_message(stack_env, inputs, tmp_path) -> None:
    """The recipe docs/contract.md gives other languages: LPUSH this JSON onto the priority's list."""
    import redis

    with own_workers(stack_env, tmp_path, "raw") as (client, _):
        job_id = "raw-" + uuid.uuid4().hex[:8]
        body = json.dumps(
            [
                [job_message("s3://outputs/raw/")],
                {},
                {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
            ]
        )
        message = {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": "stylequeue.transfer", "id": job_id, "root_id": job_id, "retries": 0},
            "properties": {
                "correlation_id": job_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "stylequeue-raw"},
                "priority": 5,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        redis.Redis.from_url(stack_env["STYLEQUEUE_BROKER_URL"]).lpush("stylequeue-raw\x06\x165", json.dumps(message))
        assert client.job(job_id).wait(timeout=120).output == f"s3://outputs/raw/{job_id}.png"


def test_a_deleted_lease_is_retaken_and_the_job_completes_once(stack_env, inputs, store, tmp_path) -> None:
    """What eviction, a frozen VM or a stuck renewal does: the run finds its lease gone, nobody else
    holds it, so it takes it back and goes on."""
    with own_workers(stack_env, tmp_path, "lease", **FAST) as (client, workers):
        job = client.submit(C, S, "s3://outputs/lease/", {"size": 48, "iterations": 40, "init": "noise", "seed": 3})
        deleted = []

        def on_progress(p: Any) -> None:
            if not deleted and p.iteration >= 5:
                deleted.append(client.redis.delete(f"stylequeue:lease:{job.id}"))

        result = job.wait(timeout=180, on_progress=on_progress)
        assert deleted == [1] and result.iterations == 40
        assert events(workers, "lease_retaken", job.id)
        assert len(events(workers, "job_done", job.id)) == 1
        assert objects(store, "outputs", "lease/") == [f"lease/{job.id}.png"]


def test_when_another_live_run_holds_the_job_exactly_one_finishes(stack_env, inputs, store, tmp_path) -> None:
    """The lease is deleted and the same job delivered again at once: two live runs want it; one
    finishes and publishes, the other steps aside; the job ends SUCCESS with one output."""
    with own_workers(stack_env, tmp_path, "two", count=2, **FAST) as (client, workers):
        message = {
            **job_message("s3://outputs/two/", size=48, iterations=40, init="noise", seed=4),
            "job_id": "contested",
        }
        first = client.send(message)
        raced = []

        def on_progress(p: Any) -> None:
            if not raced and p.iteration >= 5:
                client.redis.delete("stylequeue:lease:contested")
                raced.append(client.send(message))  # a second delivery while the first run is alive

        result = first.wait(timeout=180, on_progress=on_progress)
        assert raced and result.iterations == 40
        wait_for(
            lambda: events(workers, "delivery_dropped", "contested") or events(workers, "job_republished", "contested"),
            60,
            "the other delivery to end",
        )
        assert len(events(workers, "job_done", "contested")) == 1
        assert client.job("contested").status() == "SUCCESS"
        assert objects(store, "outputs", "two/") == ["two/contested.png"]


def test_a_frozen_run_that_wakes_up_after_a_takeover_publishes_nothing(stack_env, inputs, store, tmp_path) -> None:
    """Fencing: a run SIGSTOPped mid-job loses its lease, another worker takes the job over and finishes
    it; SIGCONT: the stale run overwrites neither the output nor the final state, and steps aside."""
    with own_workers(stack_env, tmp_path, "frozen", count=2, **FAST) as (client, workers):
        job = client.submit(C, S, "s3://outputs/frozen/", {"size": 48, "iterations": 60, "init": "noise", "seed": 5})
        frozen: list[tuple[Any, int]] = []

        def on_progress(p: Any) -> None:
            if not frozen and p.iteration >= 12:
                found = child_running(workers, job.id)
                if found is not None:
                    os.kill(found[1], signal.SIGSTOP)
                    frozen.append(found)

        try:
            result = job.wait(timeout=180, on_progress=on_progress)
            assert frozen and result.resumed_from >= 10
            out = store.stat(ObjectRef("outputs", f"frozen/{job.id}.png"))
            done = client.redis.get(f"stylequeue:done:{job.id}")
        finally:
            for _, pid in frozen:
                os.kill(pid, signal.SIGCONT)
        stale_worker = frozen[0][0]
        wait_for(lambda: stale_worker.events("delivery_dropped", job.id), 60, "the stale run to step aside")
        assert store.stat(ObjectRef("outputs", f"frozen/{job.id}.png")).etag == out.etag  # not written again
        assert client.redis.get(f"stylequeue:done:{job.id}") == done  # nor the final state
        assert len(events(workers, "job_done", job.id)) == 1
        after = client.submit(C, S, "s3://outputs/frozen/", {"size": 32, "iterations": 2})
        assert after.wait(timeout=120).iterations == 2  # both workers serve on


def test_a_crash_between_upload_and_success_republishes_without_recomputing(stack_env, inputs, store, tmp_path) -> None:
    """The run uploads its output, then its machine dies before the job's end is recorded (Redis
    refuses writes at that moment, then the worker is SIGKILLed): the next run adopts the uploaded
    output and publishes SUCCESS with it; nothing is computed again."""
    # A lease that outlives the moments Redis refuses writes (renewals are writes).
    env = {**FAST, "STYLEQUEUE_PROGRESS_INTERVAL_S": "1000", "STYLEQUEUE_LEASE_TTL_S": "25"}
    with own_workers(stack_env, tmp_path, "upload", count=2, **env) as (client, workers):
        job = client.submit(C, S, "s3://outputs/upload/", {"size": 48, "iterations": 300, "init": "noise", "seed": 6})
        output = ObjectRef("outputs", f"upload/{job.id}.png")
        checkpoint = ObjectRef("outputs", f"upload/{job.id}.png.checkpoint.npz")

        def near_the_end() -> bool:
            ck = store.stat(checkpoint)
            return ck is not None and int(ck.metadata.get("iteration", 0)) >= 270

        wait_for(near_the_end, 120, "the run to near its end")
        found = child_running(workers, job.id)
        assert found is not None
        client.redis.execute_command("CLIENT", "PAUSE", "60000", "WRITE")  # the job's end cannot be recorded
        try:
            uploaded = wait_for(lambda: store.stat(output), 60, "the upload")
            ports = tcp_ports(found[0].proc.pid)
            assert redis_clients_from(client.redis, ports)
            os.killpg(found[0].proc.pid, signal.SIGKILL)
            # Redis drops the dead worker's connections, and with them the blocked script recording the end.
            wait_for(lambda: not redis_clients_from(client.redis, ports), 30, "the dead worker's connections gone")
        finally:
            client.redis.execute_command("CLIENT", "UNPAUSE")
        assert not client.redis.exists(f"stylequeue:done:{job.id}")  # the crash came before the end was recorded
        wait_for(lambda: client.job(job.id).status() == "SUCCESS", 120, "SUCCESS")
        result = client.job(job.id).result(timeout=10)
        assert result.output == output.uri and result.iterations == 300
        assert store.stat(output).etag == uploaded.etag  # the same object: adopted, not computed again
        survivor = next(w for w in workers if w is not found[0])
        assert survivor.events("output_adopted", job.id) and not survivor.events("job_resumed", job.id)


def test_failure_and_revoked_are_final(client, worker, inputs) -> None:
    """A duplicate delivery of a failed or cancelled job publishes that end again; it never runs."""
    bad = client.submit(inputs["not-an-image.jpg"], S, "s3://outputs/final/", {"size": 32})
    with pytest.raises(JobFailed, match="ImageError"):
        bad.wait(timeout=60)
    cancelled = client.submit(C, S, "s3://outputs/final/", {"size": 32, "iterations": 2000})
    wait_for(lambda: cancelled.status() == "PROGRESS", 60, "the job to run")
    cancelled.cancel()
    with pytest.raises(JobFailed, match="JobCancelled"):
        cancelled.wait(timeout=60)
    app = plain_celery(client.settings.broker_url)
    for job_id in (bad.id, cancelled.id):  # the same jobs delivered again, as a retrying producer would
        app.send_task(
            "stylequeue.transfer",
            args=[{**job_message("s3://outputs/final/"), "job_id": job_id}],
            task_id=job_id,
            queue="stylequeue",
        )
    after = send(app, "stylequeue", job_message("s3://outputs/final/"))  # taken after the duplicates
    after.get(timeout=120)
    assert worker.events("job_republished", bad.id)
    assert client.job(bad.id).status() == "FAILURE" and client.job(cancelled.id).status() == "REVOKED"
    assert not worker.events("job_done", bad.id) and not worker.events("job_done", cancelled.id)


def test_an_unknown_job_id_is_not_found_at_once(client, stack_env) -> None:
    started = time.monotonic()
    with pytest.raises(JobNotFound):
        client.job("never-submitted").wait()  # no timeout: it must not hang
    assert time.monotonic() - started < 5
    for command in (["status", "never-submitted"], ["wait", "never-submitted"], ["cancel", "never-submitted"]):
        proc = cli(*command, env=stack_env)
        assert proc.returncode == 4 and "no job 'never-submitted'" in proc.stderr, proc.stderr
    idle = plain_celery(stack_env["STYLEQUEUE_BROKER_URL"])
    queued = send(idle, "stylequeue-nobody-home", job_message("s3://outputs/"), 5)
    from producer.client import Client
    from producer.core.settings import Settings

    other = Client(Settings.from_env({**stack_env, "STYLEQUEUE_QUEUE": "stylequeue-nobody-home"}))
    assert other.job(queued.id).status() == "PENDING"  # sent by another client, waiting: found


def test_jobs_lists_recent_jobs_by_state(client, worker, inputs, stack_env) -> None:
    ok = client.submit(C, S, "s3://outputs/listed/", {"size": 32, "iterations": 2})
    ok.wait(timeout=120)
    listed = json.loads(cli("jobs", "--state", "SUCCESS", "--limit", "500", env=stack_env).stdout)
    assert ok.id in [j["job_id"] for j in listed] and {j["state"] for j in listed} == {"SUCCESS"}
    assert [j.job_id for j in client.jobs(limit=1)] == [client.jobs(limit=5)[0].job_id]


def test_submit_many_that_fails_half_way_says_exactly_which_jobs_were_sent(tmp_path) -> None:
    """Redis dies in the middle of a large submit_many: the error lists the jobs sent, not sent and
    unknown; after Redis comes back (every write was fsynced), exactly the sent ones are queued."""
    from producer.broker.queues import list_name
    from producer.client import Client
    from producer.core.settings import Settings
    from producer.devstack import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=True, options={"appendfsync": "always"}).start()
    client = Client(Settings(broker_url=server.url, queue="half"), publish_retry_s=1.0)
    message = {"content": C, "style": S, "output": "s3://outputs/half/"}

    def kill_once_jobs_arrive() -> None:
        wait_for(lambda: client.redis.llen(list_name("half", 5)) > 0, 120, "the first batch")
        os.kill(server.proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_jobs_arrive, daemon=True)
    killer.start()
    with pytest.raises(PartialSubmit) as err:
        client.submit_many([message] * 200_000, batch_size=1000)
    killer.join(10)
    e = err.value
    assert e.sent and e.not_sent and len(e.sent) + len(e.not_sent) + len(e.unknown) == 200_000
    server.stop()
    server.start()  # the same port and data
    queued = {json.loads(m)["headers"]["id"] for m in client.redis.lrange(list_name("half", 5), 0, -1)}
    assert set(e.sent) <= queued and not queued & set(e.not_sent)
    assert queued - set(e.sent) <= set(e.unknown)
    server.stop()


def test_every_key_has_a_ttl_or_a_cap_and_progress_does_not_copy_the_job(client, worker, inputs, redis_client) -> None:
    """After jobs of every kind in this session: every key stylequeue or Celery writes expires, except
    kombu's own queue structures, the capped event stream and the webhook counters."""
    seen_progress: list[dict] = []

    def on_progress(p: Any) -> None:
        if not seen_progress:
            seen_progress.append(json.loads(redis_client.get(f"celery-task-meta-{job.id}")))

    job = client.submit(C, S, "s3://outputs/keys/", {"size": 32, "iterations": 5})
    job.wait(timeout=120, on_progress=on_progress)
    assert seen_progress and "args" not in seen_progress[0] and "kwargs" not in seen_progress[0]
    assert len(json.dumps(seen_progress[0])) < 600

    kombu = ("_kombu.", "unacked", "stylequeue")  # bindings, unacked hash/index, the queue lists
    for key in redis_client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        if name.startswith(kombu) and not name.startswith("stylequeue:"):
            continue
        if redis_client.type(key) == b"list" and name.endswith(".reply.celery.pidbox"):
            continue  # Celery's control replies: kombu expires those queues itself
        if name == "stylequeue:events":  # capped instead: XADD MAXLEN ~ STYLEQUEUE_EVENTS_MAX
            assert redis_client.xlen(key) <= client.settings.events_max + 100
            continue
        if name == "stylequeue:webhooks":  # two counters, never more
            assert set(redis_client.hkeys(key)) <= {b"delivered", b"failed", b"attempts_failed"}
            continue
        assert redis_client.ttl(key) > 0, f"{name} has no TTL"
    per_job = sum(
        redis_client.memory_usage(k) or 0 for k in (f"celery-task-meta-{job.id}", f"stylequeue:done:{job.id}")
    )
    print(f"\nRedis memory of one finished job: {per_job} bytes (+ ~100 in the job index)")
    assert per_job < 4096


def test_the_result_backend_down_for_a_while_is_transient(stack_env, inputs, tmp_path) -> None:
    """A separate result backend stops mid-job and comes back: the job's SUCCESS is stored once it
    is back; the job is not failed."""
    from producer.devstack import RedisServer

    backend = RedisServer(tmp_path / "backend").start()
    try:
        with own_workers(stack_env, tmp_path, "backend", **FAST, STYLEQUEUE_RESULT_BACKEND=backend.url) as (
            client,
            workers,
        ):
            job = client.submit(
                C, S, "s3://outputs/backend/", {"size": 48, "iterations": 60, "init": "noise", "seed": 7}
            )
            wait_for(lambda: client.app.AsyncResult(job.id).state == "PROGRESS", 120, "the job to run")
            backend.stop()
            time.sleep(6)
            backend.start()
            wait_for(lambda: client.app.AsyncResult(job.id).state == "SUCCESS", 120, "SUCCESS after the outage")
            assert len(events(workers, "job_done", job.id)) == 1
    finally:
        backend.stop()


def test_worker_logs_are_json_with_the_job_id_on_every_line_of_a_job(stack_env, inputs, tmp_path) -> None:
    with own_workers(stack_env, tmp_path, "json") as (client, (w,)):
        job = client.submit(C, S, "s3://outputs/json/", {"size": 32, "iterations": 3})
        job.wait(timeout=120)
        bad = client.submit(inputs["not-an-image.jpg"], S, "s3://outputs/json/", {"size": 32})
        with pytest.raises(JobFailed):
            bad.wait(timeout=60)
        wait_for(lambda: w.events("job_failed", bad.id), 30, "the failure's log line")
    lines = w.log().splitlines()
    ready = next(
        i for i, line in enumerate(lines) if line.startswith("{") and json.loads(line)["message"].endswith(" ready.")
    )
    after = [line for line in lines[ready:] if line.strip() and not line.startswith("worker: Warm shutdown")]
    assert all(line.startswith("{") for line in after), after  # one JSON object per line
    records = w.lines()
    for job_id in (job.id, bad.id):  # from the first line the pool child writes for the job to its last
        child = [r for r in records if r["process"] != w.proc.pid]
        started = next(r["ts"] for r in child if r.get("job_id") == job_id)
        ended = max(r["ts"] for r in child if r.get("job_id") == job_id)
        in_child = [r for r in child if started <= r["ts"] <= ended]
        assert in_child and all(r.get("job_id") == job_id for r in in_child), [
            r for r in in_child if r.get("job_id") != job_id
        ]
