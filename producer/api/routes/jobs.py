"""``/v1/jobs``: submit one job, read it, cancel it, list the tenant's jobs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header

from producer.api.deps import JsonBody, Services, ServicesDep, TenantDep
from producer.api.errors import ApiError
from producer.api.submission import CLAIM_TTL_S, check_in_flight, created, job_body_schema, prepare, recorder
from producer.broker import keys
from producer.core.errors import InvalidJob, PartialSubmit
from producer.tenants import Tenant

router = APIRouter()


def owned(s: Services, tenant: Tenant, job_id: str) -> None:
    """Raise 404 unless ``job_id`` is a job of ``tenant``'s."""
    if not job_id.startswith(tenant.tenant + ".") or not s.redis.exists(keys.JOB.format(job_id)):
        raise ApiError(404, "JobNotFound", f"no job {job_id!r}")


@router.post(
    "/v1/jobs",
    status_code=202,
    summary="Submit a job",
    description="202 with the job and its Location. With an `Idempotency-Key` header or a `job_id`, "
    "a retried request returns the same job (200, `Idempotent-Replayed: true`).",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": job_body_schema()}}}},
)
def submit(
    body: JsonBody, s: ServicesDep, tenant: TenantDep, idempotency_key: Annotated[str | None, Header()] = None
) -> Any:
    """Queue one job; a retried request (same key or ``job_id``) gets the same job back."""
    idem = idempotency_key
    if idem is not None and not 1 <= len(idem) <= 255:
        raise InvalidJob("Idempotency-Key", "must be 1 to 255 characters")
    job_id = f"{tenant.tenant}.idem-{uuid.uuid5(uuid.NAMESPACE_URL, idem).hex}" if idem else None
    envelope, extra = prepare(s, tenant, body, "", job_id)
    job_id = envelope.job_id
    if s.redis.exists(keys.JOB.format(job_id)):  # its record outlives any claim: never queued twice
        return created(s, job_id, replayed=True)
    claim = keys.IDEMPOTENCY.format(tenant.tenant, job_id)
    if not s.redis.set(claim, "1", nx=True, ex=CLAIM_TTL_S):
        if s.redis.exists(keys.JOB.format(job_id)):
            return created(s, job_id, replayed=True)
        raise ApiError(
            409,
            "InProgress",
            f"a request for job {job_id!r} is in progress; retry",
            "job_id",
            headers={"Retry-After": "5"},
        )
    try:
        check_in_flight(s, tenant, 1)
        s.client.push_many([envelope], on_batch=recorder(s, tenant, {job_id: extra}, None))
    except PartialSubmit as e:
        if not e.unknown:
            s.redis.delete(claim)  # not sent: the same request may be tried again
        raise
    except Exception:
        s.redis.delete(claim)
        raise
    s.metrics.submitted.labels(tenant.tenant).inc()
    s.announcer.queued(job_id)
    return created(s, job_id)


@router.get("/v1/jobs/{job_id}", summary="A job: state, progress, result or error, and its output's URL")
def get_job(job_id: str, s: ServicesDep, tenant: TenantDep) -> Any:
    """The job's resource."""
    owned(s, tenant, job_id)
    return s.views.job(job_id)


@router.post("/v1/jobs/{job_id}/cancel", summary="Cancel a job; returns its state after the request")
def cancel(job_id: str, s: ServicesDep, tenant: TenantDep) -> Any:
    """Cancel the job (a queued one ends at once); its resource after the request."""
    owned(s, tenant, job_id)
    s.client.job(job_id).cancel()
    return s.views.job(job_id)


@router.get("/v1/jobs", summary="Recent jobs, newest first, a page at a time")
def list_jobs(
    s: ServicesDep,
    tenant: TenantDep,
    state: str | None = None,
    batch: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Any:
    """A page of the tenant's (or one batch's) jobs, newest first, optionally in one state."""
    if not 1 <= limit <= 1000:
        raise InvalidJob("limit", f"{limit} is not from 1 to 1000")
    if batch is not None:
        owner = s.redis.hget(keys.BATCH.format(batch), "tenant")
        if owner is None or owner.decode() != tenant.tenant:
            raise ApiError(404, "BatchNotFound", f"no batch {batch!r}")
        index = keys.BATCH_JOBS.format(batch)
    else:
        index = keys.TENANT_JOBS.format(tenant.tenant)
    return s.views.page(index, state, limit, cursor)
