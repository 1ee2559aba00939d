"""``/v1/uploads``: presigned PUT URLs for input images (no S3 credentials or SDK needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from producer.api import resources
from producer.api.deps import JsonBody, ServicesDep, TenantDep
from producer.core.errors import InvalidJob

router = APIRouter()

_SCHEMA = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "content_type": {"enum": list(resources.UPLOAD_TYPES)}},
                "required": ["name", "content_type"],
            },
        }
    },
    "required": ["files"],
}


@router.post(
    "/v1/uploads",
    summary="Presigned PUT URLs for input images (no S3 credentials or SDK needed)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _SCHEMA}}}},
)
def uploads(body: JsonBody, s: ServicesDep, tenant: TenantDep) -> Any:
    """One presigned PUT per file, under the tenant's first input prefix."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list) or not 1 <= len(files) <= 100:
        raise InvalidJob("files", "must be a list of 1 to 100 {name, content_type} objects")
    return {"uploads": [s.views.upload(tenant, f, f"files[{i}]") for i, f in enumerate(files)]}
