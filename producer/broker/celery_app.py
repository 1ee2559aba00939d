"""The Celery application, configured once for both sides (client and worker).

Settings that matter to long GPU jobs, and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a job is acknowledged only when it ends, so
  a worker that dies mid-job hands it back instead of losing it.
* ``worker_prefetch_multiplier = 1``: a busy GPU worker does not hoard queued jobs.
* JSON only (``accept_content``, ``result_accept_content``): no pickle is ever deserialized.
* ``visibility_timeout`` > hard time limit: kombu's own redelivery is the last resort only; the
  lease-aware sweep (:mod:`worker.runtime.recovery`) recovers a dead worker's job within twice the lease TTL
  and keeps a running job's message from being redelivered, however long the job runs.
* A running job is *not* cancelled when the broker connection drops: its lease decides whether
  it is still the job's owner, and a short blip costs nothing.
* ``task_track_started``, ``result_expires``; result-backend writes retried for
  ``STYLEQUEUE_RETRY_FOR_S`` (a backend outage is transient, not a failure).
* Priorities: kombu's list names (its default separator) with one list per priority 0-9, so a
  plain Celery client's jobs land in lists the workers read (see :mod:`producer.broker.queues`).
"""

from __future__ import annotations

from typing import Any

from producer.broker.queues import DEFAULT_PRIORITY, PRIORITY_STEPS
from producer.core.contract import TASK_NAME
from producer.core.settings import Settings

#: Longest wait between two result-backend retries (ms); with it, how many retries fill
#: STYLEQUEUE_RETRY_FOR_S.
_BACKEND_MAX_SLEEP_MS = 10_000


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (a plain dict, easy to inspect and test)."""
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        # One list per priority, with kombu's default separator: what any Celery client writes.
        "priority_steps": list(PRIORITY_STEPS),
        # kombu's own sweep for messages past the visibility timeout (the last resort).
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
    }
    backend_transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.redis_master_name:  # a sentinel:// URL: kombu's and Celery's own Sentinel support
        sentinel: dict[str, Any] = {"master_name": settings.redis_master_name}
        if settings.sentinel_password:
            sentinel["sentinel_kwargs"] = {"password": settings.sentinel_password}
        transport.update(sentinel)
        backend_transport.update(sentinel)
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.backend_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": backend_transport,
        "broker_connection_retry_on_startup": True,
        # A client keeps trying to publish across a short broker outage (~30 s) before failing.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 15,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 3.0,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "task_default_priority": DEFAULT_PRIORITY,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_track_started": True,
        "task_soft_time_limit": settings.soft_time_limit_s,
        "task_time_limit": settings.hard_time_limit_s,
        "result_expires": settings.result_expires_s,
        # A backend outage while storing a state or result is waited out, not a failure.
        "result_backend_always_retry": True,
        "result_backend_max_retries": int(settings.retry_for_s * 1000 / _BACKEND_MAX_SLEEP_MS) + 10,
        "result_backend_max_sleep_between_retries_ms": _BACKEND_MAX_SLEEP_MS,
        "redis_socket_timeout": 10,
        "redis_socket_connect_timeout": 5,
        "result_extended": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_proc_alive_timeout": settings.proc_alive_timeout_s,
        "worker_send_task_events": True,
        # No "task-sent" event: it costs a broker round trip per job on the client (it halves
        # submit_many's rate); monitors see a job from "task-received" on.
        "task_send_sent_event": False,
    }


def client_config(settings: Settings, timeout_s: float) -> dict[str, Any]:
    """:func:`celery_config` for a client's app: every Redis call bounded by ``timeout_s``.

    A worker waits a backend outage out in place (``result_backend_always_retry``, retried for
    ``STYLEQUEUE_RETRY_FOR_S``); a client must instead say within seconds that Redis cannot be
    reached (:class:`~producer.core.errors.BrokerUnavailable`): no backend retries, no reconnection
    loop for the result subscription, and socket timeouts of the client's budget.
    """
    config = celery_config(settings)
    return {
        **config,
        "result_backend_always_retry": False,
        "redis_socket_timeout": timeout_s,
        "redis_socket_connect_timeout": timeout_s,
        "result_backend_transport_options": {
            **config["result_backend_transport_options"],
            "retry_policy": {"max_retries": 0},
        },
    }


def make_celery(
    settings: Settings | None = None,
    main: str = "stylequeue",
    result_backend: bool = True,
    client_timeout_s: float | None = None,
) -> Any:
    """Return a Celery app configured for ``settings`` (from the environment when ``None``).

    Args:
        settings: Deployment settings.
        main: The app's name.
        result_backend: ``False`` for an app that only publishes (no result backend at all).
        client_timeout_s: For a client's app: bound every result-backend call by this (s); see
            :func:`client_config`. ``None``: the workers' patient configuration.
    """
    from celery import Celery

    settings = settings or Settings.from_env()
    app = Celery(main)
    app.conf.update(celery_config(settings) if client_timeout_s is None else client_config(settings, client_timeout_s))
    if not result_backend:
        app.conf.result_backend = None
    return app
