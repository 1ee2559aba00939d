"""One worker process and one job: this module is the per-process state, its submodules the rest.

:mod:`~worker.runtime.devices` (GPUs and memory of this host), :mod:`~worker.runtime.jobs` (one
job, no Celery), :mod:`~worker.runtime.guard` (lease, fences, done marker),
:mod:`~worker.runtime.checkpoint`, :mod:`~worker.runtime.recovery` (the sweep),
:mod:`~worker.runtime.outcomes` (what a delivery amounted to); the Lua scripts are in ``lua/``.

Per-process state: the engine and the object-store client, built in the child process.

TensorFlow and CUDA do not survive ``fork``, and boto3 clients are not fork-safe, so nothing here
is built in the Celery parent: :func:`start` runs in ``worker_process_init`` of each pool child.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producer import broker
from producer.broker.events import Announcer
from producer.core.contract import ObjectRef
from producer.core.settings import Settings
from producer.storage import Store
from worker.runtime import devices
from worker.runtime.devices import visible_gpus

if TYPE_CHECKING:
    from worker.nst.engine import Engine

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a pool child needs to run jobs.

    Attributes:
        settings: The deployment settings.
        store: Object-store client.
        engine: The engine with its VGG19 loaded.
        model_load_s: Seconds it took to fetch and load the weights.
        redis: The broker's Redis (leases, done markers, dead letters, the job index).
        backend_redis: The result backend's Redis with a short timeout, for best-effort progress.
        announcer: Publishes the jobs' events (stream, webhooks, batches).
        memory_limit_bytes: What one job may need (``STYLEQUEUE_MAX_JOB_MEMORY_BYTES``, or 80% of
            this machine's GPU or RAM); 0 when unknown.
    """

    settings: Settings
    store: Store
    engine: Engine
    model_load_s: float
    redis: Any
    backend_redis: Any
    memory_limit_bytes: int
    announcer: Announcer


_current: Runtime | None = None


def pin_gpu(child_index: int) -> None:
    """Give pool child ``child_index`` one GPU of those visible (one process per GPU).

    Only when ``STYLEQUEUE_GPU_PER_CHILD=1``: with ``-c N`` on an N-GPU machine, child i sees only
    GPU i (``CUDA_VISIBLE_DEVICES``), set before TensorFlow is first imported in the child.
    """
    if os.environ.get("STYLEQUEUE_GPU_PER_CHILD") != "1":
        return
    gpus = visible_gpus()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[child_index % len(gpus)]
        log.info("pool child %d uses GPU %s", child_index, os.environ["CUDA_VISIBLE_DEVICES"])


def start(settings: Settings) -> Runtime:
    """Build the store client and the engine, fetch the weights and load the model."""
    global _current
    from worker.nst import quiet

    quiet.tensorflow()  # TensorFlow is first imported here, in the child, its noise in the log at DEBUG
    from worker.nst.engine import Engine

    started = time.perf_counter()
    store = Store(settings)
    weights = settings.weights
    if weights.startswith("s3://"):
        ref = ObjectRef.parse(weights, "STYLEQUEUE_WEIGHTS")
        weights = str(store.fetch_cached(ref, settings.weights_cache_dir, settings.weights_sha256))
    limit = settings.max_job_memory_bytes or devices.machine_limit_bytes()
    engine = Engine(weights=weights, weights_sha256=settings.weights_sha256, memory_limit_bytes=limit)
    engine.warm_up()
    redis = broker.of(settings)
    _current = Runtime(
        settings,
        store,
        engine,
        time.perf_counter() - started,
        redis,
        broker.of(settings, 2.0, backend=True),
        limit,
        Announcer(redis, settings),
    )
    log.info("worker process ready: weights %s loaded in %.2f s", settings.weights, _current.model_load_s)
    return _current


def current(settings: Settings | None = None) -> Runtime:
    """The process's runtime, started on first use if ``worker_process_init`` did not run (solo pool)."""
    return _current if _current is not None else start(settings or Settings.from_env())
