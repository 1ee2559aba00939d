"""The API's errors: one JSON shape, ``{"error": {"type", "message", "field"}}``, and a status each.

400 malformed JSON, 401 no or unknown key, 403 outside the tenant's buckets or priority, 404
unknown job or batch (or another tenant's), 409 a ``job_id`` taken by another job, or a request
with the same ``Idempotency-Key`` still in progress, 413 body too large, 422 a job that breaks the
contract (naming the field, the same messages as the client's), 429 over the tenant's rate or
in-flight cap (with ``Retry-After``), 503 Redis unreachable (with ``Retry-After``; a batch that was
partly queued says which jobs were sent).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from producer import broker
from producer.core.errors import BrokerUnavailable, BucketNotAllowed, InvalidJob, PartialSubmit


class ApiError(Exception):
    """An HTTP error with a JSON body."""

    def __init__(
        self, status: int, type_: str, message: str, field: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type_, message, field
        self.headers = headers or {}


def response(e: ApiError) -> JSONResponse:
    """The JSON response of ``e``."""
    body = {"error": {"type": e.type, "message": e.message, **({"field": e.field} if e.field else {})}}
    return JSONResponse(body, status_code=e.status, headers=e.headers)


async def _api_error(request: Request, e: Any) -> JSONResponse:
    return response(e)


async def _invalid(request: Request, e: Any) -> JSONResponse:
    return response(ApiError(422, "InvalidJob", str(e), e.field))


async def _outside(request: Request, e: Any) -> JSONResponse:
    return response(ApiError(403, "BucketNotAllowed", str(e)))


async def _partial(request: Request, e: Any) -> JSONResponse:
    body = {
        "error": {"type": "BrokerUnavailable", "message": f"Redis unreachable: {e.cause}"},
        "sent": e.sent,
        "not_sent": e.not_sent,
        "unknown": e.unknown,
    }
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


async def _down(request: Request, e: Exception) -> JSONResponse:
    return response(ApiError(503, "BrokerUnavailable", f"Redis unreachable: {e}", headers={"Retry-After": "5"}))


def install(app: FastAPI) -> None:
    """Map every error a route may raise to its status and JSON body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(InvalidJob, _invalid)
    app.add_exception_handler(BucketNotAllowed, _outside)
    app.add_exception_handler(PartialSubmit, _partial)
    for unavailable in (*broker.errors(), BrokerUnavailable):
        app.add_exception_handler(unavailable, _down)
