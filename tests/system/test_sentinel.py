"""Redis high availability: three ``redis-server``s (a primary, two replicas) and three Sentinels
(``redis-server FILE --sentinel``), the session's SeaweedFS, workers started by ``stylequeue
worker``; a failover made by SIGKILLing the primary.

Every client of stylequeue's reaches Redis through the Sentinels: kombu's transport, Celery's
result backend, the project's own connections (leases, the end, events, the sweep), the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import cli, events, own_workers, start_api
from support.store import objects
from support.waiting import wait_for

from producer.core.errors import BrokerUnavailable
from producer.core.states import SUCCESS
from producer.devstack import SentinelSet, free_port

pytestmark = pytest.mark.slow

C, S = "s3://inputs/test/content.png", "s3://inputs/test/style.jpg"
FAST = {
    "STYLEQUEUE_LEASE_TTL_S": "3",
    "STYLEQUEUE_SWEEP_INTERVAL_S": "1",
    "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "5",
}


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[SentinelSet]:
    group = SentinelSet(tmp_path / "ha", down_after_ms=2000).start()
    yield group
    group.stop()


def ha_env(group: SentinelSet) -> dict[str, str]:
    return {"STYLEQUEUE_BROKER_URL": group.url, "STYLEQUEUE_REDIS_MASTER_NAME": group.name, **FAST}


def test_jobs_run_through_sentinel_from_every_kind_of_client(stack_env, inputs, ha, tmp_path: Path) -> None:
    """The Python client, the CLI and a plain Celery app configured as kombu documents it; the first
    Sentinel of the URL stopped does not matter."""
    from celery import Celery

    env = ha_env(ha)
    with own_workers(stack_env, tmp_path, "ha", **env) as (client, _):
        job = client.submit(C, S, "s3://outputs/ha/", {"size": 32, "iterations": 3})
        assert job.wait(timeout=120).iterations == 3
        # acknowledged only once a replica had it (STYLEQUEUE_REDIS_MIN_REPLICAS defaults to 1)
        assert client.settings.min_replicas == 1

        app = Celery(broker=ha.url, backend=ha.url)
        options = {"master_name": ha.name}
        app.conf.update(broker_transport_options=options, result_backend_transport_options=options)
        job_id = uuid.uuid4().hex
        message = {"content": C, "style": S, "output": "s3://outputs/ha/", "params": {"size": 32, "iterations": 2}}
        app.send_task(
            "stylequeue.transfer", args=[{**message, "job_id": job_id}], task_id=job_id, queue="stylequeue-ha"
        )
        assert app.AsyncResult(job_id).get(timeout=120)["iterations"] == 2

        queue = cli("queue", env={**stack_env, **env, "STYLEQUEUE_QUEUE": "stylequeue-ha"}, timeout=60)
        assert queue.returncode == 0 and json.loads(queue.stdout)["queue"] == "stylequeue-ha", queue.stderr

        ha.kill_sentinel(0)  # the first Sentinel of the URL is gone
        again = client.submit(C, S, "s3://outputs/ha/", {"size": 32, "iterations": 2})
        assert again.wait(timeout=120).iterations == 2
        status = cli("status", again.id, env={**stack_env, **env}, timeout=60)
        assert status.returncode == 0 and json.loads(status.stdout)["state"] == SUCCESS, status.stderr


def api_key(tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    """A tenant made with the real ``stylequeue keys create``: its key, and the keys file."""
    path = tmp_path / "keys.json"
    made = cli(
        "keys", "create", "--tenant", "acme", "--input", "inputs/test/", "--output", "outputs/failover/",
        "--rate", "500", "--burst", "1000", "--add-to", str(path), env=env, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return made.stdout.split("\n", 1)[0].strip(), str(path)


def test_a_failover_under_load_loses_duplicates_and_strands_nothing(stack_env, inputs, store, ha, tmp_path) -> None:
    """The primary SIGKILLed while jobs run and while more are being submitted, by the Python client
    and through the HTTP API: every job whose submit returned (or got 202) ends SUCCESS with exactly
    one output; a submit in the gap either returns or fails with an error the caller sees; the API's
    /readyz says 503 in the gap and 200 after."""
    import httpx

    env = ha_env(ha)
    key, keys_file = api_key(tmp_path, {**stack_env, **env})
    port = free_port()
    api_env = {**stack_env, **env, "STYLEQUEUE_QUEUE": "stylequeue-failover", "STYLEQUEUE_API_KEYS_FILE": keys_file}
    api = start_api({**api_env, "STYLEQUEUE_METRICS_PORT": "0"}, tmp_path / "api.log", port)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    try:
        with own_workers(stack_env, tmp_path, "failover", count=2, **env) as (client, workers):
            params = {"size": 32, "iterations": 30, "init": "noise"}
            acknowledged = [client.submit(C, S, "s3://outputs/failover/", {**params, "seed": n}).id for n in range(4)]
            wait_for(lambda: any(client.job(j).progress() for j in acknowledged), 120, "a job running")
            refused: list[str] = []
            unexpected: list[str] = []
            readiness: list[int] = []
            stop = threading.Event()

            def submit_through_the_gap() -> None:
                n = 100
                while not stop.is_set():
                    n += 1
                    try:
                        acknowledged.append(client.submit(C, S, "s3://outputs/failover/", {**params, "seed": n}).id)
                    except BrokerUnavailable as e:  # the caller sees it: this job is not acknowledged
                        refused.append(str(e))
                    body = {"content": C, "style": S, "output": "s3://outputs/failover/", "params": params}
                    r = http.post("/v1/jobs", json=body)
                    if r.status_code == 202:
                        acknowledged.append(r.json()["id"])
                    elif r.status_code == 503 and r.json()["error"]["type"] == "BrokerUnavailable":
                        refused.append(r.text)
                    else:  # checked below, in the test's own thread
                        unexpected.append(f"{r.status_code} {r.text}")
                    stop.wait(0.25)  # a steady stream, not as many jobs as a loaded CPU lets through

            def watch_readiness() -> None:  # its own thread: a submit may block through the whole gap
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
                    while not stop.is_set():
                        readiness.append(probe.get("/readyz").status_code)
                        stop.wait(0.2)

            submitter = threading.Thread(target=submit_through_the_gap, daemon=True)
            watcher = threading.Thread(target=watch_readiness, daemon=True)
            submitter.start()
            watcher.start()
            old = ha.leader_port()
            os.kill(ha.primary.proc.pid, signal.SIGKILL)
            wait_for(lambda: ha.leader_port() != old, 60, "a replica promoted")
            wait_for(lambda: len(acknowledged) >= 12 and readiness[-1:] == [200], 120, "submits after the failover")
            stop.set()
            submitter.join()
            watcher.join()

            assert not unexpected, unexpected
            results = {j: client.job(j).wait(timeout=300) for j in acknowledged}
            assert len(results) == len(acknowledged) and all(r.iterations == 30 for r in results.values())
            outputs = objects(store, "outputs", "failover/")
            pngs = {o for o in outputs if o.endswith(".png")}
            assert {f"failover/{j}.png" for j in results} <= pngs  # every acknowledged job: its output
            # a refused submit may still have reached the primary (it was not confirmed durable, so
            # it was not acknowledged): such a job may run too, once; nothing else wrote anything
            assert len(pngs) - len(results) <= len(refused)
            assert not [o for o in outputs if o.endswith(".npz")]  # no checkpoint left behind
            for job_id in results:  # none ran twice to completion (a run may adopt an output already written)
                done = events(workers, "job_done", job_id)
                assert len(done) <= 1 and done + events(workers, "output_adopted", job_id), job_id
            assert 503 in readiness and readiness[-1] == 200  # /readyz said so in the gap, and after
            for text in refused:
                assert "Redis" in text or "replica" in text, text
    finally:
        http.close()
        api.stop()
