"""Everything stylequeue keeps in Redis, one module per structure, and the connections to it.

:mod:`~producer.broker.keys` names every key with its writer and bound; :mod:`~producer.broker.wire`
(a job as it lies in a queue), :mod:`~producer.broker.queues` (priority lists, depth),
:mod:`~producer.broker.registry` (the job index), :mod:`~producer.broker.cancellation`,
:mod:`~producer.broker.deadletters`, :mod:`~producer.broker.events` (the stream, webhooks, batch
counts) each own one structure; :mod:`~producer.broker.scripts` loads the Lua scripts of ``lua/``;
:mod:`~producer.broker.celery_app` is the Celery configuration both sides share.

Connections (this module) are made one way for the client, the worker and the exporters.

redis-py retries a failed command by default; for a ``MULTI``/``EXEC`` whose reply was lost that
would apply it twice (two copies of a job). Every stylequeue connection is made without automatic
retries and with timeouts; the callers retry themselves, knowing what is safe to repeat
(:mod:`producer.core.retrying`).
"""

from __future__ import annotations

from typing import Any


def connect(url: str, timeout_s: float = 10.0) -> Any:
    """A ``redis.Redis`` for ``url`` with socket and connect timeouts and no automatic retries."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=min(5.0, timeout_s),
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )


def errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis cannot take the command for now: worth waiting out.

    Unreachable, timed out or loading; ``READONLY`` (a replica: during a failover the old primary
    answers so until it is told who leads); ``OOM`` (full under ``noeviction``: a write refused
    whole until memory is freed). Each refuses the command entirely, so trying again is safe where
    the first try was.
    """
    import redis
    from redis.exceptions import OutOfMemoryError, ReadOnlyError

    return (redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OutOfMemoryError)
