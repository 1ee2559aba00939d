"""The webhook notifier: delivers job events to tenants' URLs, signed, at least once.

A light Celery worker of its own (no TensorFlow) on its own queue, ``STYLEQUEUE_WEBHOOK_QUEUE``::

    stylequeue notifier        # celery -A producer.notifier worker -Q stylequeue-webhooks --pool threads

Events queue deliveries (:mod:`producer.broker.events`); each is one task, acknowledged only when it
ends, so a notifier killed mid-delivery leaves it to another (Celery's late ack). An attempt
POSTs the event's body with the Standard Webhooks headers (:mod:`producer.webhooks`), signed with
the tenant's ``webhook_secret``, after the SSRF guard has checked the URL again (a host may
resolve elsewhere by now; redirects are not followed). A 2xx answer delivers it. A timeout, a
connection error or any other status is retried after ``STYLEQUEUE_WEBHOOK_BACKOFF_S``, doubling
to at most an hour, with jitter, until ``STYLEQUEUE_WEBHOOK_RETRY_FOR_S`` (25 h) after the event;
then it is recorded as failed: in the job (``webhook.failed``, ``webhook.last_error``) and in
``stylequeue_webhooks_failed_total``. A URL the guard refuses, or a tenant without a secret, fails
at once.

Every attempt of one event carries the same ``webhook-id``: receivers that keep the ids they have
processed get each event exactly once.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import urllib.error
import urllib.request
from typing import Any

from celery import Celery

from producer import broker, webhooks
from producer.broker import keys, scripts
from producer.broker.celery_app import celery_config
from producer.broker.events import WEBHOOK_TASK, Delivery
from producer.core.errors import ConfigError, InvalidJob
from producer.core.settings import Settings

log = logging.getLogger(__name__)

#: The longest wait between two attempts (s).
BACKOFF_MAX_S = 3600.0
#: The User-Agent of deliveries.
USER_AGENT = "stylequeue-webhooks/1"


def _config() -> dict[str, Any]:
    settings = _settings()
    config = celery_config(settings)
    config["broker_transport_options"] = {
        **config["broker_transport_options"],
        # A retry waits in the notifier until its time (at most an hour): no redelivery before.
        "visibility_timeout": int(BACKOFF_MAX_S + 600),
    }
    config.update(
        task_default_queue=settings.webhook_queue,
        task_routes={WEBHOOK_TASK: {"queue": settings.webhook_queue}},
        # The threads pool has no time limits; each attempt has its own timeout.
        task_soft_time_limit=None,
        task_time_limit=None,
        task_track_started=False,
        task_ignore_result=True,
        worker_prefetch_multiplier=4,
        worker_send_task_events=False,
    )
    return config


@functools.lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


@functools.lru_cache(maxsize=1)
def _redis() -> Any:
    return broker.connect(_settings().broker_url)


@functools.lru_cache(maxsize=1)
def _secrets() -> dict[str, str]:
    from producer.tenants import Tenants

    return {t.tenant: t.webhook_secret for t in Tenants.load(_settings()).by_hash.values() if t.webhook_secret}


app = Celery("stylequeue-notifier")
app.add_defaults(_config)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any other non-2xx: never followed (it could point inside)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post(delivery: Delivery, secret: str, timeout_s: float) -> str | None:
    """One attempt: ``None`` when the receiver answered 2xx, else what went wrong."""
    timestamp = int(time.time())
    request = urllib.request.Request(
        delivery.url,
        data=delivery.body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhooks.sign(secret, delivery.event_id, timestamp, delivery.body),
        },
    )
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (OSError, ValueError) as e:  # refused, reset, timed out, TLS
        return f"{type(e).__name__}: {e}"[:300]
    return None if 200 <= status < 300 else f"HTTP {status}"


def backoff_s(attempt: int, first_s: float) -> float:
    """The wait before retry ``attempt`` (0-based): doubling from ``first_s``, capped, ±20% jitter."""
    return min(BACKOFF_MAX_S, first_s * 2.0 ** min(attempt, 30)) * random.uniform(0.8, 1.2)


def _count(delivery: Delivery, outcome: str, error: str | None = None) -> None:
    pipe = _redis().pipeline(transaction=False)
    pipe.hincrby(keys.WEBHOOKS, outcome, 1)
    record = keys.JOB.format(delivery.job_id)
    if outcome in ("delivered", "failed"):
        scripts.load("producer.broker", "webhook_count")(pipe, 1, record, f"webhook_{outcome}")
    if error:
        scripts.load("producer.broker", "webhook_last_error")(pipe, 1, record, error)
    pipe.execute()


# max_retries=None: retried until the time budget (below) says stop, not after a count.
@app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver(self: Any, message: Any) -> None:
    """Deliver one event (see the module docstring)."""
    settings = _settings()
    try:
        delivery = Delivery.from_dict(message)
    except ValueError as e:
        log.error("dropped a malformed webhook delivery: %s", e)
        return
    secret = _secrets().get(delivery.tenant)
    if secret is None:
        _give_up(delivery, f"tenant {delivery.tenant!r} has no webhook_secret")
        return
    try:
        webhooks.check_url(delivery.url, settings)
    except (InvalidJob, ConfigError) as e:
        _give_up(delivery, f"refused by the guard: {e}")
        return
    error = post(delivery, secret, settings.webhook_timeout_s)
    if error is None:
        _count(delivery, "delivered")
        log.info("webhook %s delivered to %s", delivery.event_id, delivery.url)
        return
    wait = backoff_s(self.request.retries, settings.webhook_backoff_s)
    if time.time() + wait > delivery.first_at + settings.webhook_retry_for_s:
        _give_up(delivery, error)
        return
    _count(delivery, "attempts_failed", error)
    log.warning("webhook %s to %s: %s; retry in %.1f s", delivery.event_id, delivery.url, error, wait)
    raise self.retry(countdown=wait)


def _give_up(delivery: Delivery, error: str) -> None:
    log.error("webhook %s to %s failed for good: %s", delivery.event_id, delivery.url, error)
    _count(delivery, "failed", error)
