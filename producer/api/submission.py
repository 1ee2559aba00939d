"""Taking jobs in: validation, the in-flight cap, the records, the answer.

One job of a request is validated without touching Redis; the tenant's in-flight cap is checked;
the jobs' records are written in the transaction that queues them; the answer is the job.

Job ids are ``<tenant>.<id>``: the ``job_id`` a client gives (or a fresh one) behind its tenant's
name, so tenants never collide and a tenant never reaches another's job.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse

from producer.api.deps import Services
from producer.api.errors import ApiError
from producer.broker import keys, scripts
from producer.broker.events import WEBHOOK_EVENTS
from producer.broker.queues import DEFAULT_PRIORITY
from producer.broker.wire import Envelope
from producer.core import access
from producer.core.access import admits
from producer.core.contract import Job, check_job_id
from producer.core.errors import InvalidJob
from producer.core.schema import job_schema
from producer.core.states import PENDING
from producer.tenants import Tenant
from producer.webhooks import check_url

#: Fields the API reads besides the job contract's.
API_FIELDS = ("webhook", "webhook_events", "priority")
#: How long a request's claim on its job id lasts while it queues the job (s). The job's record
#: (written with the job, kept ``STYLEQUEUE_RESULT_EXPIRES_S``) answers retries after that; the
#: claim only keeps two concurrent requests apart, and one left by a crashed replica ends soon.
CLAIM_TTL_S = 60
# Write the same fields into many job records, each with its TTL: one command for a whole batch.
_RECORDS = scripts.load("producer.broker", "api_records")


def job_body_schema() -> dict[str, Any]:
    """The JSON Schema of a job in a request: the contract's, plus :data:`API_FIELDS`."""
    schema = job_schema()
    schema["properties"] = {
        **schema["properties"],
        "webhook": {"type": "string", "format": "uri", "description": "https URL called on the job's events"},
        "webhook_events": {"type": "array", "items": {"enum": list(WEBHOOK_EVENTS)}, "default": ["completed"]},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9, "default": DEFAULT_PRIORITY},
    }
    return schema


def prepare(
    s: Services,
    tenant: Tenant,
    body: Any,
    where: str,
    job_id: str | None = None,
    urls: dict[str, None] | None = None,
) -> tuple[Envelope, dict[str, Any]]:
    """Validate one job of a request (the contract, the tenant's rights, the webhook); its message.

    Touches no Redis: a request that fails here changed nothing.

    Args:
        s: The process's services.
        tenant: The caller.
        body: The job's JSON (the contract's fields plus :data:`API_FIELDS`).
        where: Its place in the request (``jobs[3]``; empty for a single job), before field names.
        job_id: The id to use (an idempotency key's); default the client's ``job_id`` or a fresh one.
        urls: Webhook URLs already checked in this request (a batch checks each once).

    Raises:
        InvalidJob: naming the field (422).
        ApiError: 403 outside the tenant's buckets or priority.
    """
    prefix = f"{where}." if where else ""
    if not isinstance(body, dict):
        raise InvalidJob(where or "body", "must be a JSON object (a job)")
    fields = {k: v for k, v in body.items() if k not in API_FIELDS}
    client_id = fields.pop("job_id", None)
    if client_id is not None:
        check_job_id(client_id, prefix + "job_id")
    job_id = job_id or f"{tenant.tenant}.{client_id or uuid.uuid4().hex}"
    try:
        job = Job.from_message({**fields, "job_id": job_id})
        job.check_limits(s.settings.max_size_px, s.settings.max_iterations, s.settings.max_pixels)
    except InvalidJob as e:
        raise InvalidJob(prefix + e.field, e.message) from None
    for field, ref in job.inputs():
        if not admits(tenant.input, ref):
            raise ApiError(
                403, "BucketNotAllowed", f"{ref.uri} is outside the inputs of {tenant.tenant}", prefix + field
            )
    if not admits(tenant.output, job.output):
        raise ApiError(
            403,
            "BucketNotAllowed",
            f"{job.output.uri} is outside the outputs of {tenant.tenant}",
            prefix + "output",
        )
    access.check_job(s.settings, job, job_id)  # the deployment's own allowlists and the weights
    priority = body.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise InvalidJob(prefix + "priority", f"{priority!r} is not an integer from 0 (most urgent) to 9")
    if priority < tenant.max_priority:
        raise ApiError(
            403,
            "PriorityNotAllowed",
            f"priority {priority} is more urgent than {tenant.tenant} may use ({tenant.max_priority} to 9)",
            prefix + "priority",
        )
    extra: dict[str, Any] = {"priority": priority}
    events = body.get("webhook_events")
    if body.get("webhook") is not None:
        url = body["webhook"]
        if urls is None or url not in urls:  # a batch checks each URL once
            check_url(url, s.settings, prefix + "webhook")
            if urls is not None:
                urls[url] = None
        events = ["completed"] if events is None else events
        if not isinstance(events, list) or not events or any(e not in WEBHOOK_EVENTS for e in events):
            raise InvalidJob(prefix + "webhook_events", f"must be a list of {', '.join(WEBHOOK_EVENTS)}")
        extra.update(webhook=url, webhook_events=",".join(dict.fromkeys(events)))
    elif events is not None:
        raise InvalidJob(prefix + "webhook_events", "needs a webhook")
    try:
        return s.client.envelope(job, priority, round(time.time(), 3)), extra
    except InvalidJob as e:  # over the message size limit
        raise InvalidJob(prefix + e.field, e.message) from None


def check_in_flight(s: Services, tenant: Tenant, adding: int) -> None:
    """Refuse (429) what would take the tenant over its in-flight cap; expired entries go first."""
    key = keys.TENANT_INFLIGHT.format(tenant.tenant)
    pipe = s.redis.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", time.time() - s.settings.result_expires_s)  # outlived their records
    pipe.zcard(key)
    in_flight = pipe.execute()[1]
    if in_flight + adding > tenant.max_in_flight:
        raise ApiError(
            429,
            "TooManyInFlight",
            f"{tenant.tenant} has {in_flight} jobs in flight; at most {tenant.max_in_flight}",
            headers={"Retry-After": "30"},
        )


def recorder(s: Services, tenant: Tenant, extras: dict[str, dict[str, Any]], batch: str | None) -> Any:
    """Commands that write the jobs' records in the transaction that queues them."""

    def add(pipe: Any, envelopes: list[Any]) -> None:
        now = time.time()
        ttl = s.settings.result_expires_s
        shared = {
            "tenant": tenant.tenant,
            "created_at": now,
            "state": PENDING,
            **({"batch": batch} if batch else {}),
        }
        groups: dict[tuple[tuple[str, Any], ...], list[str]] = {}  # jobs with the same record fields
        for e in envelopes:
            own = tuple((k, v) for k, v in extras[e.job_id].items() if k != "priority")
            groups.setdefault(own, []).append(keys.JOB.format(e.job_id))
        for own, names in groups.items():
            pairs = [x for kv in {**shared, **dict(own)}.items() for x in kv]
            _RECORDS(pipe, len(names), *names, ttl, *pairs)
        scores = {e.job_id: now for e in envelopes}
        indexes = [keys.TENANT_JOBS.format(tenant.tenant), keys.TENANT_INFLIGHT.format(tenant.tenant)]
        for key in indexes + ([keys.BATCH_JOBS.format(batch)] if batch else []):
            pipe.zadd(key, scores)
            pipe.expire(key, ttl)
        pipe.zremrangebyrank(keys.TENANT_JOBS.format(tenant.tenant), 0, -s.settings.jobs_index_max - 1)

    return add


def created(s: Services, job_id: str, replayed: bool = False) -> JSONResponse:
    """The job's resource: 202 with its Location, or 200 for a replayed request."""
    headers = {"Location": f"/v1/jobs/{job_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(s.views.job(job_id), status_code=200 if replayed else 202, headers=headers)
