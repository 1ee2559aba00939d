"""Bulk enqueue: ``Client.submit_many`` (pipelined) vs. plain ``send_task`` in a loop, in one run.

Starts its own redis-server on a free port, sends N jobs each way (the same contract message,
validated in both cases), checks every message arrived (LLEN), and prints jobs per second and
the ratio.

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

from producer.app import make_celery
from producer.client import Client
from producer.contract import TASK_NAME, Job
from producer.devstack import RedisServer
from producer.queues import DEFAULT_PRIORITY, list_name
from producer.settings import Settings

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000, help="messages per pipeline flush")
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
        counts = [r.llen(list_name(q, DEFAULT_PRIORITY)) for q in ("plain", "bare", "many")]
        assert counts == [args.jobs] * 3, f"messages lost: {counts}"

    print(f"{args.jobs} jobs each way, redis-server on loopback, batch {args.batch}; all messages counted in Redis")
    print(f"send_task loop, app with result backend   {args.jobs / t_plain:7.0f} jobs/s  ({t_plain:.2f} s)")
    print(f"send_task loop, app without backend       {args.jobs / t_bare:7.0f} jobs/s  ({t_bare:.2f} s)")
    print(f"Client.submit_many (one transaction/batch) {args.jobs / t_many:7.0f} jobs/s  ({t_many:.2f} s)")
    print(f"speedup vs. the usual send_task loop      {t_plain / t_many:7.2f}x")
    print(f"speedup vs. send_task without backend     {t_bare / t_many:7.2f}x")


if __name__ == "__main__":
    main()
