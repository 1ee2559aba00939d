"""The Celery task ``stylequeue.transfer``: thin glue between a delivery and :mod:`worker.delivery`.

What a delivery amounts to (run, republished, stepped aside, handed back) is decided in
:class:`worker.delivery.Delivery`; the job itself runs in :func:`worker.runtime.jobs.run`; its
task class (:mod:`worker.killed`) ends the runs the pool's parent kills.
"""

from __future__ import annotations

from typing import Any

from producer.core.contract import TASK_NAME
from worker import killed, runtime
from worker.app import app
from worker.delivery import Delivery


@app.task(name=TASK_NAME, bind=True, base=killed.Transfer)
def transfer(self: Any, message: Any) -> dict[str, Any]:
    """Run one style-transfer job; see :mod:`producer.core.contract` for ``message``."""
    return Delivery(self, runtime.current(), message).handle()
