"""The session's object store: its buckets, the weights' place, and what a job left in it."""

from __future__ import annotations

from typing import Any

#: The buckets the session's SeaweedFS has (tests/conftest.py makes them).
BUCKETS = ["inputs", "outputs", "models", "forbidden"]
#: Where the session's workers load their (seeded random) weights from.
WEIGHTS_URI = "s3://models/vgg19/random.weights.h5"


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
