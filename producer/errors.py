"""The stylequeue error tree.

Every error the system raises on purpose derives from :class:`StylequeueError` and is either
*permanent* or *transient*; nothing else decides whether a job is retried::

    StylequeueError
    ├── PermanentError          never retried: the same input fails the same way again
    │   ├── InvalidJob          the job or its parameters break the contract (names the field)
    │   ├── ImageError          the bytes are not a usable image (empty, corrupt, too large, ...)
    │   └── WeightsError        the VGG19 weights are missing, unreadable or fail their sha256
    └── TransientError          may succeed later: retried with backoff and jitter

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

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class ImageError(PermanentError):
    """Bytes that cannot be used as an image: empty, not an image, truncated, too large, too small."""


class WeightsError(PermanentError):
    """VGG19 weights that cannot be had: download impossible, file missing, or sha256 mismatch."""
