"""The stylequeue error tree.

Every error the system raises on purpose derives from :class:`StylequeueError` and is either
*permanent* or *transient*; nothing else decides whether a job is retried::

    StylequeueError
    ├── PermanentError          never retried: the same input fails the same way again
    │   ├── InvalidJob          the job or its parameters break the contract (names the field)
    │   ├── ImageError          the bytes are not a usable image (empty, corrupt, too large, ...)
    │   ├── WeightsError        the VGG19 weights are missing, unreadable or fail their sha256
    │   ├── ObjectNotFound      the object (or its bucket) does not exist in the store
    │   ├── BucketNotAllowed    outside the input/output allowlists, or access is denied
    │   ├── JobCancelled        the job was cancelled by a client
    │   └── TooManyCrashes      the job killed its worker too many times (OOM loop): not requeued
    ├── TransientError          may succeed later: retried in place, with backoff and jitter, for a
    │   │                       time budget (STYLEQUEUE_RETRY_FOR_S) before it fails the job
    │   ├── StoreUnavailable    the object store timed out, throttled, or answered 5xx
    │   └── BrokerUnavailable   (client side) Redis could not be reached to send or look up jobs
    │       └── PartialSubmit   submit_many stopped part way: says which jobs were sent
    ├── ConfigError             a deployment setting is wrong (names the variable): not a job's fault
    ├── WriteConflict           the store refused a conditional write: the object changed meanwhile
    ├── JobFailed               (client side) a job ended FAILED or REVOKED; carries the worker's error
    └── JobNotFound             (client side) no job has this id (never sent, or expired)

The light client (``producer``) and the engine (``worker``) share this module so that a failure
carries the same class name from the worker's result back to the caller.
"""

from __future__ import annotations


class StylequeueError(Exception):
    """Base class of every error stylequeue raises on purpose."""

    #: Whether a job failing with this error may be retried. Subclasses fix it.
    retryable: bool = False


class PermanentError(StylequeueError):
    """An error that the same input will always reproduce; a job failing with it is never retried."""

    retryable = False


class TransientError(StylequeueError):
    """An error that may go away by itself (network, throttling, 5xx); retried with backoff."""

    retryable = True


class InvalidJob(PermanentError):
    """A job or parameter set breaks the contract.

    Attributes:
        field: Dotted name of the offending field (``"params.iterations"``), or ``""`` for the
            message as a whole.
    """

    def __init__(self, field: str, message: str = "") -> None:
        self.field = field
        self.message = message
        # args stay (field, message) so Celery can rebuild the exception from a JSON result.
        super().__init__(field, message)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field and self.message else self.field or self.message


class ConfigError(StylequeueError):
    """A deployment setting (an environment variable, the API's keys document) is wrong.

    Not a job's fault: raised where a process reads its configuration, naming the setting.

    Attributes:
        setting: The variable or document at fault (``"STYLEQUEUE_MAX_PIXELS"``).
        message: What is wrong with it.
    """

    def __init__(self, setting: str, message: str = "") -> None:
        self.setting = setting
        self.message = message
        super().__init__(setting, message)

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}" if self.message else self.setting


class ImageError(PermanentError):
    """Bytes that cannot be used as an image: empty, not an image, truncated, too large, too small."""


class WeightsError(PermanentError):
    """VGG19 weights that cannot be had: download impossible, file missing, or sha256 mismatch."""


class ObjectNotFound(PermanentError):
    """The object or its bucket does not exist in the object store."""


class BucketNotAllowed(PermanentError):
    """The bucket is outside the deployment's allowlist, or the store denied access."""


class JobCancelled(PermanentError):
    """A client cancelled the job; it stops at the next iteration and is never retried."""


class TooManyCrashes(PermanentError):
    """The job's earlier runs killed their worker ``STYLEQUEUE_MAX_WORKER_LOSSES`` times."""


class StoreUnavailable(TransientError):
    """The object store could not be reached, timed out, throttled us or answered 5xx."""


class BrokerUnavailable(TransientError):
    """Client side: Redis could not be reached within the client's budget to send or look up jobs.

    Attributes:
        url: The Redis URL tried, its password masked (``""`` when not known).
        waited_s: How long the client tried (s), or ``None`` when not known.
    """

    url: str = ""
    waited_s: float | None = None

    @classmethod
    def after(cls, url: str, waited_s: float, cause: BaseException | str) -> BrokerUnavailable:
        """The error for ``url`` (masked here) after ``waited_s`` seconds of trying."""
        masked = masked_url(url)
        why = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        tried = f"tried for {waited_s:.1f} s; " if waited_s >= 0.05 else ""
        error = cls(f"cannot reach Redis at {masked} ({tried}{why})")
        error.url, error.waited_s = masked, waited_s
        return error


class WriteConflict(StylequeueError):
    """The store refused a conditional write (HTTP 412): the object changed since it was read."""


class JobFailed(StylequeueError):
    """Client side: a job ended in the FAILURE state.

    Attributes:
        job_id: The job's id.
        error_type: Class name of the worker's error (``"ImageError"``, ``"InvalidJob"``, ...).
        error_message: The worker's message.
    """

    def __init__(self, job_id: str, error_type: str, error_message: str) -> None:
        self.job_id = job_id
        self.error_type = error_type
        self.error_message = error_message
        super().__init__(job_id, error_type, error_message)

    def __str__(self) -> str:
        return f"job {self.job_id} failed: {self.error_type}: {self.error_message}"


class JobNotFound(StylequeueError):
    """Client side: no job with this id is known (never sent, or its records expired).

    Attributes:
        job_id: The id looked up.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(job_id)

    def __str__(self) -> str:
        return f"no job {self.job_id!r}: never submitted, or its records expired"


class PartialSubmit(BrokerUnavailable):
    """Client side: ``submit_many`` stopped part way because the broker failed (a :class:`BrokerUnavailable`).

    Attributes:
        sent: Ids of the jobs that are queued.
        not_sent: Ids of the jobs that are not (submit them again).
        unknown: Ids whose batch's outcome could not be checked (the broker stayed down); look
            them up with ``client.job(id).status()`` once it is back.
        cause: The broker error.
    """

    def __init__(self, sent: list[str], not_sent: list[str], unknown: list[str], cause: BaseException) -> None:
        self.sent, self.not_sent, self.unknown, self.cause = sent, not_sent, unknown, cause
        super().__init__(len(sent), len(not_sent), len(unknown))

    def __str__(self) -> str:
        return (
            f"submit_many stopped: {len(self.sent)} jobs sent, {len(self.not_sent)} not sent, "
            f"{len(self.unknown)} unknown ({type(self.cause).__name__}: {self.cause})"
        )


def masked_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``**`` (``redis://:**@host:6379/0``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:**@{host}"))
