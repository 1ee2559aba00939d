"""The HTTP API: submit, poll or be called back, cancel, fetch the output. No TensorFlow.

A stateless ASGI app (FastAPI) over the same queue, contract and workers as the Python client:
every replica reads and writes Redis only, so any number of them can stand behind a load
balancer. ``stylequeue api`` serves it with uvicorn; ``/docs`` browses its OpenAPI document
(``/openapi.json``), whose request schemas are the contract's own JSON Schema
(:mod:`producer.schema`), not a second copy.

Errors are JSON ``{"error": {"type", "message", "field"}}``: 400 malformed JSON, 401 no or unknown
key, 403 outside the tenant's buckets or priority, 404 unknown job or batch (or another
tenant's), 409 a ``job_id`` taken by another job, or a request with the same ``Idempotency-Key``
still in progress, 413 body too large, 422 a job that breaks the contract (naming the field, the
same messages as the client's), 429 over the tenant's rate or in-flight cap (with
``Retry-After``), 503 Redis unreachable (with ``Retry-After``; a batch that was partly queued
says which jobs were sent).

Job ids are ``<tenant>.<id>``: the ``job_id`` a client gives (or a fresh one) behind its tenant's
name, so tenants never collide and a tenant never reaches another's job.

Routes are plain functions: FastAPI runs them in its thread pool, so the blocking Redis client
never stalls the event loop.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from producer import access, broker, keys
from producer.access import admits
from producer.api import resources
from producer.api.metrics import ApiMetrics
from producer.api.tenants import Tenant, Tenants, take_token
from producer.client import Client
from producer.contract import Job, check_job_id
from producer.errors import BrokerUnavailable, BucketNotAllowed, InvalidJob, PartialSubmit
from producer.events import WEBHOOK_EVENTS, Announcer
from producer.queues import DEFAULT_PRIORITY
from producer.schema import job_schema
from producer.settings import Settings
from producer.webhooks import check_url
from producer.wire import Envelope

log = logging.getLogger(__name__)

#: Fields the API reads besides the job contract's.
API_FIELDS = ("webhook", "webhook_events", "priority")
# Write the same fields into many job records, each with its TTL: one command for a whole batch.
# KEYS: the records. ARGV: TTL (s), then field, value, field, value, ...
_RECORDS = """
for _, key in ipairs(KEYS) do
  redis.call('hset', key, unpack(ARGV, 2))
  redis.call('expire', key, ARGV[1])
end
return #KEYS
"""
#: How long an Idempotency-Key is remembered (s).
IDEMPOTENCY_TTL_S = 24 * 3600


class ApiError(Exception):
    """An HTTP error with a JSON body."""

    def __init__(
        self, status: int, type_: str, message: str, field: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type_, message, field
        self.headers = headers or {}


def _job_body_schema() -> dict[str, Any]:
    schema = job_schema()
    schema["properties"] = {
        **schema["properties"],
        "webhook": {"type": "string", "format": "uri", "description": "https URL called on the job's events"},
        "webhook_events": {"type": "array", "items": {"enum": list(WEBHOOK_EVENTS)}, "default": ["completed"]},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9, "default": DEFAULT_PRIORITY},
    }
    return schema


async def json_body(request: Request) -> Any:
    """The request's JSON body, at most ``STYLEQUEUE_API_MAX_BODY_BYTES`` (read before the route runs)."""
    settings = request.app.state.settings
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.api_max_body_bytes:
        raise ApiError(413, "TooLarge", f"a body of {declared} bytes is over {settings.api_max_body_bytes}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > settings.api_max_body_bytes:
            raise ApiError(413, "TooLarge", f"the body is over {settings.api_max_body_bytes} bytes")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, "MalformedJSON", f"the body is not JSON: {e}") from None


#: A route's JSON body (a dependency: read in the event loop, before the route runs in a thread).
JsonBody = Annotated[Any, Depends(json_body)]


class _Measure:
    """ASGI middleware: every request counted by route template, method and status, and timed."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(route, scope["method"], status[0], time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app for ``settings`` (from the environment when ``None``).

    Raises:
        InvalidJob: the keys document (``STYLEQUEUE_API_KEYS_FILE``/``STYLEQUEUE_API_KEYS``) is wrong.
    """
    settings = settings or Settings.from_env()
    tenants = Tenants.load(settings)
    client = Client(settings, publish_retry_s=2.0)  # a caller retries on 503 better than we wait
    redis = client.redis
    announcer = Announcer(redis, settings)
    views = resources.Views(settings, redis, broker.connect(settings.backend_url, timeout_s=2.0))
    metrics = ApiMetrics(redis)
    app = FastAPI(
        title="stylequeue",
        version="1",
        description="Neural style transfer as a service: jobs on a queue of GPU workers. "
        "Authenticate with `Authorization: Bearer <key>`.",
    )
    app.add_middleware(_Measure, metrics=metrics)
    app.state.settings = settings

    def error(e: ApiError) -> JSONResponse:
        body = {"error": {"type": e.type, "message": e.message, **({"field": e.field} if e.field else {})}}
        return JSONResponse(body, status_code=e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error(e)

    @app.exception_handler(InvalidJob)
    async def _invalid(request: Request, e: InvalidJob) -> JSONResponse:
        return error(ApiError(422, "InvalidJob", str(e), e.field))

    @app.exception_handler(BucketNotAllowed)
    async def _outside(request: Request, e: BucketNotAllowed) -> JSONResponse:
        return error(ApiError(403, "BucketNotAllowed", str(e)))

    @app.exception_handler(PartialSubmit)
    async def _partial(request: Request, e: PartialSubmit) -> JSONResponse:
        body = {
            "error": {"type": "BrokerUnavailable", "message": f"Redis unreachable: {e.cause}"},
            "sent": e.sent,
            "not_sent": e.not_sent,
            "unknown": e.unknown,
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    async def _down(request: Request, e: Exception) -> JSONResponse:
        return error(ApiError(503, "BrokerUnavailable", f"Redis unreachable: {e}", headers={"Retry-After": "5"}))

    for unavailable in (*broker.errors(), BrokerUnavailable):
        app.add_exception_handler(unavailable, _down)

    # -- helpers ------------------------------------------------------------------------------

    def tenant_of(request: Request) -> Tenant:
        tenant = tenants.authenticate(request.headers.get("authorization"))
        if tenant is None:
            raise ApiError(
                401,
                "Unauthorized",
                "a valid API key is needed: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = take_token(redis, tenant)
        if wait > 0:
            raise ApiError(
                429,
                "RateLimited",
                f"over {tenant.rate_per_s:g} requests/s (burst {tenant.burst})",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )
        return tenant

    def owned(tenant: Tenant, job_id: str) -> None:
        if not job_id.startswith(tenant.tenant + ".") or not redis.exists(keys.JOB.format(job_id)):
            raise ApiError(404, "JobNotFound", f"no job {job_id!r}")

    def prepare(
        tenant: Tenant, body: Any, where: str, job_id: str | None = None, urls: dict[str, None] | None = None
    ) -> tuple[Envelope, dict[str, Any]]:
        """Validate one job of a request (the contract, the tenant's rights, the webhook); its message."""
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
            job.check_limits(settings.max_size_px, settings.max_iterations, settings.max_pixels)
        except InvalidJob as e:
            raise InvalidJob(prefix + e.field, e.message) from None
        refs = [("content", job.content), *((f"style[{i}]", s) for i, s in enumerate(job.styles))]
        for field, ref in refs:
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
        access.check_job(settings, job, job_id)  # the deployment's own allowlists and the weights
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
                check_url(url, settings, prefix + "webhook")
                if urls is not None:
                    urls[url] = None
            events = ["completed"] if events is None else events
            if not isinstance(events, list) or not events or any(e not in WEBHOOK_EVENTS for e in events):
                raise InvalidJob(prefix + "webhook_events", f"must be a list of {', '.join(WEBHOOK_EVENTS)}")
            extra.update(webhook=url, webhook_events=",".join(dict.fromkeys(events)))
        elif events is not None:
            raise InvalidJob(prefix + "webhook_events", "needs a webhook")
        try:
            return client.envelope(job, priority, round(time.time(), 3)), extra
        except InvalidJob as e:  # over the message size limit
            raise InvalidJob(prefix + e.field, e.message) from None

    def check_in_flight(tenant: Tenant, adding: int) -> None:
        key = keys.TENANT_INFLIGHT.format(tenant.tenant)
        pipe = redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", time.time() - settings.result_expires_s)  # outlived their records
        pipe.zcard(key)
        in_flight = pipe.execute()[1]
        if in_flight + adding > tenant.max_in_flight:
            raise ApiError(
                429,
                "TooManyInFlight",
                f"{tenant.tenant} has {in_flight} jobs in flight; at most {tenant.max_in_flight}",
                headers={"Retry-After": "30"},
            )

    def recorder(tenant: Tenant, extras: dict[str, dict[str, Any]], batch: str | None) -> Any:
        """Commands that write the jobs' records in the transaction that queues them."""

        def add(pipe: Any, envelopes: list[Any]) -> None:
            now = time.time()
            ttl = settings.result_expires_s
            shared = {
                "tenant": tenant.tenant,
                "created_at": now,
                "state": "PENDING",
                **({"batch": batch} if batch else {}),
            }
            groups: dict[tuple[tuple[str, Any], ...], list[str]] = {}  # jobs with the same record fields
            for e in envelopes:
                own = tuple((k, v) for k, v in extras[e.job_id].items() if k != "priority")
                groups.setdefault(own, []).append(keys.JOB.format(e.job_id))
            for own, names in groups.items():
                pairs = [x for kv in {**shared, **dict(own)}.items() for x in kv]
                pipe.eval(_RECORDS, len(names), *names, ttl, *pairs)
            scores = {e.job_id: now for e in envelopes}
            indexes = [keys.TENANT_JOBS.format(tenant.tenant), keys.TENANT_INFLIGHT.format(tenant.tenant)]
            for key in indexes + ([keys.BATCH_JOBS.format(batch)] if batch else []):
                pipe.zadd(key, scores)
                pipe.expire(key, ttl)
            pipe.zremrangebyrank(keys.TENANT_JOBS.format(tenant.tenant), 0, -settings.jobs_index_max - 1)

        return add

    def created(job_id: str, replayed: bool = False) -> JSONResponse:
        headers = {"Location": f"/v1/jobs/{job_id}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(views.job(job_id), status_code=200 if replayed else 202, headers=headers)

    # -- jobs ---------------------------------------------------------------------------------

    @app.post(
        "/v1/jobs",
        status_code=202,
        summary="Submit a job",
        description="202 with the job and its Location. With an `Idempotency-Key` header or a `job_id`, "
        "a retried request returns the same job (200, `Idempotent-Replayed: true`).",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _job_body_schema()}}}
        },
    )
    def submit(request: Request, body: JsonBody) -> Any:
        tenant = tenant_of(request)
        idem = request.headers.get("idempotency-key")
        if idem is not None and not 1 <= len(idem) <= 255:
            raise InvalidJob("Idempotency-Key", "must be 1 to 255 characters")
        job_id = f"{tenant.tenant}.idem-{uuid.uuid5(uuid.NAMESPACE_URL, idem).hex}" if idem else None
        envelope, extra = prepare(tenant, body, "", job_id)
        job_id = envelope.job_id
        claim = keys.IDEMPOTENCY.format(tenant.tenant, job_id)
        if not redis.set(claim, "1", nx=True, ex=IDEMPOTENCY_TTL_S):
            if redis.exists(keys.JOB.format(job_id)):
                return created(job_id, replayed=True)
            raise ApiError(409, "InProgress", f"a request for job {job_id!r} is in progress; retry", "job_id")
        try:
            check_in_flight(tenant, 1)
            client.push_many([envelope], on_batch=recorder(tenant, {job_id: extra}, None))
        except PartialSubmit as e:
            if not e.unknown:
                redis.delete(claim)  # not sent: the same request may be tried again
            raise
        except Exception:
            redis.delete(claim)
            raise
        metrics.submitted.labels(tenant.tenant).inc()
        announcer.queued(job_id)
        return created(job_id)

    @app.get("/v1/jobs/{job_id}", summary="A job: state, progress, result or error, and its output's URL")
    def get_job(job_id: str, request: Request) -> Any:
        tenant = tenant_of(request)
        owned(tenant, job_id)
        return views.job(job_id)

    @app.post("/v1/jobs/{job_id}/cancel", summary="Cancel a job; returns its state after the request")
    def cancel(job_id: str, request: Request) -> Any:
        tenant = tenant_of(request)
        owned(tenant, job_id)
        client.job(job_id).cancel()
        return views.job(job_id)

    @app.get("/v1/jobs", summary="Recent jobs, newest first, a page at a time")
    def list_jobs(
        request: Request, state: str | None = None, batch: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Any:
        tenant = tenant_of(request)
        if not 1 <= limit <= 1000:
            raise InvalidJob("limit", f"{limit} is not from 1 to 1000")
        if batch is not None:
            owner = redis.hget(keys.BATCH.format(batch), "tenant")
            if owner is None or owner.decode() != tenant.tenant:
                raise ApiError(404, "BatchNotFound", f"no batch {batch!r}")
            index = keys.BATCH_JOBS.format(batch)
        else:
            index = keys.TENANT_JOBS.format(tenant.tenant)
        return views.page(index, state, limit, cursor)

    # -- batches ------------------------------------------------------------------------------

    batch_schema = {
        "type": "object",
        "properties": {
            "jobs": {"type": "array", "items": _job_body_schema(), "minItems": 1, "maxItems": settings.batch_max_jobs},
            "webhook": {"type": "string", "format": "uri", "description": "called once every job has ended"},
        },
        "required": ["jobs"],
        "additionalProperties": False,
    }

    @app.post(
        "/v1/batches",
        status_code=202,
        summary=f"Submit up to {settings.batch_max_jobs:,} jobs at once",
        description="All or nothing on validation: one bad job refuses the batch, naming it (`jobs[3].output`).",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": batch_schema}}}},
    )
    def submit_batch(request: Request, body: JsonBody) -> Any:
        tenant = tenant_of(request)
        if not isinstance(body, dict):
            raise InvalidJob("body", 'must be a JSON object: {"jobs": [...]}')
        unknown = sorted(set(body) - {"jobs", "webhook"})
        if unknown:
            raise InvalidJob(unknown[0], "unknown field (known: jobs, webhook)")
        if not isinstance(body.get("jobs"), list) or not body["jobs"]:
            raise InvalidJob("jobs", "must be a non-empty list of jobs")
        count = len(body["jobs"])
        if count > settings.batch_max_jobs:
            raise InvalidJob("jobs", f"{count} jobs is over the limit of {settings.batch_max_jobs} per batch")
        if body.get("webhook") is not None:
            check_url(body["webhook"], settings, "webhook")
        urls: dict[str, None] = {}
        prepared = [prepare(tenant, item, f"jobs[{i}]", urls=urls) for i, item in enumerate(body["jobs"])]
        ids = [envelope.job_id for envelope, _ in prepared]
        seen: dict[str, int] = {}
        for i, job_id in enumerate(ids):
            if job_id in seen:
                raise InvalidJob(f"jobs[{i}].job_id", f"{job_id!r} is also jobs[{seen[job_id]}]'s")
            seen[job_id] = i
        names = [keys.JOB.format(job_id) for job_id in ids]
        if redis.exists(*names):  # one command for the batch; which one only when one is taken
            pipe = redis.pipeline(transaction=False)
            for name in names:
                pipe.exists(name)
            taken = [i for i, exists in enumerate(pipe.execute()) if exists]
            raise ApiError(409, "JobExists", f"job {ids[taken[0]]!r} exists already", f"jobs[{taken[0]}].job_id")
        check_in_flight(tenant, count)
        batch = "b_" + uuid.uuid4().hex
        info: dict[str, Any] = {"tenant": tenant.tenant, "total": count, "created_at": time.time(), "ended": 0}
        if body.get("webhook"):
            info["webhook"] = body["webhook"]
        pipe = redis.pipeline(transaction=True)
        pipe.hset(keys.BATCH.format(batch), mapping=info)
        pipe.expire(keys.BATCH.format(batch), settings.result_expires_s)
        pipe.execute()
        extras = {envelope.job_id: extra for envelope, extra in prepared}
        # Every message was built (and its size checked) above: a PartialSubmit from here says
        # exactly which jobs of the batch were queued.
        client.push_many([envelope for envelope, _ in prepared], on_batch=recorder(tenant, extras, batch))
        metrics.submitted.labels(tenant.tenant).inc(count)
        return JSONResponse(
            {"id": batch, "total": count, "jobs": ids}, status_code=202, headers={"Location": f"/v1/batches/{batch}"}
        )

    @app.get("/v1/batches/{batch_id}", summary="A batch: its jobs counted by state")
    def get_batch(batch_id: str, request: Request) -> Any:
        tenant = tenant_of(request)
        info = {k.decode(): v.decode() for k, v in redis.hgetall(keys.BATCH.format(batch_id)).items()}
        if info.get("tenant") != tenant.tenant:
            raise ApiError(404, "BatchNotFound", f"no batch {batch_id!r}")
        return views.batch(batch_id, info)

    # -- uploads ------------------------------------------------------------------------------

    @app.post(
        "/v1/uploads",
        summary="Presigned PUT URLs for input images (no S3 credentials or SDK needed)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "files": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 100,
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "name": {"type": "string"},
                                            "content_type": {"enum": list(resources.UPLOAD_TYPES)},
                                        },
                                        "required": ["name", "content_type"],
                                    },
                                }
                            },
                            "required": ["files"],
                        }
                    }
                },
            }
        },
    )
    def uploads(request: Request, body: JsonBody) -> Any:
        tenant = tenant_of(request)
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or not 1 <= len(files) <= 100:
            raise InvalidJob("files", "must be a list of 1 to 100 {name, content_type} objects")
        return {"uploads": [views.upload(tenant, f, f"files[{i}]") for i, f in enumerate(files)]}

    # -- operations ---------------------------------------------------------------------------

    @app.get("/healthz", summary="The process is up")
    def healthz() -> Any:
        return {"ok": True}

    @app.get("/readyz", summary="Redis and the object store are reachable")
    def readyz() -> Any:
        problems = views.readiness()
        return JSONResponse({"ok": not problems, "problems": problems}, status_code=503 if problems else 200)

    @app.get("/metrics", summary="Prometheus metrics")
    def prometheus() -> Any:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
