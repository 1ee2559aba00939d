"""The Celery application, configured once for both sides (client and worker).

Settings that matter to long GPU jobs, and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a job is acknowledged only when it ends, so
  a worker that dies mid-job hands it back instead of losing it.
* ``worker_prefetch_multiplier = 1``: a busy GPU worker does not hoard queued jobs.
* JSON only (``accept_content``, ``result_accept_content``): no pickle is ever deserialized.
* ``visibility_timeout`` > hard time limit: Redis does not redeliver a job that is still running
  within its limits.
* ``task_track_started``, ``result_expires``, cancel of running jobs on broker connection loss
  (their messages are redelivered anyway, so finishing them would only produce duplicates).
* Priorities: the Redis transport keeps one list per priority step (0-9, ``0`` first); jobs sent
  without one get 5, so both more and less urgent work can be expressed.
"""

from __future__ import annotations

from typing import Any

from producer.contract import TASK_NAME
from producer.settings import Settings

#: Priority of a job sent without one (0 = most urgent, 9 = least; the Redis transport's order).
DEFAULT_PRIORITY = 5


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (a plain dict, easy to inspect and test)."""
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        "priority_steps": list(range(10)),
        # "<queue>:<priority>" list names, readable by ops tools and the queue-depth metric.
        "sep": ":",
        # Sweep for jobs abandoned past the visibility timeout every N s (kombu: every ~100 s).
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.backend_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
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
        # A Redis blip while storing a state or result is retried instead of failing the job.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
        "result_extended": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_proc_alive_timeout": settings.proc_alive_timeout_s,
        "worker_send_task_events": True,
        # No "task-sent" event: it costs a broker round trip per job on the client (it halves
        # submit_many's rate); monitors see a job from "task-received" on.
        "task_send_sent_event": False,
    }


def make_celery(settings: Settings | None = None, main: str = "stylequeue", result_backend: bool = True) -> Any:
    """Return a Celery app configured for ``settings`` (from the environment when ``None``).

    Args:
        settings: Deployment settings.
        main: The app's name.
        result_backend: ``False`` for an app that only publishes (no result backend at all).
    """
    from celery import Celery

    settings = settings or Settings.from_env()
    app = Celery(main)
    app.conf.update(celery_config(settings))
    if not result_backend:
        app.conf.result_backend = None
    return app
