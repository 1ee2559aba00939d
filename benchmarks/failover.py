"""Redis Sentinel failover, measured: what a submit pays to be durable, and how long a failover takes.

Starts a primary ``redis-server`` with two replicas and three Sentinels (``down-after`` 2 s),
SeaweedFS, and ``--workers`` real ``stylequeue worker`` processes, all reached through the
Sentinels. Then, side by side in one run:

1. **Submit latency**: ``--submits`` jobs submitted one by one (to a queue no worker reads) by a
   client that is acknowledged at once (``STYLEQUEUE_REDIS_MIN_REPLICAS=0``) and by one that waits
   for a replica (``=1``, the default with Sentinel): median and p99 per submit, and the ratio.
2. **Failover**: ``--jobs`` jobs run once without a failover, then queued again and the primary
   SIGKILLed once one runs; printed: the time to a replica's promotion, to the first job that
   ends after the kill, to the last, and the whole batch's time beside the one without.

Usage::

    python benchmarks/failover.py --workers 2 --jobs 8 --submits 300
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from producer.broker import keys
from producer.client import Client
from producer.core.settings import Settings
from producer.devstack import DEV_KEY, SeaweedS3, SentinelSet, stop_group


def images(s3: SeaweedS3) -> tuple[str, str]:
    """Two small random images in the store: the content and the style."""
    import io

    import numpy as np
    from PIL import Image

    uris = []
    for n, name in enumerate(("content.png", "style.png")):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(n).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        s3.client().put_object(Bucket="inputs", Key=f"bench/{name}", Body=buf.getvalue())
        uris.append(f"s3://inputs/bench/{name}")
    return uris[0], uris[1]


def submit_latency(env: dict[str, str], replicas: int, n: int, content: str, style: str) -> list[float]:
    """Seconds per submit, one job at a time, with ``STYLEQUEUE_REDIS_MIN_REPLICAS=replicas``."""
    settings = Settings.from_env(
        {**env, "STYLEQUEUE_QUEUE": "bench-latency", "STYLEQUEUE_REDIS_MIN_REPLICAS": str(replicas)}
    )
    client = Client(settings)
    took = []
    for _ in range(n):
        start = time.perf_counter()
        client.submit(content, style, "s3://outputs/bench-latency/", {"size": 32, "iterations": 1})
        took.append(time.perf_counter() - start)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--submits", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()

    import inputs

    from producer.core.digest import sha256_file

    base = Path(tempfile.mkdtemp(prefix="stylequeue-failover-"))
    s3 = SeaweedS3(base / "s3", buckets=["inputs", "outputs", "models"]).start()
    ha = SentinelSet(base / "ha", down_after_ms=2000).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        weights = inputs.weights()
        s3.client().upload_file(weights, "models", "vgg19.weights.h5")
        content, style = images(s3)
        env = {
            "STYLEQUEUE_BROKER_URL": ha.url,
            "STYLEQUEUE_REDIS_MASTER_NAME": ha.name,
            "STYLEQUEUE_S3_ENDPOINT_URL": s3.endpoint,
            "AWS_ACCESS_KEY_ID": DEV_KEY,
            "AWS_SECRET_ACCESS_KEY": DEV_KEY,
            "STYLEQUEUE_WEIGHTS": "s3://models/vgg19.weights.h5",
            "STYLEQUEUE_WEIGHTS_SHA256": sha256_file(weights),
            "STYLEQUEUE_WEIGHTS_CACHE_DIR": str(base / "weights"),
            "STYLEQUEUE_QUEUE": "bench-failover",
            "STYLEQUEUE_METRICS_PORT": "0",
            "STYLEQUEUE_LEASE_TTL_S": "6",
            "STYLEQUEUE_SWEEP_INTERVAL_S": "2",
        }
        fast = submit_latency(env, 0, args.submits, content, style)
        durable = submit_latency(env, 1, args.submits, content, style)
        print(f"submit, acknowledged at once:     median {statistics.median(fast) * 1000:.2f} ms, "
              f"p99 {statistics.quantiles(fast, n=100)[98] * 1000:.2f} ms")  # fmt: skip
        print(f"submit, after a replica has it:   median {statistics.median(durable) * 1000:.2f} ms, "
              f"p99 {statistics.quantiles(durable, n=100)[98] * 1000:.2f} ms")  # fmt: skip
        print(f"ratio (durable / at once):        {statistics.median(durable) / statistics.median(fast):.2f}x median")

        for i in range(args.workers):
            log = open(base / f"worker-{i}.log", "wb")  # noqa: SIM115 - lives with the process
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "producer.cli", "worker", "-c", "1", "-n", f"bench{i}@%h"],
                    env={**os.environ, **env, "STYLEQUEUE_HEALTH_DIR": str(base / f"health-{i}")},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

        client = Client(Settings.from_env(env))
        deadline = time.monotonic() + 300
        while len(client.app.control.ping(timeout=1.0) or []) < args.workers:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not start")
        params = {"size": 48, "iterations": args.iterations, "init": "noise"}
        started = time.monotonic()
        baseline = [
            client.submit(content, style, "s3://outputs/base/", {**params, "seed": n}) for n in range(args.jobs)
        ]
        for j in baseline:
            j.wait(timeout=600)
        without = time.monotonic() - started
        print(f"the same {args.jobs} jobs without a failover: all ended {without:.1f} s after their submit")
        jobs = [client.submit(content, style, "s3://outputs/bench/", {**params, "seed": n}) for n in range(args.jobs)]
        submitted = time.monotonic()
        while not any(j.progress() for j in jobs):
            time.sleep(0.05)  # polling for the first progress: nothing to block on
        old = ha.leader_port()
        killed_at, killed_wall = time.monotonic(), time.time()
        os.kill(ha.primary.proc.pid, signal.SIGKILL)
        promoted = None
        ended: dict[str, float] = {}
        direct: Any = None
        while len(ended) < len(jobs):
            now = time.monotonic()
            if promoted is None:
                try:
                    if ha.leader_port() != old:
                        promoted = now - killed_at
                except RuntimeError:
                    pass
            try:
                if direct is None:
                    from producer import broker

                    direct = broker.of(client.settings, 2.0)
                for j in jobs:
                    raw = direct.get(keys.DONE.format(j.id)) if j.id not in ended else None
                    if raw:
                        ended[j.id] = json.loads(raw)["at"] - killed_wall
            except Exception:
                pass  # mid-failover: ask again
            if now - killed_at > 600:
                raise SystemExit(f"only {len(ended)} of {len(jobs)} jobs ended 10 minutes after the kill")
            time.sleep(0.1)
        after = sorted(t for t in ended.values() if t > 0)
        print(f"failover: {len(jobs)} jobs, {args.workers} workers, primary SIGKILLed while one ran (down-after 2 s)")
        print(f"  replica promoted after          {promoted:.1f} s")
        if after:
            print(f"  first job ended after the kill  {after[0]:.1f} s")
        print(f"  all jobs ended                  {max(ended.values()):.1f} s after the kill")
        took = max(ended.values()) + (killed_at - submitted)
        print(f"  jobs with a failover took       {took:.1f} s from their submit (without: {without:.1f} s)")
        states = {client.job(j.id).status() for j in jobs}
        print(f"  final states: {sorted(states)}")
    finally:
        for p in procs:
            stop_group(p, 30)
        ha.stop()
        s3.stop()


if __name__ == "__main__":
    main()
