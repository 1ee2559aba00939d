"""Exactly one run finishes each job, and a job's end is final: the lease, the fences, the done marker.

All state is in the broker's Redis (:mod:`producer.broker.keys`), changed only by small Lua
compare-and-set scripts, so it holds across workers and machines:

* **Lease** ``stylequeue:lease:<job>`` = ``<owner>|<delivery tag>``: held by the run in progress,
  renewed by a heartbeat thread every ``ttl/3``. The delivery tag says which message backs the
  run (the sweep in :mod:`worker.runtime.recovery` keeps that message from being redelivered while the
  lease lives, and hands it to another worker once the lease has expired).
* **Lease lost is not job lost.** A run whose lease vanished (evicted key, a frozen VM, a stuck
  renewal) re-takes it if nobody holds it and goes on; if another live run holds it, this run is
  :class:`Superseded`: it stops without publishing, and the other one finishes.
* **Fences.** A run checks it still holds the lease right before each write that matters (a
  checkpoint, the upload) and ends the job through :func:`producer.broker.ending.end`, whose
  script checks the lease in the same step; a stale run never overwrites a newer run's end (the
  object store's conditional writes fence its objects, see :mod:`worker.runtime.jobs`).
* **Done marker** ``stylequeue:done:<job>``: the job's final state, written once by
  :mod:`producer.broker.ending`. Later deliveries republish it and never run again.
* **Runs set** ``stylequeue:runs:<job>``: each run adds itself when it starts; a run that stops
  without ending the job (it stepped aside for another run, or handed the job back) removes
  itself; the job's end deletes the set. Runs left in it killed their worker (OOM, segfault); at
  ``STYLEQUEUE_MAX_WORKER_LOSSES`` of them the job fails instead of killing worker after worker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from producer import broker
from producer.broker import keys, scripts
from producer.core.retrying import patiently
from producer.core.states import FinalState

log = logging.getLogger(__name__)

# Take the lease if it is free and the job has not ended, or keep it if it is already ours (a
# retried call); the worker's claim on the message ends there (the lease speaks for it now).
# KEYS: lease, done marker, claim. Returns 1 (held), 0 (another run holds it), -1 (ended).
_ACQUIRE = scripts.load("worker.runtime", "lease_acquire")
_RENEW = scripts.load("worker.runtime", "lease_renew")
_RELEASE = scripts.load("worker.runtime", "lease_release")
_START_RUN = scripts.load("worker.runtime", "lease_start_run")
_LEAVE = scripts.load("worker.runtime", "lease_leave")


class Superseded(Exception):
    """Another run holds this job's lease, or ended the job: this run stops and publishes nothing.

    Attributes:
        job_id: The job.
        holder_tag: Delivery tag of the message backing the run that holds it (``None`` if unknown).
        ended: The job has ended (another run recorded its final state).
    """

    def __init__(self, job_id: str, holder_tag: str | None, ended: bool = False) -> None:
        self.job_id = job_id
        self.holder_tag = holder_tag
        self.ended = ended
        super().__init__(job_id, holder_tag, ended)

    def __str__(self) -> str:
        return f"job {self.job_id} {'has ended' if self.ended else 'is held by another live run'}"


def split(value: Any) -> tuple[str, str | None] | None:
    """A lease value as ``(owner, delivery tag)``, or ``None`` for no lease."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    owner, _, tag = text.partition("|")
    return owner, (tag if tag and tag != "-" else None)


class Lease:
    """A Redis lease on one job, renewed in the background while held.

    Use as a context manager after :meth:`acquire`: leaving it stops the heartbeat and releases
    the lease in every exit path, even when Redis errors (the heartbeat's Redis connection has a
    short timeout, so the thread always ends within about a third of the TTL).

    Args:
        redis: Client of the broker's Redis.
        job_id: The job.
        tag: Delivery tag of the message this run was started by (``None`` when unknown).
        ttl_s: Seconds the lease outlives its last renewal.
        patience_s: How long :meth:`ensure` waits out a Redis outage before it gives up.
    """

    def __init__(self, redis: Any, job_id: str, tag: str | None, ttl_s: float, patience_s: float = 0.0) -> None:
        self.redis = redis
        self.patience_s = patience_s
        self.job_id = job_id
        self.key = keys.LEASE.format(job_id)
        self.done_key = keys.DONE.format(job_id)
        self.claim_key = keys.CLAIM.format(tag or "-")
        self.ttl_ms = int(ttl_s * 1000)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tag = tag
        self.value = f"{self.owner}|{tag or '-'}"
        #: Set by the heartbeat when a renewal found the lease gone or someone else's.
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The heartbeat's own connection: its short timeout bounds how long release() waits for it.
        self._beat_redis = broker.with_timeout(redis, min(5.0, max(0.2, ttl_s / 3)))

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; start the heartbeat.

        Raises:
            Superseded: the job has ended meanwhile (with ``ended`` set).
        """
        got = int(_ACQUIRE(self.redis, 3, self.key, self.done_key, self.claim_key, self.value, self.ttl_ms))
        if got < 0:
            raise Superseded(self.job_id, None, ended=True)
        if not got:
            return False
        self._thread = threading.Thread(target=self._beat, name=f"stylequeue-lease-{self.job_id}", daemon=True)
        self._thread.start()
        return True

    def holder(self) -> tuple[str, str | None] | None:
        """``(owner, delivery tag)`` of the run holding the lease now, or ``None``."""
        return split(self.redis.get(self.key))

    def ensure(self) -> None:
        """Check this run still holds the job, re-taking the lease if nobody does.

        Call right before a write that only the job's owner may make. While the lease is this
        run's it only reads, so it works while Redis refuses writes (``CLIENT PAUSE WRITE``).

        Raises:
            Superseded: another run holds the lease, or the job has ended.
        """
        patiently(
            self._ensure,
            retry_on=broker.errors(),
            budget_s=self.patience_s,
            cap_s=5.0,
            what=f"job {self.job_id}: lease check",
        )

    def _ensure(self) -> None:
        current = self.redis.get(self.key)
        if current is not None and (current.decode() if isinstance(current, bytes) else current) == self.value:
            return
        got = int(_ACQUIRE(self.redis, 3, self.key, self.done_key, self.claim_key, self.value, self.ttl_ms))
        if got > 0:
            log.warning(
                "job %s: lease was lost and nobody held it: re-taken", self.job_id, extra={"event": "lease_retaken"}
            )
            self.lost.clear()
            return
        holder = self.holder()
        raise Superseded(self.job_id, holder[1] if holder else None, ended=got < 0)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not _RENEW(self._beat_redis, 1, self.key, self.value, self.ttl_ms):
                    if not self.lost.is_set():
                        log.error("job %s: lease lost (gone or taken over)", self.job_id)
                    self.lost.set()
            except Exception as e:  # a Redis blip: try again at the next beat, before the TTL runs out
                log.warning("job %s: lease renewal failed: %s", self.job_id, e)

    def release(self) -> None:
        """Stop the heartbeat and give the lease up (only if still ours); never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            _RELEASE(self.redis, 1, self.key, self.value)
        except Exception as e:  # it expires by itself
            log.warning("job %s: lease release failed: %s", self.job_id, e)
        finally:
            self._beat_redis.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class JobRecord:
    """The done marker (read) and runs set of one job (see the module docstring).

    Args:
        redis: Client of the broker's Redis.
        job_id: The job.
        expires_s: How long the runs set lives (the result expiry).
    """

    def __init__(self, redis: Any, job_id: str, expires_s: int) -> None:
        self.redis = redis
        self.job_id = job_id
        self.expires_s = expires_s
        self.done_key = keys.DONE.format(job_id)
        self.runs_key = keys.RUNS.format(job_id)

    def final(self) -> FinalState | None:
        """The job's final state, if a run ended it."""
        raw = self.redis.get(self.done_key)
        if raw is None:
            return None
        try:
            return FinalState.from_dict(json.loads(raw))
        except ValueError as e:  # not ours to fix: a foreign value; treat the job as not ended
            log.error("job %s: unreadable done marker ignored: %s", self.job_id, e)
            return None

    def start_run(self, lease: Lease) -> int:
        """Count a run starting; return how many earlier runs never ended (their worker died).

        Raises:
            Superseded: the lease is not this run's any more.
        """
        n = int(_START_RUN(self.redis, 2, lease.key, self.runs_key, lease.value, self.expires_s))
        if n < 0:
            lease.ensure()  # re-take it if free (and count then), else Superseded
            return self.start_run(lease)
        return n - 1

    def leave(self, lease: Lease) -> None:
        """This run stops without ending the job, and did not crash: it leaves the runs set.

        Best effort: a run that cannot reach Redis stays counted.
        """
        try:
            _LEAVE(self.redis, 1, self.runs_key, lease.value)
        except Exception as e:
            log.warning("job %s: this run could not leave the runs set: %s", self.job_id, e)


def now() -> float:
    """Unix time, for final states."""
    return round(time.time(), 3)
