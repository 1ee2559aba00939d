"""Live job events for the API's Server-Sent Event streams: one reader per process, shared.

:class:`Hub` keeps one thread blocked in ``XREAD BLOCK`` on the stream (one Redis connection
whatever the number of clients) and hands each entry to the streams that want it: those of its
job, and those of its tenant (a job's id's prefix; a batch's ``tenant`` field). A stream first
subscribes, then reads what it must replay with :meth:`~Hub.history` (``XREVRANGE``): an entry is
in the history or is handed to the stream afterwards, and the stream drops what it has sent
already by comparing stream ids, so nothing is missed or sent twice.

Bounds: a stream that falls :data:`BACKLOG` entries behind (a client that does not read) is
closed, and its client resumes with ``Last-Event-ID``; a tenant has at most
``STYLEQUEUE_API_MAX_STREAMS_PER_TENANT`` streams open in a process; replays run in their own
small thread pool (:data:`REPLAYS`), so a crowd of clients reconnecting at once cannot take the
threads every other route needs. The reader does no Redis command but its ``XREAD``; any error
(Redis down, failing over) is retried with a backoff while the streams stay open (they keep
sending comments), from the last entry it read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from producer.api.errors import ApiError
from producer.broker import keys

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Entries a stream may have waiting before it is closed (its client resumes with Last-Event-ID).
BACKLOG = 1000
#: Entries read from Redis per XREAD/XREVRANGE call.
PAGE = 500
#: Entries one replay (:meth:`Hub.history`) looks at, at most.
SCAN_MAX = 10_000
#: Replays (and a stream's renders of its job) running at once in a process: their own threads.
REPLAYS = 8
#: Completed resources kept for the streams that send the same end (:meth:`Hub.once`): at most
#: this many, for this long (s; a resource's presigned URLs stay fresh).
ONCE_MAX = 256
ONCE_TTL_S = 60.0
_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


def valid_stream_id(text: str) -> bool:
    """Whether ``text`` is a stream id Redis accepts (``<ms>-<seq>``, each below 2**64)."""
    m = _STREAM_ID.match(text)
    return m is not None and all(int(part) < 2**64 for part in m.groups())


def position(stream_id: str) -> tuple[int, int]:
    """A stream id (``<ms>-<seq>``) as a sortable pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Entry:
    """One entry of ``stylequeue:events``.

    Attributes:
        stream_id: Its Redis stream id (``<ms>-<seq>``): the SSE ``id:``.
        type: ``job.queued``, ``job.started``, ``job.progress``, ``job.completed`` or ``batch.completed``.
        job_id: The job (the batch for ``batch.completed``).
        data: The event's data.
        tenant: The tenant it belongs to ('' when none: a job not sent through the API).
    """

    stream_id: str
    type: str
    job_id: str
    data: dict[str, Any]
    tenant: str

    @property
    def after(self) -> tuple[int, int]:
        """Its place in the stream, comparable with :func:`position`."""
        return position(self.stream_id)


#: Put on a stream's queue when it must close (its client too slow, or the process stopping).
CLOSE = Entry("0-0", "close", "", {}, "")


@dataclass(eq=False)
class Subscription:
    """What one open stream receives: entries of ``job_id`` (or of every job of ``tenant``)."""

    tenant: str
    job_id: str | None
    queue: asyncio.Queue[Entry] = field(default_factory=lambda: asyncio.Queue(BACKLOG + 1))


def tenant_of(job_id: str) -> str:
    """The tenant of a job submitted through the API (its id's prefix); '' for any other job."""
    head, dot, _ = job_id.partition(".")
    return head if dot else ""


def entry(raw_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """An entry as XREAD/XRANGE return it."""
    job_id = fields.get(b"job_id", b"").decode(errors="replace")
    kind = fields.get(b"type", b"").decode(errors="replace")
    try:
        data = json.loads(fields.get(b"data", b"{}"))
    except ValueError:
        data = {}
    tenant = fields.get(b"tenant", b"").decode(errors="replace") if kind == "batch.completed" else tenant_of(job_id)
    return Entry(raw_id.decode(), kind, job_id, data if isinstance(data, dict) else {}, tenant)


class Hub:
    """The process's one reader of the events stream and its open streams.

    Args:
        redis: A client of the broker's Redis whose socket timeout exceeds ``block_ms``.
        block_ms: How long one ``XREAD`` blocks (ms).
        per_tenant: Streams a tenant may have open in this process.
    """

    def __init__(self, redis: Any, block_ms: int = 5000, per_tenant: int = 1000) -> None:
        self.redis = redis
        self.block_ms = block_ms
        self.per_tenant = per_tenant
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._open: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last = "0-0"
        self._limiter: Any = None
        self._once: dict[str, tuple[float, asyncio.Future[Any]]] = {}
        self._shutting_down = False
        #: Streams open in this process now.
        self.open_streams = 0
        #: Failed reads of the reader so far (it reads again after a backoff).
        self.read_errors = 0

    async def subscribe(self, tenant: str, job_id: str | None = None) -> Subscription:
        """Register a stream (in the event loop); the reader starts with the first one.

        Raises:
            ApiError: 429 over the tenant's streams, 503 while the process shuts down.
            redis.RedisError: the first stream of the process could not read where the stream ends.
        """
        if self._shutting_down:
            raise ApiError(503, "ShuttingDown", "this API process is stopping", headers={"Retry-After": "1"})
        if self._open.get(tenant, 0) >= self.per_tenant:
            message = f"{tenant} has {self.per_tenant} event streams open here"
            raise ApiError(429, "TooManyStreams", message, headers={"Retry-After": "5"})
        loop = asyncio.get_running_loop()
        if self._thread is None or self._loop is not loop:
            # Where the stream ends now: everything up to it is in a stream's history, everything
            # after it is handed over by the reader.
            newest = await asyncio.to_thread(self.redis.xrevrange, keys.EVENTS, "+", "-", 1)
            if self._thread is None or self._loop is not loop:
                self._restart(loop, newest[0][0].decode() if newest else "0-0")
        sub = Subscription(tenant, job_id)
        index, key = (self._by_job, job_id) if job_id is not None else (self._by_tenant, tenant)
        index.setdefault(key, set()).add(sub)
        self._open[tenant] = self._open.get(tenant, 0) + 1
        self.open_streams += 1
        return sub

    def _restart(self, loop: asyncio.AbstractEventLoop, last: str) -> None:
        """A reader for ``loop`` (the first stream, or an app served again on another loop)."""
        import anyio

        self._stop.set()  # the previous reader stops; its loop's streams are gone with it
        self._by_job.clear()
        self._by_tenant.clear()
        self._open.clear()
        self._once.clear()
        self.open_streams = 0
        self._loop, self._stop, self._last = loop, threading.Event(), last
        self._limiter = anyio.CapacityLimiter(REPLAYS)
        self._thread = threading.Thread(target=self._read, args=(loop, self._stop), name="stylequeue-events")
        self._thread.daemon = True
        self._thread.start()

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a stream (its client went away or it ended); a second call does nothing."""
        index, key = (self._by_job, sub.job_id) if sub.job_id is not None else (self._by_tenant, sub.tenant)
        subs = index.get(key)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if not subs:
                del index[key]
            self._open[sub.tenant] -= 1
            if not self._open[sub.tenant]:
                del self._open[sub.tenant]
            self.open_streams -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (blocking Redis reads) in the streams' own threads (:data:`REPLAYS` at once)."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def once(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` through :meth:`run`, once for every stream asking with the same ``key``.

        A job's end reaches all its watchers together (and every stream of its tenant): they
        share one read of the job's resource, keyed by the end's stream id. The last
        :data:`ONCE_MAX`, for :data:`ONCE_TTL_S`, are kept; a failed read is not.
        """
        now = asyncio.get_running_loop().time()
        kept = self._once.get(key)
        if kept is not None and now - kept[0] < ONCE_TTL_S:
            task = kept[1]
        else:
            task = asyncio.ensure_future(self.run(fn, *args))

            def forget_a_failure(t: asyncio.Future[Any]) -> None:
                if not t.cancelled() and t.exception() is not None and self._once.get(key, (0, None))[1] is t:
                    del self._once[key]

            task.add_done_callback(forget_a_failure)
            self._once[key] = (now, task)
            while len(self._once) > ONCE_MAX:
                del self._once[next(iter(self._once))]
        return await asyncio.shield(task)

    def history(self, after: str, job_id: str | None, tenant: str) -> list[Entry]:
        """Entries after ``after`` (exclusive) of ``job_id``, or of every job of ``tenant``, oldest first.

        Blocking: call it through :meth:`run`. Read newest first, at most :data:`SCAN_MAX`
        entries: a replay costs Redis a bounded amount of work, and where it is cut short it is
        the oldest entries that are left out.
        """
        found: list[Entry] = []
        end, scanned = "+", 0
        while scanned < SCAN_MAX:
            page = self.redis.xrevrange(keys.EVENTS, end, f"({after}", PAGE)
            for raw_id, fields in page:
                e = entry(raw_id, fields)
                if (e.job_id == job_id) if job_id is not None else (e.tenant == tenant):
                    found.append(e)
            scanned += len(page)
            if len(page) < PAGE:
                break
            end = f"({page[-1][0].decode()}"
        return found[::-1]

    def close(self) -> None:
        """Stop the reader and close every open stream (the next stream starts a reader again)."""
        self._stop.set()
        self._thread = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close_all)

    def shut_down(self) -> None:
        """:meth:`close`, and refuse new streams: the process is stopping (safe in a signal handler)."""
        self._shutting_down = True
        self.close()

    def _close_all(self) -> None:
        for index in (self._by_job, self._by_tenant):
            for subs in index.values():
                for sub in subs:
                    _offer(sub, CLOSE)

    def _read(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """The reader thread: XREAD BLOCK from the last entry read, each page handed to the loop."""
        backoff = 0.0
        while not stop.is_set():
            try:
                answer = self.redis.xread({keys.EVENTS: self._last}, count=PAGE, block=self.block_ms)
                if stop.is_set():
                    return
                for _, page in answer or ():
                    entries = [entry(raw_id, fields) for raw_id, fields in page]
                    if entries:
                        self._last = entries[-1].stream_id
                        loop.call_soon_threadsafe(self._hand_out, entries)
                backoff = 0.0
            except Exception as e:  # Redis down or failing over, or anything else: the streams stay open
                if loop.is_closed():
                    return  # the process is stopping
                self.read_errors += 1
                backoff = min(5.0, backoff * 2 or 0.2)
                log.warning("events stream: %s; reading again in %.1f s", e, backoff)
                stop.wait(backoff)

    def _hand_out(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            for sub in (*self._by_job.get(e.job_id, ()), *self._by_tenant.get(e.tenant, ())):
                _offer(sub, e)


def _offer(sub: Subscription, e: Entry) -> None:
    """Queue ``e`` for ``sub``; a stream :data:`BACKLOG` behind gets :data:`CLOSE` instead."""
    if sub.queue.qsize() >= BACKLOG:
        if sub.queue.qsize() == BACKLOG:
            sub.queue.put_nowait(CLOSE)
        return
    sub.queue.put_nowait(e)
