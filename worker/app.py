"""The worker's Celery app: ``celery -A worker.app worker -Q stylequeue --pool prefork -c <GPUs>``.

Importing this module imports Celery but not TensorFlow: the model is loaded in each pool child
by ``worker_process_init`` (TensorFlow and CUDA do not survive ``fork``), and
``worker_proc_alive_timeout`` (``STYLEQUEUE_PROC_ALIVE_TIMEOUT_S``) gives the child time to do it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init

from producer.app import make_celery
from producer.settings import Settings
from worker import runtime

log = logging.getLogger(__name__)

settings = Settings.from_env()
app = make_celery(settings, main="stylequeue-worker")
app.conf.include = ["worker.tasks"]


@worker_process_init.connect
def _start_child(**_: Any) -> None:
    """Pin a GPU (optional) and load the model in the pool child, before it takes a job."""
    from billiard import current_process

    runtime.pin_gpu(current_process().index)
    runtime.start(settings)
