"""Which objects a job may read and which it may write: separate allowlists, and the model protected.

``STYLEQUEUE_INPUT_BUCKETS`` and ``STYLEQUEUE_OUTPUT_BUCKETS`` are comma-separated entries, each a
bucket (``photos``) or a bucket and key prefix (``results/stylized/``); an empty list allows every
bucket. When they are unset, ``STYLEQUEUE_ALLOWED_BUCKETS`` applies to both (the setting of
earlier versions). Whatever the lists say, a job never writes the VGG19 weights object
(``STYLEQUEUE_WEIGHTS``): a job that could replace the model would take down every worker that
starts after it.

The checks run in the worker before any download or computation; the client runs the same checks
before sending when it has the same settings.
"""

from __future__ import annotations

from producer.core.contract import Job, ObjectRef
from producer.core.errors import BucketNotAllowed, InvalidJob
from producer.core.settings import Settings


def admits(entries: tuple[str, ...], ref: ObjectRef) -> bool:
    """Whether an allowlist admits ``ref`` (an empty list admits everything).

    Entries match by path segment: ``photos/acme/`` (or ``photos/acme``) admits
    ``photos/acme/x.png``, never ``photos/acme-corp/x.png``.
    """
    if not entries:
        return True
    for entry in entries:
        bucket, _, prefix = entry.partition("/")
        if ref.bucket == bucket and ref.key.startswith(folder(prefix)):
            return True
    return False


def folder(prefix: str) -> str:
    """A key prefix as the folder it names: ``""`` (the whole bucket) or ending in ``/``."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def overlaps(a: str, b: str) -> bool:
    """Whether two allowlist entries admit some object in common (one folder holds the other)."""
    bucket_a, _, prefix_a = a.partition("/")
    bucket_b, _, prefix_b = b.partition("/")
    if bucket_a != bucket_b:
        return False
    fa, fb = folder(prefix_a), folder(prefix_b)
    return fa.startswith(fb) or fb.startswith(fa)


def check_read(settings: Settings, ref: ObjectRef, field: str) -> None:
    """Raise :class:`BucketNotAllowed` unless jobs may read ``ref``."""
    if not admits(settings.readable, ref):
        raise BucketNotAllowed(f"{field}: {ref.uri} is outside the buckets jobs may read ({_names(settings, 'INPUT')})")


def check_write(settings: Settings, ref: ObjectRef, field: str = "output") -> None:
    """Raise unless jobs may write ``ref``.

    Raises:
        BucketNotAllowed: outside the output allowlist.
        InvalidJob: ``ref`` is the weights object.
    """
    if settings.weights.startswith("s3://") and ref.uri == settings.weights:
        raise InvalidJob(field, f"{ref.uri} is the model's weights (STYLEQUEUE_WEIGHTS): jobs never write it")
    if not admits(settings.writable, ref):
        raise BucketNotAllowed(
            f"{field}: {ref.uri} is outside the buckets jobs may write ({_names(settings, 'OUTPUT')})"
        )


def check_job(settings: Settings, job: Job, job_id: str) -> None:
    """Check every object a job reads and its output (the exact key, for a prefix)."""
    for field, ref in job.inputs():
        check_read(settings, ref, field)
    check_write(settings, job.output_ref(job_id))


def _names(settings: Settings, direction: str) -> str:
    own = settings.input_buckets if direction == "INPUT" else settings.output_buckets
    variable = f"STYLEQUEUE_{direction}_BUCKETS" if own else "STYLEQUEUE_ALLOWED_BUCKETS"
    listed = settings.readable if direction == "INPUT" else settings.writable
    return f"{variable}={','.join(listed)}"
