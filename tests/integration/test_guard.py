"""The lease, the fences and the done marker against a real redis-server; checkpoint fencing against
a real S3 server (its conditional writes)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from producer.broker import ending
from producer.broker.events import Announcer
from producer.core.contract import Job, ObjectRef
from producer.core.settings import Settings
from producer.core.states import FAILURE, SUCCESS, FinalState
from worker.nst.engine import State
from worker.runtime.checkpoint import Checkpointer, fingerprint
from worker.runtime.guard import JobRecord, Lease, Superseded, split


def test_lease_is_exclusive_renewed_and_released(fresh_redis: Any) -> None:
    a, b = Lease(fresh_redis, "j1", "tag-a", ttl_s=0.6), Lease(fresh_redis, "j1", "tag-b", ttl_s=0.6)
    assert a.acquire() and not b.acquire()
    assert b.holder() == (a.owner, "tag-a")  # the holder and the message backing it
    time.sleep(1.5)  # longer than the TTL: the heartbeat keeps it alive
    assert not b.acquire() and not a.lost.is_set()
    b.release()  # not b's to release: nothing happens
    assert a.holder() is not None
    a.release()
    assert a.holder() is None and b.acquire()
    b.release()


def test_a_lease_taken_from_under_a_run_is_reported_lost_and_not_retaken(fresh_redis: Any) -> None:
    lease = Lease(fresh_redis, "j3", "t1", ttl_s=0.3)
    assert lease.acquire()
    fresh_redis.set(lease.key, "other-host:1:abc|t2")
    assert lease.lost.wait(2)
    with pytest.raises(Superseded) as err:
        lease.ensure()
    assert err.value.holder_tag == "t2" and not err.value.ended
    lease.release()
    assert split(fresh_redis.get(lease.key)) == ("other-host:1:abc", "t2")  # never releases another's lease


def test_a_lost_lease_nobody_holds_is_retaken(fresh_redis: Any) -> None:
    lease = Lease(fresh_redis, "j4", "t1", ttl_s=0.3)
    assert lease.acquire()
    fresh_redis.delete(lease.key)  # evicted, or expired while the VM was frozen
    assert lease.lost.wait(2)
    lease.ensure()  # nobody holds it: re-taken, the run goes on
    assert not lease.lost.is_set() and lease.holder() == (lease.owner, "t1")
    time.sleep(0.6)
    assert lease.holder() is not None  # and renewed again
    lease.release()


def test_a_stale_run_cannot_retake_the_lease_of_an_ended_job(fresh_redis: Any) -> None:
    stale = Lease(fresh_redis, "j5", "t1", ttl_s=0.3)
    assert stale.acquire()
    fresh_redis.delete(stale.key)
    ending.end(fresh_redis, Announcer(fresh_redis, Settings()), "j5", FinalState(SUCCESS, 1.0))  # another run did
    with pytest.raises(Superseded) as err:
        stale.ensure()
    assert err.value.ended
    stale.release()
    with pytest.raises(Superseded):
        Lease(fresh_redis, "j5", "t2", ttl_s=1).acquire()


def test_the_end_and_the_runs_set_are_fenced(fresh_redis: Any) -> None:
    announcer = Announcer(fresh_redis, Settings())
    record = JobRecord(fresh_redis, "j6", 60)
    first = Lease(fresh_redis, "j6", "t1", ttl_s=5)
    assert first.acquire()
    assert record.start_run(first) == 0
    first._stop.set()  # this run "freezes": no heartbeat, and its lease goes to another run
    fresh_redis.delete(first.key)
    second = Lease(fresh_redis, "j6", "t2", ttl_s=5)
    assert second.acquire()
    assert record.start_run(second) == 1  # one earlier run never ended
    stale = ending.end(fresh_redis, announcer, "j6", FinalState(FAILURE, 1.0, error_type="X"), lease=first.value)
    assert stale.held and not stale.applied  # the stale run writes nothing
    assert record.final() is None and fresh_redis.scard(record.runs_key) == 2
    record.leave(first)  # it steps aside: no crash
    assert fresh_redis.scard(record.runs_key) == 1
    assert ending.end(fresh_redis, announcer, "j6", FinalState(SUCCESS, 2.0), lease=second.value).applied
    assert record.final().state == SUCCESS
    assert not fresh_redis.exists(record.runs_key) and not fresh_redis.exists(second.key)
    late = ending.end(fresh_redis, announcer, "j6", FinalState(FAILURE, 3.0))
    assert not late.applied and late.final.state == SUCCESS  # a final state stays final
    first.release()
    second.release()


def test_a_run_that_steps_aside_is_not_counted_as_a_crash(fresh_redis: Any) -> None:
    record = JobRecord(fresh_redis, "j7", 60)
    for n in range(3):  # three runs in turn, each superseded or handed back, none crashed
        lease = Lease(fresh_redis, "j7", f"t{n}", ttl_s=5)
        assert lease.acquire()
        assert record.start_run(lease) == 0
        record.leave(lease)
        lease.release()
    crashed = Lease(fresh_redis, "j7", "tc", ttl_s=5)
    assert crashed.acquire() and record.start_run(crashed) == 0
    crashed._stop.set()
    fresh_redis.delete(crashed.key)  # it died holding the job: it never leaves
    last = Lease(fresh_redis, "j7", "tl", ttl_s=5)
    assert last.acquire() and record.start_run(last) == 1
    last.release()


def test_the_heartbeat_never_outlives_its_run_even_when_redis_hangs(unit_redis_server: Any, fresh_redis: Any) -> None:
    """Redis frozen (SIGSTOP) while a run ends: release() returns within about a third of the TTL
    and the heartbeat thread is gone."""
    lease = Lease(fresh_redis, "j7", "t1", ttl_s=1.5)
    assert lease.acquire()
    pid = unit_redis_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.6)  # the heartbeat is now blocked in a renewal
        started = time.monotonic()
        done = threading.Event()
        threading.Thread(target=lambda: (lease.release(), done.set()), daemon=True).start()
        assert done.wait(20), "release() hung"
        assert time.monotonic() - started < 12  # bounded by the short heartbeat socket and the main socket timeouts
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not any(t.name == "stylequeue-lease-j7" for t in threading.enumerate())


@pytest.mark.slow
def test_checkpoints_are_fenced_by_conditional_writes(store: Any, fresh_redis: Any) -> None:
    """A stale run cannot overwrite the checkpoint of the run that took its job over; the owner
    writes over what a stale run slipped in."""
    job = Job.from_message(
        {"content": "s3://inputs/c.png", "style": "s3://inputs/s.png", "output": "s3://outputs/ck/r.png"}
    )
    fp = fingerprint(job, (4, 4))
    x = np.arange(48, dtype=np.float32).reshape(1, 4, 4, 3)
    store.delete(ObjectRef("outputs", "ck/r.png.checkpoint.npz"))

    stale_lease = Lease(fresh_redis, "ck", "t1", ttl_s=30)
    assert stale_lease.acquire()
    stale = Checkpointer(store, job.output, "ck", fp, every_iterations=5, every_s=1e9, lease=stale_lease)
    assert stale.load() is None
    stale.maybe_save(State(0, 5, x))
    stale_lease._stop.set()
    fresh_redis.delete(stale_lease.key)  # the stale run froze; its lease expired

    owner_lease = Lease(fresh_redis, "ck", "t2", ttl_s=30)
    assert owner_lease.acquire()
    owner = Checkpointer(store, job.output, "ck", fp, 5, 1e9, owner_lease)
    assert owner.load().iteration == 5
    owner.maybe_save(State(0, 10, x + 1))
    with pytest.raises(Superseded):  # the stale run wakes up: its save is refused
        stale.maybe_save(State(0, 10, x + 99))
    assert Checkpointer(store, job.output, "ck", fp, 5, 1e9).load().iteration == 10

    # A stale write slipped in between the owner's saves (its ETag moved): the owner writes over it.
    store.put(owner.ref, b"junk", "application/x-npz", {"job-id": "ck"})
    owner.maybe_save(State(1, 15, x + 2))
    saved = Checkpointer(store, job.output, "ck", fp, 5, 1e9).load()
    assert (saved.level, saved.iteration) == (1, 15) and np.array_equal(saved.x, x + 2)
    owner.delete()
    assert store.stat(owner.ref) is None
    owner_lease.release()
    stale_lease.release()


@pytest.mark.slow
def test_a_foreign_object_at_the_checkpoint_key_is_left_alone(store: Any) -> None:
    job = Job.from_message(
        {"content": "s3://inputs/c.png", "style": "s3://inputs/s.png", "output": "s3://outputs/ck2/r.png"}
    )
    ref = ObjectRef("outputs", "ck2/r.png.checkpoint.npz")
    store.put(ref, b"someone's file", "application/octet-stream")
    ck = Checkpointer(store, job.output, "ck2", fingerprint(job), 1, 1e9)
    assert ck.load() is None and ck.foreign
    ck.maybe_save(State(0, 1, np.zeros((1, 4, 4, 3), np.float32)))
    ck.delete()
    assert store.get(ref) == b"someone's file"


def test_lease_values_name_the_owner_and_the_message() -> None:
    assert split(b"host:1:ab|tag") == ("host:1:ab", "tag")
    assert split("host:1:ab|-") == ("host:1:ab", None)
    assert split(None) is None


def test_taking_the_lease_ends_the_workers_claim_on_the_message(fresh_redis: Any) -> None:
    """Once the run holds the lease, the claim must not outlive it: a dead run's job is recovered by
    the lease's TTL, not the claim's."""
    from worker.runtime import recovery

    recovery.claim(fresh_redis, "tag-1", ttl_s=300)
    lease = Lease(fresh_redis, "j8", "tag-1", ttl_s=5)
    assert lease.acquire()
    assert not fresh_redis.exists("stylequeue:claim:tag-1")
    lease.release()
