"""Live progress for 1,000 watchers: SSE streams on one API process beside polling once a second.

Starts a ``redis-server`` and one ``stylequeue api`` process (one uvicorn worker, started as
benchmarks/submit.py starts it). ``--jobs``
job records are made in Redis (nothing runs them: a writer stands in for the workers), and one
watcher per job:

1. **SSE** (ours): each watcher keeps ``GET /v1/jobs/{id}/events`` open; the API process reads the
   events stream with one blocking ``XREAD`` and hands each entry to its stream.
2. **Polling** (what a backend does without streams): each watcher asks ``GET /v1/jobs/{id}``
   every ``--poll-s`` seconds.

In each mode the writer announces progress for every job, ``--rounds`` times ``--interval-s``
apart, as a worker does (the ``job.progress`` stream entry and the Celery progress meta, each
carrying the time it was written). Printed per mode: the delay from the write to the watcher
seeing it (median, p99, max), the API process's CPU (cores busy) and memory (RSS), the Redis
commands per second the API process sent (the writer's own left out), and the ratios. The watchers
are raw asyncio connections in this process (light, so the API process is what is measured).

Usage::

    python benchmarks/streams.py --jobs 1000 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from submit import start_api

from producer.broker import keys
from producer.devstack import RedisServer, stop_group

TENANT = "bench"  # submit.start_api's tenant


def make_jobs(redis: Any, n: int) -> list[str]:
    ids = [f"{TENANT}.job{i:05d}" for i in range(n)]
    pipe = redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hset(keys.JOB.format(job_id), mapping={"tenant": TENANT, "created_at": time.time(), "state": "STARTED"})
    pipe.execute()
    return ids


def announce(redis: Any, ids: list[str], iteration: int, total: int) -> float:
    """One round of progress for every job, as a worker writes it; the time it was written."""
    at = time.time()
    pipe = redis.pipeline(transaction=False)
    for job_id in ids:
        progress = {"iteration": iteration, "total": total, "loss": 1.0, "level": 1, "levels": 1, "written_at": at}
        data = {"state": "PROGRESS", "progress": {"job_id": job_id, **progress}}
        fields = {"id": f"{job_id}.progress.{iteration}", "type": "job.progress", "job_id": job_id}
        pipe.xadd(keys.EVENTS, {**fields, "data": json.dumps(data)}, maxlen=100_000, approximate=True)
        meta = {"status": "PROGRESS", "result": {"job_id": job_id, **progress}, "task_id": job_id}
        pipe.set(keys.CELERY_META.format(job_id), json.dumps(meta), ex=3600)
    pipe.execute()
    return at


@dataclass(frozen=True)
class Endpoint:
    """The API process as the watchers reach it: its port and the tenant's key."""

    port: int
    key: str


async def request(api: Endpoint, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port, limit=2**20)
    head = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {api.key}\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def stream_watcher(api: Endpoint, job_id: str, seen: dict[int, list[float]], ready: list[int]) -> None:
    """Keeps the job's event stream open; the delay of each progress event, by iteration."""
    reader, writer = await request(api, f"/v1/jobs/{job_id}/events")
    status = await reader.readline()
    assert b" 200 " in status, status
    ready.append(1)
    try:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                data = json.loads(line[6:])
                if "written_at" in data:
                    seen.setdefault(data["iteration"], []).append(time.time() - data["written_at"])
    finally:
        writer.close()


async def poll_watcher(
    api: Endpoint, job_id: str, every_s: float, seen: dict[int, list[float]], stop: asyncio.Event
) -> None:
    """Asks for the job every ``every_s`` on one keep-alive connection; the delay of each new progress."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port, limit=2**20)
    last = -1
    await asyncio.sleep(every_s * (hash(job_id) % 1000) / 1000)  # spread like independent clients
    try:
        while not stop.is_set():
            head = f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {api.key}\r\n\r\n"
            writer.write(head.encode())
            await writer.drain()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length))
            progress = body.get("progress") or {}
            if progress.get("iteration", -1) > last and "written_at" in progress:
                last = progress["iteration"]
                seen.setdefault(last, []).append(time.time() - progress["written_at"])
            await asyncio.sleep(every_s)
    finally:
        writer.close()


class Usage:
    """CPU seconds and RSS of the API process, and Redis commands, over a window."""

    def __init__(self, pid: int, redis: Any) -> None:
        self.proc = psutil.Process(pid)
        self.redis = redis

    def __enter__(self) -> Usage:
        self.cpu0 = sum(self.proc.cpu_times()[:2])
        self.cmd0 = int(self.redis.info("stats")["total_commands_processed"])
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self.t0
        self.cores = (sum(self.proc.cpu_times()[:2]) - self.cpu0) / self.seconds
        self.rss_mb = self.proc.memory_info().rss / 2**20
        # the API's commands: all of them but the writer's own (2 per job per round) and INFO's
        commands = int(self.redis.info("stats")["total_commands_processed"]) - self.cmd0 - self.written - 2
        self.commands_per_s = commands / self.seconds

    written = 0  # commands the writer sent during the window (set by the caller)


def summary(seen: dict[int, list[float]], expected: int) -> dict[str, float]:
    delays = sorted(d for v in seen.values() for d in v)
    if not delays:
        return {"seen": 0.0}
    return {
        "seen": len(delays) / expected,
        "median_ms": 1000 * statistics.median(delays),
        "p99_ms": 1000 * delays[int(0.99 * (len(delays) - 1))],
        "max_ms": 1000 * delays[-1],
    }


async def settle(redis: Any, quiet_per_s: float = 20.0) -> None:
    """Until Redis is nearly idle (the streams opened have done their first reads)."""
    while True:
        before = int(redis.info("stats")["total_commands_processed"])
        await asyncio.sleep(0.5)
        if int(redis.info("stats")["total_commands_processed"]) - before < quiet_per_s / 2:
            return


async def run_streams(
    api: Endpoint, redis: Any, pid: int, ids: list[str], rounds: int, interval: float
) -> dict[str, Any]:
    seen: dict[int, list[float]] = {}
    ready: list[int] = []
    tasks = [asyncio.create_task(stream_watcher(api, j, seen, ready)) for j in ids]
    while len(ready) < len(ids):
        await asyncio.sleep(0.1)
        if any(t.done() for t in tasks):
            [t.result() for t in tasks if t.done()]  # raises what went wrong
    await settle(redis)  # every stream has read its replay
    idle = Usage(pid, redis)
    with idle:
        await asyncio.sleep(3.0)
    with Usage(pid, redis) as usage:
        for r in range(rounds):
            await asyncio.to_thread(announce, redis, ids, r + 1, rounds)
            await asyncio.sleep(interval)
        await asyncio.sleep(1.0)
        usage.written = 2 * len(ids) * rounds
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out = summary(seen, len(ids) * rounds)
    out.update(cores=usage.cores, rss_mb=usage.rss_mb, redis_commands_per_s=usage.commands_per_s)
    out.update(idle_cores=idle.cores, idle_redis_commands_per_s=idle.commands_per_s)
    return out


async def run_polling(
    api: Endpoint, redis: Any, pid: int, ids: list[str], rounds: int, interval: float, poll_s: float
) -> dict[str, Any]:
    seen: dict[int, list[float]] = {}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(poll_watcher(api, j, poll_s, seen, stop)) for j in ids]
    await asyncio.sleep(poll_s + 1.0)
    with Usage(pid, redis) as usage:
        for r in range(rounds):
            await asyncio.to_thread(announce, redis, ids, 1000 + r, 1000 + rounds)
            await asyncio.sleep(interval)
        await asyncio.sleep(poll_s + 1.0)
        usage.written = 2 * len(ids) * rounds
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    out = summary({k - 1000: v for k, v in seen.items() if k >= 1000}, len(ids) * rounds)
    out.update(cores=usage.cores, rss_mb=usage.rss_mb, redis_commands_per_s=usage.commands_per_s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="watchers, one job each")
    parser.add_argument("--rounds", type=int, default=10, help="progress announcements per job")
    parser.add_argument("--interval-s", type=float, default=1.0, help="between two rounds (s)")
    parser.add_argument("--poll-s", type=float, default=1.0, help="the polling watchers' period (s)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        import redis as redis_lib

        redis = redis_lib.Redis.from_url(server.url)
        # every watcher polls once a second, and every one may hold a stream
        process, base, key = start_api(
            server.url, tmp, rate_per_s=10 * args.jobs, STYLEQUEUE_API_MAX_STREAMS_PER_TENANT=str(args.jobs)
        )
        api = Endpoint(int(base.rsplit(":", 1)[1]), key)
        pid = process.pid
        try:
            ids = make_jobs(redis, args.jobs)
            rss0 = psutil.Process(pid).memory_info().rss / 2**20
            streams = asyncio.run(run_streams(api, redis, pid, ids, args.rounds, args.interval_s))
            polling = asyncio.run(run_polling(api, redis, pid, ids, args.rounds, args.interval_s, args.poll_s))
        finally:
            stop_group(process, 10)
            server.stop()
    print(f"{args.jobs} watchers, {args.rounds} progress rounds {args.interval_s:g} s apart, one API process")
    print(f"API process RSS before any watcher: {rss0:.0f} MiB")
    print(json.dumps({"sse": streams, f"polling_{args.poll_s:g}s": polling}, indent=2, default=float))
    print(
        f"polling / SSE: delay median {polling['median_ms'] / streams['median_ms']:.1f}x, "
        f"API CPU {polling['cores'] / streams['cores']:.1f}x, "
        f"the API's Redis commands {polling['redis_commands_per_s']:.0f}/s "
        f"against {streams['redis_commands_per_s']:.0f}/s"
    )


if __name__ == "__main__":
    main()
