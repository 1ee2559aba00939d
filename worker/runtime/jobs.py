"""One job, start to end, without Celery: check → download → stylize → upload → result.

The Celery task's delivery (:mod:`worker.delivery`) adds the lease, progress, cancellation and the final state
around :func:`run`. Everything raised here belongs to the error tree (plus
:class:`~worker.runtime.guard.Superseded` when another run took the job over).

Writes are fenced. Right before each write the run checks it still holds the job's lease
(:meth:`worker.runtime.guard.Lease.ensure`), and the object store's conditional writes settle any race
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

from producer.core import access, formats
from producer.core.contract import Job, ObjectRef
from producer.core.errors import InvalidJob, StoreUnavailable, WriteConflict
from producer.core.retrying import patiently
from producer.core.states import JobResult
from worker.nst import budget, images, tiling
from worker.runtime import Runtime, checkpoint
from worker.runtime.checkpoint import Checkpointer, fingerprint
from worker.runtime.guard import Lease

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
            checkpoint is removed; a cancelled or failed job's checkpoint is the caller's to remove
            once it recorded that end); raises :class:`~worker.runtime.guard.Superseded` if the run lost the job.
        on_progress: Receives each :class:`worker.nst.engine.Progress`; may raise to abort.

    Raises:
        InvalidJob, ImageError, ObjectNotFound, BucketNotAllowed (permanent); StoreUnavailable
        once the store has been unreachable for ``STYLEQUEUE_RETRY_FOR_S``; Superseded.
    """
    started = time.perf_counter()
    _check_resources(job, job_id, rt)
    one = _Run(job, job_id, rt, lease)
    existing = one.patient(lambda: rt.store.stat(one.output), "looking at the output key")
    if existing is not None:
        if existing.metadata.get("job-id") == job_id and existing.metadata.get("fingerprint") == one.ident:
            result = _adopt(existing, one.output, job_id, one.fmt)
            log.info("job %s: its output is already written: adopted", job_id, extra={"event": "output_adopted"})
            commit(result)
            checkpoint.remove(rt.store, one.output, job_id)  # a run that wrote the output and died left it
            return result
        if "job-id" not in existing.metadata:
            raise InvalidJob(
                "output",
                f"{one.output.uri} exists and was not written by stylequeue: jobs never overwrite other objects",
            )
    content = one.fetch(job.content)
    styles = [one.fetch(s) for s in job.styles]
    style_masks = one.masks()
    plan = rt.engine.plan(content.shape[:2], job.params)
    checkpoints = Checkpointer(
        rt.store,
        one.output,
        job_id,
        fingerprint(job, (plan[-1].height, plan[-1].width)),
        rt.settings.checkpoint_every_iterations,
        rt.settings.checkpoint_every_s,
        lease,
    )
    saved = one.resumable(one.patient(checkpoints.load, "reading the checkpoint"), plan)
    # A cancelled or failed job's checkpoint goes once its end is recorded (by the task): not here,
    # where a run that lost the job would delete what the run holding it resumes from.
    outcome = rt.engine.transfer(
        content,
        styles,
        job.params,
        style_blend=job.style_weights,
        style_masks=style_masks,
        callback=on_progress,
        on_state=checkpoints.maybe_save,
        resume=saved,
        start=started,
    )
    data = images.encode(outcome.image, one.fmt.name)
    result = one.result(outcome, len(data), saved.iteration if saved is not None else 0, time.perf_counter() - started)
    result = one.patient(lambda: one.upload(data, result, existing), "writing the output")
    commit(result)
    checkpoints.delete()
    log.info(
        "job %s done: %s (%dx%d, %d bytes) loss %.6g, %d iterations, %.1f s",
        job_id,
        one.output.uri,
        result.width,
        result.height,
        result.bytes,
        result.loss,
        result.iterations,
        result.seconds,
        extra={"event": "job_done", "job_id": job_id, "iterations": result.iterations},
    )
    return result


def _check_resources(job: Job, job_id: str, rt: Runtime) -> None:
    """What this deployment allows: the buckets, the limits, and the memory a worker here has.

    Raises:
        InvalidJob, BucketNotAllowed: before any download.
    """
    settings = rt.settings
    access.check_job(settings, job, job_id)
    job.check_limits(settings.max_size_px, settings.max_iterations, settings.max_pixels)
    layers = tuple(job.params.content_layers) + tuple(job.params.style_layers)
    need = budget.estimate_bytes(
        job.params, job.output_pixels, rt.memory_limit_bytes, tiling.halo_px(layers), job.regions
    )
    if rt.memory_limit_bytes and need > rt.memory_limit_bytes:
        raise InvalidJob(
            "params.size",
            f"this job needs about {need / 2**20:.0f} MiB and a worker here allows {rt.memory_limit_bytes / 2**20:.0f} "
            "MiB (STYLEQUEUE_MAX_JOB_MEMORY_BYTES), even in tiles: ask for a smaller size, style_scale or lbfgs_memory",
        )


class _Run:
    """One run's fixed facts (output key, format, fingerprint) and its steps that touch the store."""

    def __init__(self, job: Job, job_id: str, rt: Runtime, lease: Lease) -> None:
        self.job, self.job_id, self.rt, self.lease = job, job_id, rt, lease
        self.output = job.output_ref(job_id)
        self.fmt = formats.FORMATS[job.output_format()]
        self.ident = fingerprint(job)
        self.limits = images.ImageLimits(max_pixels=rt.settings.max_pixels)

    def patient(self, action: Callable[[], T], what: str) -> T:
        """``action`` with a store outage waited out for ``STYLEQUEUE_RETRY_FOR_S``."""
        settings = self.rt.settings
        return patiently(
            action,
            retry_on=(StoreUnavailable,),
            budget_s=settings.retry_for_s,
            cap_s=settings.retry_backoff_max_s,
            what=f"job {self.job_id}: {what}",
        )

    def read(self, ref: ObjectRef) -> bytes:
        """An input object's bytes (at most ``STYLEQUEUE_MAX_INPUT_BYTES``), a store outage waited out."""
        data: bytes = self.patient(
            lambda: self.rt.store.get(ref, self.rt.settings.max_input_bytes), f"reading {ref.uri}"
        )
        return data

    def fetch(self, ref: ObjectRef) -> Any:
        """An input image, read and checked against the limits."""
        return images.load(self.read(ref), limits=self.limits, name=ref.uri)

    def masks(self) -> list[Any] | None:
        """The styles' masks, each object read once (styles naming one mask share its array)."""
        if self.job.style_masks is None:
            return None
        read: dict[str, Any] = {}
        for i, ref in enumerate(self.job.style_masks):
            if ref is not None and ref.uri not in read:
                name, longest = f"style[{i}].mask {ref.uri}", self.job.params.longest_px
                read[ref.uri] = images.load_mask(self.read(ref), self.limits, name, keep_px=longest)
        return [None if ref is None else read[ref.uri] for ref in self.job.style_masks]

    def resumable(self, saved: Any, plan: Any) -> Any:
        """The checkpoint if it is a state of this job's plan, else ``None``."""
        if saved is None:
            return None
        if saved.level >= len(plan) or saved.x.shape != (1, plan[saved.level].height, plan[saved.level].width, 3):
            return None
        log.info(
            "job %s resumes from its checkpoint at iteration %d",
            self.job_id,
            saved.iteration,
            extra={"event": "job_resumed"},
        )
        return saved

    def result(self, outcome: Any, size: int, resumed_from: int, seconds: float) -> JobResult:
        """The job's result for the engine's ``outcome`` encoded in ``size`` bytes."""
        height, width = outcome.image.shape[:2]
        return JobResult(
            job_id=self.job_id,
            output=self.output.uri,
            bytes=size,
            width=width,
            height=height,
            format=self.fmt.name,
            loss=outcome.loss,
            iterations=outcome.iterations,
            seconds=round(seconds, 3),
            seconds_per_iteration=round(outcome.seconds_per_iteration, 4),
            resumed_from=resumed_from,
            stopped=outcome.stopped,
        )

    def metadata(self, result: JobResult) -> dict[str, str]:
        """The output object's metadata: the job, its fingerprint and its result (for adoption)."""
        return {
            "job-id": self.job_id,
            "fingerprint": self.ident,
            "loss": f"{result.loss:.9g}",
            "iterations": str(result.iterations),
            "seconds": f"{result.seconds:.3f}",
            "seconds-per-iteration": f"{result.seconds_per_iteration:.4f}",
            "resumed-from": str(result.resumed_from),
            "stopped": result.stopped,
            "width": str(result.width),
            "height": str(result.height),
            "params": json.dumps(self.job.params.to_dict(), separators=(",", ":")),
        }

    def upload(self, data: bytes, result: JobResult, existing: Any) -> JobResult:
        """Write the output only if no one wrote it since we looked (fenced by the lease)."""
        store, output = self.rt.store, self.output
        self.lease.ensure()  # the last moment before the write: this run still owns the job
        try:
            store.put(
                output,
                data,
                self.fmt.content_type,
                self.metadata(result),
                if_none_match=existing is None,
                if_match=existing.etag if existing is not None else None,
            )
        except WriteConflict:
            # Another run of this job wrote it first (a stale one, or a takeover): describe that object.
            now = store.stat(output)
            if (
                now is not None
                and now.metadata.get("job-id") == self.job_id
                and now.metadata.get("fingerprint") == self.ident
            ):
                log.info(
                    "job %s: another run wrote the output first: adopted",
                    self.job_id,
                    extra={"event": "output_adopted"},
                )
                return _adopt(now, output, self.job_id, self.fmt)
            raise InvalidJob("output", f"{output.uri} was written by someone else during the job") from None
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
