"""``/v1/jobs/{id}/events`` and ``/v1/events``: a job's, or a tenant's, events as Server-Sent Events.

They are read from ``stylequeue:events`` by the process's one reader (:mod:`producer.api.live`).
Each event is ``id:`` (its stream id), ``event:`` (``queued``, ``started``, ``progress``,
``completed``; ``batch.completed`` on the tenant's stream) and one line of JSON ``data:`` with the
job's ``id``: a progress event's data is the progress (``iteration``, ``total``, ``loss``,
``level``, ``levels``, ``elapsed_s``, ...), a ``completed`` event's is the job resource (as
``GET /v1/jobs/{id}`` returns it). A job's stream replays the job's events so far (or those after
``Last-Event-ID``), then follows it live, and closes after ``completed``; a job ended already
answers with its ``completed`` at once, and a ``Last-Event-ID`` at or after it with ``204 No
Content`` (nothing follows). A comment line every ``STYLEQUEUE_API_STREAM_KEEPALIVE_S`` keeps
proxies from closing an idle stream.

Everything that can fail for want of Redis (the subscription, the replay, the job's state) is
done before the response starts, so it fails as any request does (503); a Redis error later ends
the stream, and its client resumes with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse

from producer import broker
from producer.api.deps import Services, ServicesDep, TenantDep
from producer.api.errors import ApiError
from producer.api.live import CLOSE, Entry, Subscription, position, valid_stream_id
from producer.api.routes.jobs import owned
from producer.broker import keys
from producer.core.states import FINAL_STATES
from producer.tenants import Tenant

router = APIRouter()

#: The response's headers: no caching, and no buffering by nginx-like proxies.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: How long a client waits before reconnecting, as the stream's first line tells it (ms).
RETRY_MS = 3000
#: A job's replay starts this long before its record's creation time (s): the stream's ids come
#: from Redis's clock, the record's time from the API process's.
CLOCK_SLACK_S = 60.0
_STARTS = ("job.queued", "job.started")


class EventStream(StreamingResponse):
    """``text/event-stream`` that releases its subscription however the response ends.

    Even when the client left before the first byte (so the body was never iterated).
    """

    def __init__(self, events: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=HEADERS)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Send the stream; release the subscription at its end, whatever ended it."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def frame(e: Entry, data: dict[str, Any] | None = None) -> str:
    """One SSE event for ``e`` (its data replaced by ``data`` when given)."""
    name = e.type.removeprefix("job.")
    body = data if data is not None else {"id": e.job_id, **_payload(e)}
    return f"id: {e.stream_id}\nevent: {name}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


def _payload(e: Entry) -> dict[str, Any]:
    progress = e.data.get("progress")
    if e.type == "job.progress" and isinstance(progress, dict):
        return {k: v for k, v in progress.items() if k != "job_id"}
    return e.data


def _after(last_event_id: str | None) -> str | None:
    if last_event_id is None:
        return None
    if not valid_stream_id(last_event_id):
        raise ApiError(400, "InvalidLastEventId", f"Last-Event-ID {last_event_id[:40]!r} is not an event's id")
    return last_event_id


async def _render(s: Services, e: Entry) -> str:
    """The frame of ``e``; a ``completed`` carries the job resource (else the stream's data).

    The resource is read once for all the streams that send the same end (``Hub.once``).
    """
    if e.type != "job.completed":
        return frame(e)
    try:
        return frame(e, await s.hub.once(e.stream_id, s.views.job, e.job_id))
    except broker.errors():
        return frame(e)


async def _follow(s: Services, sub: Subscription, sent: tuple[int, int], one_job: bool) -> AsyncIterator[str]:
    """Live entries after ``sent`` until ``completed`` (of one job), a close, or the client leaves."""
    keepalive = s.settings.api_stream_keepalive_s
    while True:
        try:
            e = await asyncio.wait_for(sub.queue.get(), keepalive)
        except asyncio.TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if e is CLOSE:
            return
        if e.after <= sent:
            continue  # sent already, from the replay
        sent = e.after
        yield await _render(s, e)
        if one_job and e.type == "job.completed":
            return


@dataclass(frozen=True)
class Opening:
    """What a job's stream starts with: the replay to send, and whether the stream ends after it."""

    replay: list[Entry]
    ends: bool
    sent: tuple[int, int]
    no_content: bool = False


def opening(s: Services, tenant: Tenant, job_id: str, after: str | None) -> Opening:
    """A job's stream's start (blocking: run through ``s.hub.run``).

    The replay is read before the job's state: a ``completed`` in it is the end if the job is
    ended now and nothing started it again after (a dead letter sent again reopens a job: its old
    ``completed`` is skipped). An ended job without ``Last-Event-ID`` gets its ``completed`` only;
    one whose ``completed`` the stream no longer has gets the resource under the id the end
    recorded (``completed_event``); a ``Last-Event-ID`` at or after that id gets 204.
    """
    record = {k.decode(): v.decode() for k, v in s.redis.hgetall(keys.JOB.format(job_id)).items()}
    start = after or f"{max(0, int((float(record.get('created_at') or 0) - CLOCK_SLACK_S) * 1000))}-0"
    replay = s.hub.history(start, job_id, tenant.tenant)
    final = s.views.job(job_id)["state"] in FINAL_STATES
    last = max((i for i, e in enumerate(replay) if e.type == "job.completed"), default=None)
    if last is not None and (not final or any(e.type in _STARTS for e in replay[last + 1 :])):
        last = None  # an end taken back: the job runs again
    kept = [e for i, e in enumerate(replay) if e.type != "job.completed" or i == last]
    sent = kept[-1].after if kept else position(start)
    if last is not None:
        return Opening(kept[-1:] if after is None else kept, True, sent)
    if not final:
        return Opening(kept, False, sent)
    completed_id = record.get("completed_event") or f"{sent[0]}-{sent[1] + 1}"
    if after is not None and position(after) >= position(completed_id):
        return Opening([], True, sent, no_content=True)
    return Opening([Entry(completed_id, "job.completed", job_id, {}, tenant.tenant)], True, position(completed_id))


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="A job's events as Server-Sent Events, until it completes",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        204: {"description": "the job ended at or before Last-Event-ID: nothing follows"},
    },
)
async def job_events(
    job_id: str,
    s: ServicesDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Replay the job's events (after ``Last-Event-ID``), follow it live, close after ``completed``."""
    after = _after(last_event_id)
    await s.hub.run(owned, s, tenant, job_id)
    sub = await s.hub.subscribe(tenant.tenant, job_id)
    try:
        start = await s.hub.run(opening, s, tenant, job_id, after)
    except BaseException:
        s.hub.unsubscribe(sub)
        raise
    if start.no_content:
        s.hub.unsubscribe(sub)
        return Response(status_code=204)
    return EventStream(_job_stream(s, sub, start), lambda: s.hub.unsubscribe(sub))


async def _job_stream(s: Services, sub: Subscription, start: Opening) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        for e in start.replay:
            yield await _render(s, e)
        if not start.ends:
            async for chunk in _follow(s, sub, start.sent, one_job=True):
                yield chunk
    except broker.errors():
        return  # the client resumes with Last-Event-ID


@router.get(
    "/v1/events",
    summary="Every job of the tenant's events as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def tenant_events(
    s: ServicesDep, tenant: TenantDep, last_event_id: Annotated[str | None, Header()] = None
) -> Response:
    """Every event of the tenant's jobs and batches from now on (or after ``Last-Event-ID``)."""
    after = _after(last_event_id)
    sub = await s.hub.subscribe(tenant.tenant)
    try:
        replay = [] if after is None else await s.hub.run(s.hub.history, after, None, tenant.tenant)
    except BaseException:
        s.hub.unsubscribe(sub)
        raise
    sent = replay[-1].after if replay else position(after) if after else (0, 0)
    return EventStream(_tenant_stream(s, sub, replay, sent), lambda: s.hub.unsubscribe(sub))


async def _tenant_stream(
    s: Services, sub: Subscription, replay: list[Entry], sent: tuple[int, int]
) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        for e in replay:
            yield await _render(s, e)
        async for chunk in _follow(s, sub, sent, one_job=False):
            yield chunk
    except broker.errors():
        return
