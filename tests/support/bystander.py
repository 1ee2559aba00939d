"""A Celery app that is not ours, sharing the Redis: a consumer with a short visibility timeout.

kombu's Redis transport hands back every unacknowledged message on that Redis older than the
consumer's own visibility timeout, whatever its queue: a notifier that held retries as
unacknowledged ETA messages saw them copied by such a neighbour. Run it with the real command:
``celery -A support.bystander worker`` (``BYSTANDER_BROKER_URL`` names the Redis).
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bystander", broker=os.environ["BYSTANDER_BROKER_URL"])
app.conf.update(
    broker_transport_options={"visibility_timeout": 2, "unacked_restore_interval": 1},
    task_default_queue="bystander",
    worker_hijack_root_logger=False,
)


@app.task(name="bystander.noop")
def noop() -> None:
    """Nothing: the app only has to consume."""
