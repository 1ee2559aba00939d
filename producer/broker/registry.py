"""Which jobs exist: the job index, and a look into the queue for jobs sent by other clients.

The stylequeue client records each job in ``stylequeue:jobs`` in the same transaction that queues
it (:func:`producer.broker.wire.push`), and a worker records every job it starts, so a job sent by any
client becomes known at the latest when it runs. A job id that is in neither the index nor
Celery's results may still be waiting in the queue, sent by a plain Celery client: :func:`queued`
looks through the queue's lists (only on that path, and only so far).
"""

from __future__ import annotations

import json
import time
from typing import Any

from producer.broker import keys, wire
from producer.broker.queues import list_names

#: Most queued messages :func:`queued` reads before it gives up (it is the not-found path only).
SCAN_LIMIT = 100_000


def first_seen(redis: Any, job_id: str) -> float | None:
    """When the job was first recorded (Unix epoch seconds), or ``None``."""
    score = redis.zscore(keys.JOBS, job_id)
    return float(score) if score is not None else None


def remember(redis: Any, job_id: str, index_max: int, index_ttl_s: int) -> None:
    """Record a job (a worker does this when a run starts; a no-op for a job already recorded)."""
    pipe = redis.pipeline(transaction=True)
    now = time.time()
    pipe.zadd(keys.JOBS, {job_id: now}, nx=True)
    wire.trim_index(pipe, now, index_max, index_ttl_s)
    pipe.execute()


def recent(redis: Any, limit: int = 100, before: float | None = None) -> list[tuple[str, float]]:
    """Up to ``limit`` jobs recorded before ``before`` (default: now), newest first: ``(id, first seen)``."""
    top = "+inf" if before is None else f"({before}"
    rows = redis.zrevrangebyscore(keys.JOBS, top, "-inf", start=0, num=limit, withscores=True)
    return [(k.decode() if isinstance(k, bytes) else k, float(s)) for k, s in rows]


def queued(redis: Any, queue: str, job_id: str, limit: int = SCAN_LIMIT) -> bool:
    """Whether a message for ``job_id`` waits in ``queue``'s lists or is held unacked by a worker."""
    needle = f'"{job_id}"'.encode()
    seen = 0
    for name in list_names(queue):
        for start in range(0, limit, 1000):
            chunk = redis.lrange(name, start, start + 999)
            seen += len(chunk)
            if any(needle in raw and _task_id(raw) == job_id for raw in chunk):
                return True
            if len(chunk) < 1000 or seen >= limit:
                break
    # Unacked entries are JSON [message, exchange, routing_key].
    return any(needle in raw and _task_id(raw, unacked=True) == job_id for raw in redis.hvals(keys.UNACKED))


def _task_id(raw: bytes | str, unacked: bool = False) -> str | None:
    """The Celery task id of a kombu Redis message (a queued one, or an unacked entry)."""
    try:
        message = json.loads(raw)
        return str((message[0] if unacked else message)["headers"]["id"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None
