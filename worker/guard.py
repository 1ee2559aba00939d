"""Exactly-once guards for a job, kept in Redis so they hold across workers and machines.

* **Lease** ``stylequeue:lease:<job>``: held by the run in progress, renewed by a heartbeat
  thread every ``ttl/3``. A second delivery while it is alive (Redis redelivers a job still
  running past the visibility timeout) does not run; a run whose worker died stops renewing it,
  and the next delivery takes the job over once it has expired.
* **Done marker** ``stylequeue:done:<job>``: set once the result is uploaded; later deliveries of
  the same job (or the same job id submitted again) are dropped.
* **Runs counter** ``stylequeue:runs:<job>``: incremented when a run starts, deleted when it ends
  in any normal way. Runs that never ended killed their worker (OOM, segfault); at
  ``max_worker_losses`` of them the job stops being requeued.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

from producer.contract import DONE_KEY, LEASE_KEY, RUNS_KEY

log = logging.getLogger(__name__)

# Compare-and-set scripts: only the owner may renew or release its lease.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Lease:
    """A Redis lease on one job, renewed in the background while held.

    Args:
        redis: Client of the result backend's Redis.
        job_id: The job.
        ttl_s: Seconds the lease outlives its last renewal.
    """

    def __init__(self, redis: Any, job_id: str, ttl_s: float) -> None:
        self.redis = redis
        self.key = LEASE_KEY.format(job_id)
        self.ttl_ms = int(ttl_s * 1000)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; start the heartbeat."""
        if not self.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return False
        self._thread = threading.Thread(target=self._beat, name="stylequeue-lease", daemon=True)
        self._thread.start()
        return True

    def holder(self) -> str | None:
        """Who holds the lease now, if anyone."""
        value = self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.redis.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms):
                    log.error("lease %s lost: another worker may run this job now", self.key)
                    self.lost.set()
                    return
            except Exception as e:  # a Redis blip: try again at the next beat, before the TTL runs out
                log.warning("lease %s: renewal failed: %s", self.key, e)

    def release(self) -> None:
        """Stop the heartbeat and give the lease up (only if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.redis.eval(_RELEASE, 1, self.key, self.owner)
        except Exception as e:  # it expires by itself
            log.warning("lease %s: release failed: %s", self.key, e)


class JobGuard:
    """The done marker and runs counter of one job (see the module docstring).

    Args:
        redis: Client of the result backend's Redis.
        job_id: The job.
        expires_s: How long the markers live (the result expiry).
    """

    def __init__(self, redis: Any, job_id: str, expires_s: int) -> None:
        self.redis = redis
        self.job_id = job_id
        self.expires_s = expires_s
        self.done_key = DONE_KEY.format(job_id)
        self.runs_key = RUNS_KEY.format(job_id)

    def is_done(self) -> bool:
        """Whether a run already uploaded this job's result."""
        return bool(self.redis.exists(self.done_key))

    def mark_done(self) -> None:
        """Record that the result is uploaded."""
        self.redis.set(self.done_key, "1", ex=self.expires_s)

    def start_run(self) -> int:
        """Count a run starting; return how many earlier runs never ended (their worker died)."""
        pipe = self.redis.pipeline()
        pipe.incr(self.runs_key)
        pipe.expire(self.runs_key, self.expires_s)
        runs, _ = pipe.execute()
        return int(runs) - 1

    def end_run(self) -> None:
        """The run ended normally (success, failure or retry)."""
        self.redis.delete(self.runs_key)
