"""A job as it lies in Redis: Celery's task message (protocol 2) in kombu's Redis envelope.

This is what ``app.send_task("stylequeue.transfer", args=[job], task_id=job_id,
queue="stylequeue", priority=p)`` writes, built without Celery so that the client can publish
many jobs in one atomic Redis transaction (together with their entries in the job index), and
so that producers in other languages have a precise recipe: ``LPUSH`` the JSON below onto the
list of the job's priority (:func:`producer.queues.list_name`)::

    {"body": base64(json([[JOB], {}, {"callbacks": null, "errbacks": null, "chain": null,
                                        "chord": null}])),
     "content-encoding": "utf-8", "content-type": "application/json",
     "headers": {"lang": "py", "task": "stylequeue.transfer", "id": JOB_ID, "root_id": JOB_ID,
                 "parent_id": null, "group": null, "retries": 0, "timelimit": [null, null],
                 "eta": null, "expires": null, "argsrepr": "...", "kwargsrepr": "{}",
                 "origin": "..."},
     "properties": {"correlation_id": JOB_ID, "reply_to": "", "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": "stylequeue"},
                    "priority": P, "body_encoding": "base64", "delivery_tag": NEW_UUID}}
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from producer import keys
from producer.contract import TASK_NAME
from producer.queues import list_name

#: How long the marker of a sent batch lives: longer than any client retries a batch (s).
BATCH_MARKER_TTL_S = 300
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN = f"stylequeue@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Envelope:
    """One message ready to push: the job, the list it goes to and the bytes pushed."""

    job_id: str
    list_name: str
    payload: str


def envelope(
    job_id: str, message: Any, queue: str, priority: int, *, eta: float | None = None, retries: int = 0
) -> Envelope:
    """Build the Redis message of one job.

    Args:
        job_id: The job id, used as the Celery task id.
        message: The contract's JSON object (the task's only argument).
        queue: Queue (routing key) name.
        priority: 0 (most urgent) … 9.
        eta: Run no earlier than this (Unix epoch seconds); the worker holds the message until then.
        retries: Celery's retry count header.
    """
    body = json.dumps([[message], {}, _EMBED], separators=(",", ":"))
    headers = {
        "lang": "py",
        "task": TASK_NAME,
        "id": job_id,
        "shadow": None,
        "eta": datetime.fromtimestamp(eta, timezone.utc).isoformat() if eta is not None else None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [None, None],
        "root_id": job_id,
        "parent_id": None,
        "argsrepr": f"[job {job_id}]",
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": None,
    }
    properties = {
        "correlation_id": job_id,
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    payload = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return Envelope(job_id, list_name(queue, priority), json.dumps(payload, separators=(",", ":")))


def push(redis: Any, envelopes: Sequence[Envelope], index_max: int, index_ttl_s: int, batch_id: str) -> None:
    """Push ``envelopes``, record their jobs in the job index, and mark the batch, in one transaction.

    ``MULTI``/``EXEC``: either every message of the batch, its index entries and the batch marker
    are written, or none; :func:`went_through` tells afterwards whether a batch whose reply was
    lost (the connection broke during ``EXEC``) was applied.
    """
    if not envelopes:
        return
    now = time.time()
    pipe = redis.pipeline(transaction=True)
    for e in envelopes:
        pipe.lpush(e.list_name, e.payload)
    pipe.zadd(keys.JOBS, {e.job_id: now for e in envelopes}, nx=True)
    trim_index(pipe, now, index_max, index_ttl_s)
    pipe.set(keys.BATCH.format(batch_id), len(envelopes), ex=BATCH_MARKER_TTL_S)
    pipe.execute()


def went_through(redis: Any, batch_id: str) -> bool:
    """Whether the transaction of batch ``batch_id`` was applied (within the marker's lifetime)."""
    return bool(redis.exists(keys.BATCH.format(batch_id)))


def trim_index(pipe: Any, now: float, index_max: int, index_ttl_s: int) -> None:
    """Queue the commands that keep the job index bounded: by age, by count, and a TTL."""
    pipe.zremrangebyscore(keys.JOBS, "-inf", now - index_ttl_s)
    pipe.zremrangebyrank(keys.JOBS, 0, -index_max - 1)
    pipe.expire(keys.JOBS, index_ttl_s)
