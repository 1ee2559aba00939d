"""One typed settings object read from the environment, shared by the client, the CLI and the worker.

Every variable is optional; the defaults suit a laptop with Redis on localhost. Units are in the
names. S3 credentials are never settings: boto3 reads them from the standard AWS variables
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``), shared config files or the
instance role, and stylequeue never logs or stores them.

=================================== ========================== ===========================================
variable                            default                    meaning
=================================== ========================== ===========================================
``STYLEQUEUE_BROKER_URL``           ``redis://localhost:6379/0`` Celery broker (a ``redis://`` URL)
``STYLEQUEUE_RESULT_BACKEND``       the broker URL             where states, progress and results live
``STYLEQUEUE_QUEUE``                ``stylequeue``             queue the jobs go to
``STYLEQUEUE_S3_ENDPOINT_URL``      AWS (none)                 S3-compatible endpoint; falls back to
                                                               ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``
``AWS_REGION``                      ``us-east-1``              also ``AWS_DEFAULT_REGION``
``STYLEQUEUE_ALLOWED_BUCKETS``      (all)                      comma-separated buckets jobs may touch
``STYLEQUEUE_WEIGHTS``              ``imagenet``               VGG19 weights: ``imagenet``, a path, or ``s3://``
``STYLEQUEUE_WEIGHTS_SHA256``       (none)                     expected sha256 of the weights file
``STYLEQUEUE_WEIGHTS_CACHE_DIR``    ``~/.cache/stylequeue``    where ``s3://`` weights are downloaded once
``STYLEQUEUE_MAX_PIXELS``           ``50000000``               largest input image (width×height)
``STYLEQUEUE_MAX_INPUT_BYTES``     ``200000000``              largest input object downloaded (bytes)
``STYLEQUEUE_MAX_SIZE_PX``          ``2048``                   largest output side a job may ask for
``STYLEQUEUE_MAX_ITERATIONS``       ``2000``                   most L-BFGS iterations a job may ask for
``STYLEQUEUE_SOFT_TIME_LIMIT_S``    ``3300``                   a job is asked to stop after this (s)
``STYLEQUEUE_HARD_TIME_LIMIT_S``    ``3600``                   its process is killed after this (s)
``STYLEQUEUE_VISIBILITY_TIMEOUT_S`` hard limit + 600           unacked jobs are redelivered after this (s)
``STYLEQUEUE_RESULT_EXPIRES_S``     ``604800``                 results are kept this long (s)
``STYLEQUEUE_MAX_RETRIES``          ``5``                      retries of a transient failure
``STYLEQUEUE_RETRY_BACKOFF_MAX_S``  ``300``                    cap of the exponential retry backoff (s)
``STYLEQUEUE_PROGRESS_INTERVAL_S``  ``0.5``                    least time between two progress updates (s)
``STYLEQUEUE_PROC_ALIVE_TIMEOUT_S`` ``300``                    time a worker child has to load the model (s)
``STYLEQUEUE_METRICS_PORT``         ``9808``                   worker's Prometheus port (0: off)
``STYLEQUEUE_HEALTH_DIR``           ``/tmp/stylequeue-health`` per-child state files for ``stylequeue health``
``STYLEQUEUE_LEASE_TTL_S``          ``30``                     a dead worker's job is taken over after this (s)
``STYLEQUEUE_MAX_WORKER_LOSSES``    ``3``                      crashed runs before a job is dead-lettered
``STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS`` ``25``              checkpoint after this many iterations ...
``STYLEQUEUE_CHECKPOINT_EVERY_S``   ``60``                     ... or this many seconds (s)
``STYLEQUEUE_UPLOAD_ATTEMPTS``      ``5``                      in-place attempts of the result upload
``STYLEQUEUE_RESTORE_INTERVAL_S``   ``10``                     sweep for jobs past the visibility timeout (s)
=================================== ========================== ===========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from producer.errors import InvalidJob


@dataclass(frozen=True)
class Settings:
    """Deployment settings; see the module docstring for the environment variables."""

    broker_url: str = "redis://localhost:6379/0"
    result_backend: str | None = None
    queue: str = "stylequeue"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    allowed_buckets: tuple[str, ...] = ()
    weights: str = "imagenet"
    weights_sha256: str | None = None
    weights_cache_dir: str = "~/.cache/stylequeue"
    max_pixels: int = 50_000_000
    max_input_bytes: int = 200_000_000
    max_size_px: int = 2048
    max_iterations: int = 2000
    soft_time_limit_s: int = 3300
    hard_time_limit_s: int = 3600
    visibility_timeout_s: int | None = None
    result_expires_s: int = 7 * 24 * 3600
    max_retries: int = 5
    retry_backoff_max_s: int = 300
    progress_interval_s: float = 0.5
    proc_alive_timeout_s: int = 300
    metrics_port: int = 9808
    health_dir: str = "/tmp/stylequeue-health"
    lease_ttl_s: int = 30
    max_worker_losses: int = 3
    checkpoint_every_iterations: int = 25
    checkpoint_every_s: float = 60.0
    upload_attempts: int = 5
    restore_interval_s: int = 10

    @property
    def backend_url(self) -> str:
        """The result backend, defaulting to the broker."""
        return self.result_backend or self.broker_url

    @property
    def visibility_timeout(self) -> int:
        """Seconds before Redis redelivers an unacked job: by default 10 minutes past the hard limit."""
        return self.visibility_timeout_s or self.hard_time_limit_s + 600

    def bucket_allowed(self, bucket: str) -> bool:
        """Whether jobs may read or write ``bucket`` (an empty allowlist allows all)."""
        return not self.allowed_buckets or bucket in self.allowed_buckets

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; raise :class:`InvalidJob` naming a variable that does not parse."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f"STYLEQUEUE_{f.name.upper()}"
            raw = env.get(name)
            if f.name == "s3_endpoint_url":
                raw = raw or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
            elif f.name == "s3_region":
                raw = raw or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            if raw is None or raw == "":
                continue
            kind = str(f.type)
            try:
                if kind.startswith("int"):
                    values[f.name] = int(raw)
                elif kind.startswith("float"):
                    values[f.name] = float(raw)
                elif kind.startswith("tuple"):
                    values[f.name] = tuple(v.strip() for v in raw.split(",") if v.strip())
                else:
                    values[f.name] = raw
            except ValueError:
                raise InvalidJob(name, f"must be a number, got {raw!r}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.soft_time_limit_s >= settings.hard_time_limit_s:
            raise InvalidJob("STYLEQUEUE_SOFT_TIME_LIMIT_S", "must be below STYLEQUEUE_HARD_TIME_LIMIT_S")
        return settings
