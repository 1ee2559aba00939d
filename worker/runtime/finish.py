"""How the worker ends a job: the one end, Celery's result from what it recorded, the checkpoint.

The end is :func:`producer.broker.ending.end`; Celery's result is published from the state it
returns; the checkpoint goes once the end is recorded.

Every path of the worker that ends a job comes here: the task (success, failure, cancel, an
invalid message, the crash cap), the signal policies (a refused message, a revoke, a hard time
limit) and a delivery of a job that has ended (its recorded state published again).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from producer import broker
from producer.broker import ending, keys
from producer.broker.ending import Ended
from producer.broker.events import Announcer
from producer.core.contract import ObjectRef
from producer.core.errors import JobFailed, PartialSubmit, PermanentError, StylequeueError
from producer.core.retrying import patiently
from producer.core.settings import Settings
from producer.core.states import REVOKED, SUCCESS, FinalState
from producer.storage import Store
from worker.runtime import checkpoint
from worker.runtime.guard import split

log = logging.getLogger(__name__)

T = TypeVar("T")


def patient(settings: Settings, action: Callable[[], T], what: str) -> T:
    """``action`` (Redis bookkeeping of a job), a Redis outage waited out for ``STYLEQUEUE_RETRY_FOR_S``."""
    return patiently(
        action,
        retry_on=broker.errors(),
        budget_s=settings.retry_for_s,
        cap_s=settings.retry_backoff_max_s,
        what=what,
    )


def finish(
    announcer: Announcer, job_id: str, final: FinalState, *, lease: str | None = None, cancel: bool = False
) -> Ended:
    """End ``job_id`` with ``final``, waiting a Redis outage out for ``STYLEQUEUE_RETRY_FOR_S``.

    A try whose reply was lost is retried and recognised as applied.

    Args:
        announcer: The broker's Redis and the settings (its ``redis`` and ``settings``).
        job_id: The job.
        final: Its final state.
        lease: The ending run's lease value; ``None`` for a path without a run (it ends the job
            only while no run holds it; see :func:`producer.broker.ending.end`).
        cancel: Set the cancel flag too.
    """
    return patient(
        announcer.settings,
        lambda: ending.end(announcer.redis, announcer, job_id, final, lease=lease, cancel=cancel),
        f"job {job_id}: recording its end",
    )


def finish_killed(announcer: Announcer, job_id: str, final: FinalState, pid: int | None) -> Ended:
    """End a job whose run this worker kills (the hard time limit, a terminate), in the pool's parent.

    The parent does not know the run's lease value, but the lease names its run (``host:pid:…``):
    when it is this host's ``pid`` (the child being killed), the job ends with that lease; with no
    lease it ends; another run's lease (a take-over: the killed run had lost the job) keeps it.
    """
    ended = finish(announcer, job_id, final)
    if not ended.held:
        return ended
    value = patient(
        announcer.settings, lambda: announcer.redis.get(keys.LEASE.format(job_id)), f"job {job_id}: reading its lease"
    )
    holder = split(value)
    if holder is None:
        return finish(announcer, job_id, final)  # the lease lapsed meanwhile
    host, _, rest = holder[0].partition(":")
    if pid is not None and host == socket.gethostname() and rest.partition(":")[0] == str(pid):
        return finish(announcer, job_id, final, lease=f"{holder[0]}|{holder[1] or '-'}")
    return ended


def publish(backend: Any, job_id: str, final: FinalState, request: Any = None) -> None:
    """Write the recorded ``final`` as Celery's result of ``job_id`` in ``backend``.

    Every path publishes the one recorded state: a later delivery, a refused copy, a revoke of
    a job that had ended.
    """
    if final.state == SUCCESS:
        backend.store_result(job_id, final.result, SUCCESS, request=request)
        return
    error = rebuild(final.error_type or StylequeueError.__name__, final.error_message or "")
    if final.state == REVOKED:
        backend.mark_as_revoked(job_id, reason=str(error), request=request)
    else:
        backend.mark_as_failure(job_id, error, request=request)


def rebuild(error_type: str, message: str) -> BaseException:
    """The error a final state names, as an exception of the error tree.

    ``PermanentError`` for a name the tree does not have.
    """
    from producer.core import errors

    cls = getattr(errors, error_type, None)
    if not (isinstance(cls, type) and issubclass(cls, StylequeueError)) or cls in (JobFailed, PartialSubmit):
        cls = PermanentError
    try:
        return cls(message)
    except TypeError:
        return PermanentError(message)


def remove_checkpoint(store: Store, output: ObjectRef | None, job_id: str) -> None:
    """Remove the checkpoint a job that ended may have left (best effort)."""
    if output is not None:
        checkpoint.remove(store, output, job_id)
