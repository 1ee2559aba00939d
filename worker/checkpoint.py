"""Checkpoints: the optimization state saved next to the job's output, so a crash costs little.

Every ``every_iterations`` iterations or ``every_s`` seconds (whichever comes first) the current
image (the optimizer's float32 variable, not a rounded PNG) and the iteration count are written
to ``<output key>.checkpoint.npz``. A run that takes a job over after a crash starts from there;
the checkpoint is deleted when the job succeeds. L-BFGS restarts its curvature memory on resume,
so the loss continues from the checkpoint's value but the next few steps are shorter.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time

import numpy as np

from producer.contract import Job, ObjectRef
from producer.errors import ObjectNotFound, StylequeueError
from producer.storage import Store

log = logging.getLogger(__name__)


def fingerprint(job: Job, shape: tuple[int, ...]) -> str:
    """What a checkpoint must match to be resumed: inputs, parameters and image shape."""
    ident = {
        "content": job.content.uri,
        "styles": [s.uri for s in job.styles],
        "weights": job.style_weights,
        "params": job.params.to_dict(),
        "shape": list(shape),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


class Checkpointer:
    """Saves and restores one job's optimization state.

    Args:
        store: The object store.
        output: The job's output object; the checkpoint goes to ``<key>.checkpoint.npz``.
        fingerprint: See :func:`fingerprint`.
        every_iterations: Save after this many iterations since the last save.
        every_s: Or after this many seconds.
    """

    def __init__(
        self, store: Store, output: ObjectRef, fingerprint: str, every_iterations: int, every_s: float
    ) -> None:
        self.store = store
        self.ref = ObjectRef(output.bucket, f"{output.key}.checkpoint.npz")
        self.fingerprint = fingerprint
        self.every_iterations = every_iterations
        self.every_s = every_s
        self._last_iteration = 0
        self._last_time = time.monotonic()
        #: Iteration of the last checkpoint saved (for the result and logs).
        self.saved_iteration = 0
        #: Whether a checkpoint object is known to exist (loaded, found stale, or saved).
        self.exists = False

    def load(self) -> tuple[int, np.ndarray] | None:
        """The saved ``(iteration, x)``, or ``None`` (none saved, or saved for another job/shape)."""
        try:
            data = self.store.get(self.ref)
        except ObjectNotFound:
            return None
        self.exists = True
        with np.load(io.BytesIO(data)) as npz:
            if str(npz["fingerprint"]) != self.fingerprint:
                log.warning("%s belongs to other inputs or parameters: ignored", self.ref.uri)
                return None
            iteration, x = int(npz["iteration"]), np.asarray(npz["x"], np.float32)
        self._last_iteration = self.saved_iteration = iteration
        return iteration, x

    def maybe_save(self, iteration: int, x: np.ndarray) -> None:
        """Save if enough iterations or seconds went by; a store failure only logs (best effort)."""
        due = iteration - self._last_iteration >= self.every_iterations
        if not due and time.monotonic() - self._last_time < self.every_s:
            return
        buf = io.BytesIO()
        np.savez(buf, x=np.asarray(x, np.float32), iteration=iteration, fingerprint=self.fingerprint)
        try:
            self.store.put(self.ref, buf.getvalue(), "application/x-npz", {"iteration": str(iteration)})
        except StylequeueError as e:
            log.warning("checkpoint at iteration %d not saved: %s", iteration, e)
            return
        self._last_iteration = self.saved_iteration = iteration
        self._last_time = time.monotonic()
        self.exists = True

    def delete(self) -> None:
        """Remove the checkpoint (the job succeeded); no request when none was ever there."""
        if not self.exists:
            return
        try:
            self.store.delete(self.ref)
        except StylequeueError as e:
            log.warning("checkpoint %s not deleted: %s", self.ref.uri, e)
