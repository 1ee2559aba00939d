"""Bulk enqueue side by side: ``send_task`` loop, ``Client.submit_many``, ``POST /v1/batches``.

Starts its own redis-server on a free port and a real ``stylequeue api`` server (uvicorn, one
process), sends N jobs each way (the same contract message, validated in every case), checks
every message arrived (LLEN), and prints jobs per second and the ratios. The batch figure is end
to end: the HTTP client encoding the JSON, the request, validation, the Redis transactions and
the response.

Usage::

    python benchmarks/submit.py --jobs 5000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from typing import Any

import redis

from producer.broker.celery_app import make_celery
from producer.broker.queues import DEFAULT_PRIORITY, list_name
from producer.client import Client
from producer.core.contract import TASK_NAME, Job
from producer.core.settings import Settings
from producer.devstack import RedisServer

MESSAGE = {
    "content": "s3://photos/in/tubingen.jpg",
    "style": [{"uri": "s3://styles/starry.jpg", "weight": 0.7}, {"uri": "s3://styles/scream.jpg", "weight": 0.3}],
    "output": "s3://results/stylized/",
    "params": {"size": 512, "iterations": 200},
}


def plain_send_task(app: Any, n: int, queue: str) -> float:
    """What a caller does without submit_many: validate, then one send_task (one round trip) each."""
    start = time.perf_counter()
    for _ in range(n):
        job = Job.from_message({**MESSAGE, "job_id": uuid.uuid4().hex})
        app.send_task(TASK_NAME, args=[job.to_message()], task_id=job.job_id, queue=queue, priority=DEFAULT_PRIORITY)
    return time.perf_counter() - start


def pipelined(client: Client, n: int, batch: int) -> float:
    start = time.perf_counter()
    client.submit_many(({**MESSAGE, "job_id": uuid.uuid4().hex} for _ in range(n)), batch_size=batch)
    return time.perf_counter() - start


def http_batches(base: str, key: str, n: int, per_request: int) -> float:
    """POST /v1/batches, ``per_request`` jobs a request (the API's limit is 10,000)."""
    import httpx

    jobs = [{**MESSAGE, "output": "s3://results/bench/"} for _ in range(n)]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        start = time.perf_counter()
        for i in range(0, n, per_request):
            r = c.post("/v1/batches", json={"jobs": jobs[i : i + per_request]})
            assert r.status_code == 202, r.text
        return time.perf_counter() - start


def start_api(redis_url: str, directory: str, rate_per_s: float = 1000, **env_extra: str) -> tuple[Any, str, str]:
    """A real `stylequeue api` on a free port, with one tenant; (process, base URL, key).

    The tenant `bench` may send ``rate_per_s`` requests a second; ``env_extra`` is added to the
    process's environment. benchmarks/streams.py starts its API with it too.
    """
    import json
    import os
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from producer.devstack import free_port
    from producer.tenants import hash_key, new_key

    key = new_key()
    entry = {
        "tenant": "bench",
        "key_sha256": hash_key(key),
        "input": ["photos", "styles"],
        "output": ["results/bench/"],
        "rate_per_s": rate_per_s,
        "burst": max(1000, int(rate_per_s)),
        "max_in_flight": 10**7,
    }
    keys_file = Path(directory) / "keys.json"
    keys_file.write_text(json.dumps({"keys": [entry]}))
    port = free_port()
    env = {
        **os.environ,
        "STYLEQUEUE_BROKER_URL": redis_url,
        "STYLEQUEUE_API_KEYS_FILE": str(keys_file),
        "STYLEQUEUE_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # presigning only: never contacted here
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        **env_extra,
    }
    argv = [sys.executable, "-m", "producer.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([*argv, "--log-level", "warning"], env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1).close()
            return proc, base, key
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the API did not start") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000, help="messages per pipeline flush")
    parser.add_argument("--per-request", type=int, default=5000, help="jobs per POST /v1/batches")
    args = parser.parse_args()

    with RedisServer(tempfile.mkdtemp()) as server:
        server.start()
        r = redis.Redis.from_url(server.url)
        settings = Settings(broker_url=server.url)
        plain = make_celery(settings)  # the usual producer app: broker and result backend
        bare = make_celery(settings, result_backend=False)  # no backend: no SUBSCRIBE per job
        many = Client(Settings(broker_url=server.url, queue="many"))
        plain_send_task(plain, 50, "plain")  # warm up connections and code paths
        plain_send_task(bare, 50, "bare")
        pipelined(many, 50, args.batch)
        r.flushdb()

        t_plain = plain_send_task(plain, args.jobs, "plain")
        t_bare = plain_send_task(bare, args.jobs, "bare")
        t_many = pipelined(many, args.jobs, args.batch)
        from producer.devstack import stop_group

        api, base, key = start_api(server.url, tempfile.mkdtemp())
        try:
            http_batches(base, key, 50, 50)  # warm up
            r.delete(list_name("stylequeue", DEFAULT_PRIORITY))
            t_http = http_batches(base, key, args.jobs, args.per_request)
        finally:
            stop_group(api)
        counts = [r.llen(list_name(q, DEFAULT_PRIORITY)) for q in ("plain", "bare", "many", "stylequeue")]
        assert counts == [args.jobs] * 4, f"messages lost: {counts}"

    print(f"{args.jobs} jobs each way, redis-server on loopback, batch {args.batch}; all messages counted in Redis")
    print(f"send_task loop, app with result backend   {args.jobs / t_plain:7.0f} jobs/s  ({t_plain:.2f} s)")
    print(f"send_task loop, app without backend       {args.jobs / t_bare:7.0f} jobs/s  ({t_bare:.2f} s)")
    print(f"Client.submit_many (one transaction/batch) {args.jobs / t_many:7.0f} jobs/s  ({t_many:.2f} s)")
    print(
        f"HTTP POST /v1/batches, {args.per_request}/request   {args.jobs / t_http:7.0f} jobs/s  ({t_http:.2f} s)"
        "  end to end, one uvicorn process"
    )
    print(f"speedup vs. the usual send_task loop      {t_plain / t_many:7.2f}x")
    print(f"speedup vs. send_task without backend     {t_bare / t_many:7.2f}x")
    print(f"HTTP batches vs. the usual send_task loop {t_plain / t_http:7.2f}x")


if __name__ == "__main__":
    main()
