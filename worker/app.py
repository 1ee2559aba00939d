"""The worker's Celery app: ``stylequeue worker`` runs ``celery -A worker.app worker`` with it.

Importing this module imports Celery but not TensorFlow: the model is loaded in each pool child
by ``worker_process_init`` (TensorFlow and CUDA do not survive ``fork``), and
``worker_proc_alive_timeout`` (``STYLEQUEUE_PROC_ALIVE_TIMEOUT_S``) gives the child time to do it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from celery.signals import worker_process_init

from producer.app import make_celery
from producer.settings import Settings
from worker import runtime

log = logging.getLogger(__name__)

settings = Settings.from_env()

# prometheus_client picks its multiprocess mode when first imported: set the directory before.
# Children inherit it through fork; stale files from an earlier run are removed.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _metrics_dir = os.path.join(tempfile.gettempdir(), f"stylequeue-metrics-{os.getpid()}")
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

from worker import metrics, monitor  # noqa: E402  (after PROMETHEUS_MULTIPROC_DIR)

app = make_celery(settings, main="stylequeue-worker")
app.conf.include = ["worker.tasks"]
monitor.install(settings)


@worker_process_init.connect
def _start_child(**_: Any) -> None:
    """Pin a GPU (optional) and load the model in the pool child, before it takes a job."""
    from billiard import current_process

    runtime.pin_gpu(current_process().index)
    started = runtime.start(settings)
    metrics.model_load_seconds.set(started.model_load_s)
