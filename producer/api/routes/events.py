"""``/v1/jobs/{id}/events`` and ``/v1/events``: a job's, or a tenant's, events as Server-Sent Events.

They are read from ``stylequeue:events`` by the process's one reader (:mod:`producer.api.live`).

Each event is ``id:`` (its stream id), ``event:`` (``queued``, ``started``, ``progress``,
``completed``; ``batch.completed`` on the tenant's stream) and one line of JSON ``data:`` with the
job's ``id``: a progress event's data is the progress (``iteration``, ``total``, ``loss``,
``level``, ``levels``, ``elapsed_s``, ...), a ``completed`` event's is the job resource (as
``GET /v1/jobs/{id}`` returns it). A job's stream replays the job's events so far (or those after
``Last-Event-ID``), then follows it live, and closes after ``completed``; a job ended already
answers with its ``completed`` at once, and a ``Last-Event-ID`` after it with ``204 No Content``
(which tells an ``EventSource`` to stop reconnecting). A comment line every
``STYLEQUEUE_API_STREAM_KEEPALIVE_S`` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from producer.api.deps import Services, ServicesDep, TenantDep
from producer.api.errors import ApiError
from producer.api.live import CLOSE, STREAM_ID, Entry, position
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


def frame(entry: Entry, data: dict[str, Any] | None = None) -> str:
    """One SSE event for ``entry`` (its data replaced by ``data`` when given)."""
    name = entry.type.removeprefix("job.")
    body = data if data is not None else {"id": entry.job_id, **_payload(entry)}
    return f"id: {entry.stream_id}\nevent: {name}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


def _payload(entry: Entry) -> dict[str, Any]:
    progress = entry.data.get("progress")
    if entry.type == "job.progress" and isinstance(progress, dict):
        return {k: v for k, v in progress.items() if k != "job_id"}
    return entry.data


def _after(last_event_id: str | None) -> str | None:
    if last_event_id is None:
        return None
    if not STREAM_ID.match(last_event_id):
        raise ApiError(400, "InvalidLastEventId", f"Last-Event-ID {last_event_id[:40]!r} is not an event's id")
    return last_event_id


def _stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)


async def _follow(s: Services, sub: Any, sent: tuple[int, int], job_id: str | None) -> AsyncIterator[str]:
    """Live entries after ``sent`` until ``completed`` (of ``job_id``), a close, or the client leaves."""
    keepalive = s.settings.api_stream_keepalive_s
    while True:
        try:
            entry = await asyncio.wait_for(sub.queue.get(), keepalive)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if entry is CLOSE:
            return
        if entry.after <= sent:
            continue  # sent already, from the replay
        sent = entry.after
        if entry.type == "job.completed":
            yield frame(entry, await run_in_threadpool(s.views.job, entry.job_id))
            if job_id is not None:
                return
        else:
            yield frame(entry)


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="A job's events as Server-Sent Events, until it completes",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "ended before Last-Event-ID"}},
)
async def job_events(
    job_id: str,
    s: ServicesDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Replay the job's events (after ``Last-Event-ID``), follow it live, close after ``completed``."""
    after = _after(last_event_id)
    await run_in_threadpool(owned, s, tenant, job_id)
    if after is not None:
        ended = await run_in_threadpool(s.views.job, job_id)
        if ended["state"] in FINAL_STATES:
            replay = await run_in_threadpool(s.hub.history, after, job_id, tenant.tenant)
            if not any(e.type == "job.completed" for e in replay):
                return Response(status_code=204)
    return _stream(_job_stream(s, tenant, job_id, after))


async def _job_stream(s: Services, tenant: Tenant, job_id: str, after: str | None) -> AsyncIterator[str]:
    sub = await s.hub.subscribe(tenant.tenant, job_id)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        ended_before = after is None and (await run_in_threadpool(s.views.job, job_id))["state"] in FINAL_STATES
        if after is None:
            created = await run_in_threadpool(s.redis.hget, keys.JOB.format(job_id), "created_at")
            after = f"{max(0, int((float(created or 0) - CLOCK_SLACK_S) * 1000))}-0"
        sent = position(after)
        replay = await run_in_threadpool(s.hub.history, after, job_id, tenant.tenant)
        for entry in replay:
            sent = entry.after
            if entry.type == "job.completed":
                yield frame(entry, await run_in_threadpool(s.views.job, job_id))
                return
            if not ended_before:  # an ended job answers with its completed event only
                yield frame(entry)
        resource = await run_in_threadpool(s.views.job, job_id)
        if resource["state"] in FINAL_STATES:  # its completed event is no longer in the stream
            yield frame(Entry(f"{sent[0]}-{sent[1] + 1}", "job.completed", job_id, {}, ""), resource)
            return
        async for chunk in _follow(s, sub, sent, job_id):
            yield chunk
    finally:
        s.hub.unsubscribe(sub)


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
    return _stream(_tenant_stream(s, tenant, _after(last_event_id)))


async def _tenant_stream(s: Services, tenant: Tenant, after: str | None) -> AsyncIterator[str]:
    sub = await s.hub.subscribe(tenant.tenant)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        sent = (0, 0)
        if after is not None:
            sent = position(after)
            for entry in await run_in_threadpool(s.hub.history, after, None, tenant.tenant):
                sent = entry.after
                data = await run_in_threadpool(s.views.job, entry.job_id) if entry.type == "job.completed" else None
                yield frame(entry, data)
        async for chunk in _follow(s, sub, sent, None):
            yield chunk
    finally:
        s.hub.unsubscribe(sub)
