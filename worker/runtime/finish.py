"""How the worker ends a job: the one end, Celery's result from what it recorded, the checkpoint.

The end is :func:`producer.broker.ending.end`; Celery's result is published from the state it
returns; the checkpoint goes once the end is recorded.

Every path of the worker that ends a job comes here: the task (success, failure, cancel, an
invalid message, the crash cap), the signal policies (a refused message, a revoke, a hard time
limit) and a delivery of a job that has ended (its recorded state published again).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from producer import broker
from producer.broker import ending, keys
from producer.broker.ending import Ended
from producer.broker.events import Announcer
from producer.core.contract import ObjectRef
from producer.core.errors import JobFailed, PartialSubmit, PermanentError, StylequeueError
from producer.core.retrying import patiently
from producer.core.states import REVOKED, SUCCESS, FinalState
from producer.storage import Store
from worker.runtime import checkpoint
from worker.runtime.guard import split

log = logging.getLogger(__name__)


def finish(
    announcer: Announcer, job_id: str, final: FinalState, *, lease: str | None = None, tag: str | None = None
) -> Ended:
    """End ``job_id`` with ``final``, waiting a Redis outage out for ``STYLEQUEUE_RETRY_FOR_S``.

    A try whose reply was lost is retried and recognised as applied.

    Args:
        announcer: The broker's Redis and the settings (its ``redis`` and ``settings``).
        job_id: The job.
        final: Its final state.
        lease: The ending run's lease value (see :func:`producer.broker.ending.end`).
        tag: The delivery tag of a path without a lease (see :func:`producer.broker.ending.end`).
    """
    settings = announcer.settings
    return patiently(
        lambda: ending.end(announcer.redis, announcer, job_id, final, lease=lease, tag=tag),
        retry_on=broker.errors(),
        budget_s=settings.retry_for_s,
        cap_s=settings.retry_backoff_max_s,
        what=f"job {job_id}: recording its end",
    )


def finish_killed(announcer: Announcer, job_id: str, final: FinalState) -> Ended:
    """End a job whose run this worker killed (the hard time limit), in the pool's parent.

    The parent does not know the killed run's lease; the lease says whose it is (``host:pid:…``).
    When it is a process of this host that is gone, it was the killed run: the job ends with its
    lease. A live run elsewhere (a take-over) keeps the job.
    """
    ended = finish(announcer, job_id, final)
    if not ended.held:
        return ended
    holder = split(announcer.redis.get(keys.LEASE.format(job_id)))
    if holder is None:
        return finish(announcer, job_id, final)  # the lease lapsed meanwhile
    owner = holder[0]
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        value = f"{owner}|{holder[1] or '-'}"
        return finish(announcer, job_id, final, lease=value)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not reaped yet) is gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
