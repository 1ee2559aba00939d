"""One job, start to end, without Celery: validate → download → stylize → upload → result.

The Celery task (:mod:`worker.tasks`) only adds progress reporting, cancellation and the retry
policy around :func:`run`. Everything raised here belongs to the error tree.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from producer.contract import Job
from producer.errors import StoreUnavailable
from worker import images
from worker.checkpoint import Checkpointer, fingerprint
from worker.runtime import Runtime

log = logging.getLogger(__name__)

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def run(
    message: Any, task_id: str, runtime: Runtime, on_progress: Callable[[Any], bool | None] | None = None
) -> dict[str, Any]:
    """Run one job message.

    Args:
        message: The decoded message (the contract's JSON object).
        task_id: The Celery task id: the job id when the message carries none. Clients should
            send ``job_id`` as the task id too, so that status look-ups by job id work.
        runtime: Engine, store and settings of this process.
        on_progress: Receives each :class:`worker.engine.Progress`; may raise to abort.

    Returns:
        The job's result: ``job_id``, ``output`` URI, ``bytes``, ``width``, ``height``,
        ``format``, ``loss``, ``iterations``, ``seconds``, ``seconds_per_iteration`` and
        ``resumed_from`` (the checkpoint's iteration when an earlier run crashed, else 0).

    Raises:
        InvalidJob, ImageError, ObjectNotFound, BucketNotAllowed (permanent);
        StoreUnavailable (transient).
    """
    started = time.perf_counter()
    settings, store = runtime.settings, runtime.store
    job = Job.from_message(message)
    job_id = job.job_id or task_id
    job.check_limits(settings.max_size_px, settings.max_iterations)
    output = job.output_ref(job_id)
    fmt = job.output_format()
    for field, ref in [("content", job.content), ("output", output), *(("style", s) for s in job.styles)]:
        store.check_allowed(ref, field)

    limits = images.ImageLimits(max_pixels=settings.max_pixels)
    max_bytes = settings.max_input_bytes
    content = images.load(store.get(job.content, max_bytes), limits=limits, name=job.content.uri)
    styles = [images.load(store.get(s, max_bytes), limits=limits, name=s.uri) for s in job.styles]
    problem = runtime.engine.prepare(content, styles, job.params, style_blend=job.style_weights)
    checkpoints = Checkpointer(
        store,
        output,
        fingerprint(job, problem.shape),
        settings.checkpoint_every_iterations,
        settings.checkpoint_every_s,
    )
    done = 0
    saved = checkpoints.load()
    if saved is not None and saved[1].size == problem.x0.size:
        done, problem.x0 = saved[0], saved[1].reshape(problem.x0.shape)
        log.info("job %s resumes from its checkpoint at iteration %d", job_id, done)
    result = problem.optimize(
        job.params.iterations, on_progress, start=started, on_iterate=checkpoints.maybe_save, done=done
    )

    data = images.encode(result.image, fmt)
    metadata = {
        "job-id": job_id,
        "loss": f"{result.loss:.9g}",
        "iterations": str(result.iterations),
        "seconds": f"{result.seconds:.3f}",
        "params": json.dumps(job.params.to_dict(), separators=(",", ":")),
    }
    _with_retries(lambda: store.put(output, data, CONTENT_TYPES[fmt], metadata), settings.upload_attempts)
    checkpoints.delete()
    height, width = result.image.shape[:2]
    seconds = time.perf_counter() - started
    log.info(
        "job %s done: %s (%dx%d, %d bytes) loss %.6g, %d iterations, %.1f s",
        job_id,
        output.uri,
        width,
        height,
        len(data),
        result.loss,
        result.iterations,
        seconds,
    )
    return {
        "job_id": job_id,
        "output": output.uri,
        "bytes": len(data),
        "width": width,
        "height": height,
        "format": fmt,
        "loss": result.loss,
        "iterations": result.iterations,
        "seconds": round(seconds, 3),
        "seconds_per_iteration": round(result.seconds_per_iteration, 4),
        "resumed_from": done,
    }


def _with_retries(action: Callable[[], None], attempts: int, cap_s: float = 30.0) -> None:
    """Run ``action``, retrying a :class:`StoreUnavailable` in place with backoff and full jitter.

    The result is computed already: waiting out a short store outage here is far cheaper than
    failing the task and computing it again.
    """
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except StoreUnavailable as e:
            if attempt == attempts:
                raise
            delay = random.uniform(0, min(cap_s, 0.5 * 2**attempt))
            log.warning("upload failed (%s); attempt %d/%d in %.1f s", e, attempt + 1, attempts, delay)
            time.sleep(delay)
