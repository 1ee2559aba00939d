"""Everything stylequeue keeps in Redis, one module per structure, and the connections to it.

:mod:`~producer.broker.keys` names every key with its writer and bound; :mod:`~producer.broker.wire`
(a job as it lies in a queue), :mod:`~producer.broker.queues` (priority lists, depth),
:mod:`~producer.broker.registry` (the job index), :mod:`~producer.broker.cancellation`,
:mod:`~producer.broker.deadletters`, :mod:`~producer.broker.events` (the stream, webhooks, batch
counts) each own one structure; :mod:`~producer.broker.scripts` loads the Lua scripts of ``lua/``;
:mod:`~producer.broker.celery_app` is the Celery configuration both sides share.

Connections (this module) are made one way for the client, the worker, the API, the notifier and
the exporters: :func:`of` from the settings, for a plain Redis (``redis://``, ``rediss://``) or a
Sentinel-managed one (``sentinel://h1:26379;sentinel://h2:26379/0``, kombu's syntax, with
``STYLEQUEUE_REDIS_MASTER_NAME``): then every connection asks the Sentinels for the current
primary, so after a failover the next try reaches the new one.

redis-py retries a failed command by default; for a ``MULTI``/``EXEC`` whose reply was lost that
would apply it twice (two copies of a job). Every stylequeue connection is made without automatic
retries and with timeouts; the callers retry themselves, knowing what is safe to repeat
(:mod:`producer.core.retrying`).
"""

from __future__ import annotations

from typing import Any


def of(settings: Any, timeout_s: float = 10.0, backend: bool = False) -> Any:
    """A client of the broker's Redis (or the result backend's, with ``backend``) as ``settings`` say."""
    return connect(
        settings.backend_url if backend else settings.broker_url,
        timeout_s,
        master_name=settings.redis_master_name,
        sentinel_password=settings.sentinel_password,
    )


def connect(
    url: str, timeout_s: float = 10.0, *, master_name: str | None = None, sentinel_password: str | None = None
) -> Any:
    """A ``redis.Redis`` for ``url`` with socket and connect timeouts and no automatic retries.

    ``url`` may be a ``sentinel://`` list (``sentinel://[:password@]h1:26379;sentinel://h2:26379/0``:
    the password and database are the primary's); ``master_name`` then names the primary the
    Sentinels watch, ``sentinel_password`` is the Sentinels' own.

    Raises:
        ConfigError: a ``sentinel://`` URL without ``master_name``, or without any host.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": min(5.0, timeout_s),
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
    }
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url, **options)
    from redis.sentinel import Sentinel

    from producer.core.errors import ConfigError

    if not master_name:
        raise ConfigError("STYLEQUEUE_REDIS_MASTER_NAME", "is needed with a sentinel:// URL")
    hosts, db, password = sentinel_hosts(url)
    sentinel_options = {k: v for k, v in options.items() if k != "health_check_interval"}
    if sentinel_password:
        sentinel_options["password"] = sentinel_password
    sentinels = Sentinel(hosts, sentinel_kwargs=sentinel_options, **options)
    return sentinels.master_for(master_name, db=db, password=password, **options)


def with_timeout(client: Any, timeout_s: float) -> Any:
    """A client of the same Redis as ``client``, with its own pool and socket timeouts of ``timeout_s``.

    For a Sentinel-managed client: of the same primary, found through the same Sentinels.
    """
    import redis
    from redis.sentinel import SentinelConnectionPool

    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if isinstance(pool, SentinelConnectionPool):
        kwargs.pop("connection_pool", None)  # the old pool's own proxy
        new: Any = SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, connection_class=pool.connection_class, **kwargs
        )
    else:
        new = type(pool)(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=new)


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """The Sentinels' ``(host, port)``, the database and the primary's password of a ``sentinel://`` URL.

    Raises:
        ConfigError: no host in it.
    """
    from urllib.parse import unquote, urlsplit

    from producer.core.errors import ConfigError

    hosts: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ConfigError("STYLEQUEUE_BROKER_URL", f"{part!r} is not sentinel://host:port")
        hosts.append((parsed.hostname, parsed.port or 26379))
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
        if parsed.password:
            password = unquote(parsed.password)
    return hosts, db, password


class NotReplicated(Exception):
    """Fewer replicas than ``STYLEQUEUE_REDIS_MIN_REPLICAS`` confirmed a write in time (Redis ``WAIT``).

    The write is on the primary but not yet durable: a failover now could lose it. Transient: the
    write is retried (it is idempotent where it is retried) or the caller is told it is not
    acknowledged.
    """

    def __init__(self, wanted: int, got: int, timeout_s: float) -> None:
        self.wanted, self.got, self.timeout_s = wanted, got, timeout_s
        super().__init__(f"{got} of {wanted} Redis replica(s) confirmed the write within {timeout_s:g} s")


def replicated(redis: Any, settings: Any) -> None:
    """Wait until ``STYLEQUEUE_REDIS_MIN_REPLICAS`` replicas have every write made before this call.

    Any connection's writes; nothing happens when no replica is asked for.

    Redis ``WAIT`` counts the writes of its own connection only, and a pool may hand out another
    one than the write used (a retry after a lost reply surely does). So a small write of its own
    (``stylequeue:durable``) goes first on the same connection: replication is one ordered stream,
    so once the replicas have that, they have everything before it.

    Raises:
        NotReplicated: fewer confirmed within ``STYLEQUEUE_REDIS_WAIT_TIMEOUT_S``.
    """
    from producer.broker import keys

    wanted = settings.min_replicas
    if wanted <= 0:
        return
    pipe = redis.pipeline(transaction=False)  # one connection, both commands
    pipe.set(keys.DURABLE, "1", px=60_000)
    pipe.wait(wanted, int(settings.redis_wait_timeout_s * 1000))
    got = int(pipe.execute()[1])
    if got < wanted:
        raise NotReplicated(wanted, got, settings.redis_wait_timeout_s)


def errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis cannot take the command for now: worth waiting out.

    Unreachable, timed out or loading; ``READONLY`` (a replica: during a failover the old primary
    answers so until it is told who leads); ``OOM`` (full under ``noeviction``: a write refused
    whole until memory is freed); :class:`NotReplicated` (a write the replicas have not confirmed:
    tried again, it is confirmed or refused once more). Each but the last refuses the command
    entirely, so trying again is safe where the first try was; the last is safe where the write
    is idempotent (a retried end, a submit of the same job id). redis-py's ``MasterNotFoundError``
    (no Sentinel knows a primary now: mid-failover) is a ``ConnectionError``.
    """
    import redis
    from redis.exceptions import OutOfMemoryError, ReadOnlyError

    return (redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OutOfMemoryError, NotReplicated)
