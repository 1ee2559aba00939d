"""The API's one reader of ``stylequeue:events`` (producer.api.live.Hub) against a real redis-server:
streams opened while events are being written miss none and get none twice; the reader outlives a
Redis restart; a stream that does not read is closed, not buffered without bound."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from producer import broker
from producer.api.live import BACKLOG, CLOSE, Hub, Subscription
from producer.broker import keys
from producer.devstack import RedisServer

pytestmark = pytest.mark.slow


def write(redis: Any, job_id: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        redis.xadd(
            keys.EVENTS, {"id": f"{job_id}.progress.{i}", "type": "job.progress", "job_id": job_id, "data": "{}"}
        )


async def drain(hub: Hub, sub: Subscription, job_id: str, want: int, timeout_s: float = 30) -> list[str]:
    """A stream as the route runs it: the replay, then live entries not sent yet."""
    replay = await asyncio.to_thread(hub.history, "0-0", job_id, "acme")
    got = [e.stream_id for e in replay]
    sent = replay[-1].after if replay else (0, 0)
    while len(got) < want:
        entry = await asyncio.wait_for(sub.queue.get(), timeout_s)
        assert entry is not CLOSE
        if entry.after > sent:
            got.append(entry.stream_id)
            sent = entry.after
    return got


def test_streams_opened_while_events_are_written_miss_none_and_repeat_none(fresh_redis: Any) -> None:
    hub = Hub(fresh_redis, block_ms=200)
    total = 400

    async def main() -> list[list[str]]:
        writer = threading.Thread(target=write, args=(fresh_redis, "acme.j1", total))
        writer.start()
        streams = []
        for _ in range(8):  # subscribed at different points of the writing
            sub = await hub.subscribe("acme", "acme.j1")
            streams.append(asyncio.create_task(drain(hub, sub, "acme.j1", total)))
            await asyncio.sleep(0.01)
        writer.join()
        return await asyncio.gather(*streams)

    try:
        results = asyncio.run(main())
    finally:
        hub.close()
    every = [i.decode() for i, _ in fresh_redis.xrange(keys.EVENTS)]
    for got in results:
        assert got == every  # all of them, in order, once each


def test_a_tenants_stream_sees_its_jobs_only(fresh_redis: Any) -> None:
    hub = Hub(fresh_redis, block_ms=200)

    async def main() -> tuple[list[str], int]:
        acme = await hub.subscribe("acme")
        other = await hub.subscribe("globex")
        write(fresh_redis, "acme.a", 3)
        write(fresh_redis, "globex-not-a-tenant-prefix", 2)  # no dot: no tenant
        write(fresh_redis, "acme.b", 2)
        got = [(await asyncio.wait_for(acme.queue.get(), 10)).job_id for _ in range(5)]
        await asyncio.sleep(0.5)
        return got, other.queue.qsize()

    try:
        got, others = asyncio.run(main())
    finally:
        hub.close()
    assert got == ["acme.a"] * 3 + ["acme.b"] * 2 and others == 0


def test_the_reader_outlives_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", appendonly=True).start()
    port = server.port
    redis = broker.connect(server.url, 3.0)
    hub = Hub(broker.connect(server.url, 3.0), block_ms=500)

    async def main() -> list[str]:
        sub = await hub.subscribe("acme", "acme.j")
        write(redis, "acme.j", 2)
        got = [(await asyncio.wait_for(sub.queue.get(), 10)).stream_id for _ in range(2)]
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.5)  # the reader fails and backs off meanwhile
        restarted = RedisServer(tmp_path / "r", port=port, appendonly=True)
        await asyncio.to_thread(restarted.start)
        holder.append(restarted)
        write(redis, "acme.j", 2, start=2)
        got += [(await asyncio.wait_for(sub.queue.get(), 20)).stream_id for _ in range(2)]
        return got

    holder: list[RedisServer] = []
    try:
        got = asyncio.run(main())
    finally:
        hub.close()
        for s in holder:
            s.stop()
    assert hub.read_errors >= 1  # it did see the outage
    assert len(got) == 4 and got == sorted(got, key=lambda i: tuple(map(int, i.split("-"))))


def test_a_stream_that_does_not_read_is_closed_not_buffered(fresh_redis: Any) -> None:
    hub = Hub(fresh_redis, block_ms=200)

    async def main() -> Subscription:
        sub = await hub.subscribe("acme", "acme.slow")
        write(fresh_redis, "acme.slow", BACKLOG + 50)
        for _ in range(200):
            if sub.queue.qsize() > BACKLOG:
                break
            await asyncio.sleep(0.05)
        return sub

    try:
        sub = asyncio.run(main())
    finally:
        hub.close()
    assert sub.queue.qsize() == BACKLOG + 1  # what it had, then CLOSE; nothing more was kept
    items = [sub.queue.get_nowait() for _ in range(BACKLOG + 1)]
    assert items[-1] is CLOSE and CLOSE not in items[:-1]
