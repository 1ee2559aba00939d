"""Dead letters: jobs that failed for good, kept in Redis with what is needed to look and resend.

A job lands here when it fails permanently (bad input, invalid job, missing object, ...), when a
transient failure outlasts ``STYLEQUEUE_RETRY_FOR_S``, or when it killed its worker too many
times. Each entry holds the job's message (payload), the error class and message, the attempts
made and when. ``stylequeue dead list`` shows them; ``stylequeue dead requeue ID`` sends one
back with the same job id.

Bounded: at most ``STYLEQUEUE_DEAD_LETTERS_MAX`` entries (the oldest are dropped first, and the
number dropped is returned so the worker can count it) and none older than
``STYLEQUEUE_DEAD_LETTER_TTL_S``; both keys expire when no job has failed for that long. An entry
is about 1 KB plus its payload (a payload over ``STYLEQUEUE_MAX_MESSAGE_BYTES`` is not stored).
"""

from __future__ import annotations

import json
import time
from typing import Any

from producer.broker import scripts
from producer.broker.keys import DEAD, DEAD_INDEX

# Add the entry, then drop entries older than the TTL and the oldest beyond the cap; return how
# many were dropped. KEYS: hash, index. ARGV: job id, entry, now (integer microseconds), ttl (s), max.
# The index's score is the arrival order: the caller's clock in microseconds, but always above every
# score already there, so entries that arrive in the same microsecond (a burst) or from a worker
# whose clock is behind still sort by arrival, and the cap drops exactly the oldest arrivals.
_RECORD = scripts.load("producer.broker", "deadletter_record")


def record(
    redis: Any,
    job_id: str,
    payload: Any,
    error_type: str,
    message: str,
    attempts: int,
    *,
    max_entries: int = 10_000,
    ttl_s: int = 30 * 24 * 3600,
) -> int:
    """Store (or replace) the dead letter of ``job_id``; return how many old entries were dropped."""
    now = round(time.time(), 3)
    entry = {
        "job_id": job_id,
        "payload": payload,
        "error_type": error_type,
        "message": message[:2000],
        "attempts": attempts,
        "failed_at": now,
    }
    now_us = int(now * 1_000_000)
    return int(_RECORD(redis, 2, DEAD, DEAD_INDEX, job_id, json.dumps(entry, default=str), now_us, ttl_s, max_entries))


def entries(redis: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters, newest first."""
    ids = redis.zrevrange(DEAD_INDEX, 0, limit - 1)
    if not ids:
        return []
    return [json.loads(raw) for raw in redis.hmget(DEAD, ids) if raw is not None]


def get(redis: Any, job_id: str) -> dict[str, Any] | None:
    """One dead letter, or ``None``."""
    raw = redis.hget(DEAD, job_id)
    return json.loads(raw) if raw is not None else None


def remove(redis: Any, job_id: str) -> None:
    """Delete one dead letter."""
    pipe = redis.pipeline()
    pipe.hdel(DEAD, job_id)
    pipe.zrem(DEAD_INDEX, job_id)
    pipe.execute()
