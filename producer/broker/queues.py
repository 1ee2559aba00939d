r"""The Redis lists a queue's jobs wait in, and the queue depth as an autoscaler should see it.

Celery's Redis transport (kombu) keeps one list per priority step, named with kombu's own
separator ``"\\x06\\x16"`` (bytes 0x06 0x16):

========== ================================= =======================================
priority   Redis list                        taken
========== ================================= =======================================
0          ``stylequeue``                    first (also: a message with no priority)
1 … 9      ``stylequeue\\x06\\x161`` … ``…9``  in order, 9 last
========== ================================= =======================================

Workers read all ten. A producer with kombu's defaults (any plain ``Celery()`` app) files
priorities 0–2 under 0, 3–5 under 3, 6–8 under 6 and 9 under 9 — lists the workers read, in an
order that respects the priorities; with ``broker_transport_options={"priority_steps":
list(range(10))}`` (what stylequeue's own client does) each priority has its own list. A
non-Python producer ``LPUSH``es kombu's message envelope (see :mod:`producer.broker.wire`) onto the list
of its priority.

Jobs a worker has taken but not acknowledged (with late acks: every running job) sit in kombu's
``unacked`` hash. ``LLEN stylequeue`` (what KEDA's Redis list scaler reads) sees one priority and
none of the running jobs: use :func:`depth`, ``stylequeue queue`` or the exporters' gauges.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from producer.broker import keys

#: kombu's Redis separator between a queue's name and a priority (its default).
SEP = "\x06\x16"
#: Every priority a job may have; workers read one list per step (0 first).
PRIORITY_STEPS = tuple(range(10))
#: Priority of a job sent by the stylequeue client without one (0 = most urgent, 9 = least).
DEFAULT_PRIORITY = 5
#: Separator of the lists this project used before it adopted kombu's (``stylequeue:5``).
LEGACY_SEP = ":"


def list_name(queue: str, priority: int) -> str:
    """The Redis list holding ``queue``'s messages of ``priority`` (kombu's name for it)."""
    return queue if priority == 0 else f"{queue}{SEP}{priority}"


def list_names(queue: str) -> list[str]:
    """Every list of ``queue``, in the order workers take from them."""
    return [list_name(queue, p) for p in PRIORITY_STEPS]


@dataclass(frozen=True)
class QueueDepth:
    """Jobs in one queue.

    Attributes:
        queue: Queue name.
        ready: Waiting in the priority lists, by priority (0 most urgent).
        unacked: Taken by a worker and not acknowledged yet (running, or held by a worker that
            died until the sweep hands them to another).
    """

    queue: str
    ready: dict[int, int]
    unacked: int

    @property
    def total(self) -> int:
        """Everything a worker pool still has to do: ready plus unacked."""
        return sum(self.ready.values()) + self.unacked


def depth(redis: Any, queue: str) -> QueueDepth:
    """Count ``queue``'s ready and unacked jobs: one pipeline plus one scan of the unacked hash.

    Args:
        redis: A ``redis.Redis`` on the broker's database.
        queue: Queue name.
    """
    pipe = redis.pipeline(transaction=False)
    for name in list_names(queue):
        pipe.llen(name)
    ready = dict(zip(PRIORITY_STEPS, (int(n) for n in pipe.execute())))
    unacked = 0
    # The hash holds every queue's unacked messages as JSON [message, exchange, routing_key].
    for _, raw in redis.hscan_iter(keys.UNACKED, count=500):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        unacked += routing_key == queue
    return QueueDepth(queue, ready, unacked)


@dataclass(frozen=True)
class Gauge:
    """One sample of a queue-depth gauge (the single definition both exporters render)."""

    name: str
    help: str
    labels: dict[str, str]
    value: float


def gauges(d: QueueDepth) -> Iterator[Gauge]:
    """The queue-depth gauges of ``d``.

    ``celery_queue_length`` (celery-exporter's name: every priority plus unacked), ready jobs by
    priority, and unacked jobs.
    """
    yield Gauge(
        "celery_queue_length", "Jobs in the queue: all priorities plus unacked", {"queue_name": d.queue}, d.total
    )
    for p, n in d.ready.items():
        yield Gauge("stylequeue_queue_ready", "Waiting jobs", {"queue_name": d.queue, "priority": str(p)}, n)
    yield Gauge("stylequeue_queue_unacked", "Jobs taken, not yet acknowledged", {"queue_name": d.queue}, d.unacked)


def migrate_legacy(redis: Any, queue: str) -> int:
    """Move jobs out of the ``<queue>:<priority>`` lists of earlier versions into kombu's lists.

    Clients of earlier versions file jobs there; this keeps them from being stranded during an
    upgrade. Returns the number of messages moved. Each move is atomic (``LMOVE``); the moved
    jobs keep their order and go ahead of the jobs already waiting at their priority.
    """
    moved = 0
    for p in PRIORITY_STEPS[1:]:
        old = f"{queue}{LEGACY_SEP}{p}"
        while redis.lmove(old, list_name(queue, p), "LEFT", "RIGHT") is not None:
            moved += 1
    return moved
