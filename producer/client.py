"""The Python client: submit jobs, follow them, cancel them. No TensorFlow.

Example::

    from producer.client import Client

    client = Client()                      # settings from the environment
    job = client.submit("s3://photos/tubingen.jpg", "s3://styles/starry.jpg",
                        output="s3://results/stylized/", params={"size": 768, "iterations": 200})
    result = job.wait(timeout=600, on_progress=lambda p: print(p.iteration, p.total, p.loss))
    print(result.output)                   # s3://results/stylized/<id>.png

Jobs are queued with one Redis transaction per batch that also records them in the job index
(:mod:`producer.broker.wire`), so a job id the client returned is always found, and a ``submit_many``
that fails part way says exactly which jobs were sent (:class:`~producer.core.errors.PartialSubmit`).

Every call that needs Redis is bounded by the client's budget (``timeout_s``, default
``STYLEQUEUE_CLIENT_TIMEOUT_S`` = 5 s): when Redis refuses connections, cannot be reached, or
accepts and never answers, the call raises :class:`~producer.core.errors.BrokerUnavailable` after about
that long (at most one more socket timeout), never a library's retry loop. :meth:`JobHandle.wait`
is the exception that proves the rule: once it has found the job it waits through outages for as
long as its own timeout allows (without one, through outages of up to ``WAIT_OUTAGE_S``).

With traces on (``OTEL_EXPORTER_OTLP_ENDPOINT``, :mod:`producer.tracing`), each batch's transaction
is a span, ``publish <queue>``, child of the caller's current span, and its messages carry that
span's trace context in their headers: each job's run in a worker is its child.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from producer import broker, tracing
from producer.broker import cancellation, deadletters, ending, keys, registry, wire
from producer.broker.celery_app import make_celery
from producer.broker.events import Announcer
from producer.broker.queues import DEFAULT_PRIORITY
from producer.core.contract import TASK_NAME, Job, check_size, style_field
from producer.core.errors import BrokerUnavailable, InvalidJob, JobCancelled, JobFailed, JobNotFound, PartialSubmit
from producer.core.params import Params
from producer.core.retrying import backoff
from producer.core.settings import Settings
from producer.core.states import (
    FAILURE,
    FINAL_STATES,
    PENDING,
    PROGRESS,
    REVOKED,
    SUCCESS,
    JobProgress,
    JobResult,
    JobSummary,
)

T = TypeVar("T")

#: How long :meth:`JobHandle.wait` without a timeout waits through one outage of Redis (s).
WAIT_OUTAGE_S = 60.0


#: While following a job, read its state again after this long without an update (s).
_LOOK_AGAIN_S = 10.0


def unreachable() -> tuple[type[BaseException], ...]:
    """What a client call raises when Redis (broker or result backend) cannot be reached now."""
    from celery.exceptions import BackendGetMetaError, BackendStoreError
    from kombu.exceptions import OperationalError

    return (*broker.errors(), BackendGetMetaError, BackendStoreError, OperationalError, ConnectionError)


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
        """PENDING (queued), STARTED, PROGRESS, SUCCESS, FAILURE or REVOKED.

        Raises:
            JobNotFound: no job has this id.
        """
        for look in range(2):
            state = self.client.call(lambda: str(self._async().state))
            if state != PENDING or self.client.knows(self.id):
                return state
            if look == 0:
                # A worker may be taking it this very moment (out of the list, not yet in unacked).
                time.sleep(0.05)
        raise JobNotFound(self.id)

    def progress(self) -> JobProgress | None:
        """The latest progress of a running job (the final one for a finished job), else ``None``."""
        state, value = self._meta()
        if state == PROGRESS:
            return JobProgress.from_dict(value)
        if state == SUCCESS:
            res = JobResult.from_dict(value)
            return JobProgress(self.id, res.iterations, res.iterations, res.loss, elapsed_s=res.seconds)
        return None

    def _meta(self) -> tuple[str, Any]:
        """The job's state and its info (progress, result or error), read once within the budget."""

        def read() -> tuple[str, Any]:
            meta = self.client.app.backend.get_task_meta(self.id)
            return str(meta["status"]), meta.get("result")

        return self.client.call(read)

    def wait(
        self,
        timeout: float | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
        on_outage: Callable[[float], None] | None = None,
    ) -> JobResult:
        """Block until the job ends; return its result.

        Progress arrives by Redis pub/sub (no polling) and goes to ``on_progress``. Once the job
        is found, an outage of Redis is waited through (within ``timeout``; without one, for up to
        ``WAIT_OUTAGE_S`` at a time); ``on_outage`` is told, at each failed attempt, how long Redis
        has been unreachable (s).

        Raises:
            JobNotFound: no job has this id (at once, whatever the timeout).
            BrokerUnavailable: Redis unreachable before the job was found (within the client's
                budget), or for longer than ``WAIT_OUTAGE_S`` while waiting without a timeout.
            TimeoutError: not done within ``timeout`` seconds.
            JobFailed: the job failed or was cancelled; carries the worker's error class and message.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.status()  # JobNotFound (or BrokerUnavailable) now rather than waiting forever
        down_since: float | None = None
        failures = 0

        def reached() -> None:  # Redis answered: any outage is over, the next one counts afresh
            nonlocal down_since, failures
            down_since, failures = None, 0

        while True:
            try:
                meta = self._follow(deadline, on_progress, reached)
                break
            except unreachable() as e:
                now = time.monotonic()
                down_since = now if down_since is None else down_since
                failures += 1
                if deadline is not None and now >= deadline:
                    raise TimeoutError(
                        f"job {self.id} is not done after {timeout} s (Redis unreachable for the last "
                        f"{now - down_since:.0f} s)"
                    ) from None
                if deadline is None and now - down_since > WAIT_OUTAGE_S:
                    raise BrokerUnavailable.after(self.client.settings.backend_url, now - down_since, e) from e
                if on_outage is not None:
                    on_outage(now - down_since)
                delay = backoff(failures, cap_s=2.0)
                time.sleep(delay if deadline is None else min(delay, max(0.0, deadline - now)))
        if meta is None:
            raise TimeoutError(f"job {self.id} is not done after {timeout} s")
        state, value = str(meta["status"]), meta.get("result")
        if state == SUCCESS:
            return JobResult.from_dict(value)
        raise _failure(self.id, state, value)

    def _follow(
        self,
        deadline: float | None,
        on_progress: Callable[[JobProgress], None] | None,
        reached: Callable[[], None] = lambda: None,
    ) -> dict[str, Any] | None:
        """The job's final result meta, following its updates; ``None`` once ``deadline`` passes.

        Celery publishes each update on the channel named as its key. ``reached`` is called after
        every answer from Redis (an outage is over). Raises what :func:`unreachable` lists when
        Redis goes away: :meth:`wait` decides whether to go on.
        """
        backend = self.client.app.backend
        redis = self.client.backend_redis
        key = keys.CELERY_META.format(self.id)
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(key)  # first, so that no update falls between the read and the subscription
            raw: Any = redis.get(key)
            reached()
            looked = time.monotonic()
            while True:
                if raw is not None:
                    meta = backend.decode_result(raw)
                    if meta["status"] in FINAL_STATES:
                        return dict(meta)
                    if on_progress is not None and meta["status"] == PROGRESS:
                        on_progress(JobProgress.from_dict(meta.get("result")))
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return None
                wait_s = 1.0 if deadline is None else min(1.0, deadline - now)
                message = pubsub.get_message(timeout=wait_s)
                if message is not None:
                    reached()
                raw = message["data"] if message else None
                if raw is None and time.monotonic() - looked > _LOOK_AGAIN_S:
                    raw, looked = redis.get(key), time.monotonic()  # an update missed while away
                    reached()
        finally:
            pubsub.close()

    def result(self, timeout: float | None = None) -> JobResult:
        """The job's result (waits up to ``timeout`` seconds); see :meth:`wait`."""
        return self.wait(timeout)

    def error(self) -> JobFailed | None:
        """The failure of a FAILED or REVOKED job, else ``None``."""
        state, value = self._meta()
        if state not in (FAILURE, REVOKED):
            return None
        return _failure(self.id, state, self.client.app.backend.exception_to_python(value))

    def cancel(self) -> str:
        """Cancel the job: a queued job ends now (``REVOKED``), a running one at its next iteration.

        Returns:
            ``"cancelled"`` (it had not started: it is ``REVOKED`` now), ``"stopping"`` (a run
            holds it and stops at its next iteration) or ``"ended"`` (it had ended already).

        Raises:
            JobNotFound: no job has this id.
        """
        self.status()
        announcer = Announcer(self.client.redis, self.client.settings)
        at = time.time()  # one instant for every try: a retry after a lost reply is recognised
        outcome, final = self.client.call(lambda: cancellation.request(self.client.redis, announcer, self.id, at))
        if final is not None:
            self.client.call(lambda: self.client.app.backend.mark_as_revoked(self.id, reason=final.error_message))
        return outcome


class Client:
    """Sends jobs to the ``stylequeue`` queue and looks them up.

    Args:
        settings: Broker, backend and queue (from the environment when ``None``).
        app: A Celery app to read results with instead of one built from ``settings``.
        publish_retry_s: How long to keep trying to reach Redis to queue a batch (s; default
            ``timeout_s``).
        timeout_s: The client's budget (s): how long any call tries to reach Redis before it raises
            :class:`~producer.core.errors.BrokerUnavailable` (default ``STYLEQUEUE_CLIENT_TIMEOUT_S``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        app: Any = None,
        publish_retry_s: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.timeout_s = self.settings.client_timeout_s if timeout_s is None else timeout_s
        self.publish_retry_s = self.timeout_s if publish_retry_s is None else publish_retry_s
        self.app = app if app is not None else make_celery(self.settings, client_timeout_s=self.timeout_s)
        #: The broker's Redis: the queue, the job index and stylequeue's job keys.
        self.redis = broker.of(self.settings, self.timeout_s)
        #: The result backend's Redis (the broker's unless STYLEQUEUE_RESULT_BACKEND says otherwise).
        self.backend_redis = (
            self.redis
            if self.settings.backend_url == self.settings.broker_url
            else broker.of(self.settings, self.timeout_s, backend=True)
        )

    def call(self, action: Callable[[], T], repeat: bool = True, budget_s: float | None = None) -> T:
        """Run ``action`` (calls to Redis), trying again while Redis is unreachable, within a budget.

        Args:
            action: The calls.
            repeat: Whether ``action`` is safe to run again after a reply was lost; when not, only
                a failure to connect (nothing was sent) is tried again.
            budget_s: Seconds from the first attempt after which no attempt starts (default
                ``timeout_s``); one attempt lasts at most a socket timeout (``timeout_s``).

        Raises:
            BrokerUnavailable: Redis could not be reached within the budget.
        """
        budget = self.timeout_s if budget_s is None else budget_s
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return action()
            except unreachable() as e:
                attempt += 1
                delay = backoff(attempt, cap_s=1.0)
                waited = time.monotonic() - started
                if waited + delay >= budget or not (repeat or "connecting to" in str(e)):
                    raise BrokerUnavailable.after(self.settings.broker_url, waited, e) from e
                time.sleep(delay)

    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job (no look-up until you ask it something)."""
        return JobHandle(self, job_id)

    def knows(self, job_id: str) -> bool:
        """Whether ``job_id`` is in the job index or waits in the queue (sent by any client)."""
        return self.call(
            lambda: (
                registry.first_seen(self.redis, job_id) is not None
                or registry.queued(self.redis, self.settings.queue, job_id)
            )
        )

    def jobs(self, state: str | None = None, limit: int = 100) -> list[JobSummary]:
        """Recent jobs, newest first, optionally only those in ``state`` (looks at most 100 × ``limit``)."""
        return self.call(lambda: self._jobs(state, limit))

    def _jobs(self, state: str | None, limit: int) -> list[JobSummary]:
        backend = self.backend_redis
        found: list[JobSummary] = []
        before: float | None = None
        for _ in range(100):
            page = registry.recent(self.redis, max(limit, 100), before)
            if not page:
                break
            metas = backend.mget([keys.CELERY_META.format(job_id) for job_id, _ in page])
            for (job_id, seen), raw in zip(page, metas):
                job_state = json.loads(raw).get("status", PENDING) if raw else PENDING
                if state is None or job_state == state:
                    found.append(JobSummary(job_id, job_state, seen))
                    if len(found) == limit:
                        return found
            before = page[-1][1]
        return found

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Jobs that failed for good, newest first (see :mod:`producer.broker.deadletters`)."""
        return self.call(lambda: deadletters.entries(self.redis, limit))

    def requeue_dead(self, job_id: str, priority: int | None = None) -> JobHandle:
        """Send a dead-lettered job again, with the same id; its dead letter is removed.

        Raises:
            InvalidJob: no dead letter for ``job_id`` (or its payload no longer validates).
        """
        entry = self.call(lambda: deadletters.get(self.redis, job_id))
        if entry is None:
            raise InvalidJob("job_id", f"no dead letter for job {job_id!r}")
        if entry["payload"] is None:
            raise InvalidJob("job_id", f"the dead letter of {job_id!r} has no payload to send again")
        job = Job.from_message({**entry["payload"], "job_id": job_id})
        # Its end is undone (final state, runs, record, batch counts), so that the job runs again
        # rather than republishing it.
        self.call(lambda: ending.reopen(self.redis, job_id))
        self.call(lambda: self.app.backend.forget(job_id))
        handle = self.send(job, priority)
        self.call(lambda: deadletters.remove(self.redis, job_id))
        return handle

    def build(
        self,
        content: str,
        style: str | Sequence[str],
        output: str,
        params: Params | Mapping[str, Any] | None = None,
        *,
        style_weights: Sequence[float] | None = None,
        style_masks: Sequence[str | None] | None = None,
        job_id: str | None = None,
        format: str | None = None,
    ) -> Job:
        """Build and validate a :class:`Job` (with a fresh id when none is given).

        ``style_masks``: one mask URI per style (``None`` for a style without), white where that
        style applies (regional styles, docs/engine.md).
        """
        styles = [style] if isinstance(style, str) else list(style)
        message: dict[str, Any] = {
            "content": content,
            "style": style_field(styles, style_weights, style_masks),
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
            output: ``s3://bucket/key.png`` (``.jpg``, ``.webp``), or a prefix ending in ``/``
                (result at ``<prefix><job_id>.<ext>``).
            params: Engine options (:class:`Params` or its JSON form).
            priority: 0 (most urgent) to 9 (least); default 5.
            **options: ``style_weights``, ``style_masks``, ``job_id``, ``format`` (see :meth:`build`).

        Raises:
            InvalidJob: naming the offending field; nothing is sent.
            BrokerUnavailable: Redis could not be reached for ``publish_retry_s``; nothing was sent.
        """
        return self.send(self.build(content, style, output, params, **options), priority=priority)

    def send(self, job: Job | Mapping[str, Any], priority: int | None = None) -> JobHandle:
        """Enqueue a :class:`Job`, or a contract JSON object (validated first).

        Raises:
            InvalidJob, BrokerUnavailable: as :meth:`submit`.
        """
        try:
            return self.submit_many([job], priority)[0]
        except PartialSubmit as e:
            raise BrokerUnavailable.after(self.settings.broker_url, e.waited_s or 0.0, e.cause) from e.cause

    def submit_many(
        self,
        jobs: Iterable[Job | Mapping[str, Any]],
        priority: int | None = None,
        batch_size: int = 1000,
        on_batch: Callable[[Any, list[wire.Envelope]], None] | None = None,
    ) -> list[JobHandle]:
        """Enqueue many jobs: one Redis transaction per ``batch_size`` jobs.

        Every job is validated before the first is sent, so a bad job sends nothing.

        Args:
            jobs: :class:`Job` objects or contract JSON objects.
            priority: 0 (most urgent) to 9 (least) for all of them; default 5.
            batch_size: Jobs per transaction.
            on_batch: Adds commands to each batch's transaction (``(pipeline, envelopes)``), so
                that records about the jobs are written atomically with them (the HTTP API's).

        Raises:
            InvalidJob: naming the job (``jobs[3].output``) and field; nothing is sent.
            PartialSubmit: a :class:`~producer.core.errors.BrokerUnavailable`: the broker failed (after
                trying for ``publish_retry_s``), part way or before the first batch: says which
                jobs were sent, which were not, and which are unknown.
        """
        _check_priority(priority)
        pri = DEFAULT_PRIORITY if priority is None else priority
        envelopes = []
        now = round(time.time(), 3)
        for i, item in enumerate(jobs):
            try:
                envelopes.append(self.envelope(item, pri, now))
            except InvalidJob as e:
                raise InvalidJob(f"jobs[{i}].{e.field}", e.message) from None
        return self.push_many(envelopes, batch_size, on_batch)

    def envelope(self, job: Job | Mapping[str, Any], priority: int, submitted_at: float) -> wire.Envelope:
        """Validate one job (a fresh id when it has none) and build its message for :meth:`push_many`.

        Raises:
            InvalidJob: naming the field; also a message over ``STYLEQUEUE_MAX_MESSAGE_BYTES``.
        """
        job = _with_id(job if isinstance(job, Job) else Job.from_message(dict(job)))
        assert job.job_id is not None
        env = wire.envelope(
            job.job_id, {**job.to_message(), "submitted_at": submitted_at}, self.settings.queue, priority
        )
        check_size(env.message_bytes, self.settings.max_message_bytes)
        return env

    def push_many(
        self,
        envelopes: Sequence[wire.Envelope],
        batch_size: int = 1000,
        on_batch: Callable[[Any, list[wire.Envelope]], None] | None = None,
    ) -> list[JobHandle]:
        """Queue messages built by :meth:`envelope`: one Redis transaction per ``batch_size``.

        Raises:
            PartialSubmit: see :meth:`submit_many`.
        """
        sent: list[str] = []
        for start in range(0, len(envelopes), batch_size):
            batch = list(envelopes[start : start + batch_size])
            queue = self.settings.queue
            with tracing.span(f"publish {queue}", "producer", _publish_attributes(queue, batch)) as span:
                carrier = tracing.headers()  # the publish span's: each job's run is its child
                if carrier:
                    batch = [wire.with_headers(e, carrier) for e in batch]
                outcome, cause = self._push(batch, on_batch)
                if outcome != "sent":
                    span.fail(f"{outcome}: {cause}", type(cause).__name__)
            if outcome == "sent":
                sent += [e.job_id for e in batch]
                continue
            rest = [e.job_id for e in envelopes[start + batch_size :]]
            this = [e.job_id for e in batch]
            assert cause is not None
            error = (
                PartialSubmit(sent, rest, this, cause.__cause__ or cause)
                if outcome == "unknown"
                else PartialSubmit(sent, this + rest, [], cause.__cause__ or cause)
            )
            error.url, error.waited_s = cause.url, cause.waited_s
            raise error
        return [JobHandle(self, job_id) for job_id in sent]

    def _push(
        self, batch: list[wire.Envelope], on_batch: Callable[[Any, list[wire.Envelope]], None] | None = None
    ) -> tuple[str, BrokerUnavailable | None]:
        """Push one batch, retrying across a broker outage; ``("sent" | "not sent" | "unknown", error)``.

        A batch whose transaction may have reached Redis (the connection broke after it was sent)
        is looked up by its marker before it is sent again, so it is never queued twice.
        """
        batch_id = uuid.uuid4().hex
        maybe_sent = False

        def attempt() -> None:
            nonlocal maybe_sent
            if not (maybe_sent and wire.went_through(self.redis, batch_id)):  # else: its reply was lost
                try:
                    wire.push(
                        self.redis,
                        batch,
                        self.settings.jobs_index_max,
                        self.settings.result_expires_s,
                        batch_id,
                        on_batch,
                    )
                except broker.errors() as e:
                    # A failure to connect sent nothing; any other may have come after EXEC.
                    maybe_sent = maybe_sent or "connecting to" not in str(e)
                    raise
            maybe_sent = True
            # Acknowledged only once replicas have it (STYLEQUEUE_REDIS_MIN_REPLICAS): a failover
            # right after cannot lose it. NotReplicated is retried like an outage, then reported.
            broker.replicated(self.redis, self.settings)

        try:
            self.call(attempt, budget_s=self.publish_retry_s)
        except BrokerUnavailable as e:
            return ("unknown" if maybe_sent else "not sent"), e
        return "sent", None


def _publish_attributes(queue: str, batch: list[wire.Envelope]) -> dict[str, Any]:
    """The publish span's attributes (messaging semantic conventions; the message id of a single job)."""
    if not tracing.enabled():
        return {}
    attributes: dict[str, Any] = {
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": queue,
        "celery.task_name": TASK_NAME,
    }
    if len(batch) == 1:
        attributes["messaging.message.id"] = batch[0].job_id
    else:
        attributes["messaging.batch.message_count"] = len(batch)
    return attributes


def _with_id(job: Job) -> Job:
    """``job`` with a fresh random id when it has none."""
    return job if job.job_id is not None else Job.from_message({**job.to_message(), "job_id": uuid.uuid4().hex})


def _check_priority(priority: int | None) -> None:
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9):
        raise InvalidJob("priority", f"{priority!r} is not an integer in [0, 9]")


def _failure(job_id: str, state: str, value: Any) -> JobFailed:
    if state == REVOKED:
        return JobFailed(job_id, JobCancelled.__name__, str(value) or "cancelled")
    if isinstance(value, BaseException):
        return JobFailed(job_id, type(value).__name__, str(value))
    return JobFailed(job_id, state, str(value))


__all__ = ["FINAL_STATES", "Client", "JobHandle", "JobProgress", "JobResult"]
