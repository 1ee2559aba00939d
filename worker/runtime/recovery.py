"""Recovering jobs whose worker is gone, without waiting for the visibility timeout.

Celery on Redis keeps every message a worker has taken in kombu's ``unacked`` hash until it is
acknowledged, and redelivers it only after the visibility timeout (which long GPU jobs need to be
long: an hour and more). A worker machine that dies (a spot instance reclaimed, a node lost)
would leave its job waiting that long. Every ``STYLEQUEUE_SWEEP_INTERVAL_S`` one worker of each queue
(whichever takes the queue's ``stylequeue:sweeper:<queue>`` lock) looks at each unacked message of it:

* its job holds a live lease → the message's timestamp in ``unacked_index`` is refreshed, so
  kombu's own visibility-timeout restore never redelivers a job that is still running, however
  long it runs (the heartbeat Celery lacks);
* a worker received it moments ago and its run has not taken the lease yet (a pool child still
  loading the model after a restart) → left alone: the worker's claim on it
  (``stylequeue:claim:<tag>``, set when the message arrives) says it is in hand;
* no live lease, no claim, and none for longer than the lease TTL → the message is put back at the front of
  its priority list with a **new delivery tag**, atomically with a check that no lease appeared
  meanwhile. Another worker takes it within a sweep interval and resumes from the checkpoint.
  The new tag matters: the dead run's late acknowledgement (say its VM was only frozen) then
  removes nothing but its own, already removed, entry.

Celery's own restore stays as the last resort (a message whose workers all died and no sweep
runs); messages held back on purpose until an ETA are left to it until their ETA is past.

:func:`step_aside` decides what a delivery does when another live run holds its job.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from producer import tracing
from producer.broker import keys, scripts, wire
from producer.broker.queues import list_name, migrate_legacy
from worker.runtime.outcomes import Outcome

log = logging.getLogger(__name__)

# Put an abandoned message back, only if no lease appeared and it is still the same unacked entry.
# KEYS: unacked, unacked_index, lease, target list. ARGV: tag, expected entry, new payload.
_RESTORE = scripts.load("worker.runtime", "restore")


@dataclass
class SweepReport:
    """What one sweep did.

    Attributes:
        kept_alive: Messages of running jobs whose visibility was extended.
        restored: Job ids handed back to the queue (their run is gone).
        migrated: Messages moved from the list names of earlier versions.
    """

    kept_alive: int = 0
    restored: list[str] = field(default_factory=list)
    migrated: int = 0


@dataclass(frozen=True)
class _Unacked:
    tag: str
    raw: bytes
    payload: dict[str, Any]
    queue: str

    @property
    def job_id(self) -> str:
        return str(self.payload["headers"]["id"])

    @property
    def eta(self) -> float | None:
        eta = self.payload.get("headers", {}).get("eta")
        try:
            return datetime.fromisoformat(eta).timestamp() if eta else None
        except (TypeError, ValueError):
            return None


def claim(redis: Any, tag: str, ttl_s: float) -> None:
    """Mark a message just received by this worker as in hand until its run takes the lease."""
    redis.set(keys.CLAIM.format(tag), "1", px=int(ttl_s * 1000))


def try_lock(redis: Any, queue: str, interval_s: float) -> bool:
    """Whether this worker sweeps ``queue`` this interval (one worker per queue and interval does).

    One lock per queue: the workers of another queue on the same Redis (another deployment,
    another sweep interval) never keep this queue's messages from being swept.
    """
    return bool(redis.set(keys.SWEEPER.format(queue), "1", nx=True, px=max(1, int(interval_s * 900))))


def sweep(redis: Any, queues: Iterable[str], grace_s: float, now: float | None = None) -> SweepReport:
    """Keep running jobs' messages alive and hand abandoned ones back (see the module docstring).

    Args:
        redis: Client of the broker's Redis.
        queues: The queues whose messages to look at (others sharing the Redis are left alone).
        grace_s: How long an unacked message may go without a lease before it is handed back
            (the lease TTL: a run takes its lease within milliseconds of starting).
        now: Unix time (tests pass their own).
    """
    now = time.time() if now is None else now
    queues = set(queues)
    report = SweepReport()
    for q in queues:
        report.migrated += migrate_legacy(redis, q)
    entries = [e for e in _unacked(redis) if e.queue in queues]
    if not entries:
        return report
    pipe = redis.pipeline(transaction=False)
    for e in entries:
        pipe.exists(keys.LEASE.format(e.job_id))
        pipe.zscore(keys.UNACKED_INDEX, e.tag)
        pipe.exists(keys.CLAIM.format(e.tag))
    answers = pipe.execute()
    alive = redis.pipeline(transaction=False)
    for e, leased, seen, claimed in zip(entries, answers[::3], answers[1::3], answers[2::3]):
        if leased or claimed:  # running, or in a live worker's hand with its run about to start
            alive.zadd(keys.UNACKED_INDEX, {e.tag: now}, xx=True)
            report.kept_alive += 1
            continue
        eta = e.eta
        if eta is not None and eta > now - grace_s:
            continue  # held by a worker on purpose until its ETA
        if seen is not None and now - float(seen) < grace_s:
            continue  # just delivered: its run is about to take the lease
        if _restore(redis, e):
            report.restored.append(e.job_id)
    alive.execute()
    for job_id in report.restored:
        log.warning(
            "job %s: its run is gone (no lease): handed back to the queue",
            job_id,
            extra={"event": "job_recovered", "job_id": job_id},
        )
    return report


def _unacked(redis: Any) -> list[_Unacked]:
    found = []
    for tag, raw in redis.hscan_iter(keys.UNACKED, count=500):
        try:
            payload, _exchange, routing_key = json.loads(raw)
            payload["headers"]["id"]
        except (ValueError, TypeError, KeyError):
            continue
        found.append(_Unacked(tag.decode() if isinstance(tag, bytes) else tag, raw, payload, str(routing_key)))
    return found


def _restore(redis: Any, e: _Unacked) -> bool:
    payload = json.loads(e.raw)[0]
    payload["headers"]["redelivered"] = True
    properties = payload.setdefault("properties", {})
    properties["delivery_tag"] = str(uuid.uuid4())
    properties.setdefault("delivery_info", {})["redelivered"] = True
    try:
        priority = min(9, max(0, int(properties.get("priority") or 0)))
    except (TypeError, ValueError):
        priority = 0
    target = list_name(e.queue, priority)
    restored = _RESTORE(
        redis,
        4,
        keys.UNACKED,
        keys.UNACKED_INDEX,
        keys.LEASE.format(e.job_id),
        target,
        e.tag,
        e.raw,
        json.dumps(payload),
    )
    return bool(restored)


def step_aside(
    redis: Any,
    job_id: str,
    my_tag: str | None,
    holder_tag: str | None,
    message: Any,
    queue: str,
    priority: int,
    recheck_in_s: float,
) -> Outcome:
    """What a delivery does when another live run holds its job: dropped or deferred.

    Dropping (acknowledging) is safe only while the holder's own message is still unacked: if the
    holder dies, the sweep hands *that* message back. Otherwise (the holder's message was handed
    back or acknowledged by a duplicate, or is this very message) this delivery leaves a copy that
    a worker holds until ``recheck_in_s`` seconds from now and then runs through the same checks:
    done by then → dropped; holder died → that copy takes the job over.
    """
    if holder_tag is not None and holder_tag != my_tag and redis.hexists(keys.UNACKED, holder_tag):
        return Outcome.DROPPED
    copy = wire.envelope(job_id, message, queue, priority, eta=time.time() + recheck_in_s, headers=tracing.headers())
    redis.lpush(copy.list_name, copy.payload)
    return Outcome.DEFERRED
