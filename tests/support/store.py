"""Looking at what a job left in the object store."""

from __future__ import annotations

from typing import Any


def objects(store: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (all pages)."""
    keys: list[str] = []
    token = None
    while True:
        page = store.client.list_objects_v2(
            Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {})
        )
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return sorted(keys)


# -- the HTTP API: a real server, a real notifier, a real webhook receiver --------------------
