"""The webhook notifier: delivers job events to tenants' URLs, signed, at least once, one chain each.

A light Celery worker of its own (no TensorFlow) on its own queue, ``STYLEQUEUE_WEBHOOK_QUEUE``::

    stylequeue notifier        # celery -A producer.notifier worker -Q stylequeue-webhooks --pool threads

Events queue deliveries (:mod:`producer.broker.events`) as Celery messages. The task does not
POST: it takes the event into the schedule kept in Redis (``stylequeue:webhooks:due``, a due time
per event id, and ``stylequeue:webhooks:pending``), once per event id, so a second copy of the
message (another consumer of the same Redis with a shorter visibility timeout hands unacked
messages back) starts nothing. Every notifier runs a dispatcher that claims due events
atomically (the claim moves the due time past the attempt's deadline, so a notifier killed
mid-attempt leaves the event due again) and makes one attempt each: no retry is ever an
unacknowledged ETA message, so no restore can copy it, however long the receiver is down.

An attempt POSTs the event's body with the Standard Webhooks headers (:mod:`producer.webhooks`),
signed with the tenant's ``webhook_secret``, after the SSRF guard has checked the URL again, to
an address the guard checked (no second DNS lookup: a name cannot rebind in between); redirects
are not followed, and the whole attempt has one deadline, ``STYLEQUEUE_WEBHOOK_TIMEOUT_S`` (a
slow receiver cannot hold a thread longer). A 2xx answer delivers it. A timeout, a connection
error or any other status is retried after ``STYLEQUEUE_WEBHOOK_BACKOFF_S``, doubling to at most
an hour, with jitter, until ``STYLEQUEUE_WEBHOOK_RETRY_FOR_S`` (25 h) after the event; then it is
recorded as failed: in the job (``webhook.failed``, ``webhook.last_error``) and in
``stylequeue_webhooks_failed_total``. A URL the guard refuses, or a tenant without a secret, fails
at once. ``webhook.last_error`` says ``HTTP <status>`` or that no answer came; why a connection
failed (refused, unreachable, which address) goes to the notifier's log only, so the field is no
port scanner.

Every attempt of one event carries the same ``webhook-id``: receivers that keep the ids they have
processed get each event exactly once.

With traces on (:mod:`producer.tracing`), taking the message is a span in the job's trace (its
``traceparent``, written at the job's end), kept with the scheduled event; each attempt's POST
is a span under it. The receiver gets no trace header: it is the tenant's, not the deployment's.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Celery, bootsteps

from producer import broker, tracing, webhooks
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
    config.update(
        task_default_queue=settings.webhook_queue,
        task_routes={WEBHOOK_TASK: {"queue": settings.webhook_queue}},
        # The threads pool has no time limits; each attempt has its own timeout.
        task_soft_time_limit=None,
        task_time_limit=None,
        task_track_started=False,
        task_ignore_result=True,
        worker_prefetch_multiplier=16,  # a task only schedules its event: milliseconds
        worker_send_task_events=False,
    )
    return config


@functools.lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


@functools.lru_cache(maxsize=1)
def _redis() -> Any:
    return broker.of(_settings())


@functools.lru_cache(maxsize=1)
def _keys() -> Any:
    from producer.tenants import KeysSource

    return KeysSource(_settings())


def _secret(tenant: str) -> str | None:
    """The tenant's signing secret as the keys file says now (a tenant added later signs too)."""
    found = _keys().current().named(tenant)
    return found.webhook_secret if found is not None and found.webhook_secret else None


app = Celery("stylequeue-notifier")
app.add_defaults(_config)

#: How often an idle dispatcher looks for due events (s).
POLL_S = 0.2
#: A claim outlasts the attempt's deadline by this much (s) before the event is due again.
CLAIM_SLACK_S = 30.0
#: How long an ended event's marker keeps late copies of its message out, past the retry period (s).
DONE_SLACK_S = 3600.0
#: The most of a receiver's answer read (bytes).
MAX_ANSWER_BYTES = 65536


def post(delivery: Delivery, secret: str, timeout_s: float, addresses: list[str]) -> str | None:
    """One attempt, to the guard's ``addresses``: ``None`` on a 2xx answer, else what went wrong.

    The connection goes to the first of ``addresses`` that accepts it (in the resolver's order);
    the URL's host name is still the ``Host`` header, the TLS server name and what the certificate
    must name. The attempt ends by ``timeout_s``, whatever the receiver does: connecting, the TLS
    handshake and every read and write are cut at that deadline.
    """
    parts = urlsplit(delivery.url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.sign(secret, delivery.event_id, timestamp, delivery.body),
    }
    conn: http.client.HTTPConnection
    if https:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout_s)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    guard = _Deadline(time.monotonic() + timeout_s)
    conn._create_connection = guard.connector(addresses)  # type: ignore[attr-defined]  # checked addresses only
    # The trace context stays here: the receiver is a tenant's, not part of the deployment.
    with tracing.span("POST", "client", _post_attributes(delivery, host, port)) as span:
        timer = threading.Timer(timeout_s, guard.cut)
        timer.start()
        try:
            conn.request("POST", path, body=delivery.body.encode(), headers=headers)
            answer = conn.getresponse()
            answer.read(MAX_ANSWER_BYTES)
            status = answer.status
        except (OSError, http.client.HTTPException, ValueError) as e:  # refused, reset, timed out, TLS, cut
            log.warning(
                "webhook %s to %s (%s): %s: %s", delivery.event_id, delivery.url, addresses, type(e).__name__, e
            )
            span.fail("no answer", type(e).__name__)
            return "no answer (connection failed, timed out or cut at the deadline)"
        finally:
            timer.cancel()
            guard.close(conn)
        span.set("http.response.status_code", status)
        if not 200 <= status < 300:
            span.fail(f"HTTP {status}", str(status))
    return None if 200 <= status < 300 else f"HTTP {status}"


def _post_attributes(delivery: Delivery, host: str, port: int) -> dict[str, Any]:
    """The POST span's attributes: HTTP's conventions, the URL without its query or credentials."""
    if not tracing.enabled():
        return {}
    parts = urlsplit(delivery.url)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # (an IPv6 address in brackets)
    return {
        "http.request.method": "POST",
        "url.full": urlunsplit((parts.scheme, netloc, parts.path or "/", "", "")),
        "server.address": host,
        "server.port": port,
        "stylequeue.webhook.event_id": delivery.event_id,
        "stylequeue.job_id": delivery.job_id,
    }


class _Deadline:
    """One attempt's deadline over the socket it dials, wherever the attempt is (connect, TLS, reads).

    The timer shuts the connection's socket down through a duplicate of its descriptor (the TLS
    wrapper takes the socket object over), under a lock with the close, so it never touches a
    descriptor the system has reused.
    """

    def __init__(self, at: float) -> None:
        self.at = at
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._done = False

    def connector(self, addresses: list[str]) -> Callable[..., socket.socket]:
        """A ``create_connection`` that dials ``addresses`` in turn within the deadline."""

        def connect(addr: Any, timeout: Any = None, source: Any = None) -> socket.socket:
            error: OSError = OSError("no address to connect to")
            for address in addresses:
                left = self.at - time.monotonic()
                if left <= 0:
                    break
                try:
                    sock = socket.create_connection((address, addr[1]), left, source)
                except OSError as e:
                    error = e
                    continue
                with self._lock:
                    if self._done:
                        sock.close()
                        raise TimeoutError("the attempt's deadline passed")
                    self._fd = sock.fileno()
                return sock
            raise error

        return connect

    def cut(self) -> None:
        """The deadline: end whatever the connection is doing."""
        with self._lock:
            self._done = True
            if self._fd is None:
                return
            with contextlib.suppress(OSError):
                dup = socket.socket(fileno=os.dup(self._fd))
                try:
                    dup.shutdown(socket.SHUT_RDWR)
                finally:
                    dup.close()

    def close(self, conn: http.client.HTTPConnection) -> None:
        """Close the connection; the deadline can no longer touch its descriptor."""
        with self._lock:
            self._done = True
            conn.close()
            self._fd = None


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


@app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver(self: Any, message: Any) -> None:
    """Take one event into the schedule, once per event id (see the module docstring)."""
    try:
        delivery = Delivery.from_dict(message)
    except ValueError as e:
        log.error("dropped a malformed webhook delivery: %s", e)
        return
    try:
        scheduled = schedule(_redis(), delivery, trace=tracing.headers())  # this task's span: each attempt's parent
    except broker.errors() as e:  # READONLY, OOM, a blip: the event must not be acknowledged away
        log.warning("webhook %s: the schedule is not writable now (%s); again in 2 s", delivery.event_id, e)
        raise self.retry(countdown=2.0) from None
    if not scheduled:
        log.info("webhook %s: already being delivered, or delivered: this copy is dropped", delivery.event_id)


def schedule(redis: Any, delivery: Delivery, at: float | None = None, trace: dict[str, str] | None = None) -> bool:
    """Put ``delivery`` in the schedule unless its event is there already or has ended.

    ``trace``: the trace context its attempts join (:func:`producer.tracing.headers`), kept with it.
    """
    payload = json.dumps(_entry(delivery, 0, trace))
    event = delivery.event_id
    script = scripts.load("producer.broker", "webhook_schedule")
    done = keys.WEBHOOK_DONE.format(event)
    return bool(script(redis, 3, keys.WEBHOOKS_PENDING, keys.WEBHOOKS_DUE, done, event, payload, at or time.time()))


def _entry(delivery: Delivery, attempts: int, trace: Any = None) -> dict[str, Any]:
    """An event's entry in the schedule: the delivery, the attempts made, and its trace context if any."""
    return {"delivery": delivery.to_dict(), "attempts": attempts, **({"trace": trace} if trace else {})}


def attempt(redis: Any, settings: Settings, delivery: Delivery, attempts: int, token: str, trace: Any = None) -> None:
    """One attempt at an event claimed with ``token``, then its end or its next due time.

    Only the holder of the event's current claim ends it or sets its next attempt: an attempt
    that outlived its claim (another notifier claimed the event since) changes nothing. The
    attempt joins the trace of ``trace`` (the schedule entry's), and the next one will too.
    """
    with tracing.attached(trace):
        _attempt(redis, settings, delivery, attempts, token, trace)


def _attempt(redis: Any, settings: Settings, delivery: Delivery, attempts: int, token: str, trace: Any) -> None:
    secret = _secret(delivery.tenant)
    if secret is None:
        _end(redis, settings, delivery, token, "failed", f"tenant {delivery.tenant!r} has no webhook_secret")
        return
    error: str | None = None
    try:
        addresses = webhooks.check_url(delivery.url, settings)
    except webhooks.Unresolved as e:
        addresses, error = [], f"the host does not resolve now ({e.message})"
    except (InvalidJob, ConfigError) as e:
        _end(redis, settings, delivery, token, "failed", f"refused by the guard: {e}")
        return
    if addresses:
        error = post(delivery, secret, settings.webhook_timeout_s, addresses)
        if error is None:
            _end(redis, settings, delivery, token, "delivered")
            log.info("webhook %s delivered to %s", delivery.event_id, delivery.url)
            return
    wait = backoff_s(attempts, settings.webhook_backoff_s)
    if time.time() + wait > delivery.first_at + settings.webhook_retry_for_s:
        _end(redis, settings, delivery, token, "failed", error)
        return
    payload = json.dumps(_entry(delivery, attempts + 1, trace))
    again = scripts.load("producer.broker", "webhook_again")
    due = time.time() + wait
    if again(
        redis, 3, keys.WEBHOOKS_DUE, keys.WEBHOOKS_PENDING, keys.WEBHOOKS_CLAIMS, delivery.event_id, payload, due, token
    ):
        _count(delivery, "attempts_failed", error)
        log.warning("webhook %s to %s: %s; retry in %.1f s", delivery.event_id, delivery.url, error, wait)


def _end(
    redis: Any, settings: Settings, delivery: Delivery, token: str, outcome: str, error: str | None = None
) -> None:
    ttl = int(settings.webhook_retry_for_s + DONE_SLACK_S)
    end = scripts.load("producer.broker", "webhook_end")
    done = keys.WEBHOOK_DONE.format(delivery.event_id)
    claims = keys.WEBHOOKS_CLAIMS
    if end(redis, 4, keys.WEBHOOKS_DUE, keys.WEBHOOKS_PENDING, done, claims, delivery.event_id, outcome, ttl, token):
        if outcome == "failed":
            log.error("webhook %s to %s failed for good: %s", delivery.event_id, delivery.url, error)
        _count(delivery, outcome, error)


class Dispatcher:
    """Claims due events from the schedule and makes their attempts, ``concurrency`` at a time.

    Args:
        settings: The deployment settings.
        concurrency: Attempts at once (the notifier's ``-c``).
    """

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.redis = broker.of(settings)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")
        self._busy = threading.Semaphore(self.concurrency)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)

    def start(self) -> None:
        """Start claiming."""
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; let the attempts under way end (each by its deadline)."""
        self._stop.set()
        self._thread.join(timeout=self.settings.webhook_timeout_s + 5)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.claim_once()
            except broker.errors() as e:
                log.warning("webhook schedule unreachable (%s); again in 1 s", e)
                self._stop.wait(1.0)
                continue
            except Exception:  # never let the dispatcher die: the notifier would deliver nothing
                log.exception("webhook dispatcher: unexpected error; again in 1 s")
                self._stop.wait(1.0)
                continue
            if not claimed:
                self._stop.wait(POLL_S)

    def claim_once(self) -> int:
        """Claim as many due events as there are free slots and start their attempts; how many."""
        free = 0
        while self._busy.acquire(blocking=False):
            free += 1
        if free == 0:
            self._stop.wait(POLL_S)
            return 0
        started = 0
        try:
            now = time.time()
            until = now + self.settings.webhook_timeout_s + CLAIM_SLACK_S
            token = uuid.uuid4().hex
            claim = scripts.load("producer.broker", "webhook_claim")
            got = claim(
                self.redis, 3, keys.WEBHOOKS_DUE, keys.WEBHOOKS_PENDING, keys.WEBHOOKS_CLAIMS, now, until, free, token
            )
            for raw in got[1::2]:
                if self._stop.is_set():
                    break  # stopping: the claim expires and another notifier takes the event
                self._pool.submit(self._attempt, raw, token)
                started += 1
        finally:
            for _ in range(free - started):
                self._busy.release()  # every slot not given to an attempt, whatever happened
        return started

    def _attempt(self, raw: Any, token: str) -> None:
        try:
            entry = json.loads(raw)
            delivery = Delivery.from_dict(entry["delivery"])
            attempt(self.redis, self.settings, delivery, int(entry["attempts"]), token, entry.get("trace"))
        except Exception:
            log.exception("webhook attempt failed unexpectedly; the event is due again after its claim")
        finally:
            self._busy.release()


class _Dispatch(bootsteps.StartStopStep):
    """Runs a :class:`Dispatcher` in each notifier, beside Celery's pool."""

    dispatcher: Dispatcher | None = None

    def start(self, worker: Any) -> None:
        # Traces (when on): before the consumer, the blueprint's last step, takes a message.
        tracing.setup(tracing.NOTIFIER, instrument=("celery",))
        self.dispatcher = Dispatcher(_settings(), int(getattr(worker, "concurrency", 4) or 4))
        self.dispatcher.start()

    def stop(self, worker: Any) -> None:
        dispatcher = self.dispatcher
        if dispatcher is not None:
            self.dispatcher = None
            dispatcher.stop()
            tracing.shutdown()

    def terminate(self, worker: Any) -> None:
        """A cold shutdown stops it too."""
        self.stop(worker)


app.steps["worker"].add(_Dispatch)
