"""``/healthz``, ``/readyz`` and ``/metrics``: what load balancers, orchestrators and Prometheus ask."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from producer.api.deps import ServicesDep

router = APIRouter()


@router.get("/healthz", summary="The process is up")
def healthz() -> Any:
    """Always 200 while the process serves."""
    return {"ok": True}


@router.get("/readyz", summary="Redis and the object store are reachable")
def readyz(s: ServicesDep) -> Any:
    """200 when Redis and the store answer, else 503 naming what does not."""
    problems = s.views.readiness()
    return JSONResponse({"ok": not problems, "problems": problems}, status_code=503 if problems else 200)


@router.get("/metrics", summary="Prometheus metrics")
def prometheus(s: ServicesDep) -> Any:
    """The API's metrics in Prometheus' text format."""
    return Response(s.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
