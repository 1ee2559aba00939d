"""The lease, the job markers and checkpoints, against a real redis-server (and a fake store)."""

from __future__ import annotations

import numpy as np
import pytest

from producer.contract import Job, ObjectRef
from producer.errors import ObjectNotFound, StoreUnavailable
from worker.checkpoint import Checkpointer, fingerprint
from worker.guard import JobGuard, Lease


@pytest.fixture(scope="module")
def redis_client(tmp_path_factory):  # type: ignore[no-untyped-def]
    import redis

    from producer.services import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield redis.Redis.from_url(server.url)
    server.stop()


def test_lease_is_exclusive_renewed_and_released(redis_client) -> None:  # type: ignore[no-untyped-def]
    a, b = Lease(redis_client, "j1", ttl_s=0.6), Lease(redis_client, "j1", ttl_s=0.6)
    assert a.acquire() and not b.acquire() and b.holder() == a.owner
    a._stop.wait(1.5)  # longer than the TTL: the heartbeat keeps it alive
    assert not b.acquire() and not a.lost.is_set()
    b.release()  # not b's to release: nothing happens
    assert a.holder() == a.owner
    a.release()
    assert a.holder() is None and b.acquire()
    b.release()


def test_an_abandoned_lease_expires_and_is_taken_over(redis_client) -> None:  # type: ignore[no-untyped-def]
    dead = Lease(redis_client, "j2", ttl_s=0.3)
    assert dead.acquire()
    dead._stop.set()  # the process "dies": no more heartbeats
    dead._thread.join()  # type: ignore[union-attr]
    taker = Lease(redis_client, "j2", ttl_s=0.3)
    assert not taker.acquire()
    taker._stop.wait(0.5)
    assert taker.acquire()
    taker.release()


def test_a_lease_taken_from_under_a_run_is_reported_lost(redis_client) -> None:  # type: ignore[no-untyped-def]
    lease = Lease(redis_client, "j3", ttl_s=0.3)
    assert lease.acquire()
    redis_client.set(lease.key, "someone-else")
    assert lease.lost.wait(2)
    lease.release()
    assert redis_client.get(lease.key) == b"someone-else"  # never releases another's lease


def test_done_marker_and_runs_counter(redis_client) -> None:  # type: ignore[no-untyped-def]
    g = JobGuard(redis_client, "j4", expires_s=60)
    assert not g.is_done() and g.start_run() == 0
    assert g.start_run() == 1  # the first run never ended: its worker died
    g.end_run()
    assert g.start_run() == 0
    g.mark_done()
    assert g.is_done()


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.down = False

    def get(self, ref: ObjectRef) -> bytes:
        if ref.key not in self.objects:
            raise ObjectNotFound(ref.uri)
        return self.objects[ref.key]

    def put(self, ref: ObjectRef, data: bytes, content_type: str, metadata: dict) -> None:
        if self.down:
            raise StoreUnavailable(ref.uri)
        self.objects[ref.key] = data

    def delete(self, ref: ObjectRef) -> None:
        self.objects.pop(ref.key, None)


def test_checkpoint_save_load_and_policy() -> None:
    job = Job.from_message(
        {"content": "s3://inputs/c.png", "style": "s3://inputs/s.png", "output": "s3://outputs/r.png"}
    )
    store = FakeStore()
    fp = fingerprint(job, (1, 4, 4, 3))
    ck = Checkpointer(store, job.output, fp, every_iterations=5, every_s=1e9)  # type: ignore[arg-type]
    assert ck.load() is None
    x = np.arange(48, dtype=np.float64)
    ck.maybe_save(3, x)
    assert not store.objects  # not due yet
    ck.maybe_save(5, x)
    assert list(store.objects) == ["r.png.checkpoint.npz"]
    store.down = True
    ck.maybe_save(10, x + 1)  # best effort: a store outage only logs
    store.down = False
    iteration, saved = Checkpointer(store, job.output, fp, 5, 1e9).load()  # type: ignore[arg-type, misc]
    assert iteration == 5 and saved.dtype == np.float32 and np.array_equal(saved, x.astype(np.float32))
    other = fingerprint(job.__class__.from_message({**job.to_message(), "params": {"iterations": 7}}), (1, 4, 4, 3))
    assert Checkpointer(store, job.output, other, 5, 1e9).load() is None  # type: ignore[arg-type]
    ck.delete()
    assert not store.objects
