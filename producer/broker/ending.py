"""The end of a job: one function writes it, one Lua script applies it, everywhere it lives.

A job ends ``SUCCESS``, ``FAILURE`` or ``REVOKED`` exactly once. :func:`end` is the only code that
records that, for every path: a run's success, failure or cancel, a message refused before it ran,
a crash cap, a hard time limit, a client's cancel of a queued job, a revoke by a plain Celery
client. Its script (``lua/job_end.lua``) writes in one step:

* the done marker ``stylequeue:done:<job>`` (what later deliveries republish; it never changes),
* the lease and the runs set removed,
* the ``job.completed`` event in the stream, and its webhook when the job asked for one,
* the API record's state and end time, its tenant's in-flight set, its batch's counts (and
  whether this end completed the batch).

Rules, all inside the script:

* **The first final state wins.** Once a job has a done marker nothing replaces it; the call
  returns that state (``Ended.applied`` tells whether it is the caller's).
* **Only the job's owner ends a running job.** A run ends it with its lease value; a path without
  a lease (a refused or revoked message, a cancel) ends it only while no run holds it: otherwise
  nothing is written (``Ended.held``); a run the worker kills is ended with its own lease
  (:mod:`worker.killed`).
* **A lost reply is harmless.** A try whose reply never came (a reset connection, a timeout) is
  retried with the same arguments; the retry finds its own final state recorded and says
  ``applied``, so the caller goes on exactly as if the first reply had arrived.

Celery's result (``celery-task-meta-<job>``, possibly in another Redis) is written after the
script, by the caller, from the state the script returned: every path publishes the one recorded
final state. ``batch.completed`` is published after the script too (by the end that completed the
batch; again on a retry of it, with the same event id).

:func:`reopen` is the inverse, for a dead letter sent again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from producer import broker
from producer.broker import keys, scripts
from producer.broker.events import Announcer, Event
from producer.core.states import FinalState

_END = scripts.load("producer.broker", "job_end")
_REOPEN = scripts.load("producer.broker", "job_reopen")


@dataclass(frozen=True)
class Ended:
    """What :func:`end` found or did.

    Attributes:
        final: The job's final state: the caller's, or the one recorded before (``None`` when held).
        applied: ``final`` is the caller's (this call, or a try of it whose reply was lost, wrote it).
        held: Nothing was written: another live run holds the job.
        batch: The batch this end completed, if any (its ``batch.completed`` was published).
    """

    final: FinalState | None
    applied: bool
    held: bool = False
    batch: str | None = None


def completed_id(job_id: str, final: FinalState) -> str:
    """The id of a job's ``job.completed`` event: one per end (a job sent again ends anew)."""
    return f"{job_id}.completed.{round(final.at * 1000)}"


def event_data(final: FinalState) -> dict[str, Any]:
    """The ``data`` of a ``job.completed`` event: the state, and the result or the error."""
    data: dict[str, Any] = {"state": final.state}
    if final.result is not None:
        data["result"] = final.result
    if final.error_type is not None:
        data["error"] = {"type": final.error_type, "message": final.error_message or ""}
    return data


def encode(final: FinalState) -> str:
    """The done marker's value (compact JSON; a retry sends exactly the same bytes)."""
    return json.dumps(final.to_dict(), separators=(",", ":"), sort_keys=True)


def end(
    redis: Any,
    announcer: Announcer,
    job_id: str,
    final: FinalState,
    *,
    lease: str | None = None,
    cancel: bool = False,
) -> Ended:
    """Record ``final`` as the end of ``job_id`` (see the module docstring).

    Safe to call again with the same arguments after any Redis error: the caller's retry policy
    decides how long.

    Args:
        redis: Client of the broker's Redis.
        announcer: Builds the event's webhook and publishes ``batch.completed``.
        job_id: The job.
        final: Its final state.
        lease: The ending run's lease value (``owner|tag``): it ends the job if it holds the lease,
            or if nobody does (its lease lapsed and nobody took the job). ``None``: a path without
            a run (a refused or revoked message, a cancel): it ends the job only while no run holds
            it (a delivery tag cannot tell: kombu gives a restored message the same one).
        cancel: Set the cancel flag too (kept even when a run holds the job: it stops at its
            next iteration and ends the job itself).
    """
    settings = announcer.settings
    record = announcer.record(job_id)
    event = Event(completed_id(job_id, final), "job.completed", job_id, event_data(final), final.at)
    webhook = announcer.webhook(event, record)
    job_key = keys.JOB.format(job_id)
    batch = record.get("batch")
    who, whose = ("lease", lease) if lease else ("none", "")
    outcome, done, completed, completed_at = _END(
        redis,
        9,
        keys.DONE.format(job_id),
        keys.LEASE.format(job_id),
        keys.RUNS.format(job_id),
        keys.CANCEL.format(job_id),
        keys.EVENTS,
        job_key,
        keys.BATCH.format(batch) if batch else job_key,
        keys.TENANT_INFLIGHT.format(record.get("tenant", "")),
        webhook.list_name if webhook else job_key,
        encode(final),
        settings.result_expires_s,
        who,
        whose,
        "1" if cancel else "0",
        event.id,
        json.dumps(event.data, separators=(",", ":")),
        settings.events_max,
        final.state,
        final.at,
        job_id,
        webhook.payload if webhook else "",
    )
    outcome = _text(outcome)
    if outcome == "held":
        return Ended(None, applied=False, held=True)
    recorded = FinalState.from_dict(json.loads(done))
    applied = outcome == "applied" or _text(done) == encode(final)
    # Durable before the caller publishes it (STYLEQUEUE_REDIS_MIN_REPLICAS): NotReplicated makes
    # the caller try the end again, which finds it recorded and waits for the replicas once more.
    broker.replicated(redis, settings)
    if int(completed) and batch:
        announcer.batch_completed(batch, float(_text(completed_at) or time.time()))
    return Ended(recorded, applied=applied, batch=batch if int(completed) else None)


def reopen(redis: Any, job_id: str) -> str | None:
    """Undo the end of ``job_id`` so that it can run again; return the state it had ended with.

    The done marker, runs, cancel flag and progress marker go; an API record goes back to
    ``PENDING`` and into its tenant's in-flight set; its batch counts it as not ended (and its
    ``batch.completed`` may come again, with a new id). Celery's result is the caller's to forget.
    """
    record = {k.decode(): v.decode() for k, v in redis.hgetall(keys.JOB.format(job_id)).items()}
    job_key = keys.JOB.format(job_id)
    batch = record.get("batch")
    was = _text(
        _REOPEN(
            redis,
            7,
            keys.DONE.format(job_id),
            keys.RUNS.format(job_id),
            keys.CANCEL.format(job_id),
            job_key,
            keys.BATCH.format(batch) if batch else job_key,
            keys.TENANT_INFLIGHT.format(record.get("tenant", "")),
            keys.PROGRESS.format(job_id),
            job_id,
            time.time(),
        )
    )
    return was or None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
