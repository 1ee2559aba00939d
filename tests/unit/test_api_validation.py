"""The HTTP API's validation matrix in process (FastAPI's TestClient): every refusal a request can
meet before anything is queued, with its status, type and field.

No Redis, store, worker or notifier: the app's Redis is a closed port, so a request that touched
Redis before refusing would answer 503, not its 4xx. The tenant comes from the real key check
(401 cases) or is fixed through the dependency (``app.dependency_overrides``), as the routes
take it. The same refusals over a real server with real Redis are in tests/system/test_api.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from producer.api import deps
from producer.api.app import create_app
from producer.core.settings import Settings
from producer.devstack import free_port
from producer.tenants import Tenant, hash_key

KEY = "sq_unit-test-key"
ACME = Tenant(
    "acme", hash_key(KEY), input=("inputs/acme/",), output=("outputs/acme/",), max_priority=2, webhook_secret="s"
)
MAX_BODY = 100_000


def job(**extra: Any) -> dict[str, Any]:
    return {
        "content": "s3://inputs/acme/content.png",
        "style": "s3://inputs/acme/style.jpg",
        "output": "s3://outputs/acme/",
        "params": {"size": 32, "iterations": 3},
        **extra,
    }


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    settings = Settings(
        broker_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: any use of Redis is a 503
        api_keys=json.dumps({"keys": [ACME.to_dict()]}),
        api_max_body_bytes=MAX_BODY,
        max_iterations=2000,
        batch_max_jobs=50,
        client_timeout_s=0.5,
    )
    yield create_app(settings)


@pytest.fixture
def api(app: Any) -> Iterator[TestClient]:
    app.dependency_overrides[deps.current_tenant] = lambda: ACME
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.dependency_overrides.clear()


def refused(r: Any, status: int, type_: str, field: str | None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == type_ and error["message"] and error.get("field") == field, error


@pytest.mark.parametrize(
    ("send", "status", "type_", "field"),
    [
        ({"content": b"{not json"}, 400, "MalformedJSON", None),
        ({"content": b"[" + b" " * MAX_BODY + b"]"}, 413, "TooLarge", None),
        ({"json": [job()]}, 422, "InvalidJob", "body"),
        ({"json": {**job(), "params": {"size": "big"}}}, 422, "InvalidJob", "params.size"),
        ({"json": {**job(), "colour": "blue"}}, 422, "InvalidJob", "colour"),
        ({"json": {**job(), "output": "s3://outputs/acme/x.gif"}}, 422, "InvalidJob", "output"),
        ({"json": {**job(), "params": {"iterations": 2001}}}, 422, "InvalidJob", "params.iterations"),
        ({"json": {**job(), "params": {"scales": 0}}}, 422, "InvalidJob", "params.scales"),
        ({"json": {**job(), "job_id": "has space"}}, 422, "InvalidJob", "job_id"),
        ({"json": {**job(), "webhook": "https://10.1.2.3/hook"}}, 422, "InvalidJob", "webhook"),
        ({"json": {**job(), "webhook": "https://169.254.169.254/latest"}}, 422, "InvalidJob", "webhook"),
        ({"json": {**job(), "webhook": "ftp://example.com/x"}}, 422, "InvalidJob", "webhook"),
        ({"json": {**job(), "webhook_events": ["completed"]}}, 422, "InvalidJob", "webhook_events"),
        ({"json": {**job(), "priority": "high"}}, 422, "InvalidJob", "priority"),
        ({"json": {**job(), "priority": 1}}, 403, "PriorityNotAllowed", "priority"),
        ({"json": {**job(), "content": "s3://inputs/globex/c.png"}}, 403, "BucketNotAllowed", "content"),
        (
            {"json": {**job(), "style": ["s3://inputs/acme/s.png", "s3://other/y.png"]}},
            403,
            "BucketNotAllowed",
            "style[1]",
        ),
        ({"json": {**job(), "output": "s3://outputs/globex/"}}, 403, "BucketNotAllowed", "output"),
        (
            {"json": {**job(), "style": [{"uri": "s3://inputs/acme/s.png", "mask": "s3://inputs/globex/m.png"}]}},
            403,
            "BucketNotAllowed",
            "style[0].mask",
        ),
        (
            {"json": {**job(), "style": [{"uri": "s3://inputs/acme/s.png", "mask": "m.png"}]}},
            422,
            "InvalidJob",
            "style[0].mask",
        ),
    ],
    ids=[
        "malformed",
        "too-large",
        "not-an-object",
        "wrong-type",
        "unknown-field",
        "bad-suffix",
        "over-the-deployment-limit",
        "below-a-minimum",
        "bad-job-id",
        "private-webhook",
        "link-local-webhook",
        "webhook-scheme",
        "events-without-a-webhook",
        "priority-type",
        "priority-above-the-tenants",
        "other-tenants-input",
        "other-tenants-style",
        "other-tenants-output",
        "other-tenants-mask",
        "mask-not-a-uri",
    ],
)
def test_a_bad_job_is_refused_with_its_status_and_field(api: TestClient, send: dict, status, type_, field) -> None:
    refused(api.post("/v1/jobs", headers={"content-type": "application/json"}, **send), status, type_, field)


def test_a_bad_idempotency_key_is_refused(api: TestClient) -> None:
    refused(
        api.post("/v1/jobs", json=job(), headers={"Idempotency-Key": "k" * 256}), 422, "InvalidJob", "Idempotency-Key"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([job()], "body"),
        ({"jobs": []}, "jobs"),
        ({"jobs": [job()] * 51}, "jobs"),
        ({"jobs": [job()], "priority": 1}, "priority"),
        ({"jobs": [job(), job(), {**job(), "output": "s3://outputs/acme/x.gif"}]}, "jobs[2].output"),
        ({"jobs": [job(job_id="same"), job(job_id="same")]}, "jobs[1].job_id"),
        ({"jobs": [job(), {**job(), "webhook": "https://10.0.0.1/"}]}, "jobs[1].webhook"),
        ({"jobs": [job()], "webhook": "https://192.168.1.1/"}, "webhook"),
    ],
    ids=[
        "not-an-object",
        "empty",
        "over-the-limit",
        "unknown-field",
        "one-bad-job",
        "duplicate-id",
        "job-webhook",
        "batch-webhook",
    ],
)
def test_a_bad_batch_is_refused_whole_naming_the_job(api: TestClient, body: Any, field: str) -> None:
    refused(api.post("/v1/batches", json=body), 422, "InvalidJob", field)


def test_uploads_and_listing_validate_their_input(api: TestClient) -> None:
    refused(api.post("/v1/uploads", json={"files": []}), 422, "InvalidJob", "files")
    refused(api.get("/v1/jobs?limit=0"), 422, "InvalidJob", "limit")


def test_no_key_or_an_unknown_key_is_401_before_redis(app: Any) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        for headers in ({}, {"Authorization": "Bearer sq_nope"}, {"Authorization": KEY}):
            r = c.post("/v1/jobs", json=job(), headers=headers)
            refused(r, 401, "Unauthorized", None)
            assert r.headers["www-authenticate"] == "Bearer"


def test_a_valid_job_reaches_redis_which_is_down_here(api: TestClient) -> None:
    """The control: a job that passes every check goes on to Redis, and this app's is down: 503."""
    r = api.post("/v1/jobs", json=job())
    assert r.status_code == 503 and r.headers["retry-after"] and r.json()["error"]["type"] == "BrokerUnavailable"
