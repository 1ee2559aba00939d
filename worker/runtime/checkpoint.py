"""Checkpoints: the optimization state saved next to the job's output, so a crash costs little.

Every ``every_iterations`` iterations or ``every_s`` seconds (whichever comes first) the engine's
:class:`~worker.nst.engine.State` (the optimizer's float32 image, not a rounded PNG, the iteration
count and the coarse-to-fine level) is written to ``<output key>.checkpoint.npz``. A run that
takes a job over after a crash starts from there;
the checkpoint is deleted when the job succeeds. L-BFGS restarts its curvature memory on resume,
so the loss continues from the checkpoint's value but the next few steps are shorter.

Fenced: a save first checks that the run still holds the job's lease, then writes with
``If-Match`` on the ETag this run last saw (``If-None-Match: *`` when there was none). A stale run
(one that lost the job while frozen) can therefore never overwrite a checkpoint written by the
run that took over: its ETag is out of date. The owner, on a conflict, checks its lease again and
writes over whatever a stale run slipped in.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from typing import Any

import numpy as np

from producer.core.contract import Job, ObjectRef
from producer.core.errors import ObjectNotFound, StylequeueError, WriteConflict
from producer.storage import Store
from worker.nst import losses
from worker.nst.engine import State

log = logging.getLogger(__name__)


def fingerprint(job: Job, shape: tuple[int, ...] | None = None) -> str:
    """What identifies a job's result: inputs and parameters (and, for a checkpoint, the image shape).

    A ``w2`` job's also holds ``losses.W2_SCALE`` (its objective: a worker from before that scale,
    or after a new one, computes another result from the same message, so neither adopts the
    other's output or resumes its checkpoint). Other jobs' fingerprints are as they always were.
    """
    ident: dict[str, Any] = {
        "content": job.content.uri,
        "styles": [s.uri for s in job.styles],
        "weights": job.style_weights,
        "params": job.params.to_dict(),
    }
    if job.style_masks is not None:  # only then: the fingerprints of jobs without masks stay as they were
        ident["masks"] = [None if m is None else m.uri for m in job.style_masks]
    if job.params.style_loss == "w2":  # its scale is the objective's: a run under another scale is another result
        ident["w2_scale"] = losses.W2_SCALE[job.params.normalization]
    if shape is not None:
        ident["shape"] = list(shape)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


class Checkpointer:
    """Saves and restores one job's optimization state.

    Args:
        store: The object store.
        output: The job's output object; the checkpoint goes to ``<key>.checkpoint.npz``.
        job_id: The job (written in the checkpoint's metadata).
        fingerprint: See :func:`fingerprint` (with the shape).
        every_iterations: Save after this many iterations since the last save.
        every_s: Or after this many seconds.
        lease: The run's lease (:class:`worker.runtime.guard.Lease`), checked before each save; ``None``
            for no fencing.
    """

    def __init__(
        self,
        store: Store,
        output: ObjectRef,
        job_id: str,
        fingerprint: str,
        every_iterations: int,
        every_s: float,
        lease: Any = None,
    ) -> None:
        self.store = store
        self.ref = ObjectRef(output.bucket, f"{output.key}.checkpoint.npz")
        self.job_id = job_id
        self.fingerprint = fingerprint
        self.every_iterations = every_iterations
        self.every_s = every_s
        self.lease = lease
        self._last_iteration = 0
        self._last_time = time.monotonic()
        #: Iteration of the last checkpoint saved or loaded.
        self.saved_iteration = 0
        #: ETag of the checkpoint object as this run last saw or wrote it (``None``: none exists).
        self.etag: str | None = None
        #: An object that is not this job's checkpoint sits at the key: left alone, no checkpoints.
        self.foreign = False

    def load(self) -> State | None:
        """The saved state, or ``None`` (none saved, or saved for other inputs or a different shape)."""
        try:
            obj = self.store.read(self.ref)
        except ObjectNotFound:
            return None
        self.etag = obj.etag
        if obj.metadata.get("job-id") != self.job_id:
            log.warning("%s is not a checkpoint of job %s: left alone, no checkpoints", self.ref.uri, self.job_id)
            self.foreign = True
            return None
        try:
            with np.load(io.BytesIO(obj.data)) as npz:
                if str(npz["fingerprint"]) != self.fingerprint:
                    log.warning("%s belongs to other inputs or parameters: ignored", self.ref.uri)
                    return None
                state = State(int(npz["level"]), int(npz["iteration"]), np.asarray(npz["x"], np.float32))
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s is unreadable (%s): ignored", self.ref.uri, e)
            return None
        self._last_iteration = self.saved_iteration = state.iteration
        return state

    def maybe_save(self, state: State) -> None:
        """Save if enough iterations or seconds went by.

        A store failure only logs (best effort); losing the job to another run raises
        :class:`~worker.runtime.guard.Superseded`, which stops this run.
        """
        if self.foreign:
            return
        iteration = state.iteration
        due = iteration - self._last_iteration >= self.every_iterations
        if not due and time.monotonic() - self._last_time < self.every_s:
            return
        buf = io.BytesIO()
        np.savez(
            buf, x=np.asarray(state.x, np.float32), iteration=iteration, level=state.level, fingerprint=self.fingerprint
        )
        try:
            self._write(buf.getvalue(), iteration)
        except WriteConflict:
            # Someone wrote it since this run last did: if this run still owns the job, the other
            # writer was stale; take the current ETag and write over it.
            if self.lease is not None:
                self.lease.ensure()
            current = self.store.stat(self.ref)
            self.etag = current.etag if current is not None else None
            try:
                self._write(buf.getvalue(), iteration)
            except StylequeueError as e:
                log.warning("checkpoint at iteration %d not saved: %s", iteration, e)
                return
        except StylequeueError as e:
            log.warning("checkpoint at iteration %d not saved: %s", iteration, e)
            return
        self._last_iteration = self.saved_iteration = iteration
        self._last_time = time.monotonic()

    def _write(self, data: bytes, iteration: int) -> None:
        if self.lease is not None:
            self.lease.ensure()
        self.etag = self.store.put(
            self.ref,
            data,
            "application/x-npz",
            {"job-id": self.job_id, "iteration": str(iteration)},
            if_none_match=self.etag is None,
            if_match=self.etag,
        )

    def delete(self) -> None:
        """Remove the checkpoint (the job succeeded); no request when none was ever there."""
        if self.etag is None or self.foreign:
            return
        try:
            self.store.delete(self.ref)
        except StylequeueError as e:
            log.warning("checkpoint %s not deleted: %s", self.ref.uri, e)


def remove(store: Store, output: ObjectRef, job_id: str) -> None:
    """Remove the checkpoint one of this job's runs left, if any; never raises.

    For a job that ended without this run's saving it: adopted, failed, cancelled.
    """
    ref = ObjectRef(output.bucket, f"{output.key}.checkpoint.npz")
    try:
        found = store.stat(ref)
        if found is not None and found.metadata.get("job-id") == job_id:
            store.delete(ref)
    except StylequeueError as e:
        log.warning("checkpoint %s not removed: %s", ref.uri, e)
