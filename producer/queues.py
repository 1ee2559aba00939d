"""Queue depth as the autoscaler should see it: every priority list plus the jobs being worked on.

Celery's Redis transport keeps one list per priority step: ``<queue>`` (priority 0) and
``<queue>:1`` … ``<queue>:9``, and every message a worker has taken but not yet acknowledged in
the ``unacked`` hash (with late acks: every running job). An ``LLEN <queue>`` (what KEDA's Redis
list scaler does) sees only the priority-0 list and none of the running jobs, so it scales GPU
workers down under jobs still being processed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: kombu's Redis transport names (``sep=":"`` in producer.app); see kombu.transport.redis.
UNACKED_KEY = "unacked"
PRIORITY_STEPS = range(10)


@dataclass(frozen=True)
class QueueDepth:
    """Jobs in one queue.

    Attributes:
        queue: Queue name.
        ready: Waiting in the priority lists, by priority (0 most urgent).
        unacked: Delivered to a worker and not acknowledged yet (running, or held by a dead
            worker until the visibility timeout returns them).
    """

    queue: str
    ready: dict[int, int]
    unacked: int

    @property
    def total(self) -> int:
        """Everything a worker pool still has to do: ready plus unacked."""
        return sum(self.ready.values()) + self.unacked


def list_name(queue: str, priority: int) -> str:
    """The Redis list holding ``queue``'s messages of ``priority``."""
    return queue if priority == 0 else f"{queue}:{priority}"


def depth(redis_client: Any, queue: str) -> QueueDepth:
    """Count ``queue``'s ready and unacked jobs in one pipeline plus one hash scan.

    Args:
        redis_client: A ``redis.Redis`` on the broker's database.
        queue: Queue name.
    """
    pipe = redis_client.pipeline(transaction=False)
    for p in PRIORITY_STEPS:
        pipe.llen(list_name(queue, p))
    ready = dict(zip(PRIORITY_STEPS, (int(n) for n in pipe.execute())))
    unacked = 0
    # The hash holds every queue's unacked messages as JSON [message, exchange, routing_key].
    for _, raw in redis_client.hscan_iter(UNACKED_KEY, count=500):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        unacked += routing_key == queue
    return QueueDepth(queue, ready, unacked)
