"""Job events: every state change in a capped Redis Stream, and what they trigger.

That is: webhooks, batch completion, the tenant's in-flight count.

The worker announces ``job.started`` when a run takes a job and ``job.progress`` at every tenth of
the way (once per tenth, whichever run gets there); ``job.completed`` is written by the script
that ends the job (:mod:`producer.broker.ending`), in the same step; the HTTP API announces
``job.queued``. Each event is ``XADD``ed to
``stylequeue:events`` (capped at ``STYLEQUEUE_EVENTS_MAX`` entries), as fields ``id``, ``type``,
``job_id`` and ``data`` (JSON), and ``tenant`` for a ``batch.completed`` (a job's tenant is its id's
prefix), so any language can read it with a consumer group::

    XGROUP CREATE stylequeue:events billing $ MKSTREAM
    XREADGROUP GROUP billing me COUNT 100 BLOCK 5000 STREAMS stylequeue:events >

Jobs submitted through the HTTP API have a record (``stylequeue:job:<id>``: tenant, batch,
webhook, the events it wants, timestamps). For those, an event also queues a webhook delivery for
the notifier (:mod:`producer.notifier`), updates the record's timestamps and state, counts a
finished job into its batch (and, when it is the batch's last, announces ``batch.completed``),
and removes it from its tenant's in-flight set.

Event ids are stable and name one payload each (``<job>.started``, ``<job>.progress.3``,
``<job>.completed.<end time in ms>``, ``<batch>.completed.<ms>``): a receiver that keeps the ids
it has seen gets each event exactly once however often it is delivered; a job sent again after it
ended (a dead letter requeued) ends with a new id.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from producer import tracing
from producer.broker import keys, scripts, wire
from producer.core.settings import Settings
from producer.core.states import FAILURE, PENDING, PROGRESS, REVOKED, STARTED, SUCCESS, JobProgress

log = logging.getLogger(__name__)

#: The Celery task the notifier runs for one webhook delivery.
WEBHOOK_TASK = "stylequeue.webhook"
#: The webhook events a job may ask for (``webhook_events``).
WEBHOOK_EVENTS = ("started", "progress", "completed")


@dataclass(frozen=True)
class Event:
    """One state change.

    Attributes:
        id: Stable id (the ``webhook-id`` of its deliveries).
        type: ``job.queued``, ``job.started``, ``job.progress``, ``job.completed`` or ``batch.completed``.
        job_id: The job (the batch id for ``batch.completed``).
        data: What changed: the state, progress, result or error.
        at: When (Unix epoch seconds).
    """

    id: str
    type: str
    job_id: str
    data: dict[str, Any]
    at: float

    def body(self) -> str:
        """The webhook body: Standard Webhooks' ``{"type", "timestamp", "data"}``."""
        return json.dumps(
            {"type": self.type, "timestamp": iso(self.at), "data": {"id": self.job_id, **self.data}},
            separators=(",", ":"),
        )


def iso(t: float) -> str:
    """Unix time as ISO 8601 UTC with milliseconds (``2026-11-30T08:00:00.000Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


# A job record's transitions, exactly once each however often they are announced.
# KEYS: job record, its batch (the record again when none), its tenant's in-flight set.
# STARTED: ARGV time. Returns 1 when the record went PENDING → STARTED, else 0.
_STARTED = scripts.load("producer.broker", "event_started")
_PROGRESS = scripts.load("producer.broker", "event_progress")


class Announcer:
    """Publishes events and what follows from them (see the module docstring).

    Every method may be called again after a Redis error (a retry): record transitions happen
    once, and an event published twice has the same id.

    Args:
        redis: Client of the broker's Redis.
        settings: Stream cap, notifier queue, record expiry.
    """

    def __init__(self, redis: Any, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    def queued(self, job_id: str) -> None:
        """An API job was accepted."""
        self._publish(Event(f"{job_id}.queued", "job.queued", job_id, {"state": PENDING}, time.time()))

    def started(self, job_id: str) -> None:
        """A run took the job (each run announces it; the event id is the same)."""
        now = time.time()
        record = self.record(job_id)
        if record:
            _STARTED(self.redis, 3, *self._keys(job_id, record), now)
        self._publish(Event(f"{job_id}.started", "job.started", job_id, {"state": STARTED}, now), record)

    def progress(self, job_id: str, progress: JobProgress, previous: int) -> int:
        """The job advanced; an event at every tenth of the way. Returns the tenth reached.

        Once per tenth, whichever run reaches it (a take-over run does not announce it again).
        """
        tenth = 10 * progress.iteration // max(1, progress.total)
        if tenth > previous:
            data = {"state": PROGRESS, "progress": progress.to_dict()}
            event = Event(f"{job_id}.progress.{tenth}", "job.progress", job_id, data, time.time())
            marker = keys.PROGRESS.format(job_id)
            webhook = self.webhook(event, self.record(job_id))
            _PROGRESS(
                self.redis,
                4,
                marker,
                keys.EVENTS,
                webhook.list_name if webhook else marker,
                keys.DONE.format(job_id),
                tenth,
                self.settings.result_expires_s,
                event.id,
                job_id,
                json.dumps(data),
                self.settings.events_max,
                webhook.payload if webhook else "",
            )
        return max(tenth, previous)

    def batch_completed(self, batch: str, at: float) -> None:
        """Announce ``batch.completed`` with its counts.

        The end that completed the batch calls it (:mod:`producer.broker.ending`); a retry of
        that end publishes the same event id again.
        """
        info = {k.decode(): v.decode() for k, v in self.redis.hgetall(keys.BATCH.format(batch)).items()}
        if not info:
            return
        counts = {s: int(info.get(s.lower(), 0)) for s in (SUCCESS, FAILURE, REVOKED)}
        data = {"counts": counts, "total": int(info.get("total", 0))}
        event = Event(f"{batch}.completed.{round(at * 1000)}", "batch.completed", batch, data, at)
        self._publish(event, {"tenant": info.get("tenant", ""), "webhook": info.get("webhook", "")})

    def _keys(self, job_id: str, record: dict[str, str]) -> list[str]:
        job_key = keys.JOB.format(job_id)
        batch = record.get("batch")
        return [
            job_key,
            keys.BATCH.format(batch) if batch else job_key,
            keys.TENANT_INFLIGHT.format(record.get("tenant", "")),
        ]

    def record(self, job_id: str) -> dict[str, str]:
        """The job's API record (tenant, batch, webhook, state...), or ``{}`` for a job sent otherwise."""
        raw = self.redis.hgetall(keys.JOB.format(job_id))
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else {}

    def webhook(self, event: Event, record: dict[str, str]) -> wire.Envelope | None:
        """The notifier's message delivering ``event``, if the record asks for a webhook of its type."""
        url = record.get("webhook")
        wanted = (record.get("webhook_events") or "completed").split(",")
        if not url or event.type.split(".", 1)[1] not in wanted:
            return None
        delivery = Delivery(event.id, url, record.get("tenant", ""), event.job_id, event.body(), time.time())
        return wire.envelope(
            f"webhook-{event.id}-{uuid.uuid4().hex[:8]}",
            delivery.to_dict(),
            self.settings.webhook_queue,
            0,
            task=WEBHOOK_TASK,
            headers=tracing.headers(),  # the job's trace, on to the notifier's POST
        )

    def _publish(self, event: Event, record: dict[str, str] | None = None) -> None:
        pipe = self.redis.pipeline(transaction=True)
        fields = {"id": event.id, "type": event.type, "job_id": event.job_id, "data": json.dumps(event.data)}
        if event.type == "batch.completed" and record and record.get("tenant"):
            fields["tenant"] = record["tenant"]  # a batch's id does not name its tenant (a job's does)
        pipe.xadd(keys.EVENTS, fields, maxlen=self.settings.events_max, approximate=True)
        webhook = self.webhook(event, self.record(event.job_id) if record is None else record)
        if webhook is not None:
            pipe.lpush(webhook.list_name, webhook.payload)
        pipe.execute()


@dataclass(frozen=True)
class Delivery:
    """One webhook to deliver: the notifier task's argument.

    Attributes:
        event_id: The event's id (``webhook-id``; the same on every attempt).
        url: Where to POST it.
        tenant: Whose secret signs it.
        job_id: The job (or batch) it is about.
        body: The JSON body, exactly as signed.
        first_at: When it was first queued (it is retried until ``STYLEQUEUE_WEBHOOK_RETRY_FOR_S`` after).
    """

    event_id: str
    url: str
    tenant: str
    job_id: str
    body: str
    first_at: float

    def to_dict(self) -> dict[str, Any]:
        """The task argument."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Delivery:
        """Read a task argument back.

        Raises:
            ValueError: a field is missing or not of its type.
        """
        try:
            return cls(
                str(data["event_id"]),
                str(data["url"]),
                str(data["tenant"]),
                str(data["job_id"]),
                str(data["body"]),
                float(data["first_at"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a webhook delivery: {e}") from None
