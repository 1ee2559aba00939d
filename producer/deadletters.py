"""Dead letters: jobs that failed for good, kept in Redis with what is needed to look and resend.

A job lands here when it fails permanently (bad input, invalid job, missing object, ...), when its
transient retries run out, or when it killed its worker too many times. Each entry holds the
job's message (payload), the error class and message, the attempts made and when. ``stylequeue
dead list`` shows them; ``stylequeue dead requeue ID`` sends one back with the same job id.
"""

from __future__ import annotations

import json
import time
from typing import Any

KEY = "stylequeue:dead"
INDEX = "stylequeue:dead:index"


def record(redis: Any, job_id: str, payload: Any, error_type: str, message: str, attempts: int) -> None:
    """Store (or replace) the dead letter of ``job_id``."""
    entry = {
        "job_id": job_id,
        "payload": payload,
        "error_type": error_type,
        "message": message,
        "attempts": attempts,
        "failed_at": round(time.time(), 3),
    }
    pipe = redis.pipeline()
    pipe.hset(KEY, job_id, json.dumps(entry))
    pipe.zadd(INDEX, {job_id: entry["failed_at"]})
    pipe.execute()


def entries(redis: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters, newest first."""
    ids = redis.zrevrange(INDEX, 0, limit - 1)
    if not ids:
        return []
    return [json.loads(raw) for raw in redis.hmget(KEY, ids) if raw is not None]


def get(redis: Any, job_id: str) -> dict[str, Any] | None:
    """One dead letter, or ``None``."""
    raw = redis.hget(KEY, job_id)
    return json.loads(raw) if raw is not None else None


def remove(redis: Any, job_id: str) -> None:
    """Delete one dead letter."""
    pipe = redis.pipeline()
    pipe.hdel(KEY, job_id)
    pipe.zrem(INDEX, job_id)
    pipe.execute()
