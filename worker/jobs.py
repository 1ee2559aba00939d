"""One job, start to end, without Celery: check → download → stylize → upload → result.

The Celery task (:mod:`worker.tasks`) adds the lease, progress, cancellation and the final state
around :func:`run`. Everything raised here belongs to the error tree (plus
:class:`~worker.guard.Superseded` when another run took the job over).

Writes are fenced. Right before each write the run checks it still holds the job's lease
(:meth:`worker.guard.Lease.ensure`), and the object store's conditional writes settle any race
left: the output is created with ``If-None-Match: *`` (or replaces a known ETag with ``If-Match``)
and carries the job id and a fingerprint of the job's inputs and parameters in its metadata, so
whichever run writes it first, every run of the job ends up describing that one object. An
output already written by an earlier run of the same job (it crashed before recording the job's
end) is adopted, not computed again. An object that is not a stylequeue output is never
overwritten.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from producer import access, formats
from producer.contract import Job, ObjectRef
from producer.errors import InvalidJob, StoreUnavailable, WriteConflict
from producer.retrying import patiently
from producer.states import JobResult
from worker.checkpoint import Checkpointer, fingerprint
from worker.guard import Lease
from worker.nst import budget, images, tiling
from worker.runtime import Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")


def run(
    job: Job,
    job_id: str,
    rt: Runtime,
    lease: Lease,
    commit: Callable[[JobResult], None],
    on_progress: Callable[[Any], bool | None] | None = None,
) -> JobResult:
    """Run one validated job.

    Args:
        job: The job.
        job_id: Its id (the task id).
        rt: Engine, store and settings of this process.
        lease: This run's lease on the job (checked before every write).
        commit: Records the job's end (called once the output is in the store, before the
            checkpoint is removed); raises :class:`~worker.guard.Superseded` if the run lost the job.
        on_progress: Receives each :class:`worker.nst.engine.Progress`; may raise to abort.

    Raises:
        InvalidJob, ImageError, ObjectNotFound, BucketNotAllowed (permanent); StoreUnavailable
        once the store has been unreachable for ``STYLEQUEUE_RETRY_FOR_S``; Superseded.
    """
    started = time.perf_counter()
    settings, store = rt.settings, rt.store

    def patient(action: Callable[[], T], what: str) -> T:
        return patiently(
            action,
            retry_on=(StoreUnavailable,),
            budget_s=settings.retry_for_s,
            cap_s=settings.retry_backoff_max_s,
            what=f"job {job_id}: {what}",
        )

    access.check_job(settings, job, job_id)
    job.check_limits(settings.max_size_px, settings.max_iterations, settings.max_pixels)
    layers = tuple(job.params.content_layers) + tuple(job.params.style_layers)
    need = budget.estimate_bytes(job.params, job.output_pixels, rt.memory_limit_bytes, tiling.halo_px(layers))
    if rt.memory_limit_bytes and need > rt.memory_limit_bytes:
        raise InvalidJob(
            "params.size",
            f"this job needs about {need / 2**20:.0f} MiB and a worker here allows {rt.memory_limit_bytes / 2**20:.0f} "
            "MiB (STYLEQUEUE_MAX_JOB_MEMORY_BYTES), even in tiles: ask for a smaller size, style_scale or lbfgs_memory",
        )
    output = job.output_ref(job_id)
    fmt = formats.FORMATS[job.output_format()]
    ident = fingerprint(job)

    existing = patient(lambda: store.stat(output), "looking at the output key")
    if existing is not None:
        if existing.metadata.get("job-id") == job_id and existing.metadata.get("fingerprint") == ident:
            result = _adopt(existing, output, job_id, fmt)
            log.info("job %s: its output is already written: adopted", job_id, extra={"event": "output_adopted"})
            commit(result)
            return result
        if "job-id" not in existing.metadata:
            raise InvalidJob(
                "output", f"{output.uri} exists and was not written by stylequeue: jobs never overwrite other objects"
            )

    limits = images.ImageLimits(max_pixels=settings.max_pixels)

    def fetch(ref: ObjectRef) -> Any:
        data = patient(lambda: store.get(ref, settings.max_input_bytes), f"reading {ref.uri}")
        return images.load(data, limits=limits, name=ref.uri)

    content = fetch(job.content)
    styles = [fetch(s) for s in job.styles]
    plan = rt.engine.plan(content.shape[:2], job.params)
    checkpoints = Checkpointer(
        store,
        output,
        job_id,
        fingerprint(job, (plan[-1].height, plan[-1].width)),
        settings.checkpoint_every_iterations,
        settings.checkpoint_every_s,
        lease,
    )
    saved = patient(checkpoints.load, "reading the checkpoint")
    if saved is not None and (
        saved.level >= len(plan) or saved.x.shape != (1, plan[saved.level].height, plan[saved.level].width, 3)
    ):
        saved = None  # not a state of this job's plan
    if saved is not None:
        log.info(
            "job %s resumes from its checkpoint at iteration %d",
            job_id,
            saved.iteration,
            extra={"event": "job_resumed"},
        )
    outcome = rt.engine.transfer(
        content,
        styles,
        job.params,
        style_blend=job.style_weights,
        callback=on_progress,
        on_state=checkpoints.maybe_save,
        resume=saved,
        start=started,
    )
    done = saved.iteration if saved is not None else 0

    data = images.encode(outcome.image, fmt.name)
    height, width = outcome.image.shape[:2]
    seconds = time.perf_counter() - started
    result = JobResult(
        job_id=job_id,
        output=output.uri,
        bytes=len(data),
        width=width,
        height=height,
        format=fmt.name,
        loss=outcome.loss,
        iterations=outcome.iterations,
        seconds=round(seconds, 3),
        seconds_per_iteration=round(outcome.seconds_per_iteration, 4),
        resumed_from=done,
        stopped=outcome.stopped,
    )
    metadata = {
        "job-id": job_id,
        "fingerprint": ident,
        "loss": f"{result.loss:.9g}",
        "iterations": str(result.iterations),
        "seconds": f"{result.seconds:.3f}",
        "seconds-per-iteration": f"{result.seconds_per_iteration:.4f}",
        "resumed-from": str(done),
        "stopped": outcome.stopped,
        "width": str(width),
        "height": str(height),
        "params": json.dumps(job.params.to_dict(), separators=(",", ":")),
    }

    def upload() -> JobResult:
        lease.ensure()  # the last moment before the write: this run still owns the job
        try:
            store.put(
                output,
                data,
                fmt.content_type,
                metadata,
                if_none_match=existing is None,
                if_match=existing.etag if existing is not None else None,
            )
        except WriteConflict:
            # Another run of this job wrote it first (a stale one, or a takeover): describe that object.
            now = store.stat(output)
            if now is not None and now.metadata.get("job-id") == job_id and now.metadata.get("fingerprint") == ident:
                log.info(
                    "job %s: another run wrote the output first: adopted", job_id, extra={"event": "output_adopted"}
                )
                return _adopt(now, output, job_id, fmt)
            raise InvalidJob("output", f"{output.uri} was written by someone else during the job") from None
        return result

    result = patient(upload, "writing the output")
    commit(result)
    checkpoints.delete()
    log.info(
        "job %s done: %s (%dx%d, %d bytes) loss %.6g, %d iterations, %.1f s",
        job_id,
        output.uri,
        result.width,
        result.height,
        result.bytes,
        result.loss,
        result.iterations,
        seconds,
        extra={"event": "job_done", "job_id": job_id, "iterations": result.iterations},
    )
    return result


def _adopt(obj: Any, output: ObjectRef, job_id: str, fmt: formats.ImageFormat) -> JobResult:
    """The result an existing output of this job describes in its metadata."""
    m = obj.metadata
    try:
        return JobResult(
            job_id=job_id,
            output=output.uri,
            bytes=obj.size,
            width=int(m["width"]),
            height=int(m["height"]),
            format=fmt.name,
            loss=float(m["loss"]),
            iterations=int(m["iterations"]),
            seconds=float(m["seconds"]),
            seconds_per_iteration=float(m["seconds-per-iteration"]),
            resumed_from=int(m.get("resumed-from", 0)),
            stopped=m.get("stopped", "iterations"),
        )
    except (KeyError, ValueError) as e:
        raise InvalidJob("output", f"{output.uri} carries this job's id but unreadable metadata ({e})") from None
