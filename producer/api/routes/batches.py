"""``/v1/batches``: up to ``STYLEQUEUE_BATCH_MAX_JOBS`` jobs in one request, and their counts."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from producer.api.deps import JsonBody, ServicesDep, TenantDep
from producer.api.errors import ApiError
from producer.api.submission import check_in_flight, job_body_schema, prepare, recorder
from producer.broker import keys
from producer.core.errors import InvalidJob
from producer.core.settings import Settings
from producer.webhooks import check_url


def router(settings: Settings) -> APIRouter:
    """The batch routes; their OpenAPI document states this deployment's batch size limit."""
    routes = APIRouter()
    schema = {
        "type": "object",
        "properties": {
            "jobs": {"type": "array", "items": job_body_schema(), "minItems": 1, "maxItems": settings.batch_max_jobs},
            "webhook": {"type": "string", "format": "uri", "description": "called once every job has ended"},
        },
        "required": ["jobs"],
        "additionalProperties": False,
    }
    routes.add_api_route(
        "/v1/batches",
        submit_batch,
        methods=["POST"],
        status_code=202,
        summary=f"Submit up to {settings.batch_max_jobs:,} jobs at once",
        description="All or nothing on validation: one bad job refuses the batch, naming it (`jobs[3].output`).",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
    )
    routes.add_api_route(
        "/v1/batches/{batch_id}", get_batch, methods=["GET"], summary="A batch: its jobs counted by state"
    )
    return routes


def _check_shape(body: Any, max_jobs: int) -> None:
    if not isinstance(body, dict):
        raise InvalidJob("body", 'must be a JSON object: {"jobs": [...]}')
    unknown = sorted(set(body) - {"jobs", "webhook"})
    if unknown:
        raise InvalidJob(unknown[0], "unknown field (known: jobs, webhook)")
    if not isinstance(body.get("jobs"), list) or not body["jobs"]:
        raise InvalidJob("jobs", "must be a non-empty list of jobs")
    if len(body["jobs"]) > max_jobs:
        raise InvalidJob("jobs", f"{len(body['jobs'])} jobs is over the limit of {max_jobs} per batch")


def submit_batch(body: JsonBody, s: ServicesDep, tenant: TenantDep) -> Any:
    """Validate every job (all or nothing), then queue them: one pipelined transaction per 1000."""
    settings = s.settings
    _check_shape(body, settings.batch_max_jobs)
    count = len(body["jobs"])
    if body.get("webhook") is not None:
        check_url(body["webhook"], settings, "webhook")
    urls: dict[str, None] = {}
    prepared = [prepare(s, tenant, item, f"jobs[{i}]", urls=urls) for i, item in enumerate(body["jobs"])]
    ids = [envelope.job_id for envelope, _ in prepared]
    seen: dict[str, int] = {}
    for i, job_id in enumerate(ids):
        if job_id in seen:
            raise InvalidJob(f"jobs[{i}].job_id", f"{job_id!r} is also jobs[{seen[job_id]}]'s")
        seen[job_id] = i
    names = [keys.JOB.format(job_id) for job_id in ids]
    if s.redis.exists(*names):  # one command for the batch; which one only when one is taken
        pipe = s.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(name)
        taken = [i for i, exists in enumerate(pipe.execute()) if exists]
        raise ApiError(409, "JobExists", f"job {ids[taken[0]]!r} exists already", f"jobs[{taken[0]}].job_id")
    check_in_flight(s, tenant, count)
    batch = "b_" + uuid.uuid4().hex
    info: dict[str, Any] = {"tenant": tenant.tenant, "total": count, "created_at": time.time(), "ended": 0}
    if body.get("webhook"):
        info["webhook"] = body["webhook"]
    pipe = s.redis.pipeline(transaction=True)
    pipe.hset(keys.BATCH.format(batch), mapping=info)
    pipe.expire(keys.BATCH.format(batch), settings.result_expires_s)
    pipe.execute()
    extras = {envelope.job_id: extra for envelope, extra in prepared}
    # Every message was built (and its size checked) above: a PartialSubmit from here says
    # exactly which jobs of the batch were queued.
    s.client.push_many([envelope for envelope, _ in prepared], on_batch=recorder(s, tenant, extras, batch))
    s.metrics.submitted.labels(tenant.tenant).inc(count)
    return JSONResponse(
        {"id": batch, "total": count, "jobs": ids}, status_code=202, headers={"Location": f"/v1/batches/{batch}"}
    )


def get_batch(batch_id: str, s: ServicesDep, tenant: TenantDep) -> Any:
    """The batch's jobs counted by state (its webhook is called once all have ended)."""
    info = {k.decode(): v.decode() for k, v in s.redis.hgetall(keys.BATCH.format(batch_id)).items()}
    if info.get("tenant") != tenant.tenant:
        raise ApiError(404, "BatchNotFound", f"no batch {batch_id!r}")
    return s.views.batch(batch_id, info)
