"""The Python client: submit jobs, follow them, cancel them. No TensorFlow.

Example::

    from producer.client import Client

    client = Client()                      # settings from the environment
    job = client.submit("s3://photos/tubingen.jpg", "s3://styles/starry.jpg",
                        output="s3://results/stylized/", params={"size": 768, "iterations": 200})
    job.wait(timeout=600, on_progress=lambda p: print(p.iteration, p.total, p.loss))
    print(job.result())                    # {"output": "s3://results/stylized/<id>.png", ...}
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from producer import deadletters
from producer.app import DEFAULT_PRIORITY, make_celery
from producer.contract import CANCEL_KEY, DONE_KEY, RUNS_KEY, TASK_NAME, Job
from producer.errors import InvalidJob, JobFailed
from producer.params import Params
from producer.settings import Settings

#: States a job goes through: PENDING (queued, or unknown id) → STARTED → PROGRESS → SUCCESS,
#: FAILURE (permanent error), RETRY (transient error, will run again) or REVOKED (cancelled).
DONE_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


@dataclass(frozen=True)
class JobProgress:
    """Where a running job is.

    Attributes:
        iteration: L-BFGS iterations done.
        total: Iterations asked for.
        loss: Current total loss.
        elapsed_s: Seconds since the optimization started.
    """

    iteration: int
    total: int
    loss: float
    elapsed_s: float = 0.0


class JobHandle:
    """A submitted job, by id. Cheap to create: ``client.job(job_id)`` for a job sent elsewhere."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def _async(self) -> Any:
        return self.client.app.AsyncResult(self.id)

    def status(self) -> str:
        """PENDING, STARTED, PROGRESS, RETRY, SUCCESS, FAILURE or REVOKED."""
        return str(self._async().state)

    def progress(self) -> JobProgress | None:
        """The latest progress of a running job, ``None`` before its first iteration."""
        r = self._async()
        if r.state == "PROGRESS" and isinstance(r.info, dict):
            return _progress(r.info)
        if r.state == "SUCCESS" and isinstance(r.result, dict):
            n = int(r.result.get("iterations", 0))
            return JobProgress(n, n, float(r.result.get("loss", 0.0)), float(r.result.get("seconds", 0.0)))
        return None

    def wait(
        self, timeout: float | None = None, on_progress: Callable[[JobProgress], None] | None = None
    ) -> dict[str, Any]:
        """Block until the job ends; return its result.

        Progress arrives by Redis pub/sub (no polling) and goes to ``on_progress``.

        Raises:
            TimeoutError: not done within ``timeout`` seconds.
            JobFailed: the job failed or was cancelled; carries the worker's error class and message.
        """
        from celery.exceptions import TimeoutError as CeleryTimeout

        def on_message(meta: Mapping[str, Any]) -> None:
            if on_progress is not None and meta.get("status") == "PROGRESS" and isinstance(meta.get("result"), dict):
                on_progress(_progress(meta["result"]))

        r = self._async()
        try:
            value = r.get(timeout=timeout, propagate=False, on_message=on_message, disable_sync_subtasks=False)
        except CeleryTimeout:
            raise TimeoutError(f"job {self.id} is not done after {timeout} s (state {r.state})") from None
        if r.state == "SUCCESS":
            return dict(value)
        raise _failure(self.id, r.state, value)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The job's result (waits up to ``timeout`` seconds); see :meth:`wait`."""
        return self.wait(timeout)

    def error(self) -> JobFailed | None:
        """The failure of a FAILED or REVOKED job, else ``None``."""
        r = self._async()
        return _failure(self.id, r.state, r.result) if r.state in ("FAILURE", "REVOKED") else None

    def cancel(self) -> None:
        """Cancel the job: a queued job is skipped, a running one stops at its next iteration."""
        ttl = self.client.settings.result_expires_s
        self.client.app.backend.client.set(CANCEL_KEY.format(self.id), "1", ex=ttl)
        self.client.app.control.revoke(self.id)


class Client:
    """Sends jobs to the ``stylequeue`` queue and looks them up.

    Args:
        settings: Broker, backend and queue (from the environment when ``None``).
        app: A Celery app to use instead of building one from ``settings``.
    """

    def __init__(self, settings: Settings | None = None, app: Any = None) -> None:
        self.settings = settings or Settings.from_env()
        self.app = app if app is not None else make_celery(self.settings)
        # Publishing needs no result backend, and Celery's Redis backend would SUBSCRIBE and
        # UNSUBSCRIBE for every sent job (two round trips): send through a backend-less twin.
        self._sender = app if app is not None else make_celery(self.settings, result_backend=False)

    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job."""
        return JobHandle(self, job_id)

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Jobs that failed for good, newest first (see :mod:`producer.deadletters`)."""
        return deadletters.entries(self.app.backend.client, limit)

    def requeue_dead(self, job_id: str, priority: int | None = None) -> JobHandle:
        """Send a dead-lettered job again, with the same id; its dead letter is removed.

        Raises:
            InvalidJob: no dead letter for ``job_id`` (or its payload no longer validates).
        """
        r = self.app.backend.client
        entry = deadletters.get(r, job_id)
        if entry is None:
            raise InvalidJob("job_id", f"no dead letter for job {job_id!r}")
        job = Job.from_message({**entry["payload"], "job_id": job_id})
        r.delete(DONE_KEY.format(job_id), RUNS_KEY.format(job_id), CANCEL_KEY.format(job_id))
        handle = self.send(job, priority)
        deadletters.remove(r, job_id)
        return handle

    def build(
        self,
        content: str,
        style: str | Sequence[str],
        output: str,
        params: Params | Mapping[str, Any] | None = None,
        *,
        style_weights: Sequence[float] | None = None,
        job_id: str | None = None,
        format: str | None = None,
    ) -> Job:
        """Build and validate a :class:`Job` (with a fresh id when none is given)."""
        styles = [style] if isinstance(style, str) else list(style)
        if style_weights is not None:
            if len(style_weights) != len(styles):
                raise InvalidJob("style", f"{len(style_weights)} weights for {len(styles)} style images")
            style_field: Any = [{"uri": s, "weight": w} for s, w in zip(styles, style_weights)]
        else:
            style_field = styles[0] if len(styles) == 1 else styles
        message: dict[str, Any] = {
            "content": content,
            "style": style_field,
            "output": output,
            "params": params.to_dict() if isinstance(params, Params) else dict(params or {}),
            "job_id": job_id or uuid.uuid4().hex,
        }
        if format is not None:
            message["format"] = format
        return Job.from_message(message)

    def submit(
        self,
        content: str,
        style: str | Sequence[str],
        output: str,
        params: Params | Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        **options: Any,
    ) -> JobHandle:
        """Validate and enqueue one job.

        Args:
            content: ``s3://`` URI of the content image.
            style: URI of the style image, or a list of URIs.
            output: ``s3://bucket/key``, or a prefix ending in ``/`` (result at ``<prefix><job_id>.<ext>``).
            params: Engine options (:class:`Params` or its JSON form).
            priority: 0 (most urgent) to 9 (least); default 5.
            **options: ``style_weights``, ``job_id``, ``format`` (see :meth:`build`).

        Raises:
            InvalidJob: naming the offending field; nothing is sent.
        """
        return self.send(self.build(content, style, output, params, **options), priority=priority)

    def send(self, job: Job | Mapping[str, Any], priority: int | None = None, producer: Any = None) -> JobHandle:
        """Enqueue a :class:`Job`, or a contract JSON object (validated first)."""
        job = _with_id(job if isinstance(job, Job) else Job.from_message(dict(job)))
        assert job.job_id is not None
        _check_priority(priority)
        message = {**job.to_message(), "submitted_at": round(time.time(), 3)}
        self._sender.send_task(
            TASK_NAME,
            args=[message],
            task_id=job.job_id,
            queue=self.settings.queue,
            # Explicit: send_task ignores task_default_priority, and Redis treats "none" as 0 (first).
            priority=DEFAULT_PRIORITY if priority is None else priority,
            # A compact repr for monitors; Celery's saferepr of the whole message costs ~0.5 ms.
            argsrepr=f"[job {job.job_id}]",
            kwargsrepr="{}",
            producer=producer,
        )
        return JobHandle(self, job.job_id)

    def submit_many(
        self, jobs: Iterable[Job | Mapping[str, Any]], priority: int | None = None, batch_size: int = 1000
    ) -> list[JobHandle]:
        """Enqueue many jobs from one process, pipelined: one Redis round trip per ``batch_size``.

        Every job is validated before the first is sent, so a bad job sends nothing.

        Args:
            jobs: :class:`Job` objects or contract JSON objects.
            priority: 0 (most urgent) to 9 (least) for all of them.
            batch_size: Messages per Redis pipeline flush.
        """
        _check_priority(priority)
        prepared = []
        for i, job in enumerate(jobs):
            try:
                j = job if isinstance(job, Job) else Job.from_message(dict(job))
            except InvalidJob as e:
                raise InvalidJob(f"jobs[{i}].{e.field}", e.message) from None
            prepared.append(_with_id(j))
        with self._sender.producer_or_acquire() as producer, producer.batch(max_size=batch_size):
            return [self.send(j, priority, producer=producer) for j in prepared]


def _with_id(job: Job) -> Job:
    """``job`` with a fresh random id when it has none."""
    return job if job.job_id is not None else Job.from_message({**job.to_message(), "job_id": uuid.uuid4().hex})


def _check_priority(priority: int | None) -> None:
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9):
        raise InvalidJob("priority", f"{priority!r} is not an integer in [0, 9]")


def _progress(meta: Mapping[str, Any]) -> JobProgress:
    return JobProgress(
        int(meta.get("iteration", 0)),
        int(meta.get("total", 0)),
        float(meta.get("loss", 0.0)),
        float(meta.get("elapsed_s", 0.0)),
    )


def _failure(job_id: str, state: str, value: Any) -> JobFailed:
    if state == "REVOKED":
        return JobFailed(job_id, "JobCancelled", str(value) or "cancelled")
    if isinstance(value, BaseException):
        return JobFailed(job_id, type(value).__name__, str(value))
    return JobFailed(job_id, state, str(value))


__all__ = ["Client", "JobHandle", "JobProgress"]
