"""One typed settings object read from the environment, shared by the client, the CLI and the worker.

Every variable is optional; the defaults suit a laptop with Redis on localhost. Units are in the
names. S3 credentials are never settings: boto3 reads them from the standard AWS variables
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``), shared config files or the
instance role, and stylequeue never logs or stores them.

========================================== ========================== ===========================================
variable                                   default                    meaning
========================================== ========================== ===========================================
``STYLEQUEUE_BROKER_URL``                  ``redis://localhost:6379/0`` Celery broker (``redis://``, ``rediss://`` or
                                                                      ``sentinel://``);
                                                                      also holds stylequeue's job keys
``STYLEQUEUE_REDIS_MASTER_NAME``           (none)                     the Sentinel master's name, needed with a
                                                                      ``sentinel://h1:26379;sentinel://h2:26379/0``
                                                                      broker URL (kombu's syntax)
``STYLEQUEUE_SENTINEL_PASSWORD``           (none)                     password of the Sentinels, if they need one
``STYLEQUEUE_REDIS_MIN_REPLICAS``          ``1`` with Sentinel, else 0 replicas that must have a submitted job or
                                                                      a job's end before it is acknowledged
                                                                      (Redis ``WAIT``)
``STYLEQUEUE_REDIS_WAIT_TIMEOUT_S``        ``2``                      how long ``WAIT`` waits for them (s)
``STYLEQUEUE_RESULT_BACKEND``              the broker URL             where states, progress and results live
``STYLEQUEUE_QUEUE``                       ``stylequeue``             queue the jobs go to
``STYLEQUEUE_CLIENT_TIMEOUT_S``            ``5``                      how long a client (``Client``, the CLI) tries
                                                                      to reach Redis before ``BrokerUnavailable``
                                                                      (s); workers, API and notifier keep theirs
``STYLEQUEUE_S3_ENDPOINT_URL``             AWS (none)                 S3-compatible endpoint; falls back to
                                                                      ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``
``AWS_REGION``                             ``us-east-1``              also ``AWS_DEFAULT_REGION``
``STYLEQUEUE_S3_CONDITIONAL_WRITES``       ``1``                      ``If-None-Match``/``If-Match`` on writes
                                                                      (fencing); ``0`` for stores without them
``STYLEQUEUE_INPUT_BUCKETS``               allowed buckets            where jobs may read: ``bucket`` or
                                                                      ``bucket/prefix/``, comma-separated
``STYLEQUEUE_OUTPUT_BUCKETS``              allowed buckets            where jobs may write (same form)
``STYLEQUEUE_ALLOWED_BUCKETS``             (all)                      both of the above, when they are not set
``STYLEQUEUE_WEIGHTS``                     ``imagenet``               VGG19 weights: ``imagenet``, a path, or ``s3://``
``STYLEQUEUE_WEIGHTS_SHA256``              (none)                     expected sha256 of the weights file
``STYLEQUEUE_WEIGHTS_CACHE_DIR``           ``~/.cache/stylequeue``    where ``s3://`` weights are downloaded once
``STYLEQUEUE_MAX_PIXELS``                  ``50000000``               largest image decoded or processed (w×h)
``STYLEQUEUE_MAX_INPUT_BYTES``             ``200000000``              largest input object downloaded (bytes)
``STYLEQUEUE_MAX_SIZE_PX``                 ``2048``                   largest output side a job may ask for
``STYLEQUEUE_MAX_ITERATIONS``              ``2000``                   most L-BFGS iterations a job may ask for
``STYLEQUEUE_MAX_MESSAGE_BYTES``           ``65536``                  largest job message (its JSON) accepted
``STYLEQUEUE_MAX_JOB_MEMORY_BYTES``        ``0`` (auto)               memory one job may need; auto: 80% of the
                                                                      GPU's, else of the RAM (cgroup limit)
``STYLEQUEUE_SOFT_TIME_LIMIT_S``           ``3300``                   a job is asked to stop after this (s)
``STYLEQUEUE_HARD_TIME_LIMIT_S``           ``3600``                   its process is killed after this (s)
``STYLEQUEUE_VISIBILITY_TIMEOUT_S``        hard limit + 600           kombu's own last-resort redelivery (s)
``STYLEQUEUE_RESULT_EXPIRES_S``            ``604800``                 results and job keys are kept this long (s)
``STYLEQUEUE_RETRY_FOR_S``                 ``900``                    transient failures (store or Redis down) are
                                                                      retried in place this long (s)
``STYLEQUEUE_RETRY_BACKOFF_MAX_S``         ``30``                     cap of the retry backoff (s)
``STYLEQUEUE_PROGRESS_INTERVAL_S``         ``0.5``                    least time between two progress updates (s)
``STYLEQUEUE_PROC_ALIVE_TIMEOUT_S``        ``300``                    time a worker child has to load the model (s)
``STYLEQUEUE_METRICS_PORT``                ``9808``                   worker's Prometheus port (0: off)
``STYLEQUEUE_HEALTH_DIR``                  ``/tmp/stylequeue-health`` per-child state files for ``stylequeue health``
``STYLEQUEUE_HEALTH_STALL_S``              ``0``                      ``stylequeue health`` fails when a job made no
                                                                      progress this long (s; 0: off)
``STYLEQUEUE_LEASE_TTL_S``                 ``30``                     a run's lease outlives its last renewal by this
``STYLEQUEUE_SWEEP_INTERVAL_S``            ``10``                     workers look for abandoned jobs this often (s)
``STYLEQUEUE_MAX_WORKER_LOSSES``           ``3``                      crashed runs before a job is dead-lettered
``STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS`` ``25``                     checkpoint after this many iterations ...
``STYLEQUEUE_CHECKPOINT_EVERY_S``          ``60``                     ... or this many seconds (s)
``STYLEQUEUE_RESTORE_INTERVAL_S``          ``10``                     kombu's sweep for messages past the
                                                                      visibility timeout (s)
``STYLEQUEUE_DEAD_LETTERS_MAX``            ``10000``                  dead letters kept (oldest dropped first)
``STYLEQUEUE_DEAD_LETTER_TTL_S``           ``2592000``                dead letters are kept this long (s)
``STYLEQUEUE_JOBS_INDEX_MAX``              ``200000``                 recent jobs listed by ``stylequeue jobs``
``STYLEQUEUE_LOG_FORMAT``                  ``text``                   worker logs: ``text`` or ``json`` (one object
                                                                      per line, with ``job_id`` during a job)
``STYLEQUEUE_API_KEYS_FILE``               (none)                     the HTTP API's keys (JSON, see producer/api/
                                                                      tenants.py); or the keys in
``STYLEQUEUE_API_KEYS``                    (none)                     ... this variable, as the same JSON
``STYLEQUEUE_S3_PUBLIC_ENDPOINT_URL``      the S3 endpoint            host in presigned URLs given to API clients
``STYLEQUEUE_PRESIGN_EXPIRES_S``           ``3600``                   presigned URLs are valid this long (s)
``STYLEQUEUE_API_MAX_BODY_BYTES``          ``16000000``               largest HTTP request body (bytes)
``STYLEQUEUE_BATCH_MAX_JOBS``              ``10000``                  most jobs in one POST /v1/batches
``STYLEQUEUE_WEBHOOK_HOSTS``               (any public host)          hosts webhooks may call (``*.example.com``)
``STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS``      (none)                     private networks webhooks may still reach
                                                                      (CIDRs: ``10.8.0.0/16,127.0.0.1/32``)
``STYLEQUEUE_WEBHOOK_ALLOW_HTTP``          ``0``                      allow http:// (not only https://) webhooks
``STYLEQUEUE_WEBHOOK_RETRY_FOR_S``         ``90000``                  a webhook is retried this long (s), then failed
``STYLEQUEUE_WEBHOOK_TIMEOUT_S``           ``10``                     one webhook delivery attempt's timeout (s)
``STYLEQUEUE_WEBHOOK_BACKOFF_S``           ``5``                      first retry delay (s); doubles, at most an hour
``STYLEQUEUE_WEBHOOK_QUEUE``               ``stylequeue-webhooks``    the notifier's queue
``STYLEQUEUE_EVENTS_MAX``                  ``100000``                 events kept in the ``stylequeue:events`` stream
``STYLEQUEUE_API_STREAM_KEEPALIVE_S``      ``15``                     an idle event stream sends a comment this often
``STYLEQUEUE_API_MAX_STREAMS_PER_TENANT``  ``1000``                   event streams a tenant may have open in one
                                                                      API process (then 429)
``STYLEQUEUE_AUTO_PRECISION``              (detect)                   what precision ``auto`` resolves to:
                                                                      ``float32`` or ``bfloat16`` as on a machine
                                                                      without / with native bfloat16 (tests, CI)
========================================== ========================== ===========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from producer.core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """Deployment settings; see the module docstring for the environment variables."""

    broker_url: str = "redis://localhost:6379/0"
    redis_master_name: str | None = None
    sentinel_password: str | None = None
    redis_min_replicas: int | None = None
    redis_wait_timeout_s: float = 2.0
    result_backend: str | None = None
    queue: str = "stylequeue"
    client_timeout_s: float = 5.0
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_conditional_writes: bool = True
    input_buckets: tuple[str, ...] = ()
    output_buckets: tuple[str, ...] = ()
    allowed_buckets: tuple[str, ...] = ()
    weights: str = "imagenet"
    weights_sha256: str | None = None
    weights_cache_dir: str = "~/.cache/stylequeue"
    max_pixels: int = 50_000_000
    max_input_bytes: int = 200_000_000
    max_size_px: int = 2048
    max_iterations: int = 2000
    max_message_bytes: int = 65536
    max_job_memory_bytes: int = 0
    soft_time_limit_s: int = 3300
    hard_time_limit_s: int = 3600
    visibility_timeout_s: int | None = None
    result_expires_s: int = 7 * 24 * 3600
    retry_for_s: float = 900.0
    retry_backoff_max_s: float = 30.0
    progress_interval_s: float = 0.5
    proc_alive_timeout_s: int = 300
    metrics_port: int = 9808
    health_dir: str = "/tmp/stylequeue-health"
    health_stall_s: float = 0.0
    lease_ttl_s: float = 30.0
    sweep_interval_s: float = 10.0
    max_worker_losses: int = 3
    checkpoint_every_iterations: int = 25
    checkpoint_every_s: float = 60.0
    restore_interval_s: int = 10
    dead_letters_max: int = 10_000
    dead_letter_ttl_s: int = 30 * 24 * 3600
    jobs_index_max: int = 200_000
    log_format: str = "text"
    api_keys_file: str | None = None
    api_keys: str | None = None
    s3_public_endpoint_url: str | None = None
    presign_expires_s: int = 3600
    api_max_body_bytes: int = 16_000_000
    batch_max_jobs: int = 10_000
    webhook_hosts: tuple[str, ...] = ()
    webhook_allow_networks: tuple[str, ...] = ()
    webhook_allow_http: bool = False
    webhook_retry_for_s: float = 25 * 3600.0
    webhook_timeout_s: float = 10.0
    webhook_backoff_s: float = 5.0
    webhook_queue: str = "stylequeue-webhooks"
    events_max: int = 100_000
    api_stream_keepalive_s: float = 15.0
    api_max_streams_per_tenant: int = 1000

    @property
    def backend_url(self) -> str:
        """The result backend, defaulting to the broker."""
        return self.result_backend or self.broker_url

    @property
    def sentinel(self) -> bool:
        """Whether the broker is reached through Redis Sentinel (a ``sentinel://`` URL)."""
        return self.broker_url.startswith("sentinel://")

    @property
    def min_replicas(self) -> int:
        """Replicas that must acknowledge a submit or a job's end (``WAIT``): 1 with Sentinel, else 0."""
        if self.redis_min_replicas is not None:
            return self.redis_min_replicas
        return 1 if self.sentinel else 0

    @property
    def visibility_timeout(self) -> int:
        """Seconds before kombu itself redelivers an unacked job: by default 10 minutes past the hard limit.

        It is the last resort only: the sweep hands a job whose worker is gone to another one
        within twice the lease TTL plus a sweep interval, and keeps a running job's message from being
        redelivered however long the job runs.
        """
        return self.visibility_timeout_s or self.hard_time_limit_s + 600

    @property
    def readable(self) -> tuple[str, ...]:
        """Where jobs may read (``STYLEQUEUE_INPUT_BUCKETS``, else ``STYLEQUEUE_ALLOWED_BUCKETS``)."""
        return self.input_buckets or self.allowed_buckets

    @property
    def writable(self) -> tuple[str, ...]:
        """Where jobs may write (``STYLEQUEUE_OUTPUT_BUCKETS``, else ``STYLEQUEUE_ALLOWED_BUCKETS``)."""
        return self.output_buckets or self.allowed_buckets

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; raise :class:`~producer.core.errors.ConfigError` naming a bad variable."""
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
            values[f.name] = _parse(name, str(f.type), raw)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.soft_time_limit_s >= settings.hard_time_limit_s:
            raise ConfigError("STYLEQUEUE_SOFT_TIME_LIMIT_S", "must be below STYLEQUEUE_HARD_TIME_LIMIT_S")
        for url in (settings.broker_url, settings.backend_url):
            if url.startswith("sentinel://") and not settings.redis_master_name:
                raise ConfigError("STYLEQUEUE_REDIS_MASTER_NAME", "is needed with a sentinel:// URL")
        if settings.redis_min_replicas is not None and settings.redis_min_replicas < 0:
            raise ConfigError("STYLEQUEUE_REDIS_MIN_REPLICAS", "must be >= 0")
        if settings.log_format not in ("text", "json"):
            raise ConfigError("STYLEQUEUE_LOG_FORMAT", f"{settings.log_format!r} is not 'text' or 'json'")
        if settings.client_timeout_s <= 0:
            raise ConfigError("STYLEQUEUE_CLIENT_TIMEOUT_S", "must be > 0")
        if settings.lease_ttl_s <= 0 or settings.sweep_interval_s <= 0:
            raise ConfigError("STYLEQUEUE_LEASE_TTL_S", "the lease TTL and sweep interval must be > 0")
        if settings.visibility_timeout < 3 * settings.sweep_interval_s:
            raise ConfigError(
                "STYLEQUEUE_VISIBILITY_TIMEOUT_S",
                "must be at least 3 sweep intervals (the sweep keeps running jobs' messages visible)",
            )
        return settings


def _parse(name: str, kind: str, raw: str) -> object:
    """One variable's value by the field's type."""
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if kind.startswith("bool"):
        if raw.lower() not in _TRUE | _FALSE:
            raise ConfigError(name, f"must be 1/0, true/false, yes/no or on/off, got {raw!r}")
        return raw.lower() in _TRUE
    if kind.startswith("tuple"):
        return tuple(v.strip() for v in raw.split(",") if v.strip())
    return raw
