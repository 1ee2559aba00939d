"""A job as it lies in Redis: Celery's task message (protocol 2) in kombu's Redis envelope.

This is what ``app.send_task("stylequeue.transfer", args=[job], task_id=job_id,
queue="stylequeue", priority=p)`` writes, built without Celery so that the client can publish
many jobs in one atomic Redis transaction (together with their entries in the job index), and
so that producers in other languages have a precise recipe: ``LPUSH`` the JSON below onto the
list of the job's priority (:func:`producer.broker.queues.list_name`)::

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

With traces on (:mod:`producer.tracing`), ``headers`` also carries the W3C trace context
(``traceparent``, maybe ``tracestate``), where Celery's own instrumentation puts it: the worker's
span of the job joins the sender's trace; a message without it starts a trace of its own.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from typing import Any

from producer.broker import keys
from producer.broker.queues import list_name
from producer.core.contract import TASK_NAME

#: How long the marker of a sent batch lives: longer than any client retries a batch (s).
BATCH_MARKER_TTL_S = 300
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMBED_JSON = json.dumps(_EMBED, separators=(",", ":"))
_ORIGIN = f"stylequeue@{socket.gethostname()}:{os.getpid()}"
_ORIGIN_JSON = json.dumps(_ORIGIN)
_quote = encode_basestring_ascii


@dataclass(frozen=True)
class Envelope:
    """One message ready to push: the job, the list it goes to and the bytes pushed."""

    job_id: str
    list_name: str
    payload: str
    message_bytes: int = 0


def envelope(
    job_id: str,
    message: Any,
    queue: str,
    priority: int,
    *,
    eta: float | None = None,
    retries: int = 0,
    task: str = TASK_NAME,
    headers: Mapping[str, str] | None = None,
) -> Envelope:
    """Build the Redis message of one job.

    Args:
        job_id: The job id, used as the Celery task id.
        message: The contract's JSON object (the task's only argument).
        queue: Queue (routing key) name.
        priority: 0 (most urgent) … 9.
        eta: Run no earlier than this (Unix epoch seconds); the worker holds the message until then.
        retries: Celery's retry count header.
        task: The task's name (the notifier's webhook deliveries travel the same way).
        headers: More Celery headers: the trace context (:func:`producer.tracing.headers`).
    """
    encoded = json.dumps(message, separators=(",", ":"), default=str)
    body = f"[[{encoded}],{{}},{_EMBED_JSON}]"
    q = _quote
    eta_iso = q(datetime.fromtimestamp(eta, timezone.utc).isoformat()) if eta is not None else "null"
    # The kombu message, written out directly (this runs once per job of a batch: json.dumps of
    # the nested dicts was a third of submit_many's time). Same keys and values as kombu writes.
    payload = (
        f'{{"body":"{base64.b64encode(body.encode()).decode()}","content-encoding":"utf-8",'
        f'"content-type":"application/json","headers":{{{_fields(headers)}"lang":"py","task":{q(task)},"id":{q(job_id)},'
        f'"shadow":null,"eta":{eta_iso},"expires":null,"group":null,"group_index":null,'
        f'"retries":{int(retries)},"timelimit":[null,null],"root_id":{q(job_id)},"parent_id":null,'
        f'"argsrepr":{q(f"[job {job_id}]")},"kwargsrepr":"{{}}","origin":{_ORIGIN_JSON},"ignore_result":null}},'
        f'"properties":{{"correlation_id":{q(job_id)},"reply_to":"","delivery_mode":2,'
        f'"delivery_info":{{"exchange":"","routing_key":{q(queue)}}},"priority":{int(priority)},'
        f'"body_encoding":"base64","delivery_tag":"{uuid.uuid4()}"}}}}'
    )
    return Envelope(job_id, list_name(queue, priority), payload, len(encoded.encode()))


def with_headers(e: Envelope, headers: Mapping[str, str]) -> Envelope:
    """``e`` with more Celery headers (the trace context of the publish that sends it).

    The payload is :func:`envelope`'s: its body is base64 (no quotes), so the first ``"headers":{``
    opens the headers object; the new ones go first, so none can replace a header of Celery's.

    Raises:
        ValueError: ``e`` was not made by :func:`envelope`.
    """
    if not headers:
        return e
    opening = '"headers":{'
    if opening not in e.payload:
        raise ValueError(f"job {e.job_id}: not a payload of envelope() (no headers object)")
    return replace(e, payload=e.payload.replace(opening, opening + _fields(headers), 1))


def _fields(headers: Mapping[str, str] | None) -> str:
    """``headers`` as the leading members of a JSON object (``"k":"v",`` each), or nothing."""
    return "".join(f"{_quote(str(k))}:{_quote(str(v))}," for k, v in headers.items()) if headers else ""


def push(
    redis: Any,
    envelopes: Sequence[Envelope],
    index_max: int,
    index_ttl_s: int,
    batch_id: str,
    extra: Callable[[Any, list[Envelope]], None] | None = None,
) -> None:
    """Push ``envelopes``, record their jobs in the job index, and mark the batch, in one transaction.

    ``MULTI``/``EXEC``: either every message of the batch, its index entries and the batch marker
    are written, or none; :func:`went_through` tells afterwards whether a batch whose reply was
    lost (the connection broke during ``EXEC``) was applied. ``extra`` adds commands of its own to
    the same transaction.
    """
    if not envelopes:
        return
    now = time.time()
    pipe = redis.pipeline(transaction=True)
    runs: list[tuple[str, list[str]]] = []  # one LPUSH per run of messages to the same list, in order
    for e in envelopes:
        if runs and runs[-1][0] == e.list_name:
            runs[-1][1].append(e.payload)
        else:
            runs.append((e.list_name, [e.payload]))
    for name, payloads in runs:
        pipe.lpush(name, *payloads)
    pipe.zadd(keys.JOBS, {e.job_id: now for e in envelopes}, nx=True)
    trim_index(pipe, now, index_max, index_ttl_s)
    if extra is not None:
        extra(pipe, list(envelopes))
    pipe.set(keys.SENT.format(batch_id), len(envelopes), ex=BATCH_MARKER_TTL_S)
    pipe.execute()


def went_through(redis: Any, batch_id: str) -> bool:
    """Whether the transaction of batch ``batch_id`` was applied (within the marker's lifetime)."""
    return bool(redis.exists(keys.SENT.format(batch_id)))


def trim_index(pipe: Any, now: float, index_max: int, index_ttl_s: int) -> None:
    """Queue the commands that keep the job index bounded: by age, by count, and a TTL."""
    pipe.zremrangebyscore(keys.JOBS, "-inf", now - index_ttl_s)
    pipe.zremrangebyrank(keys.JOBS, 0, -index_max - 1)
    pipe.expire(keys.JOBS, index_ttl_s)
