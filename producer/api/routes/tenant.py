"""``/v1/tenant``: the caller's tenant, as its key's entry says (never the key's hash or secret)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from producer.api.deps import TenantDep

router = APIRouter()


@router.get("/v1/tenant", summary="The caller's tenant: where its jobs may read and write, and its limits")
def tenant(caller: TenantDep) -> Any:
    """Its name, input and output prefixes (``bucket/prefix``), highest priority and limits."""
    return {
        "tenant": caller.tenant,
        "input": list(caller.input),
        "output": list(caller.output),
        "max_priority": caller.max_priority,
        "rate_per_s": caller.rate_per_s,
        "burst": caller.burst,
        "max_in_flight": caller.max_in_flight,
    }
