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


async def drain(
    hub: Hub, sub: Subscription, job_id: str, want: int, timeout_s: float = 30, before_live: Any = None
) -> list[str]:
    """A stream as the route runs it: the replay, then live entries not sent yet."""
    replay = await asyncio.to_thread(hub.history, "0-0", job_id, "acme")
    if before_live is not None:
        before_live()
    got = [e.stream_id for e in replay]
    sent = replay[-1].after if replay else (0, 0)
    while len(got) < want:
        entry = await asyncio.wait_for(sub.queue.get(), timeout_s)
        assert entry is not CLOSE
        if entry.after > sent:
            got.append(entry.stream_id)
            sent = entry.after
    return got


def test_entries_written_before_between_and_after_subscribe_and_replay_arrive_once(fresh_redis: Any) -> None:
    """The three places an entry can fall, made to happen in that order: before the subscription
    (replay only), between it and the replay (both: dropped once), after the replay (live only)."""
    hub = Hub(fresh_redis, block_ms=200)

    async def main() -> list[str]:
        write(fresh_redis, "acme.j1", 5)
        sub = await hub.subscribe("acme", "acme.j1")
        write(fresh_redis, "acme.j1", 5, start=5)
        got = await drain(hub, sub, "acme.j1", 15, before_live=lambda: write(fresh_redis, "acme.j1", 5, start=10))
        return got

    try:
        got = asyncio.run(main())
    finally:
        hub.close()
    assert got == [i.decode() for i, _ in fresh_redis.xrange(keys.EVENTS)]  # all 15, in order, once each


def test_streams_opened_while_events_are_written_miss_none_and_repeat_none(fresh_redis: Any) -> None:
    hub = Hub(fresh_redis, block_ms=200)
    total = 400

    async def main() -> list[list[str]]:
        writer = threading.Thread(target=write, args=(fresh_redis, "acme.j1", total))
        writer.start()
        streams = []
        for _ in range(8):  # subscribed at different points of the writing (or after it)
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
        batch = {"id": "b_1.completed.1", "type": "batch.completed", "job_id": "b_1", "data": "{}"}
        fresh_redis.xadd(keys.EVENTS, {**batch, "tenant": "acme"})  # a batch's id does not name its tenant
        fresh_redis.xadd(keys.EVENTS, {**batch, "job_id": "b_2", "tenant": "globex-x"})
        got = [(await asyncio.wait_for(acme.queue.get(), 10)).job_id for _ in range(6)]
        await asyncio.sleep(0.5)
        return got, other.queue.qsize()

    try:
        got, others = asyncio.run(main())
    finally:
        hub.close()
    assert got == ["acme.a"] * 3 + ["acme.b"] * 2 + ["b_1"] and others == 0


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


def _event(redis: Any, kind: str) -> str:
    return str(redis.xadd(keys.EVENTS, {"id": kind, "type": kind, "job_id": "acme.j", "data": "{}"}).decode())


def _opening(redis: Any, state: str, after: str | None = None, **record: str) -> Any:
    """A job stream's start (the route's own function) for job ``acme.j``, its state ``state``."""
    import time
    from types import SimpleNamespace

    from producer.api.routes.events import opening

    redis.hset(keys.JOB.format("acme.j"), mapping={"tenant": "acme", "created_at": str(time.time() - 5), **record})
    services = SimpleNamespace(redis=redis, views=SimpleNamespace(job=lambda job_id: {"state": state}), hub=Hub(redis))
    return opening(services, SimpleNamespace(tenant="acme"), "acme.j", after)  # type: ignore[arg-type]


def test_a_job_ended_then_sent_again_streams_its_new_run_not_its_old_end(fresh_redis: Any) -> None:
    ids = [_event(fresh_redis, k) for k in ("job.queued", "job.started", "job.completed", "job.queued", "job.started")]
    running = _opening(fresh_redis, "STARTED")  # reopened (a dead letter sent again): runs again
    assert not running.ends and [e.stream_id for e in running.replay] == [ids[0], ids[1], ids[3], ids[4]]
    second_end = _event(fresh_redis, "job.completed")
    ended = _opening(fresh_redis, "SUCCESS")
    assert ended.ends and [e.stream_id for e in ended.replay] == [second_end]  # its completed only
    resumed = _opening(fresh_redis, "SUCCESS", after=ids[4])
    assert resumed.ends and [e.stream_id for e in resumed.replay] == [second_end]
    assert _opening(fresh_redis, "SUCCESS", after=second_end, completed_event=second_end).no_content


def test_an_end_the_stream_no_longer_has_is_sent_under_the_id_the_end_recorded(fresh_redis: Any) -> None:
    started = [_event(fresh_redis, k) for k in ("job.queued", "job.started")][-1]
    ms, _ = started.split("-")
    end = f"{int(ms) + 1000}-0"  # trimmed from the stream since (MAXLEN): only the record has it
    fresh = _opening(fresh_redis, "SUCCESS", completed_event=end)
    assert fresh.ends and [(e.stream_id, e.type) for e in fresh.replay] == [(end, "job.completed")]
    missed = _opening(fresh_redis, "SUCCESS", after=started, completed_event=end)  # a client that missed it
    assert [(e.stream_id, e.type) for e in missed.replay] == [(end, "job.completed")] and not missed.no_content
    assert _opening(fresh_redis, "SUCCESS", after=end, completed_event=end).no_content


def test_one_read_of_an_end_serves_every_stream_that_sends_it(fresh_redis: Any) -> None:
    """Hub.once: streams sending the same end share one read; a failed read is read again."""
    hub = Hub(fresh_redis, block_ms=200)
    calls: list[str] = []

    def read(job_id: str) -> dict[str, str]:
        calls.append(job_id)
        if job_id == "acme.broken":
            raise ConnectionError("Redis went away")
        return {"id": job_id}

    async def main() -> tuple[list[Any], list[str]]:
        await hub.subscribe("acme")  # the hub's threads exist from the first stream on
        shared = await asyncio.gather(*(hub.once("1-0", read, "acme.j") for _ in range(20)))
        failures = []
        for _ in range(2):
            try:
                await hub.once("2-0", read, "acme.broken")
            except ConnectionError as e:
                failures.append(str(e))
        return shared, failures

    try:
        shared, failures = asyncio.run(main())
    finally:
        hub.close()
    assert shared == [{"id": "acme.j"}] * 20 and calls.count("acme.j") == 1
    assert failures == ["Redis went away"] * 2 and calls.count("acme.broken") == 2
